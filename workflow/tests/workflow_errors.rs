//! One golden test per error kind: the exact message and its position.

use std::path::Path;

use kairo_workflow::{self as workflow, Catalog};

fn catalog() -> Catalog {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/catalog.json")).expect("catalog");
    serde_json::from_str(&text).expect("catalog parses")
}

/// A valid workflow around `steps` (YAML at two-space indent under `steps:`).
fn with_steps(steps: &str) -> String {
    format!("id: t\nname: T\ntriggers:\n  - api: {{}}\nsteps:\n{steps}")
}

/// Checks that `yaml` is rejected with exactly `expected` (`line:col: message` lines).
fn check_invalid(yaml: &str, expected: &[&str]) {
    let problems = workflow::check(Path::new("w.yaml"), yaml, Some(&catalog())).expect_err("the workflow is invalid");
    let shown: Vec<String> = problems.iter().map(|d| d.to_string().trim_start_matches("w.yaml:").to_string()).collect();
    assert_eq!(shown, expected, "\n{yaml}");
}

#[test]
fn yaml_syntax_error_points_where_the_bracket_opened() {
    check_invalid("id: t\nname: T\ntriggers: [ {api: {}}\n", &["3:11: unclosed bracket '['"]);
}

#[test]
fn unknown_field_suggests_the_closest() {
    check_invalid(
        &with_steps("  - id: a\n    send_template:\n      number: \"+1 555-000-1111\"\n      tempalte: x\n"),
        &["9:7: unknown field `tempalte`: did you mean `template`?"],
    );
}

#[test]
fn missing_field_is_named() {
    check_invalid("id: t\nname: T\nsteps: []\n", &["3:1: missing field `triggers`"]);
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    check_invalid(
        &with_steps("  - id: a\n    split:\n      - percent: lots\n        then: a\n"),
        &["8:18: expected a whole number (0 or more)"],
    );
}

#[test]
fn unknown_enum_value_suggests_the_closest() {
    check_invalid(
        &with_steps("  - id: a\n    exit: {}\n    on_unknown_outcome: repaet\n"),
        &["8:25: unknown value `repaet`: did you mean `repeat`?"],
    );
}

#[test]
fn duplicate_step_ids_and_bad_references_are_all_reported() {
    check_invalid(
        &with_steps("  - id: a\n    exit: {}\n  - id: a\n    exit: {}\n    next: b\n"),
        &["8:9: duplicate step id `a` (first used at line 6)", "10:11: no step has the id `b`"],
    );
}

#[test]
fn reference_typo_suggests_the_step() {
    check_invalid(
        &with_steps("  - id: first\n    wait: {for: 1h}\n    next: thrid\n  - id: third\n    exit: {}\n"),
        &["8:11: no step has the id `thrid`: did you mean `third`?"],
    );
}

#[test]
fn unreachable_step_is_reported() {
    check_invalid(
        &with_steps("  - id: a\n    exit: {}\n  - id: b\n    exit: {}\n"),
        &["8:9: step `b` can never run: no step leads to it"],
    );
}

#[test]
fn step_without_or_with_two_actions() {
    check_invalid(
        &with_steps("  - id: a\n    next: a\n"),
        &[
            "6:9: step `a` has no action: add one of `send_template`, `ensure_thread`, `assign_owner`, `wait`, `wait_for_reply`, `branch`, `split`, `set_property`, `http`, `exit`",
        ],
    );
    check_invalid(
        &with_steps("  - id: a\n    exit: {}\n    wait: {for: 1h}\n"),
        &["6:9: step `a` has several actions (`wait`, `exit`): split it into one step per action"],
    );
}

