//! Real `kairo worker` processes sending through the WhatsApp Cloud API
//! channel to a mock Graph API on loopback: the number's throughput holds
//! across processes (no one-second window over it) and every contact gets
//! its message exactly once.

mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairo_core::status::EnrollmentStatus;
use kairo_engine::testing::{busiest_second, prepare_broadcast};
use kairo_store::testing::TestDb;
use serde_json::json;
use tokio::process::Child;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const NUMBER: &str = "111111111";
const THROUGHPUT: i32 = 100;
/// Guards against a run that never finishes; not a speed assertion.
const FINISH_GUARD: Duration = Duration::from_secs(180);

/// The mock's answer to a send: the time it arrived and to whom, and a
/// fresh wamid.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    next: Arc<AtomicU64>,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: serde_json::Value = request.body_json().expect("a JSON body");
        let to = body["to"].as_str().unwrap_or_default().to_string();
        self.seen.lock().expect("lock").push((Instant::now(), to.clone()));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": to }],
            "messages": [{ "id": format!("wamid.mock.{n}"), "message_status": "accepted" }]
        }))
    }
}

fn spawn_worker(dir: &std::path::Path, url: &str) -> Child {
    util::worker_command(dir, url).spawn().expect("kairo worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgres_keep_the_numbers_rate_and_send_each_once() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let server = MockServer::start().await;
    let recorder = Recorder::default();
    Mock::given(method("POST"))
        .and(path(format!("/v25.0/{NUMBER}/messages")))
        .and(header("authorization", "Bearer test-access-token"))
        .respond_with(recorder.clone())
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let contacts = 1_000;
    prepare_broadcast(&store, dir.path(), &server.uri(), NUMBER, THROUGHPUT, contacts, |_| {}).await;

    let mut workers = [spawn_worker(dir.path(), &db.raw_url()), spawn_worker(dir.path(), &db.raw_url())];
    let started = Instant::now();
    loop {
        let counts = store.enrollment_counts(None).await.expect("counts");
        let done: u64 = counts.iter().filter(|(s, _)| *s == EnrollmentStatus::Completed).map(|(_, n)| n).sum();
        let failed: u64 = counts.iter().filter(|(s, _)| *s == EnrollmentStatus::Failed).map(|(_, n)| n).sum();
        assert_eq!(failed, 0, "{counts:?}");
        if done == contacts as u64 {
            break;
        }
        assert!(started.elapsed() < FINISH_GUARD, "sends did not finish: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for worker in &mut workers {
        worker.start_kill().expect("stop");
        worker.wait().await.expect("reaped");
    }

    let seen = recorder.seen.lock().expect("lock").clone();
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for (_, to) in &seen {
        *per_recipient.entry(to.as_str()).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), contacts, "every contact got the message");
    assert!(per_recipient.values().all(|n| *n == 1), "nobody got it twice");
    let mut times: Vec<Instant> = seen.iter().map(|(t, _)| *t).collect();
    let busiest = busiest_second(&mut times);
    assert!(busiest <= THROUGHPUT as usize, "{busiest} sends in one second, over the number's {THROUGHPUT}/s");
    eprintln!("{} sends; busiest second {busiest} (limit {THROUGHPUT})", seen.len());
}
