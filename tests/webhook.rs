//! The WhatsApp webhook through a real `kairo serve` on a loopback port:
//! signed fixtures are stored, anything unsigned or malformed is refused and
//! stores nothing, duplicates are stored once, and a database failure
//! answers 5xx so that Meta's retry stores it later.

mod util;

use std::path::Path;

use hmac::{KeyInit, Mac};
use kairo_store::DatabaseUrl;
use kairo_store::Store;
use kairo_store::testing::TestDb;
use util::Server;

const SECRET: &str = "test-app-secret";

fn config(dir: &Path) {
    std::fs::write(
        dir.join("kairo.toml"),
        r#"[whatsapp]
app_secret = "test-app-secret"
verify_token = "test-verify-token"

[[whatsapp.accounts]]
waba_id = "102290129340398"
name = "Kairo Demo"
numbers = [
  { id = "106540352242922", display_number = "+1 555-000-1111" },
  { id = "106540352242933", display_number = "+1 555-000-2222" },
]
"#,
    )
    .expect("write config");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture exists")
}

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn post(server: &Server, body: Vec<u8>) -> (u16, String) {
    let signature = sign(&body, SECRET);
    server.post("/webhooks/whatsapp", &[("x-hub-signature-256", signature)], body).await
}

/// Waits (under the hang guard) until the applier has emptied the journal.
async fn settled(url: &str) {
    let store = Store::open(&DatabaseUrl::new(url)).await.expect("open");
    let deadline = tokio::time::Instant::now() + util::HANG_GUARD;
    while store.unapplied_deliveries().await.expect("count") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the journal was not applied in time");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.close().await;
}

async fn stored_messages(url: &str) -> usize {
    settled(url).await;
    let store = Store::open(&DatabaseUrl::new(url)).await.expect("open");
    // Applied or not: `kairo serve`'s worker applies events to triggers.
    let events = store.events(10_000).await.expect("events");
    store.close().await;
    events.iter().filter(|e| e.kind == "inbound_message").count()
}

async fn event_count(url: &str) -> usize {
    settled(url).await;
    let store = Store::open(&DatabaseUrl::new(url)).await.expect("open");
    let events =
        store.events(10_000).await.expect("events").len() + store.unapplied_deliveries().await.expect("count") as usize;
    store.close().await;
    events
}

async fn every_fixture_is_accepted_and_stored(url: &str, dir: &Path) {
    let server = Server::start(dir, url).await;
    let files: Vec<String> = std::fs::read_dir(format!("{}/fixtures/whatsapp", env!("CARGO_MANIFEST_DIR")))
        .expect("fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("webhook_") && n != "webhook_malformed_missing_entry.json")
        .collect();
    assert!(files.len() >= 25, "{files:?}");
    for name in &files {
        let (status, body) = post(&server, fixture(name)).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    // 14 message fixtures, plus the 4 messages of the batch.
    assert_eq!(stored_messages(url).await, 14 + 4);
    let (code, logs) = server.terminate().await;
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test]
async fn every_signed_fixture_is_stored_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
    every_fixture_is_accepted_and_stored(&url, dir.path()).await;
}

#[tokio::test]
async fn every_signed_fixture_is_stored_on_postgres() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    every_fixture_is_accepted_and_stored(&db.raw_url(), dir.path()).await;
}

#[tokio::test]
async fn bad_signatures_and_bodies_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
    let server = Server::start(dir.path(), &url).await;
    let body = fixture("webhook_text_message.json");
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        ("missing signature", vec![], body.clone(), 401),
        ("empty signature", vec![("x-hub-signature-256", String::new())], body.clone(), 401),
        ("sha1 header only", vec![("x-hub-signature", "sha1=0123".into())], body.clone(), 401),
        ("no digest", vec![("x-hub-signature-256", "sha256=".into())], body.clone(), 403),
        ("wrong secret", vec![("x-hub-signature-256", sign(&body, "wrong-app-secret"))], body.clone(), 403),
        // The shared fixtures' documented signature of the file without its final newline.
        (
            "trailing newline removed",
            vec![("x-hub-signature-256", sign(&body[..body.len() - 1], SECRET))],
            body.clone(),
            403,
        ),
        (
            "re-serialised body",
            vec![("x-hub-signature-256", sign(&body, SECRET))],
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&body).expect("json")).expect("json"),
            403,
        ),
    ];
    for (what, headers, sent, expected) in cases {
        let (status, answer) = server.post("/webhooks/whatsapp", &headers, sent).await;
        assert_eq!(status, expected, "{what}: {answer}");
        let error: serde_json::Value = serde_json::from_str(&answer).expect("JSON error body");
        assert!(error["error"]["code"].is_string(), "{what}: {answer}");
    }
    // Signed but malformed: 400.
    for bad in [
        fixture("webhook_malformed_missing_entry.json"),
        b"{not json".to_vec(),
        b"{\"object\":\"page\",\"entry\":[]}".to_vec(),
    ] {
        assert_eq!(post(&server, bad).await.0, 400);
    }
    // Too big: 413, before anything is parsed.
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(post(&server, huge).await.0, 413);
    assert_eq!(event_count(&url).await, 0, "nothing was stored");
    let (_, logs) = server.terminate().await;
    assert!(!logs.contains(SECRET), "the app secret leaked into the logs");
    assert!(!logs.contains("Ana Souza"), "a refused body was logged");
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let server = Server::start(dir.path(), "sqlite://kairo.db").await;
    let ok = server
        .get_text("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=test-verify-token")
        .await;
    assert_eq!(ok, (200, "1158201444".to_string()));
    let wrong = server.get_text("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope").await;
    assert_eq!(wrong.0, 403);
    let mode = server
        .get_text("/webhooks/whatsapp?hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=test-verify-token")
        .await;
    assert_eq!(mode.0, 403);
    server.terminate().await;
}