#[test]
fn bad_durations_cron_and_time_zones() {
    let yaml = "id: t\nname: T\ntriggers:\n  - schedule:\n      cron: \"61 * * * *\"\n      timezone: Europe/Pariss\n      contacts: {}\nsteps:\n  - id: a\n    wait: {for: 3 days}\n";
    let problems = workflow::check(Path::new("w.yaml"), yaml, None).expect_err("invalid");
    let shown: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(shown[0].starts_with("w.yaml:5:13: invalid cron expression `61 * * * *`: "), "{}", shown[0]);
    assert_eq!(
        shown[1],
        "w.yaml:6:17: unknown time zone `Europe/Pariss`: did you mean `Europe/Paris`? (use an IANA name such as Europe/Paris)"
    );
    assert_eq!(
        shown[2],
        "w.yaml:10:17: invalid duration `3 days`: write a number and a unit (s, m, h, d, w), e.g. 30m, 3d or 1d12h"
    );
}

#[test]
fn invalid_regex_and_condition() {
    check_invalid(
        "id: t\nname: T\ntriggers:\n  - inbound_message:\n      number: \"+1 555-000-1111\"\n      text: {regex: \"(unclosed\"}\nsteps:\n  - id: a\n    branch:\n      - if: 'contact.plan = \"pro\"'\n        then: a\n",
        &[
            "6:21: invalid regular expression `(unclosed`: error: unclosed group",
            "10:26: invalid condition: unknown operator `=`: use ==, !=, <, <=, >, >= or contains",
        ],
    );
}

#[test]
fn handlebars_syntax_and_unknown_variables() {
    check_invalid(
        &with_steps(
            "  - id: a\n    set_property:\n      x: \"{{contact.name\"\n      y: \"{{customer.name}}\"\n      z: \"{{steps.later.output.id}}\"\n  - id: later\n    exit: {}\n",
        ),
        &[
            "8:10: invalid expression `{{contact.name`: invalid handlebars syntax: expected trailing_tilde_to_omit_whitespace",
            "9:10: unknown variable `customer.name` in `{{customer.name}}`: expressions read contact, trigger, steps.<id>.output, workflow and now",
            "10:10: `steps.later` in `{{steps.later.output.id}}` refers to a step that has not run yet",
        ],
    );
}

fn send(template: &str, language: &str, extra: &str) -> String {
    with_steps(&format!(
        "  - id: s\n    send_template:\n      number: \"+1 555-000-1111\"\n      template: {template}\n      language: {language}\n{extra}"
    ))
}

#[test]
fn unknown_number() {
    check_invalid(
        &with_steps(
            "  - id: s\n    send_template:\n      number: \"+44 20 7946 0000\"\n      template: payment_due\n      language: en_US\n",
        ),
        &[
            "8:15: unknown sending number `+44 20 7946 0000`; known numbers: `+1 555-000-1111`, `+1 555-000-2222`, `+1 555-000-3333`",
        ],
    );
}

#[test]
fn unknown_template_suggests_the_closest() {
    check_invalid(
        &send("payment_dew", "en_US", ""),
        &["9:17: unknown template `payment_dew` on number +1 555-000-1111: did you mean `payment_due`?"],
    );
}

#[test]
fn template_not_approved() {
    check_invalid(
        &send("abandoned_cart", "en_US", "      body: [a, b]\n"),
        &["9:17: template `abandoned_cart` (en_US) is PAUSED, not APPROVED: only approved templates can be sent"],
    );
}

#[test]
fn template_missing_language() {
    check_invalid(
        &send("order_update", "fr", ""),
        &["10:17: template `order_update` has no language `fr`; it has `en_US`, `pt_BR`"],
    );
}

#[test]
fn sample_template() {
    check_invalid(
        &send("sample_issue_resolution", "en_US", ""),
        &["9:17: template `sample_issue_resolution` is one of Meta's sample templates, which Kairo never sends"],
    );
}

#[test]
fn positional_parameter_count() {
    check_invalid(
        &send("payment_due", "en_US", "      body: [\"{{contact.name}}\", \"$10\"]\n"),
        &["11:13: template `payment_due` takes 3 body parameters, found 2"],
    );
}

#[test]
fn named_parameter_names() {
    check_invalid(
        &send("welcome_optin", "en_US", "      body:\n        first_name: a\n        shop: b\n"),
        &[
            "12:9: template `welcome_optin` needs body parameter(s) `store_name`",
            "12:9: template `welcome_optin` has no body parameter(s) `shop`; it takes `first_name`, `store_name`",
        ],
    );
}

