//! Step throughput of `kairo worker` processes: a 5-step workflow of no-op
//! steps (branches), N enrollments prepared up front, then workers started
//! and timed from the first step's start to the last step's finish (both
//! read back from the database, so process start-up is not counted).
//!
//! Run with `scripts/bench-runtime` (release build, PostgreSQL set up).
//! Environment: BENCH_ENROLLMENTS (default 4000), BENCH_POSTGRES_URL (an
//! admin URL that may CREATE DATABASE; PostgreSQL runs are skipped without
//! it), BENCH_ONLY (`sqlite`, `postgres`), BENCH_SLOTS (per worker, default
//! 64), BENCH_APALIS_JOBS (default 10,000).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_core::clock::{Clock, SystemClock};
use kairo_core::status::EnrollmentStatus;
use kairo_engine::runtime::{Engine, EngineConfig, Enrolled, RecordingHttp, RecordingOutbound};
use kairo_store::{DatabaseUrl, NewContact, Store};
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
    // `cargo bench` passes --bench; test runners list (--list) or run bench
    // targets without it: there are no tests here, and no bench to run then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let enrollments: usize = std::env::var("BENCH_ENROLLMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let postgres = std::env::var("BENCH_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    println!("kairo runtime bench: {enrollments} enrollments x 5 no-op steps, machine: {} cores", num_cpus());
    let mut results = Vec::new();
    let mut apalis = Vec::new();
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        results.push(("sqlite, 1 worker process".to_string(), scenario(&url, enrollments, 1).await));
        let jobs = apalis_jobs();
        for workers in [1, 4] {
            let rate = apalis_peer::sqlite(&dir.path().join(format!("apalis-{workers}.db")), jobs, workers).await;
            println!(
                "  apalis-sqlite: {jobs} no-op jobs, {workers} worker(s), batch {}: {rate:.0} jobs/s",
                apalis_peer::BATCH
            );
            apalis.push((format!("apalis-sqlite, {workers} worker(s) in one process"), rate));
        }
    }
    if let Some(admin) = postgres.filter(|_| only.is_empty() || only == "postgres") {
        for workers in [1, 4] {
            let (url, name) = create_database(&admin).await;
            results
                .push((format!("postgres, {workers} worker process(es)"), scenario(&url, enrollments, workers).await));
            drop_database(&admin, &name).await;
        }
        let jobs = apalis_jobs();
        for workers in [1, 4] {
            let (url, name) = create_database(&admin).await;
            let rate = apalis_peer::postgres(&url, jobs, workers).await;
            println!(
                "  apalis-postgres: {jobs} no-op jobs, {workers} worker(s), batch {}: {rate:.0} jobs/s",
                apalis_peer::BATCH
            );
            apalis.push((format!("apalis-postgres, {workers} worker(s) in one process"), rate));
            drop_database(&admin, &name).await;
        }
    }
    println!();
    for (name, steps_per_second) in &results {
        println!("RESULT kairo steps/s {name}: {steps_per_second:.0}");
    }
    for (name, jobs_per_second) in &apalis {
        println!("RESULT apalis no-op jobs/s {name}: {jobs_per_second:.0}");
    }
}