#[tokio::test]
async fn the_same_delivery_posted_twice_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
    let server = Server::start(dir.path(), &url).await;
    let (a, b) = tokio::join!(
        post(&server, fixture("webhook_text_message.json")),
        post(&server, fixture("webhook_text_message.json"))
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 200);
    assert_eq!(stored_messages(&url).await, 1);
    server.terminate().await;
}

#[tokio::test]
async fn without_an_app_secret_the_webhook_answers_503() {
    // An account is configured (so this is no sandbox), but no app secret.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("kairo.toml"),
        "[[whatsapp.accounts]]\nwaba_id = \"102290129340398\"\nnumbers = [{ id = \"106540352242922\", display_number = \"+1 555-000-1111\" }]\n",
    )
    .expect("write config");
    let server = Server::start(dir.path(), "sqlite://kairo.db").await;
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 503);
    server.terminate().await;
}

#[tokio::test]
async fn with_no_account_the_sandbox_webhook_takes_messages_signed_with_the_sandbox_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "sqlite://kairo.db").await;
    // The fixtures' secret is not the sandbox's: refused, nothing stored.
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 403);
    let body = fixture("webhook_text_message.json");
    let signature = sign(&body, "kairo-sandbox-app-secret");
    let (status, text) = server.post("/webhooks/whatsapp", &[("x-hub-signature-256", signature)], body).await;
    assert_eq!(status, 200, "{text}");
    let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
    settled(&url).await;
    assert_eq!(stored_messages(&url).await, 1);
    server.terminate().await;
}

#[tokio::test]
async fn a_database_failure_answers_503_and_the_retry_stores_the_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let path = dir.path().join("kairo.db");
    let url = format!("sqlite://{}", path.display());
    let server = Server::start(dir.path(), &url).await;
    // Another process holds SQLite's write lock until we close its stdin,
    // longer than the server's busy timeout.
    let mut blocker = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read(); c.execute('ROLLBACK')",
            &path.display().to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(blocker.stdout.as_mut().expect("piped")), &mut line)
        .expect("the blocker reports");
    assert_eq!(line.trim(), "locked");
    let (status, body) = post(&server, fixture("webhook_text_message.json")).await;
    assert_eq!(status, 503, "{body}");
    drop(blocker.stdin.take()); // releases the lock
    blocker.wait().expect("blocker ends");
    assert_eq!(stored_messages(&url).await, 0);
    // Meta delivers again; now it is stored.
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 200);
    assert_eq!(stored_messages(&url).await, 1);
    server.terminate().await;
}

#[tokio::test]
async fn a_postgres_failure_answers_503_and_the_retry_stores_the_delivery() {
    use raw_sql::exec;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let server = Server::start(dir.path(), &db.raw_url()).await;
    // The journal the webhook commits to disappears for a moment.
    exec(&db.raw_url(), "ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away").await;
    let (status, body) = post(&server, fixture("webhook_text_message.json")).await;
    assert_eq!(status, 503, "{body}");
    exec(&db.raw_url(), "ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries").await;
    assert_eq!(stored_messages(&db.raw_url()).await, 0, "the failed delivery left nothing behind");
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 200);
    assert_eq!(stored_messages(&db.raw_url()).await, 1);
    server.terminate().await;
}

#[tokio::test]
async fn a_delivery_answered_200_is_applied_once_the_inbox_tables_are_back() {
    use raw_sql::exec;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let server = Server::start(dir.path(), &db.raw_url()).await;
    exec(&db.raw_url(), "ALTER TABLE messages RENAME TO messages_away").await;
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 200, "journaled, so answered");
    let store = Store::open(&DatabaseUrl::new(&db.raw_url())).await.expect("open");
    assert_eq!(store.unapplied_deliveries().await.expect("count"), 1);
    exec(&db.raw_url(), "ALTER TABLE messages_away RENAME TO messages").await;
    assert_eq!(stored_messages(&db.raw_url()).await, 1, "applied after the failure, exactly once");
    store.close().await;
    server.terminate().await;
}

#[tokio::test]
async fn a_journaled_delivery_survives_sigkill_and_is_applied_after_restart() {
    use raw_sql::exec;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    let mut server = Server::start(dir.path(), &db.raw_url()).await;
    // Keep the applier from finishing, so the delivery is only in the journal.
    exec(&db.raw_url(), "ALTER TABLE messages RENAME TO messages_away").await;
    assert_eq!(post(&server, fixture("webhook_text_message.json")).await.0, 200);
    server.child.start_kill().expect("SIGKILL");
    let _ = server.child.wait().await;
    exec(&db.raw_url(), "ALTER TABLE messages_away RENAME TO messages").await;
    let restarted = Server::start(dir.path(), &db.raw_url()).await;
    assert_eq!(stored_messages(&db.raw_url()).await, 1);
    restarted.terminate().await;
}

/// Raw SQL against a test database, from outside the server.
mod raw_sql {
    pub async fn exec(url: &str, sql: &'static str) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("statement runs");
    }
}
