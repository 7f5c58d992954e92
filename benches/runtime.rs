//! Step throughput of `kairo worker` processes: a 5-step workflow of no-op
//! steps (branches), N enrollments prepared up front, then workers started
//! and timed from the first step's start to the last step's finish (both
//! read back from the database, so process start-up is not counted).
//!
//! Run with `scripts/bench-runtime` (release build, PostgreSQL set up).
//! Environment: BENCH_ENROLLMENTS (default 4000), BENCH_POSTGRES_URL (an
//! admin URL that may CREATE DATABASE; PostgreSQL runs are skipped without
//! it), BENCH_ONLY (`sqlite`, `postgres`).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_engine::runtime::{Engine, EngineConfig, Enrolled, RecordingHttp, RecordingOutbound};
use kairo_engine::store::status::EnrollmentStatus;
use kairo_engine::store::{DatabaseUrl, NewContact, Store};
use kairo_engine::{Clock, SystemClock};
use tokio::process::{Child, Command};

const WORKFLOW: &str = r#"id: noop
name: Five no-op steps
triggers:
  - api: {}
steps:
  - id: s1
    branch:
      - if: 'contact.plan == "never"'
        then: s5
      - else: s2
  - id: s2
    branch:
      - if: 'contact.plan == "never"'
        then: s5
      - else: s3
  - id: s3
    branch:
      - if: 'contact.plan == "never"'
        then: s5
      - else: s4
  - id: s4
    branch:
      - if: 'contact.plan == "never"'
        then: s5
      - else: s5
  - id: s5
    branch:
      - if: 'contact.plan == "never"'
        then: s1
"#;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let enrollments: usize = std::env::var("BENCH_ENROLLMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let postgres = std::env::var("BENCH_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    println!("kairo runtime bench: {enrollments} enrollments x 5 no-op steps, machine: {} cores", num_cpus());
    let mut results = Vec::new();
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        results.push(("sqlite, 1 worker process".to_string(), scenario(&url, enrollments, 1).await));
    }
    if let Some(admin) = postgres.filter(|_| only.is_empty() || only == "postgres") {
        for workers in [1, 4] {
            let (url, name) = create_database(&admin).await;
            results
                .push((format!("postgres, {workers} worker process(es)"), scenario(&url, enrollments, workers).await));
            drop_database(&admin, &name).await;
        }
    }
    println!();
    for (name, steps_per_second) in &results {
        println!("RESULT kairo steps/s {name}: {steps_per_second:.0}");
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Prepares `enrollments` enrollments on `url`, runs `workers` processes
/// until every one completed, returns steps per second.
async fn scenario(url: &str, enrollments: usize, workers: usize) -> f64 {
    let store = Store::open(&DatabaseUrl::new(url)).await.expect("database opens");
    store.migrate().await.expect("migrations");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("workflows")).expect("workflows dir");
    std::fs::write(dir.path().join("workflows/noop.yaml"), WORKFLOW).expect("write");
    let now = SystemClock.now();
    let report = store.load_workflows(&dir.path().join("workflows"), None, now).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let prepared = Instant::now();
    let contacts: Vec<NewContact> = (0..enrollments)
        .map(|i| NewContact { phone: Some(format!("+1 555 {i:07}")), ..NewContact::default() })
        .collect();
    let ids = store.import_contacts(contacts, None, now).await.expect("contacts");
    let enroller = Engine::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(RecordingOutbound::default()),
        Arc::new(RecordingHttp::default()),
        EngineConfig { owner: "bench-enroller".into(), ..EngineConfig::default() },
    );
    enroller.refresh().await.expect("refresh");
    let enrolled = enroller.enroll_many("noop", &ids, serde_json::json!({})).await.expect("enroll");
    assert!(enrolled.iter().all(|e| matches!(e, Enrolled::Enrolled { .. })));
    println!("  prepared {enrollments} enrollments in {:.1}s", prepared.elapsed().as_secs_f64());

    let mut children: Vec<Child> = (0..workers).map(|_| spawn_worker(dir.path(), url)).collect();
    let total = enrollments as u64;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = store.enrollment_counts(None).await.expect("counts");
        let done: u64 = counts.iter().filter(|(s, _)| *s == EnrollmentStatus::Completed).map(|(_, n)| n).sum();
        eprint!("\r  {done}/{total} enrollments completed ({:.0}s)   ", started.elapsed().as_secs_f64());
        if done >= total {
            eprintln!();
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "the run did not finish in 15 minutes");
    }
    for child in &mut children {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let (steps, first, last) = store.step_span().await.expect("span");
    let seconds = (last.expect("a step finished") - first.expect("a step started")).num_milliseconds() as f64 / 1000.0;
    let rate = steps as f64 / seconds.max(0.001);
    println!("  {steps} steps in {seconds:.2}s: {rate:.0} steps/s with {workers} worker process(es)");
    store.close().await;
    rate
}

fn spawn_worker(dir: &Path, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kairo"))
        .arg("worker")
        .current_dir(dir)
        .env("KAIRO_DATABASE_URL", url)
        .env("KAIRO_WORKER_SLOTS", std::env::var("BENCH_SLOTS").unwrap_or_else(|_| "64".into()))
        .env("KAIRO_WORKER_BATCH", "256")
        .env("KAIRO_WORKER_POLL_MS", "20")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo worker starts")
}

async fn create_database(admin: &str) -> (String, String) {
    use sqlx::Connection;
    let name = format!("kairo_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create");
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    (format!("{base}/{name}"), name)
}

async fn drop_database(admin: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("admin connection");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await;
}
