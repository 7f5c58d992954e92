//! The Cloud API channel and the catalogue sync against a mock Graph API on
//! loopback (wiremock) that answers with the fixtures and misbehaves on
//! demand: every error class, 429, bursts of 5xx, slow answers, dropped
//! connections.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kairo_core::outbound::{FailureKind, Outbound, OutboundTemplate, OutboundText};
use kairo_core::secret::Secret;
use kairo_store::store_test;
use kairo_store::*;
use kairo_whatsapp::sync::{SyncAccount, SyncProgress, sync_account};
use kairo_whatsapp::{CloudApiChannel, GraphClient, GraphSettings};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NUMBER_1: &str = "106540352242922";
const NUMBER_2: &str = "106540352242933";
const WABA: &str = "102290129340398";
const TOKEN: &str = "test-access-token";
const OK_WAMID: &str = "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBIMDA4ODhCQ0RCOUJDNkQ1RUU1QTAA=";

fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).expect("fixture exists")).expect("fixture is JSON")
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_261_600, 0).single().expect("valid")
}

fn graph(base_url: &str, timeout: Duration) -> GraphClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    GraphClient::new(GraphSettings { base_url: base_url.into(), version: "v25.0".into(), timeout }).expect("client")
}

fn channel(server: &MockServer) -> CloudApiChannel {
    channel_at(&server.uri(), Duration::from_secs(5))
}

fn channel_at(base_url: &str, timeout: Duration) -> CloudApiChannel {
    let tokens = HashMap::from([(NUMBER_1.to_string(), Secret::new(TOKEN))]);
    CloudApiChannel::new(graph(base_url, timeout), tokens)
}

/// The message of `send_template_request.json`, as the runtime hands it over.
fn order_update() -> OutboundTemplate {
    OutboundTemplate {
        idempotency_key: "k1".into(),
        number_id: NUMBER_1.into(),
        to: "+1 555 123 4567".into(),
        template: "order_update".into(),
        language: "en_US".into(),
        header: Some(json!({ "image": { "link": "https://cdn.example.com/orders/KA-1042.jpg" } })),
        body: Some(json!(["Ana", "KA-1042"])),
        buttons: vec![json!({ "index": 0, "payload": "talk_to_agent" }), json!({ "index": 1, "text": "KA-1042" })],
        callback_data: "kairo:enr_8f2c1d:step_send_order_update:att_1".into(),
    }
}

fn messages_path() -> String {
    format!("/v25.0/{NUMBER_1}/messages")
}

#[tokio::test]
async fn a_template_send_has_the_documented_body_and_returns_the_wamid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(fixture("send_template_request.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("send_response_ok.json")))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = channel(&server).send_template(&order_update()).await.expect("sent");
    assert_eq!(receipt.wamid, OK_WAMID);
    assert_eq!(receipt.message_status.as_deref(), Some("accepted"));
}

#[tokio::test]
async fn named_parameters_carry_their_names() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(body_json(fixture("send_template_named_params_request.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("send_response_ok.json")))
        .expect(1)
        .mount(&server)
        .await;
    let message = OutboundTemplate {
        template: "welcome_optin".into(),
        to: "15551234567".into(),
        header: None,
        body: Some(json!({ "first_name": "Ana", "store_name": "Kairo Demo Store" })),
        buttons: vec![json!({ "index": 0, "payload": "stop_promotions" })],
        callback_data: String::new(),
        ..order_update()
    };
    channel(&server).send_template(&message).await.expect("sent");
}

#[tokio::test]
async fn a_text_reply_has_the_documented_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(body_json(fixture("send_text_request.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("send_text_response_ok.json")))
        .expect(1)
        .mount(&server)
        .await;
    let text = OutboundText {
        idempotency_key: "k2".into(),
        number_id: NUMBER_1.into(),
        to: "15551234567".into(),
        text: "Hi Ana! Yes, we ship to Lisbon in 2-3 business days.".into(),
        reply_to: Some("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQNjRGQUNBMkRDQkI4NTVCRURDOEMA=".into()),
        callback_data: String::new(),
    };
    let receipt = channel(&server).send_text(&text).await.expect("sent");
    assert!(receipt.wamid.starts_with("wamid."), "{receipt:?}");
}

#[tokio::test]
async fn parameters_lose_newlines_tabs_and_long_space_runs() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("send_response_ok.json")))
        .mount(&server)
        .await;
    let message = OutboundTemplate { body: Some(json!(["Ana\nSouza", "a\tb     c  d"])), ..order_update() };
    channel(&server).send_template(&message).await.expect("sent");
    let sent: Value = server.received_requests().await.expect("recorded")[0].body_json().expect("json");
    let params = &sent["template"]["components"][1]["parameters"];
    assert_eq!(params[0]["text"], "Ana Souza");
    assert_eq!(params[1]["text"], "a b c  d");
}

#[tokio::test]
async fn a_held_template_is_accepted_with_its_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("send_response_held.json")))
        .mount(&server)
        .await;
    let receipt = channel(&server).send_template(&order_update()).await.expect("accepted");
    assert_eq!(receipt.message_status.as_deref(), Some("held_for_quality_assessment"));
}

