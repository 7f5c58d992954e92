//! `kairo serve` as a real process on a loopback port: it migrates, answers
//! health and readiness, stops cleanly on SIGTERM, and never logs a secret.

mod util;

use kairo_store::testing::TestDb;
use serde_json::json;
use util::Server;

#[tokio::test]
async fn serve_on_sqlite_migrates_and_is_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "sqlite://kairo.db").await;
    assert_eq!(server.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(
        server.get("/readyz").await,
        (200, json!({"status": "ready", "database": "reachable", "pending_migrations": []}))
    );
    assert!(dir.path().join("kairo.db").exists());
    let (code, logs) = server.terminate().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("shut down cleanly"), "{logs}");
}

#[tokio::test]
async fn serve_on_postgres_is_ready_and_never_logs_the_password() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &db.raw_url()).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    let (status, body) = server.get("/readyz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    let (code, logs) = server.terminate().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("database ready"), "{logs}");
    assert!(logs.contains("kairo_test:***@"), "the redacted URL is logged: {logs}");
    assert!(!logs.contains("kairo_test:kairo_test@"), "the password leaked: {logs}");
}

#[tokio::test]
async fn readyz_answers_503_when_the_database_goes_away() {
    let mut db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &db.raw_url()).await;
    assert_eq!(server.get("/readyz").await.0, 200);
    db.destroy();
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], json!("unreachable"));
    // Liveness is about the process, not the database.
    assert_eq!(server.get("/healthz").await.0, 200);
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn serve_refuses_a_port_in_use_with_a_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = util::kairo(dir.path()).args(["serve", "--listen", &addr]).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("error: cannot listen on {addr}")), "{stderr}");
}

#[tokio::test]
async fn serve_loads_valid_workflows_and_reports_invalid_ones_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflows = dir.path().join("workflows");
    std::fs::create_dir(&workflows).expect("mkdir");
    std::fs::write(
        workflows.join("good.yaml"),
        "id: good\nname: Good\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    exit: {}\n",
    )
    .expect("write");
    std::fs::write(
        workflows.join("bad.yaml"),
        "id: bad\nname: Bad\ntriggers:\n  - api: {}\nsteps:\n  - id: a\n    wait: {for: later}\n",
    )
    .expect("write");
    let server = Server::start(dir.path(), "sqlite://kairo.db").await;
    assert_eq!(server.get("/readyz").await.0, 200);
    let (code, logs) = server.terminate().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("workflow version loaded workflow=good version=1"), "{logs}");
    assert!(logs.contains("workflows/bad.yaml:7:17: invalid duration `later`"), "{logs}");
    assert!(logs.contains("new=1 unchanged=0 rejected=1"), "{logs}");
}
