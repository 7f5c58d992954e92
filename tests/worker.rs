//! `kairo worker` processes killed with SIGKILL at random points while
//! enrollments run, then restarted: every enrollment finishes, every step
//! has exactly one execution, and no message is sent twice. On PostgreSQL
//! also four workers at once on one database.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kairo_core::clock::{Clock, SystemClock};
use kairo_core::ids::*;
use kairo_core::status::{EnrollmentStatus, StepState};
use kairo_engine::testing::enroll_everyone;
use kairo_store::testing::{TestDb, connect_number};
use kairo_store::{NewContact, Store};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

const WORKFLOW: &str = r#"id: crash
name: Crash test
triggers:
  - api: {}
steps:
  - id: mark
    set_property:
      stage: started
  - id: first-send
    send_template:
      number: "+1 555-000-1111"
      template: welcome
      language: en_US
      body: ["{{contact.first_name}}"]
  - id: route
    branch:
      - if: 'contact.stage == "started"'
        then: second-send
      - else: done
  - id: second-send
    send_template:
      number: "+1 555-000-1111"
      template: reminder
      language: en_US
  - id: done
    set_property:
      stage: done
"#;

const STEPS: [&str; 5] = ["mark", "first-send", "route", "second-send", "done"];
const SENDS: [&str; 2] = ["first-send", "second-send"];

/// Guards against a run that never finishes; not a speed assertion.
const FINISH_GUARD: Duration = Duration::from_secs(300);

struct Run {
    dir: tempfile::TempDir,
    url: String,
    store: Store,
    enrollments: Vec<EnrollmentId>,
}

/// A database with the workflow registered, one number and `n` opted-in
/// contacts enrolled.
async fn prepare(db: &TestDb, n: usize) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("workflows")).expect("workflows dir");
    std::fs::write(dir.path().join("workflows/crash.yaml"), WORKFLOW).expect("workflow file");
    let store = db.store().await;
    let now = SystemClock.now();
    let number = connect_number(&store, "111111111", "+1 555-000-1111", 80, now).await;
    let report =
        kairo_engine::registry::load_workflows(&store, &dir.path().join("workflows"), None, now).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let contacts = (0..n)
        .map(|i| NewContact {
            name: Some(format!("Contact {i}")),
            phone: Some(format!("+1 555 {i:07}")),
            properties: json!({ "first_name": format!("C{i}") }),
            ..NewContact::default()
        })
        .collect();
    let ids = store.import_contacts(contacts, Some(number.id), now).await.expect("contacts");
    let enrollments = enroll_everyone(&store, "crash", &ids).await;
    Run { url: db.raw_url(), dir, store, enrollments }
}

fn sends_file(dir: &Path) -> PathBuf {
    dir.join("sends.jsonl")
}

fn spawn_worker(run: &Run) -> Child {
    util::worker_command(run.dir.path(), &run.url)
        .env("KAIRO_SANDBOX_RECORD_FILE", sends_file(run.dir.path()))
        .env("KAIRO_WORKER_LEASE_SECS", "2")
        .spawn()
        .expect("kairo worker starts")
}

/// A pseudo-random delay in 150..900 ms, different every call.
fn random_delay(seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(150 + *seed % 750)
}

async fn finished(store: &Store) -> u64 {
    let counts = store.enrollment_counts(None).await.expect("counts");
    counts
        .iter()
        .filter(|(s, _)| !matches!(s, EnrollmentStatus::Active | EnrollmentStatus::Waiting))
        .map(|(_, n)| n)
        .sum()
}

