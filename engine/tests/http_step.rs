//! The `http` step's client against loopback: a call that gets no answer
//! says why in the words of whoever runs the other side (#15 23).

use std::time::Duration;

use kairo_core::outbound::{HttpCall, HttpCaller};
use kairo_engine::runtime::http_client::ReqwestHttp;

fn call(url: String, timeout: Duration) -> HttpCall {
    HttpCall { method: "POST".into(), url, headers: vec![], body: Some(serde_json::json!({"a": 1})), timeout }
}

fn client() -> ReqwestHttp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ReqwestHttp::new().expect("a client")
}

#[tokio::test]
async fn a_refused_connection_is_named_and_retried() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let err = client().call(&call(format!("http://127.0.0.1:{port}/hook"), Duration::from_secs(5))).await;
    let err = err.expect_err("nothing listens");
    assert!(err.message.contains("connection refused"), "{}", err.message);
    assert!(!err.message.contains("error sending request"), "{}", err.message);
    assert_eq!(err.kind, kairo_core::outbound::FailureKind::Temporary);
}

#[tokio::test]
async fn a_service_that_never_answers_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/slow", listener.local_addr().expect("addr"));
    // Accepts and keeps the connection, never answering.
    let held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let err = client().call(&call(url, Duration::from_millis(300))).await.expect_err("no answer");
    assert!(err.message.contains("no answer within") && err.message.contains("timeout"), "{}", err.message);
    held.abort();
}