/// How many no-op jobs the apalis runs push (BENCH_APALIS_JOBS, default
/// 10,000): apalis-sqlite's claim query slows down as its table grows, so
/// its figure is taken on a table of this size.
fn apalis_jobs() -> usize {
    std::env::var("BENCH_APALIS_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
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
    let report =
        kairo_engine::registry::load_workflows(&store, &dir.path().join("workflows"), None, now).await.expect("load");
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

/// apalis's own throughput on the same stores, for the ratio: no-op jobs
/// pushed in bulk, `workers` apalis workers with one job in flight each,
/// timed from the workers' start until they have all stopped (so every
/// acknowledgement is committed), then checked against the `Done` count.
mod apalis_peer {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use apalis::prelude::*;
    use apalis_postgres::{Config as PgConfig, PostgresStorage};
    use apalis_sqlite::{Config as SqliteConfig, SqliteStorage};
    use serde::{Deserialize, Serialize};
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

    const QUEUE: &str = "kairo.bench.noop";
    /// apalis's default claim batch on both backends.
    pub const BATCH: usize = 10;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Noop(u64);

    #[derive(Debug, Clone)]
    struct Progress {
        done: Arc<AtomicUsize>,
        target: usize,
        finished: Arc<tokio::sync::Notify>,
    }

    async fn noop(_job: Noop, progress: Data<Progress>) -> Result<(), BoxDynError> {
        if progress.done.fetch_add(1, Ordering::AcqRel) + 1 == progress.target {
            progress.finished.notify_one();
        }
        Ok(())
    }

    fn jobs_stream(jobs: usize) -> impl futures::Stream<Item = Task<Noop>> + Unpin + Send {
        futures::stream::iter((0..jobs as u64).map(|i| TaskBuilder::new(Noop(i)).max_attempts(1).build()))
    }

    fn progress(jobs: usize) -> Progress {
        Progress { done: Arc::default(), target: jobs, finished: Arc::default() }
    }

    async fn until_done(finished: Arc<tokio::sync::Notify>) -> std::io::Result<()> {
        tokio::select! {
            () = finished.notified() => Ok(()),
            () = tokio::time::sleep(Duration::from_secs(900)) => Err(std::io::Error::other("apalis run timed out")),
        }
    }

    fn tag() -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    pub async fn sqlite(path: &Path, jobs: usize, workers: usize) -> f64 {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        // apalis's setup turns synchronous off on the connection it uses:
        // give it one of its own, then measure on FULL like Kairo's store.
        let setup = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.expect("open");
        SqliteStorage::<()>::setup(&setup).await.expect("apalis-sqlite setup");
        setup.close().await;
        let pool =
            SqlitePoolOptions::new().max_connections(workers as u32 + 2).connect_with(options).await.expect("open");
        let config = SqliteConfig::default().queue(QUEUE).batch_size(BATCH);
        let mut sink = SqliteStorage::<Noop>::new(&pool).with_config(config.clone());
        sink.push_all(jobs_stream(jobs)).await.expect("push");
        let progress = progress(jobs);
        let signal = until_done(progress.finished.clone());
        let (p, c, run) = (pool.clone(), config.clone(), tag());
        let monitor = Monitor::new().register_n(workers, move |index, _| {
            let backend =
                SqliteStorage::<Noop>::new(&p).with_config(c.clone()).poll_with_interval(Duration::from_millis(20));
            WorkerBuilder::new(format!("bench-{run}-{index}"))
                .backend(backend)
                .data(progress.clone())
                .concurrency(1)
                .build(noop)
        });
        let started = Instant::now();
        monitor.run_with_signal(signal).await.expect("apalis workers");
        let elapsed = started.elapsed();
        let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND status = 'Done'")
            .bind(QUEUE)
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(done as usize, jobs, "apalis-sqlite: every job done");
        pool.close().await;
        jobs as f64 / elapsed.as_secs_f64()
    }

    pub async fn postgres(url: &str, jobs: usize, workers: usize) -> f64 {
        let pool = PgPoolOptions::new().max_connections(workers as u32 + 2).connect(url).await.expect("connect");
        PostgresStorage::<()>::setup(&pool).await.expect("apalis-postgres setup");
        let config = PgConfig::default().queue(QUEUE).batch_size(BATCH);
        let mut sink = PostgresStorage::<Noop>::new(&pool).with_config(config.clone());
        sink.push_all(jobs_stream(jobs)).await.expect("push");
        let progress = progress(jobs);
        let signal = until_done(progress.finished.clone());
        let (p, c, run) = (pool.clone(), config.clone(), tag());
        let monitor = Monitor::new().register_n(workers, move |index, _| {
            let backend =
                PostgresStorage::<Noop>::new(&p).with_config(c.clone()).poll_with_interval(Duration::from_millis(20));
            WorkerBuilder::new(format!("bench-{run}-{index}"))
                .backend(backend)
                .data(progress.clone())
                .concurrency(1)
                .build(noop)
        });
        let started = Instant::now();
        monitor.run_with_signal(signal).await.expect("apalis workers");
        let elapsed = started.elapsed();
        let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
            .bind(QUEUE)
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(done as usize, jobs, "apalis-postgres: every job done");
        pool.close().await;
        jobs as f64 / elapsed.as_secs_f64()
    }
}