/// Runs `workers` processes, SIGKILLs one at random `kills` times (and
/// restarts it), then lets them finish every enrollment.
async fn run_with_kills(run: &Run, workers: usize, kills: usize) {
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64 | 1;
    let mut children: Vec<Child> = (0..workers).map(|_| spawn_worker(run)).collect();
    let total = run.enrollments.len() as u64;
    for _ in 0..kills {
        tokio::time::sleep(random_delay(&mut seed)).await;
        if finished(&run.store).await == total {
            break;
        }
        let victim = (seed as usize) % children.len();
        children[victim].start_kill().expect("SIGKILL");
        children[victim].wait().await.expect("reaped");
        children[victim] = spawn_worker(run);
    }
    let started = Instant::now();
    while finished(&run.store).await < total {
        assert!(
            started.elapsed() < FINISH_GUARD,
            "enrollments did not finish: {:?}",
            run.store.enrollment_counts(None).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in &mut children {
        child.start_kill().expect("stop");
        child.wait().await.expect("reaped");
    }
}

/// Every enrollment completed; each step has exactly one execution; each
/// send left the process at most once, and exactly once when it succeeded.
async fn check_exactly_once(run: &Run) {
    let mut sent: HashMap<(String, String), usize> = HashMap::new();
    let text = std::fs::read_to_string(sends_file(run.dir.path())).unwrap_or_default();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("each record is a whole JSON line");
        let callback = record["message"]["callback_data"].as_str().expect("callback data");
        // kairo:<enrollment>:<step>:<attempt>
        let rest = callback.strip_prefix("kairo:").expect("Kairo's callback data");
        let (enrollment, rest) = rest.split_once(':').expect("enrollment");
        let (step, _attempt) = rest.rsplit_once(':').expect("step and attempt");
        *sent.entry((enrollment.to_string(), step.to_string())).or_default() += 1;
    }
    let mut uncertain = 0;
    for id in &run.enrollments {
        let enrollment = run.store.enrollment(*id).await.expect("read").expect("exists");
        assert_eq!(enrollment.status, EnrollmentStatus::Completed, "enrollment {id}: {:?}", enrollment.error);
        let steps = run.store.step_executions(*id).await.expect("read");
        let names: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(names, STEPS, "enrollment {id}: each step once, in order");
        for step in &steps {
            let sends = sent.get(&(id.to_string(), step.step_id.clone())).copied().unwrap_or(0);
            match step.state {
                StepState::Succeeded if SENDS.contains(&step.step_id.as_str()) => {
                    assert_eq!(sends, 1, "enrollment {id}, step {}: sent once", step.step_id)
                }
                StepState::Succeeded => {}
                StepState::Uncertain => {
                    uncertain += 1;
                    assert!(sends <= 1, "enrollment {id}, step {}: an uncertain send is never repeated", step.step_id);
                }
                other => panic!("enrollment {id}, step {}: unexpected state {other:?}", step.step_id),
            }
        }
    }
    let duplicates: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "messages sent twice: {duplicates:?}");
    eprintln!("{} sends recorded, {uncertain} steps uncertain", sent.values().sum::<usize>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_on_sqlite_runs_each_step_once() {
    let db = TestDb::sqlite();
    let run = prepare(&db, 1_000).await;
    run_with_kills(&run, 1, 6).await;
    check_exactly_once(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_on_postgres_runs_each_step_once() {
    let db = TestDb::postgres().await;
    let run = prepare(&db, 1_000).await;
    run_with_kills(&run, 1, 6).await;
    check_exactly_once(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_on_postgres_run_each_step_once() {
    let db = TestDb::postgres().await;
    let run = prepare(&db, 10_000).await;
    run_with_kills(&run, 4, 2).await;
    check_exactly_once(&run).await;
}

#[tokio::test]
async fn sigterm_stops_a_worker_cleanly_after_migrating() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(util::KAIRO)
        .args(["worker", "--slots", "4"])
        .current_dir(dir.path())
        .env_remove("KAIRO_DATABASE_URL")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo worker starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(util::HANG_GUARD, stdout.next_line()).await.expect("starts").expect("line");
    assert!(first.is_some_and(|l| l.contains("running with 4 slots")));
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(util::HANG_GUARD, child.wait()).await.expect("stops").expect("status");
    assert!(status.success(), "{status:?}");
    let last = stdout.next_line().await.expect("line");
    assert_eq!(last.as_deref(), Some("kairo worker stopped after 0 steps"));
    util::kairo(dir.path())
        .args(["migrate", "status"])
        .assert()
        .success()
        .stdout(predicates::str::contains("applied  m20261125_000001_initial"));
}
