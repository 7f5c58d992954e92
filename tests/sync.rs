//! `kairo sync` and `kairo serve` against a loopback mock Graph API that
//! answers with the fixtures of the real API: the command runs as a
//! process (it used to panic for want of a TLS provider), and a server on
//! a fresh database loads the workflows its first sync made valid (#15 17).

mod util;

use std::path::Path;
use std::time::Duration;

use kairo_store::testing::TestDb;
use serde_json::Value;
use util::{HANG_GUARD, Server, client, kairo};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WABA: &str = "102290129340398";

fn fixture(name: &str) -> Value {
    let file = format!("{}/fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(file).expect("fixture")).expect("fixture JSON")
}

/// The Graph API's number and template lists, for one token only.
async fn graph() -> MockServer {
    let server = MockServer::start().await;
    let auth = || header("authorization", "Bearer test-token");
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/phone_numbers")))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("phone_numbers_list.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/message_templates")))
        .and(query_param("after", "dGVtcGxhdGUtY3Vyc29yLWFmdGVyLXBhZ2UtMQ=="))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("templates_list_page2.json")))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/message_templates")))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("templates_list_page1.json")))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(fixture("error_190_token_expired.json")))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

fn config(dir: &Path, graph_url: &str, token: &str) {
    let toml = format!(
        "[whatsapp]\ngraph_url = \"{graph_url}\"\napp_secret = \"s3cret\"\nverify_token = \"v3rify\"\n\n\
         [[whatsapp.accounts]]\nwaba_id = \"{WABA}\"\nname = \"Acme\"\naccess_token = \"{token}\"\n\
         numbers = [{{ id = \"106540352242922\", display_number = \"+1 555-000-1111\" }}]\n"
    );
    std::fs::write(dir.join("kairo.toml"), toml).expect("config");
}

#[tokio::test]
async fn sync_runs_as_a_process_and_reads_every_page() {
    let graph = graph().await;
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), &graph.uri(), "test-token");
    let url = db.raw_url();
    assert!(kairo(dir.path()).args(["--database", &url, "migrate"]).output().expect("runs").status.success());
    let out = kairo(dir.path()).args(["--database", &url, "sync"]).output().expect("kairo sync runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(&format!("account {WABA}: 1 numbers, 8 templates synced (1 sample templates skipped")),
        "{stdout}"
    );
    assert!(stdout.contains("numbers not in kairo.toml, not served: 106540352242933, 106540352242944"), "{stdout}");
    let numbers = kairo(dir.path()).args(["--database", &url, "numbers"]).output().expect("kairo numbers runs");
    assert!(String::from_utf8_lossy(&numbers.stdout).contains("+1 555-000-1111"), "{numbers:?}");

    // A revoked token: the command fails saying so, without a panic.
    config(dir.path(), &graph.uri(), "revoked-token");
    let out = kairo(dir.path()).args(["--database", &url, "sync"]).output().expect("kairo sync runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error:") && !stderr.contains("panicked"), "{stderr}");
}

/// A workflow naming a template only the Graph API knows is rejected by the
/// first load of a fresh database, and loaded once the first sync brings
/// the template, well before the periodic reload.
#[tokio::test]
async fn serve_loads_again_after_its_first_sync() {
    let graph = graph().await;
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), &graph.uri(), "test-token");
    std::fs::create_dir(dir.path().join("workflows")).expect("mkdir");
    let workflow = "id: pay-reminder\nname: Payment reminder\ntriggers:\n  - api: {}\nsteps:\n  - id: remind\n    \
        send_template:\n      number: \"+1 555-000-1111\"\n      template: payment_due\n      language: en_US\n      \
        body: [\"{{contact.name}}\", \"$10\", \"today\"]\n";
    std::fs::write(dir.path().join("workflows/pay.yaml"), workflow).expect("write");
    let url = db.raw_url();
    assert!(kairo(dir.path()).args(["--database", &url, "migrate"]).output().expect("runs").status.success());
    let out = kairo(dir.path())
        .args(["--database", &url, "token", "create", "--name", "t", "--scope", "enroll"])
        .output()
        .expect("runs");
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    let server = Server::start(dir.path(), &url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20).min(HANG_GUARD);
    loop {
        let listed: Value = client()
            .get(format!("{}/v1/workflows", server.base_url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("json");
        let keys: Vec<&str> = listed["items"]
            .as_array()
            .map(|i| i.iter().filter_map(|w| w["key"].as_str()).collect())
            .unwrap_or_default();
        if keys.contains(&"pay-reminder") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never loaded after the sync: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.terminate().await;
}