#[test]
fn media_header_and_url_button_are_required() {
    check_invalid(
        &send("order_update", "en_US", "      body: [a, b]\n"),
        &[
            "9:17: template `order_update` has a IMAGE header: add `header: {image: <link>}`",
            "9:17: template `order_update` button 1 is a URL with a variable: add `buttons: [{index: 1, text: …}]`",
        ],
    );
}

#[test]
fn every_problem_in_a_file_is_reported_in_one_run() {
    let yaml = with_steps(
        "  - id: a\n    wait: {for: soon}\n  - id: b\n    send_template:\n      number: \"+1 555-000-1111\"\n      template: nope\n      language: en_US\n    next: c\n",
    );
    let problems = workflow::check(Path::new("w.yaml"), &yaml, Some(&catalog())).expect_err("invalid");
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn render_shows_the_line_and_a_caret() {
    let yaml = send("payment_dew", "en_US", "");
    let problems = workflow::check(Path::new("w.yaml"), &yaml, Some(&catalog())).expect_err("invalid");
    assert_eq!(
        problems[0].render(&yaml),
        "w.yaml:9:17: unknown template `payment_dew` on number +1 555-000-1111: did you mean `payment_due`?\n  |\n9 |       template: payment_dew\n  |                 ^"
    );
}

// 14.B12
#[test]
fn reading_an_uncertain_sends_wamid_without_a_default_is_warned_about() {
    let yaml = r#"id: crm
name: CRM
triggers:
  - api: {}
steps:
  - id: shipped
    send_template:
      number: "+1 555-000-1111"
      template: welcome
      language: en_US
  - id: tag
    set_property:
      wamid: "{{steps.shipped.output.wamid}}"
      safe: "{{default steps.shipped.output.wamid \"\"}}"
"#;
    let valid = kairo_workflow::check(std::path::Path::new("crm.yaml"), yaml, None).expect("valid: a warning only");
    assert_eq!(valid.warnings.len(), 1, "{:?}", valid.warnings);
    let warning = valid.warnings[0].to_string();
    assert!(warning.contains("crm.yaml:13:14"), "{warning}");
    assert!(warning.contains("on_unknown_outcome") && warning.contains("default"), "{warning}");
    let failing = yaml.replace("      language: en_US\n", "      language: en_US\n    on_unknown_outcome: fail\n");
    let valid = kairo_workflow::check(std::path::Path::new("crm.yaml"), &failing, None).expect("valid");
    assert!(valid.warnings.is_empty(), "a send that fails when uncertain never reaches the next step");
}

/// Errors speak the author's language (#15 23), not serde's.
fn first_problem(yaml: &str) -> String {
    let problems = workflow::check(Path::new("w.yaml"), yaml, Some(&catalog())).expect_err("the workflow is invalid");
    problems.first().map(|d| d.to_string()).unwrap_or_default()
}

#[test]
fn a_body_that_is_neither_a_list_nor_a_map_says_what_it_takes() {
    for value in ["10", "y", "yes"] {
        let yaml = with_steps(&format!(
            "  - id: a\n    send_template:\n      number: \"+1 555-000-1111\"\n      template: payment_due\n      language: en_US\n      body: {value}\n"
        ));
        let problem = first_problem(&yaml);
        assert!(
            problem.contains("`body` is a list of texts") && problem.contains("map of names"),
            "{value}: {problem}"
        );
        assert!(!problem.contains("untagged"), "{problem}");
        assert!(problem.starts_with("w.yaml:11:"), "{problem}");
    }
}

#[test]
fn a_key_given_twice_is_named_without_parser_options() {
    let problem = first_problem("id: t\nname: T\nname: U\ntriggers:\n  - api: {}\nsteps: []\n");
    assert!(problem.contains("the key `name` appears twice"), "{problem}");
    assert!(!problem.contains("DuplicateKeyPolicy"), "{problem}");
}