#[tokio::test]
async fn every_error_fixture_is_classified_by_its_code() {
    let cases = [
        ("error_130429_rate_limit.json", 400, FailureKind::Throttled),
        ("error_131056_pair_rate_limit.json", 400, FailureKind::Throttled),
        // Meta says "try again", but the message may have gone out.
        ("error_131000_generic.json", 500, FailureKind::Unknown),
        ("error_131026_undeliverable.json", 400, FailureKind::Permanent),
        ("error_131047_reengagement.json", 400, FailureKind::Permanent),
        ("error_132000_param_mismatch.json", 400, FailureKind::Permanent),
        ("error_132001_template_missing.json", 404, FailureKind::Permanent),
        ("error_190_token_expired.json", 401, FailureKind::Auth),
        ("error_100_unknown_phone_number_id.json", 400, FailureKind::Auth),
    ];
    for (name, status, kind) in cases {
        let server = MockServer::start().await;
        let body = fixture(name);
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let error = channel(&server).send_template(&order_update()).await.expect_err(name);
        assert_eq!(error.kind, kind, "{name}: {error}");
        let code = body["error"]["code"].as_i64().expect("code");
        assert!(error.message.contains(&format!("WhatsApp error {code}")), "{name}: {}", error.message);
        assert!(!error.message.contains(TOKEN), "no token in errors");
    }
}

#[tokio::test]
async fn a_pair_rate_limit_waits_at_least_six_seconds_and_an_expired_token_says_what_to_do() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(fixture("error_131056_pair_rate_limit.json")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(fixture("error_190_token_expired.json")))
        .mount(&server)
        .await;
    let channel = channel(&server);
    let error = channel.send_template(&order_update()).await.expect_err("pair limit");
    assert_eq!(error.retry_after, Some(Duration::from_secs(6)));
    let error = channel.send_template(&order_update()).await.expect_err("expired");
    assert!(error.message.contains("KAIRO_WHATSAPP_ACCESS_TOKEN"), "{}", error.message);
}

#[tokio::test]
async fn a_bare_429_is_a_limit_with_the_wait_it_names() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .mount(&server)
        .await;
    let error = channel(&server).send_template(&order_update()).await.expect_err("throttled");
    assert_eq!(error.kind, FailureKind::Throttled);
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_5xx_without_a_graph_error_leaves_a_send_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .mount(&server)
        .await;
    let error = channel(&server).send_template(&order_update()).await.expect_err("502");
    assert_eq!(error.kind, FailureKind::Unknown, "{error}");
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_leaves_a_send_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("send_response_ok.json"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let error = channel_at(&server.uri(), Duration::from_millis(300))
        .send_template(&order_update())
        .await
        .expect_err("timed out");
    assert_eq!(error.kind, FailureKind::Unknown, "{error}");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1, "sent once, never again");
}

#[tokio::test]
async fn a_connection_dropped_after_the_request_was_read_leaves_a_send_unknown() {
    // A server that reads the whole request and hangs up without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"messaging_product\"") {
            let n = socket.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        drop(socket);
        seen
    });
    let error = channel_at(&format!("http://{addr}"), Duration::from_secs(5))
        .send_template(&order_update())
        .await
        .expect_err("dropped");
    assert_eq!(error.kind, FailureKind::Unknown, "{error}");
    let seen = requests.await.expect("server task");
    assert!(String::from_utf8_lossy(&seen).contains("order_update"), "the request reached the server");
}

#[tokio::test]
async fn a_refused_connection_is_temporary_nothing_was_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let error = channel_at(&format!("http://{addr}"), Duration::from_secs(2))
        .send_template(&order_update())
        .await
        .expect_err("refused");
    assert_eq!(error.kind, FailureKind::Temporary, "{error}");
}

#[tokio::test]
async fn a_number_without_a_token_is_an_operator_problem() {
    let server = MockServer::start().await;
    let message = OutboundTemplate { number_id: NUMBER_2.into(), ..order_update() };
    let error = channel(&server).send_template(&message).await.expect_err("no token");
    assert_eq!(error.kind, FailureKind::Auth);
    assert!(server.received_requests().await.expect("recorded").is_empty());
}

/// Mounts the two template pages and the number list of the fixtures.
async fn mount_catalogue(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/phone_numbers")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("phone_numbers_list.json")))
        .mount(server)
        .await;
    let page1 = fixture("templates_list_page1.json");
    let after = page1["paging"]["cursors"]["after"].as_str().expect("cursor").to_string();
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/message_templates")))
        .and(query_param_is_missing("after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page1))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/message_templates")))
        .and(query_param("after", after.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("templates_list_page2.json")))
        .mount(server)
        .await;
}

fn account() -> SyncAccount {
    SyncAccount {
        waba_id: WABA.into(),
        name: "Demo".into(),
        token: Secret::new(TOKEN),
        numbers: vec![NUMBER_1.into(), NUMBER_2.into()],
    }
}

