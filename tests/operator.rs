//! The operator's commands on a real database file: `kairo numbers` shows
//! a paused number with its reason and what to run, and when the queued
//! sends should have gone; `kairo numbers resume` lifts the pause;
//! `kairo status` shows enrollments and per-step counts. Bad input exits 2
//! with one precise line.

mod util;

use kairo_engine::store::{DatabaseUrl, NewContact, PauseScope, Store};
use kairo_engine::testing::{connect_number, enroll_everyone};
use kairo_engine::{Clock, SystemClock};
use predicates::prelude::*;
use serde_json::json;
use util::kairo;

const WORKFLOW: &str = r#"id: spring
name: Spring sale
triggers:
  - api: {}
steps:
  - id: announce
    send_template:
      number: "+1 555-000-1111"
      template: spring_sale
      language: en_US
      body: ["{{contact.first_name}}"]
"#;

/// A database in `dir` (kairo.db) with one number, paused for its quality,
/// and 300 enrollments whose send is queued.
async fn prepare(dir: &std::path::Path) -> Store {
    let url = DatabaseUrl::new(&format!("sqlite://{}", dir.join("kairo.db").display()));
    let store = Store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    let now = SystemClock.now();
    let number = connect_number(&store, "111111111", "+1 555-000-1111", 80, now).await;
    std::fs::create_dir(dir.join("workflows")).expect("workflows dir");
    std::fs::write(dir.join("workflows/spring.yaml"), WORKFLOW).expect("workflow");
    let report = store.load_workflows(&dir.join("workflows"), None, now).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let people = (0..300)
        .map(|i| NewContact {
            phone: Some(format!("+1 555 {i:07}")),
            properties: json!({ "first_name": format!("C{i}") }),
            ..NewContact::default()
        })
        .collect();
    let ids = store.import_contacts(people, Some(number.id), now).await.expect("contacts");
    enroll_everyone(&store, "spring", &ids).await;
    assert!(store.pause_number(number.id, PauseScope::Marketing, "quality webhook FLAGGED", now).await.expect("pause"));
    store
}

#[tokio::test]
async fn numbers_shows_a_pause_with_what_to_do_and_resume_lifts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = prepare(dir.path()).await;

    kairo(dir.path()).arg("numbers").assert().success().stdout(
        predicate::str::contains("+1 555-000-1111 (unnamed): 80 msg/s")
            .and(predicate::str::contains("PAUSED (marketing sends)"))
            .and(predicate::str::contains("quality webhook FLAGGED"))
            .and(predicate::str::contains("resume with `kairo numbers resume +1 555-000-1111`"))
            .and(predicate::str::contains("300 sends queued at 77.6/s; the last should go out by"))
            .and(predicate::str::contains("(bound by throughput)")),
    );
    let out = kairo(dir.path()).args(["numbers", "--format", "json"]).assert().success().get_output().stdout.clone();
    let rows: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(rows[0]["paused"]["scope"], "marketing");
    assert_eq!(rows[0]["estimate"]["queued"], 300);
    assert_eq!(rows[0]["estimate"]["bound_by"], "throughput");

    kairo(dir.path())
        .args(["numbers", "resume", "15550001111"])
        .assert()
        .success()
        .stdout(predicate::str::contains("+1 555-000-1111: resumed (was paused: quality webhook FLAGGED)"));
    let number = store.phone_number_by_graph_id("111111111").await.expect("read").expect("number");
    assert_eq!(number.paused_at, None);
    kairo(dir.path())
        .args(["numbers", "resume", "+1 555-000-1111"])
        .assert()
        .success()
        .stdout(predicate::str::contains("was not paused"));
    kairo(dir.path())
        .args(["numbers", "resume", "+44 20 7946 0000"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no business number `+44 20 7946 0000`; known numbers: +1 555-000-1111"));
}

#[tokio::test]
async fn status_shows_enrollments_and_step_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = prepare(dir.path()).await;
    kairo(dir.path())
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("spring (Spring sale): 300 active\n  announce: 300 pending"));
    let out =
        kairo(dir.path()).args(["status", "spring", "--format", "json"]).assert().success().get_output().stdout.clone();
    let rows: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(rows[0]["enrollments"]["active"], 300);
    assert_eq!(rows[0]["steps"][0]["states"]["pending"], 300);
    kairo(dir.path())
        .args(["status", "autumn"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no workflow `autumn` is loaded"));
}
