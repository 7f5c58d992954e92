//! Many enrollments waiting on durable timers: one `kairo worker` parks
//! them all, then fires every timer when it falls due. Prints the worker's
//! peak resident memory (its VmHWM) and how late the timers fired
//! (`fired_at - wake_at`, read back from the database).
//!
//! Run with `scripts/bench-timers`. Environment: BENCH_TIMERS (default
//! 1,000,000), BENCH_WAIT (the wait, default `5m`: timers fall due spread
//! over the time parking took), BENCH_DATABASE_URL (default: a SQLite file
//! in a temporary folder).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_core::clock::{Clock, SystemClock};
use kairo_core::status::EnrollmentStatus;
use kairo_engine::runtime::{Engine, EngineConfig, RecordingHttp, RecordingOutbound};
use kairo_store::{DatabaseUrl, NewContact, Store};
use tokio::process::{Child, Command};

fn main() {
    // `cargo bench` passes --bench; test runners list (--list) or run bench
    // targets without it: there are no tests here, and no bench to run then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("BENCH_TIMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let wait = std::env::var("BENCH_WAIT").unwrap_or_else(|_| "5m".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("timers.db").display()));
    println!("kairo timer bench: {n} enrollments waiting `{wait}` on {}", DatabaseUrl::new(&url));
    let store = Store::open(&DatabaseUrl::new(&url)).await.expect("database opens");
    store.migrate().await.expect("migrations");
    std::fs::create_dir(dir.path().join("workflows")).expect("workflows dir");
    let workflow = format!(
        "id: timers\nname: Timers\ntriggers:\n  - api: {{}}\nsteps:\n  - id: pause\n    wait:\n      for: {wait}\n"
    );
    std::fs::write(dir.path().join("workflows/timers.yaml"), workflow).expect("write");
    let now = SystemClock.now();
    let report =
        kairo_engine::registry::load_workflows(&store, &dir.path().join("workflows"), None, now).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    let prepared = Instant::now();
    let enroller = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(RecordingOutbound::default()),
        Arc::new(RecordingHttp::default()),
        EngineConfig { owner: "bench-enroller".into(), ..EngineConfig::default() },
    );
    enroller.refresh().await.expect("refresh");
    let chunk = 50_000;
    for start in (0..n).step_by(chunk) {
        let contacts: Vec<NewContact> = (start..(start + chunk).min(n))
            .map(|i| NewContact { phone: Some(format!("+1 555 {i:07}")), ..NewContact::default() })
            .collect();
        let ids = store.import_contacts(contacts, None, now).await.expect("contacts");
        enroller.enroll_many("timers", &ids, serde_json::json!({})).await.expect("enroll");
        eprint!("\r  enrolled {}/{n} ({:.0}s)   ", (start + chunk).min(n), prepared.elapsed().as_secs_f64());
    }
    eprintln!();
    println!("  prepared {n} enrollments in {:.0}s", prepared.elapsed().as_secs_f64());

    let mut worker = spawn_worker(dir.path(), &url);
    let pid = worker.id().expect("worker pid");
    let started = Instant::now();
    let mut all_waiting_rss = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = store.enrollment_counts(None).await.expect("counts");
        let count = |status| counts.iter().filter(|(s, _)| *s == status).map(|(_, n)| *n).sum::<u64>();
        let (waiting, completed) = (count(EnrollmentStatus::Waiting), count(EnrollmentStatus::Completed));
        let rss = memory_kib(pid, "VmRSS:");
        if waiting == n as u64 && all_waiting_rss.is_none() {
            all_waiting_rss = rss;
            println!(
                "  all {n} waiting after {:.0}s; worker RSS {} MiB",
                started.elapsed().as_secs_f64(),
                rss.unwrap_or(0) / 1024
            );
        }
        eprint!(
            "\r  {waiting} waiting, {completed} completed, worker RSS {} MiB ({:.0}s)   ",
            rss.unwrap_or(0) / 1024,
            started.elapsed().as_secs_f64()
        );
        if completed == n as u64 {
            eprintln!();
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "the run did not finish in an hour");
    }
    let peak = memory_kib(pid, "VmHWM:").unwrap_or(0);
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    let mut lateness = store.timer_lateness_ms().await.expect("lateness");
    lateness.sort_unstable();
    let pick = |q: f64| lateness[((lateness.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "RESULT timers: {} fired; lateness p50 {} ms, p99 {} ms, max {} ms; worker peak RSS {} MiB (with all waiting: {} MiB)",
        lateness.len(),
        pick(0.5),
        pick(0.99),
        lateness.last().copied().unwrap_or(0),
        peak / 1024,
        all_waiting_rss.unwrap_or(0) / 1024
    );
}

fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn spawn_worker(dir: &Path, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kairo"))
        .arg("worker")
        .current_dir(dir)
        .env("KAIRO_DATABASE_URL", url)
        .env("KAIRO_WORKER_SLOTS", "64")
        .env("KAIRO_WORKER_BATCH", "256")
        .env("RUST_LOG", std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "error".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo worker starts")
}