store_test!(sync_reads_every_page_and_skips_sample_templates, |store| {
    let server = MockServer::start().await;
    mount_catalogue(&server).await;
    let mut progress = Vec::new();
    let report =
        sync_account(&graph(&server.uri(), Duration::from_secs(5)), &store, &account(), t0(), |p| progress.push(p))
            .await
            .expect("sync");
    assert_eq!(report.templates, 8, "9 listed over two pages, one of them a sample: {report:?}");
    assert_eq!(report.samples_skipped, 1);
    assert_eq!(report.numbers, 2);
    assert_eq!(report.numbers_not_served, vec!["106540352242944".to_string()]);
    assert_eq!(report.pages, 3);
    assert!(progress.contains(&SyncProgress::TemplatesPage { templates: 9 }), "{progress:?}");

    let catalog = kairo_engine::registry::catalog(&store).await.expect("catalog");
    let templates = &catalog.accounts[0].templates;
    assert!(templates.iter().all(|t| !t.name.starts_with("sample_")));
    let paused = templates.iter().find(|t| t.name == "abandoned_cart").expect("page 2 stored");
    assert_eq!(paused.status, "PAUSED");
    let named = templates.iter().find(|t| t.name == "welcome_optin").expect("named");
    assert_eq!(named.parameter_format, "NAMED");
    assert_eq!(templates.iter().filter(|t| t.name == "order_update").count(), 2, "every language");

    let high = store.phone_number_by_graph_id(NUMBER_2).await.expect("read").expect("stored");
    assert_eq!(high.throughput_mps, 1000, "throughput HIGH");
    let standard = store.phone_number_by_graph_id(NUMBER_1).await.expect("read").expect("stored");
    assert_eq!(standard.throughput_mps, 80);
    assert_eq!(standard.messaging_limit_tier.as_deref(), Some("TIER_UNLIMITED"), "the portfolio's limit wins");
    assert!(store.phone_number_by_graph_id("106540352242944").await.expect("read").is_none());
});

store_test!(sync_retries_a_burst_of_5xx_and_marks_templates_no_longer_listed, |store| {
    let server = MockServer::start().await;
    // A template from an earlier sync that the account no longer lists.
    let account_row = store
        .upsert_account(NewAccount { waba_id: WABA.into(), name: "Demo".into(), portfolio_id: None }, t0())
        .await
        .expect("account");
    store
        .upsert_template(
            NewTemplate {
                account_id: account_row.id,
                graph_id: "1".into(),
                name: "retired_offer".into(),
                language: "en".into(),
                status: "APPROVED".into(),
                category: "MARKETING".into(),
                parameter_format: "POSITIONAL".into(),
                components: json!([]),
            },
            t0(),
        )
        .await
        .expect("template");
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{WABA}/phone_numbers")))
        .respond_with(ResponseTemplate::new(503).set_body_json(fixture("error_131000_generic.json")))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    mount_catalogue(&server).await;
    let report = sync_account(&graph(&server.uri(), Duration::from_secs(5)), &store, &account(), t0(), |_| {})
        .await
        .expect("sync after retries");
    assert_eq!(report.templates_gone, 1);
    assert_eq!(
        store
            .template_status(account_row.id, "retired_offer", "en")
            .await
            .expect("read")
            .map(|(status, _)| status)
            .as_deref(),
        Some("DELETED")
    );
});

#[tokio::test]
async fn sync_stops_on_an_expired_token_without_storing_anything() {
    let db = kairo_store::testing::TestDb::sqlite();
    let store = db.store().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(fixture("error_190_token_expired.json")))
        .expect(1)
        .mount(&server)
        .await;
    let err = sync_account(&graph(&server.uri(), Duration::from_secs(5)), &store, &account(), t0(), |_| {})
        .await
        .expect_err("expired token");
    let text = err.to_string();
    assert!(text.contains("190") && text.contains(WABA), "{text}");
    assert!(!text.contains(TOKEN));
    assert!(store.phone_number_by_graph_id(NUMBER_1).await.expect("read").is_none());
}

// 14.C15: a contact known only by its business-scoped user id is sent to
// with `recipient`, not `to` (API.md section 2).
#[tokio::test]
async fn a_contact_known_only_by_user_id_is_sent_to_with_recipient() {
    let server = MockServer::start().await;
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(None::<serde_json::Value>));
    let keep = recorded.clone();
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(move |request: &wiremock::Request| {
            *keep.lock().expect("lock") = Some(request.body_json().expect("json"));
            ResponseTemplate::new(200).set_body_json(fixture("send_response_ok.json"))
        })
        .expect(1)
        .mount(&server)
        .await;
    let message = OutboundTemplate { to: "US.13491208655302741918".into(), ..order_update() };
    channel(&server).send_template(&message).await.expect("sent");
    let body = recorded.lock().expect("lock").clone().expect("a request");
    assert_eq!(body["recipient"], "US.13491208655302741918");
    assert!(body.get("to").is_none(), "`to` would win over `recipient`: {body}");
}
