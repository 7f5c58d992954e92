//! The HTTP API under load, against a real `kairo serve` (release) on
//! loopback:
//!
//! 1. bulk enrollment: BENCH_ROWS (default 100,000) NDJSON rows streamed in
//!    one upload; rows/s and the server's memory (RSS) during the upload;
//! 2. single enrollments at BENCH_RATE requests/s (default 500) for
//!    BENCH_SECONDS (default 10), sent open-loop: latency p50/p99/max;
//! 3. API-triggered runs end to end: BENCH_RUNS (default 10,000)
//!    enrollments into a one-step workflow from 64 connections, counted when
//!    the step has executed: runs/s.
//!
//! Run with `scripts/bench-api`. BENCH_BACKEND=postgres runs on a fresh
//! database on KAIRO_TEST_POSTGRES_URL's server (SQLite by default).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_core::status::EnrollmentStatus;
use kairo_store::testing::TestDb;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Enrolled in bulk and at a steady rate: waits a month, so the worker has
/// nothing to run while the API is measured.
const PARKED: &str = "id: bench-parked\nname: Bench parked\ntriggers:\n  - api: {}\nenrollment:\n  reenroll: always\n  concurrent: true\nsteps:\n  - id: later\n    wait:\n      for: 30d\n";
/// One step, executed as soon as the enrollment commits.
const ONE_STEP: &str = "id: bench-run\nname: Bench run\ntriggers:\n  - api: {}\nenrollment:\n  reenroll: always\n  concurrent: true\nsteps:\n  - id: mark\n    set_property:\n      last_run: \"{{trigger.n}}\"\n";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
    pid: u32,
}

async fn run() {
    let rows: usize = env_or("BENCH_ROWS", 100_000);
    let rate: u64 = env_or("BENCH_RATE", 500);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let runs: usize = env_or("BENCH_RUNS", 10_000);
    let db = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("postgres") => TestDb::postgres().await,
        _ => TestDb::sqlite(),
    };
    let backend = if db.raw_url().starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("workflows")).expect("workflows");
    std::fs::write(dir.path().join("workflows/bench-parked.yaml"), PARKED).expect("write");
    std::fs::write(dir.path().join("workflows/bench-run.yaml"), ONE_STEP).expect("write");
    let token = create_token(dir.path(), &db.raw_url()).await;
    let mut server = start(dir.path(), &db.raw_url()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("client");
    println!("kairo API bench: {backend}, kairo serve (release) on loopback, {} cores", num_cores());

    let store = db.store().await;
    bulk(&client, &server, &token, rows).await;
    caught_up(&store, "the bulk's first steps").await;
    steady(&client, &server, &token, rate, seconds).await;
    caught_up(&store, "the single enrollments' first steps").await;
    end_to_end(&client, &server, &token, &db, runs).await;
    store.close().await;
    let _ = server.child.kill().await;
}

