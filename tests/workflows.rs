//! The example workflows are a contract: they all validate, against the
//! catalogue and against the published JSON Schema; `kairo validate`
//! reports problems with positions and the right exit status.

mod util;

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use util::kairo;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let files = kairo_workflow::discover(&[root().join("workflows")]).expect("workflows/ is readable");
    assert!(files.len() >= 6, "expected at least six examples, found {files:?}");
    files
}

#[test]
fn every_example_validates_against_the_catalogue() {
    let root = root();
    kairo(&root)
        .args(["validate", "workflows", "--catalog", "fixtures/catalog.json"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("{} workflow file(s) valid", examples().len())))
        // The examples do what they teach: no warning either (14.B12).
        .stdout(predicate::str::contains("warning:").not());
}

#[test]
fn every_example_starts_with_the_schema_line_and_matches_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/workflow.schema.json")).expect("schema file"),
    )
    .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for file in examples() {
        let text = std::fs::read_to_string(&file).expect("readable");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/workflow.schema.json\n"),
            "{} lacks the schema line",
            file.display()
        );
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn the_committed_schema_is_current() {
    let committed = std::fs::read_to_string(root().join("schema/workflow.schema.json")).expect("schema file");
    let output = kairo(&root()).arg("schema").output().expect("runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        committed,
        "schema/workflow.schema.json is stale: run `cargo run -- schema > schema/workflow.schema.json`"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn invalid_files_exit_1_with_every_problem_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ok.yaml", "id: ok\nname: Ok\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    exit: {}\n");
    write(
        dir.path(),
        "bad.yaml",
        "id: bad\nname: Bad\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    wait: {for: soon}\n    next: nowhere\n",
    );
    kairo(dir.path())
        .args(["validate", "."])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("./bad.yaml:7:17: invalid duration `soon`"))
        .stdout(predicate::str::contains("./bad.yaml:8:11: no step has the id `nowhere`"))
        .stdout(predicate::str::contains("8 |     next: nowhere\n  |           ^"))
        .stdout(predicate::str::contains("2 problem(s) in 1 of 2 workflow file(s)"));
}

#[test]
fn json_format_reports_each_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.yaml", "id: Bad!\nname: B\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    exit: {}\n");
    let output = kairo(dir.path()).args(["validate", "bad.yaml", "--format", "json"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["valid"], false);
    assert_eq!(report["files"][0]["diagnostics"][0]["line"], 1);
    assert_eq!(report["files"][0]["diagnostics"][0]["column"], 5);
    assert!(
        report["files"][0]["diagnostics"][0]["message"].as_str().expect("message").starts_with("invalid workflow id")
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path())
        .args(["validate", "missing.yaml"])
        .assert()
        .code(2)
        .stderr("error: missing.yaml does not exist\n");
    write(dir.path(), "w.yaml", "id: w\nname: W\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    exit: {}\n");
    write(dir.path(), "catalog.json", "{not json");
    kairo(dir.path())
        .args(["validate", "w.yaml", "--catalog", "catalog.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with("error: catalogue catalog.json is not valid:"));
}

#[test]
fn validate_without_a_catalogue_says_what_it_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "w.yaml", "id: w\nname: W\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    exit: {}\n");
    kairo(dir.path())
        .args(["validate", "w.yaml"])
        .assert()
        .success()
        .stderr(predicate::str::contains("numbers and templates are not checked"));
    assert!(!dir.path().join("kairo.db").exists(), "validate must not create a database");
}

#[tokio::test]
async fn validate_reads_the_synced_catalogue_from_the_database() {
    use kairo_store::{NewAccount, NewPhoneNumber, NewTemplate};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
    let store = kairo_store::Store::open(&kairo_store::DatabaseUrl::new(&url)).await.expect("open");
    store.migrate().await.expect("migrate");
    let now = chrono::Utc::now();
    let account = store
        .upsert_account(NewAccount { waba_id: "1".into(), name: "A".into(), portfolio_id: None }, now)
        .await
        .expect("account");
    store
        .upsert_phone_number(
            NewPhoneNumber {
                account_id: account.id,
                graph_id: "106540352242922".into(),
                display_number: "+1 555-000-1111".into(),
                normalized_number: "15550001111".into(),
                verified_name: None,
                quality_rating: None,
                throughput_mps: 80,
                messaging_limit_tier: None,
            },
            now,
        )
        .await
        .expect("number");
    store
        .upsert_template(
            NewTemplate {
                account_id: account.id,
                graph_id: "9".into(),
                name: "payment_due".into(),
                language: "en_US".into(),
                status: "APPROVED".into(),
                category: "UTILITY".into(),
                parameter_format: "POSITIONAL".into(),
                components: serde_json::json!([{"type": "BODY", "text": "Hi {{1}}, {{2}} due on {{3}}"}]),
            },
            now,
        )
        .await
        .expect("template");
    store.close().await;
    let send = |params: &str| {
        format!(
            "id: w\nname: W\ntriggers:\n  - api: {{}}\nsteps:\n  - id: s\n    send_template:\n      number: \"106540352242922\"\n      template: payment_due\n      language: en_US\n      body: {params}\n"
        )
    };
    write(dir.path(), "good.yaml", &send("[a, b, c]"));
    write(dir.path(), "bad.yaml", &send("[a, b]"));
    kairo(dir.path()).args(["validate", "good.yaml", "--database", &url]).assert().success();
    kairo(dir.path())
        .args(["validate", "bad.yaml", "--database", &url])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("bad.yaml:11:13: template `payment_due` takes 3 body parameters, found 2"));
}
