//! A broadcast: one template to many opted-in contacts from one number
//! at 1,000 messages per second (WhatsApp's high throughput), sent by real
//! `kairo worker` processes to a mock Graph API on loopback. Prints the
//! sustained rate against the number's limit, the busiest one-second
//! window (never above the limit), and duplicates and misses (none).
//!
//! Run with `scripts/bench-broadcast`. Environment: BENCH_RECIPIENTS
//! (default 100,000), BENCH_WORKERS (worker processes, default 1),
//! BENCH_BACKEND (`sqlite`, the default, or `postgres`: a fresh database on
//! KAIRO_TEST_POSTGRES_URL's server).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use kairo_core::status::EnrollmentStatus;
use kairo_engine::testing::{busiest_second, prepare_broadcast};
use kairo_store::Store;
use kairo_store::testing::TestDb;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const NUMBER: &str = "111111111";
const THROUGHPUT: i32 = 1_000;

/// What the mock saw: when each send arrived and to whom.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Instant, String)>>,
    next: AtomicU64,
}

fn main() {
    // `cargo bench` passes --bench; test runners list or run bench targets
    // without it, and there is nothing to run then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("BENCH_RECIPIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let workers: usize = std::env::var("BENCH_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let db = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("postgres") => TestDb::postgres().await,
        _ => TestDb::sqlite(),
    };
    let store = db.store().await;
    let recorder = Arc::new(Recorder::default());
    let graph_url = start_mock(recorder.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "kairo broadcast bench: {n} recipients, one number at {THROUGHPUT} msg/s, {workers} worker process(es), {}",
        if db.raw_url().starts_with("postgres") { "PostgreSQL" } else { "SQLite" }
    );
    let prepared = Instant::now();
    prepare_broadcast(&store, dir.path(), &graph_url, NUMBER, THROUGHPUT, n, |done| {
        eprint!("\r  enrolled {done}/{n}   ")
    })
    .await;
    eprintln!();
    println!("  prepared {n} opted-in contacts and enrollments in {:.0}s", prepared.elapsed().as_secs_f64());

    let mut children: Vec<Child> = (0..workers).map(|_| spawn_worker(dir.path(), &db.raw_url())).collect();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = recorder.seen.lock().expect("lock").len();
        eprint!("\r  {seen}/{n} sent ({:.0}s)   ", started.elapsed().as_secs_f64());
        if seen >= n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "the broadcast did not finish in 30 minutes");
    }
    eprintln!();
    // Let the workers commit the last sends before reading the database.
    let settle = Instant::now();
    while completed(&store).await < n as u64 && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    let seen = recorder.seen.lock().expect("lock").clone();
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for (_, to) in &seen {
        *per_recipient.entry(to.as_str()).or_default() += 1;
    }
    let duplicates: usize = per_recipient.values().map(|k| k - 1).sum();
    let missing = n - per_recipient.len();
    let mut times: Vec<Instant> = seen.iter().map(|(t, _)| *t).collect();
    let busiest = busiest_second(&mut times);
    let span = times.last().expect("sends").duration_since(times[0]).as_secs_f64();
    let rate = (seen.len() - 1) as f64 / span;
    println!(
        "RESULT broadcast: {} sends in {span:.1}s = {rate:.0} msg/s ({:.1}% of {THROUGHPUT}/s); busiest one-second window {busiest} (limit {THROUGHPUT}); duplicates {duplicates}; missing {missing}; enrollments completed {}",
        seen.len(),
        rate / f64::from(THROUGHPUT) * 100.0,
        completed(&store).await
    );
}

async fn completed(store: &Store) -> u64 {
    let counts = store.enrollment_counts(None).await.expect("counts");
    counts.iter().filter(|(s, _)| *s == EnrollmentStatus::Completed).map(|(_, n)| n).sum()
}

/// The mock Graph API's send endpoint, on a loopback port.
async fn start_mock(recorder: Arc<Recorder>) -> String {
    async fn send(State(recorder): State<Arc<Recorder>>, Json(body): Json<Value>) -> Json<Value> {
        let to = body["to"].as_str().unwrap_or_default().to_string();
        recorder.seen.lock().expect("lock").push((Instant::now(), to.clone()));
        let n = recorder.next.fetch_add(1, Ordering::Relaxed);
        Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": to }],
            "messages": [{ "id": format!("wamid.bench.{n}"), "message_status": "accepted" }]
        }))
    }
    let app =
        axum::Router::new().route(&format!("/v25.0/{NUMBER}/messages"), axum::routing::post(send)).with_state(recorder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("mock serves") });
    format!("http://{address}")
}

fn spawn_worker(dir: &Path, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kairo"))
        .arg("worker")
        .current_dir(dir)
        .env("KAIRO_DATABASE_URL", url)
        .env("KAIRO_WORKER_SLOTS", std::env::var("BENCH_SLOTS").unwrap_or_else(|_| "128".into()))
        .env("KAIRO_WORKER_BATCH", "256")
        .env("RUST_LOG", std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "error".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo worker starts")
}