/// Waits until the server's worker has run every step that is due (the
/// enrolled contacts' first steps), so that one phase's backlog is not
/// counted in the next.
async fn caught_up(store: &kairo_store::Store, what: &str) {
    let started = Instant::now();
    loop {
        let next = store.next_due_step().await.expect("the next due step");
        if next.is_none_or(|due| due > chrono::Utc::now()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "the worker never caught up with {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  (the worker ran {what} in the next {:.1}s)", started.elapsed().as_secs_f64());
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn create_token(dir: &Path, url: &str) -> String {
    // `token create` opens an existing database only: migrate it first.
    let migrated = Command::new(kairo())
        .args(["--database", url, "migrate"])
        .current_dir(dir)
        .output()
        .await
        .expect("kairo migrate");
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let out = Command::new(kairo())
        .args(["--database", url, "token", "create", "--name", "bench", "--scope", "admin"])
        .current_dir(dir)
        .output()
        .await
        .expect("kairo token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

fn kairo() -> String {
    format!("{}/target/release/kairo", env!("CARGO_MANIFEST_DIR"))
}

async fn start(dir: &Path, url: &str) -> Server {
    let mut child = Command::new(kairo())
        .args(["serve", "--listen", "127.0.0.1:0", "--database", url])
        .current_dir(dir)
        .env("KAIRO_API_RATE_LIMIT", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo serve starts");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next_line().await.expect("stdout").expect("a line");
    let base = line.strip_prefix("kairo listening on ").expect("the address").to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, base, pid }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn bulk(client: &reqwest::Client, server: &Server, token: &str, rows: usize) {
    let before = rss_mib(server.pid);
    let chunks = futures::stream::iter((0..rows).step_by(1000).map(move |start| {
        let mut text = String::with_capacity(1000 * 110);
        for i in start..(start + 1000).min(rows) {
            text.push_str(&format!(
                "{{\"key\":\"k{i}\",\"contact\":{{\"phone\":\"+4477{i:08}\",\"name\":\"Bulk {i}\"}},\"trigger\":{{\"n\":{i}}}}}\n"
            ));
        }
        Ok::<_, std::io::Error>(text)
    }));
    let pid = server.pid;
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak: f64 = 0.0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        }
    });
    let started = Instant::now();
    let answer = client
        .post(format!("{}/v1/enrollments/bulk?workflow=bench-parked", server.base))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("the upload is answered");
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.expect("JSON");
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0.0);
    assert!(status.is_success(), "bulk upload failed: {body}");
    let enrolled = body["rows_enrolled"].as_i64().unwrap_or(0);
    println!(
        "  bulk: {rows} NDJSON rows in {elapsed:.1}s = {:.0} rows/s ({enrolled} enrolled, {} failed); server RSS {before:.0} MiB before, peak {peak:.0} MiB, {:.0} MiB after",
        rows as f64 / elapsed,
        body["rows_failed"],
        rss_mib(server.pid)
    );
    println!("SUMMARY api-bulk: {:.0} rows/s, peak RSS {peak:.0} MiB", rows as f64 / elapsed);
}

async fn steady(client: &reqwest::Client, server: &Server, token: &str, rate: u64, seconds: u64) {
    let total = rate * seconds;
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..total {
        interval.tick().await;
        let (client, url, token) = (client.clone(), format!("{}/v1/enrollments", server.base), token.to_string());
        tasks.spawn(async move {
            let body =
                json!({"workflow": "bench-parked", "contact": {"phone": format!("+4479{i:08}")}, "trigger": {"n": i}});
            let sent = Instant::now();
            let answer = client.post(url).bearer_auth(token).json(&body).send().await;
            let ok = answer.as_ref().is_ok_and(|a| a.status().as_u16() == 201);
            (sent.elapsed(), ok)
        });
    }
    let sending = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (latency, ok) = done.expect("a request task");
        latencies.push(latency);
        errors += usize::from(!ok);
    }
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "  single enrollments: {total} at {rate}/s (sent over {sending:.1}s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {errors} errors",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    println!("SUMMARY api-latency: p99 {:.1} ms at {rate} requests/s ({errors} errors)", at(0.99));
}

async fn end_to_end(client: &reqwest::Client, server: &Server, token: &str, db: &TestDb, runs: usize) {
    let store = db.store().await;
    let workflow = store.workflow_by_key("bench-run").await.expect("query").expect("bench-run is loaded");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url, token, next) =
            (client.clone(), format!("{}/v1/enrollments", server.base), token.to_string(), next.clone());
        tasks.spawn(async move {
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    return errors;
                }
                let body =
                    json!({"workflow": "bench-run", "contact": {"phone": format!("+4478{i:08}")}, "trigger": {"n": i}});
                let answer = client.post(&url).bearer_auth(&token).json(&body).send().await;
                errors += usize::from(!answer.is_ok_and(|a| a.status().as_u16() == 201));
            }
        });
    }
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        errors += done.expect("a client task");
    }
    let requested = started.elapsed().as_secs_f64();
    loop {
        let counts = store.enrollment_counts(Some(workflow.id)).await.expect("counts");
        let completed = counts.iter().find(|(s, _)| *s == EnrollmentStatus::Completed).map_or(0, |(_, n)| *n);
        if completed as usize + errors >= runs {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "runs did not finish: {completed}/{runs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  end to end: {runs} API enrollments into a one-step workflow, all requests answered after {requested:.1}s, every step executed after {elapsed:.1}s = {:.0} runs/s ({errors} errors)",
        runs as f64 / elapsed
    );
    println!("SUMMARY api-runs: {:.0} API-triggered runs/s end to end", runs as f64 / elapsed);
    store.close().await;
}
