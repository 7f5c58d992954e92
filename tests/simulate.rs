//! `kairo simulate`: the real binary on the example workflows, in text and
//! JSON, and its errors for bad input.

mod util;

use predicates::prelude::*;
use util::kairo;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn example(name: &str) -> String {
    format!("{}/workflows/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn catalog() -> String {
    format!("{}/fixtures/catalog.json", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn abandoned_cart_prints_each_step_wait_and_rendered_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ada.json", r#"{"name": "Ada", "phone": "+1 555 0100", "properties": {"first_name": "Ada"}}"#);
    write(dir.path(), "cart.json", r#"{"cart_id": "c-42", "item_count": 3}"#);
    let output = kairo(dir.path())
        .args(["simulate", &example("abandoned-cart.yaml"), "--contact", "ada.json", "--event", "cart.json"])
        .args(["--at", "2026-03-02T10:00:00Z", "--catalog", &catalog()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Simulating `abandoned-cart` from Mon 2026-03-02 10:00 UTC");
    assert!(
        text.contains("wait-an-hour     wait            waited until Mon 2026-03-02 11:00 UTC (skipped ahead)"),
        "{text}"
    );
    assert!(
        text.contains(
            "Mon 2026-03-02 11:00 UTC  first-reminder   send_template   sent template cart_reminder (en_US), body [\"Ada\",\"3 items\"], buttons [{\"index\":0,\"text\":\"c-42\"}]"
        ),
        "{text}"
    );
    assert!(
        text.contains("wait-for-answer  wait_for_reply  no reply by Tue 2026-03-03 11:00 UTC (skipped ahead)"),
        "{text}"
    );
    assert!(text.contains("Result: exited at Tue 2026-03-03 11:00 UTC: reminders sent"), "{text}");
    assert!(text.contains("Messages: 2 (recorded, nothing sent)"), "{text}");
}

#[test]
fn json_output_lists_steps_branches_and_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ada.json", r#"{"name": "Ada", "phone": "+1 555 0100", "properties": {"first_name": "Ada"}}"#);
    write(dir.path(), "cart.json", r#"{"cart_id": "c-42", "item_count": 3}"#);
    let output = kairo(dir.path())
        .args(["simulate", &example("abandoned-cart.yaml"), "--contact", "ada.json", "--event", "cart.json"])
        .args(["--at", "2026-03-02T10:00:00Z", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).expect("JSON");
    let steps: Vec<&str> =
        report["steps"].as_array().expect("steps").iter().map(|s| s["step"].as_str().expect("id")).collect();
    assert_eq!(steps, ["wait-an-hour", "first-reminder", "wait-for-answer", "last-reminder", "done"]);
    assert_eq!(report["status"], "exited");
    assert_eq!(report["sent"].as_array().expect("sent").len(), 2);
    assert_eq!(report["sent"][0]["body"], serde_json::json!(["Ada", "3 items"]));
    assert_eq!(report["steps"][0]["output"]["until"], "2026-03-02T11:00:00Z");
}

#[test]
fn a_contact_not_opted_in_is_shown_as_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "bob.json",
        r#"{"phone": "+1 555 0101", "opted_in": false, "properties": {"first_name": "Bob"}}"#,
    );
    write(dir.path(), "cart.json", r#"{"cart_id": "c-1", "item_count": 1}"#);
    kairo(dir.path())
        .args(["simulate", &example("abandoned-cart.yaml"), "--contact", "bob.json", "--event", "cart.json"])
        .args(["--at", "2026-03-02T10:00:00Z"])
        .assert()
        .success()
        .stdout(predicate::str::contains("first-reminder   send_template   skipped: not opted in"))
        .stdout(predicate::str::contains("Messages: 0"));
}

#[test]
fn an_invalid_workflow_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = write(
        dir.path(),
        "bad.yaml",
        "id: bad\nname: Bad\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    wait:\n      for: soon\n",
    );
    write(dir.path(), "c.json", "{}");
    kairo(dir.path())
        .args(["simulate", flow.to_str().expect("utf-8"), "--contact", "c.json"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.yaml:8:"))
        .stderr(predicate::str::contains("invalid duration `soon`"));
}

#[test]
fn unreadable_inputs_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "broken.json", "{ not json");
    let flow = example("abandoned-cart.yaml");
    kairo(dir.path())
        .args(["simulate", &flow, "--contact", "missing.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read the contact file missing.json"));
    kairo(dir.path())
        .args(["simulate", &flow, "--contact", "broken.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the contact file broken.json is not valid JSON"));
    write(dir.path(), "ok.json", "{}");
    kairo(dir.path())
        .args(["simulate", &flow, "--contact", "ok.json", "--at", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--at `yesterday`"));
}

#[test]
fn every_example_workflow_simulates_to_an_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "contact.json",
        r#"{"name": "Ada", "phone": "+1 555 0100", "properties": {"first_name": "Ada", "plan": "pro", "timezone": "Europe/Paris"}}"#,
    );
    write(
        dir.path(),
        "event.json",
        r#"{"cart_id": "c-1", "item_count": 2, "order_id": "o-1", "product_image_url": "https://example.com/p.jpg", "text": "hello"}"#,
    );
    let folder = format!("{}/workflows", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(folder).expect("examples") {
        let path = entry.expect("entry").path();
        let output = kairo(dir.path())
            .args(["simulate", path.to_str().expect("utf-8"), "--contact", "contact.json", "--event", "event.json"])
            .args(["--at", "2026-03-02T10:00:00Z", "--format", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let report: serde_json::Value = serde_json::from_slice(&output).expect("JSON");
        assert_ne!(report["status"], "active", "{}: {report}", path.display());
        assert_ne!(report["status"], "waiting", "{}: {report}", path.display());
    }
}

fn root_file(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

// 14.B14: a reply, a button or a status can be injected, so every branch is
// tried offline; a send held by quiet hours shows when it really goes.
#[test]
fn a_reply_injected_takes_the_reply_path_and_quiet_hours_show_the_real_send_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = kairo(dir.path())
        .args(["simulate", &example("abandoned-cart.yaml")])
        .args(["--contact", &root_file("examples/ada.json"), "--event", &root_file("examples/cart.json")])
        .args(["--at", "2026-03-02T21:30:00Z", "--catalog", &catalog(), "--reply", "Is it in blue?@14h"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).expect("utf-8");
    // 22:30 in London is past quiet hours (09:00-21:00): the reminder goes at 09:00.
    assert!(text.contains("Tue 2026-03-03 09:00 UTC  first-reminder   send_template   sent template"), "{text}");
    assert!(
        text.contains(
            "Tue 2026-03-03 11:30 UTC                   (injected)      the contact replies \"Is it in blue?\""
        ),
        "{text}"
    );
    assert!(text.contains("wait-for-answer  wait_for_reply  resumed by an event"), "{text}");
    assert!(text.contains("hand-to-agent    assign_owner    done"), "{text}");
    assert!(!text.contains("last-reminder"), "the reply path, not the timeout path: {text}");
    assert!(text.contains("Messages: 1 (recorded, nothing sent)"), "{text}");
}

#[test]
fn injections_with_a_bad_offset_or_status_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, value, says) in [
        ("--reply", "YES@soon", "after `@` comes a duration"),
        ("--status", "seen", "use sent, delivered, read or failed"),
    ] {
        kairo(dir.path())
            .args(["simulate", &example("abandoned-cart.yaml")])
            .args(["--contact", &root_file("examples/ada.json"), "--event", &root_file("examples/cart.json")])
            .args([flag, value])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
}
