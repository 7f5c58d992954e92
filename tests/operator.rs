//! The operator's commands on a real database file: `kairo numbers` shows
//! a paused number with its reason and what to run, and when the queued
//! sends should have gone; `kairo numbers resume` lifts the pause;
//! `kairo status` shows enrollments and per-step counts. Bad input exits 2
//! with one precise line.

mod util;

use kairo_core::clock::{Clock, SystemClock};
use kairo_engine::testing::prepare_broadcast;
use kairo_store::{DatabaseUrl, PauseScope, Store};
use predicates::prelude::*;
use util::kairo;

/// A database in `dir` (kairo.db) with the broadcast of 300 enrollments
/// whose send is queued, its number paused for its quality.
async fn prepare(dir: &std::path::Path) -> Store {
    let url = DatabaseUrl::new(&format!("sqlite://{}", dir.join("kairo.db").display()));
    let store = Store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    let number = prepare_broadcast(&store, dir, "http://127.0.0.1:9", "111111111", 80, 300, |_| {}).await;
    let now = SystemClock.now();
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
            // #14 B13: a paused number's estimate says nothing goes until it is resumed.
            .and(predicate::str::contains("300 sends queued; none goes out while the number is paused")),
    );
    let out = kairo(dir.path()).args(["numbers", "--format", "json"]).assert().success().get_output().stdout.clone();
    let rows: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(rows[0]["paused"]["scope"], "marketing");
    assert_eq!(rows[0]["estimate"]["queued"], 300);
    assert_eq!(rows[0]["estimate"]["bound_by"], "paused");

    kairo(dir.path())
        .args(["numbers", "resume", "15550001111"])
        .assert()
        .success()
        .stdout(predicate::str::contains("+1 555-000-1111: resumed (was paused: quality webhook FLAGGED)"));
    let number = store.phone_number_by_graph_id("111111111").await.expect("read").expect("number");
    assert_eq!(number.paused_at, None);
    kairo(dir.path()).arg("numbers").assert().success().stdout(
        predicate::str::contains("300 sends queued at 77.6/s; the last should go out by")
            .and(predicate::str::contains("(bound by throughput and when each is due)")),
    );
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
        .stdout(predicate::str::contains("broadcast (Broadcast): 300 active\n  announce: 300 pending"));
    let out = kairo(dir.path())
        .args(["status", "broadcast", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    let rows = &report["workflows"];
    assert_eq!(rows[0]["enrollments"]["active"], 300);
    assert_eq!(rows[0]["steps"][0]["states"]["pending"], 300);
    assert_eq!(report["unmatched_statuses"]["total"], 0);
    kairo(dir.path())
        .args(["status", "autumn"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no workflow `autumn` is loaded"));
}

/// #14 C19: an account restriction that stops no message (adding numbers)
/// is shown by `kairo numbers` as such, beside one that pauses sends, with
/// when it expires.
#[tokio::test]
async fn numbers_shows_metas_account_restrictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = prepare(dir.path()).await;
    let notice = serde_json::json!({
        "account_id": "102290129340398", "field": "account_update", "occurred_at": "2026-12-01T10:00:00Z",
        "payload": {"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": 1767261600},
            {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": "2027-01-01T10:00:00Z"}
        ]}
    });
    let new = kairo_store::NewEvent {
        kind: "notice:account_update".into(),
        dedup_key: "restriction-1".into(),
        phone_number_id: None,
        contact_id: None,
        payload: notice,
        occurred_at: SystemClock.now(),
    };
    store.append_event(new, SystemClock.now()).await.expect("event");
    kairo(dir.path()).arg("numbers").assert().success().stdout(
        predicate::str::contains(
            "account 102290129340398: restricted by Meta: RESTRICTED_ADD_PHONE_NUMBER_ACTION until 2026-01-01 10:00 UTC; sends go on",
        )
        .and(predicate::str::contains(
            "RESTRICTED_BIZ_INITIATED_MESSAGING until 2027-01-01T10:00:00Z; business-initiated sends are paused",
        )),
    );
}
