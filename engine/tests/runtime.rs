//! The durable runtime on SQLite and PostgreSQL: every enrollment and step
//! transition, waits under a fake clock, triggers, rules, versions, operator
//! actions and unknown outcomes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kairo_core::clock::FakeClock;
use kairo_core::ids::*;
use kairo_core::outbound::*;
use kairo_core::status::*;
use kairo_engine::inbox::Keywords;
use kairo_engine::runtime::*;
use kairo_engine::testing::{RecordingHttp, RecordingOutbound};
use kairo_store::testing::{TestDb, connect_number};
use kairo_store::*;
use kairo_workflow as workflow;
use serde_json::json;

const DAY: u64 = 86_400;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").expect("valid").to_utc()
}

/// An engine on a fresh database with one connected number (`+1 555-000-1111`),
/// a fake clock at [`t0`] and recording channels.
struct TestEngine {
    _db: TestDb,
    store: Store,
    clock: FakeClock,
    outbound: RecordingOutbound,
    http: RecordingHttp,
    engine: Arc<Engine>,
    number: PhoneNumber,
}

impl TestEngine {
    async fn new(db: TestDb) -> TestEngine {
        let store = db.store().await;
        let number = connect_number(&store, "111111111", "+1 555-000-1111", 80, t0()).await;
        let clock = FakeClock::new(t0());
        let outbound = RecordingOutbound::default();
        let http = RecordingHttp::default();
        let engine = Engine::new(
            store.clone(),
            Arc::new(clock.clone()),
            Arc::new(outbound.clone()),
            Arc::new(http.clone()),
            EngineConfig { owner: "test-worker".into(), lease: Duration::from_secs(30), batch: 64 },
        );
        TestEngine { _db: db, store, clock, outbound, http, engine, number }
    }

    /// Registers a workflow (which must be valid) as its newest version.
    async fn load(&self, yaml: &str) {
        let valid = workflow::check(Path::new("test.yaml"), yaml, None)
            .unwrap_or_else(|problems| panic!("test workflow is invalid: {problems:?}"));
        kairo_engine::registry::register_workflow(&self.store, &valid, self.clock.now_utc()).await.expect("registered");
        self.engine.refresh().await.expect("refresh");
    }

    async fn contact(&self, phone: &str, opted_in: bool) -> Contact {
        let contact = self
            .store
            .insert_contact(
                NewContact {
                    name: Some("Ada".into()),
                    phone: Some(phone.into()),
                    mobile_phone: None,
                    wa_id: None,
                    user_id: None,
                    properties: json!({ "first_name": "Ada", "plan": "free" }),
                },
                self.clock.now_utc(),
            )
            .await
            .expect("contact");
        if opted_in {
            self.consent(&contact, ConsentStatus::OptedIn).await;
        }
        contact
    }

    async fn consent(&self, contact: &Contact, status: ConsentStatus) {
        self.store
            .record_consent(
                ConsentChange {
                    contact_id: contact.id,
                    phone_number_id: self.number.id,
                    status,
                    source: ConsentSource::Api,
                    keyword: None,
                    wamid: None,
                },
                self.clock.now_utc(),
            )
            .await
            .expect("consent");
    }

    async fn enroll(&self, workflow: &str, contact: &Contact, data: serde_json::Value) -> Enrolled {
        self.engine
            .enroll(EnrollRequest { workflow: workflow.into(), contact: contact.id, trigger_data: data })
            .await
            .expect("enroll")
    }

    async fn enrolled(&self, workflow: &str, contact: &Contact) -> EnrollmentId {
        match self.enroll(workflow, contact, json!({})).await {
            Enrolled::Enrolled { enrollment } => enrollment,
            other => panic!("expected an enrollment, got {other:?}"),
        }
    }

    /// A second engine on the same store and clock whose channel keeps to
    /// the numbers' pace and messaging limits, as the WhatsApp channel does.
    async fn paced_engine(&self) -> (Arc<Engine>, RecordingOutbound) {
        let outbound = RecordingOutbound::paced();
        let engine = Engine::new(
            self.store.clone(),
            Arc::new(self.clock.clone()),
            Arc::new(outbound.clone()),
            Arc::new(RecordingHttp::default()),
            EngineConfig { owner: "paced-worker".into(), lease: Duration::from_secs(30), batch: 64 },
        );
        engine.refresh().await.expect("refresh");
        (engine, outbound)
    }

    /// Moves the clock and runs everything that became due.
    async fn advance(&self, by: Duration) -> TickReport {
        self.clock.advance(by);
        self.tick().await
    }

    async fn tick(&self) -> TickReport {
        self.engine.tick().await.expect("tick")
    }

    async fn status(&self, id: EnrollmentId) -> EnrollmentStatus {
        self.store.enrollment(id).await.expect("read").expect("exists").status
    }

    /// (step id, state, attempt) of every execution, in order.
    async fn steps(&self, id: EnrollmentId) -> Vec<(String, StepState, i32)> {
        self.store
            .step_executions(id)
            .await
            .expect("read")
            .into_iter()
            .map(|s| (s.step_id, s.state, s.attempt))
            .collect()
    }

    async fn append(&self, kind: &str, key: &str, contact: &Contact, payload: serde_json::Value) {
        self.store
            .append_event(
                NewEvent {
                    kind: kind.into(),
                    dedup_key: key.into(),
                    phone_number_id: Some(self.number.id),
                    contact_id: Some(contact.id),
                    payload,
                    occurred_at: self.clock.now_utc(),
                },
                self.clock.now_utc(),
            )
            .await
            .expect("event appended");
    }
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for FakeClock {
    fn now_utc(&self) -> DateTime<Utc> {
        kairo_core::clock::Clock::now(self)
    }
}

/// Runs a test body on SQLite and on PostgreSQL.
macro_rules! engine_test {
    ($name:ident, |$t:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $t = TestEngine::new(TestDb::sqlite()).await;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let $t = TestEngine::new(TestDb::postgres().await).await;
                $body
            }
        }
    };
}

const SEND: &str = r#"
  - id: hello
    send_template:
      number: "+1 555-000-1111"
      template: welcome
      language: en_US
      body: ["{{contact.first_name}}"]
"#;

fn api_workflow(id: &str, extra: &str, steps: &str) -> String {
    format!("id: {id}\nname: Test {id}\ntriggers:\n  - api: {{}}\n{extra}steps:{steps}")
}

engine_test!(send_then_complete_records_every_transition, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0100", true).await;
    let id = t.enrolled("hello", &ada).await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Active);
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Pending, 1)]);

    let report = t.tick().await;
    assert_eq!(report.steps, 1);
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    let rows = t.store.step_executions(id).await.expect("read");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.state, StepState::Succeeded);
    assert!(row.started_at.is_some() && row.finished_at.is_some());
    assert_eq!(row.output.as_ref().expect("output")["wamid"], "wamid.test.1");
    assert_eq!(row.output.as_ref().expect("output")["params"]["body"], json!(["Ada"]));
    let sent = t.outbound.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], "15550100");
    assert_eq!(sent[0]["number_id"], "111111111");
    assert_eq!(sent[0]["template"], "welcome");
    // The send is in the inbox, on the contact's thread, tied to its step.
    let message = t.store.message_by_wamid(&Wamid("wamid.test.1".into())).await.expect("read").expect("recorded");
    assert_eq!(message.direction, Direction::Outbound);
    assert_eq!(message.step_execution_id, Some(row.id));
    let enrollment = t.store.enrollment(id).await.expect("read").expect("exists");
    assert!(enrollment.finished_at.is_some());
    // Nothing runs twice: another tick does nothing.
    assert!(t.tick().await.is_idle());
    assert_eq!(t.outbound.sent().len(), 1);
});

engine_test!(thirty_day_wait_completes_under_a_fake_clock, |t| {
    let steps = format!("\n  - id: pause\n    wait:\n      for: 30d{SEND}");
    t.load(&api_workflow("later", "", &steps)).await;
    let ada = t.contact("+1 555 0101", true).await;
    let id = t.enrolled("later", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting);
    assert_eq!(t.steps(id).await, vec![("pause".to_string(), StepState::Waiting, 1)]);
    let timers = t.store.timers_of(id).await.expect("timers");
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].wake_at, t0() + chrono::Duration::days(30));

    t.advance(Duration::from_secs(30 * DAY - 1)).await;
    assert!(t.outbound.sent().is_empty(), "nothing is sent a second early");
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting);

    t.advance(Duration::from_secs(1)).await;
    assert_eq!(t.outbound.sent().len(), 1);
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(
        t.steps(id).await,
        vec![("pause".to_string(), StepState::Succeeded, 1), ("hello".to_string(), StepState::Succeeded, 1)]
    );
    assert_eq!(t.store.timers_of(id).await.expect("timers")[0].state, TimerState::Fired);
});

engine_test!(contact_not_opted_in_is_skipped_not_failed, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let bob = t.contact("+1 555 0102", false).await;
    let id = t.enrolled("hello", &bob).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    let rows = t.store.step_executions(id).await.expect("read");
    assert_eq!(rows[0].state, StepState::Skipped);
    assert_eq!(rows[0].output.as_ref().expect("output")["reason"], "not_opted_in");
    assert!(t.outbound.sent().is_empty());
});

engine_test!(branch_and_exit_step_take_the_matching_arm, |t| {
    let steps = r#"
  - id: route
    branch:
      - if: 'contact.plan == "pro"'
        then: pro
      - else: bye
  - id: pro
    set_property:
      tier: gold
  - id: bye
    exit:
      reason: not a pro
"#;
    t.load(&api_workflow("route", "", steps)).await;
    let free = t.contact("+1 555 0103", true).await;
    let id = t.enrolled("route", &free).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Exited);
    let enrollment = t.store.enrollment(id).await.expect("read").expect("exists");
    assert_eq!(enrollment.exit_reason.as_deref(), Some("not a pro"));
    assert_eq!(
        t.steps(id).await,
        vec![("route".to_string(), StepState::Succeeded, 1), ("bye".to_string(), StepState::Succeeded, 1)]
    );
});

engine_test!(goal_met_ends_the_enrollment_before_the_next_step, |t| {
    let steps =
        format!("\n  - id: mark\n    set_property:\n      plan: pro\n  - id: pause\n    wait:\n      for: 1d{SEND}");
    let extra = "goal:\n  when: 'contact.plan == \"pro\"'\n";
    t.load(&api_workflow("upgrade", extra, &steps)).await;
    let ada = t.contact("+1 555 0104", true).await;
    let id = t.enrolled("upgrade", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::GoalMet);
    let contact = t.store.contact(ada.id).await.expect("read").expect("exists");
    assert_eq!(contact.properties["plan"], "pro");
    assert_eq!(
        t.steps(id).await,
        vec![("mark".to_string(), StepState::Succeeded, 1), ("pause".to_string(), StepState::Cancelled, 1)]
    );
    assert!(t.outbound.sent().is_empty());
});

engine_test!(opt_out_exits_a_waiting_enrollment, |t| {
    let steps = format!("\n  - id: pause\n    wait:\n      for: 3d{SEND}");
    t.load(&api_workflow("nudge", "exit_when:\n  - opted_out: true\n", &steps)).await;
    let ada = t.contact("+1 555 0105", true).await;
    let id = t.enrolled("nudge", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting);

    t.consent(&ada, ConsentStatus::OptedOut).await;
    t.append("opt_out", "opt_out:1", &ada, json!({ "keyword": "STOP" })).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Exited);
    assert_eq!(t.store.timers_of(id).await.expect("timers")[0].state, TimerState::Cancelled);
    t.advance(Duration::from_secs(4 * DAY)).await;
    assert!(t.outbound.sent().is_empty(), "an exited enrollment sends nothing");
});

engine_test!(a_first_wait_parks_at_enrollment_unless_an_exit_condition_holds, |t| {
    let steps = format!("\n  - id: pause\n    wait:\n      for: 1d{SEND}");
    t.load(&api_workflow("welcome", "exit_when:\n  - opted_out: true\n", &steps)).await;
    let ada = t.contact("+1 555 0110", true).await;
    let id = t.enrolled("welcome", &ada).await;
    // Parked by the enrollment itself: no worker has run yet.
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting);
    assert_eq!(t.steps(id).await, vec![("pause".to_string(), StepState::Waiting, 1)]);
    let row = &t.store.step_executions(id).await.expect("read")[0];
    assert_eq!(row.started_at, Some(t0()));
    assert_eq!(row.output.as_ref().expect("output")["until"], json!(t0() + chrono::Duration::days(1)));
    let timers = t.store.timers_of(id).await.expect("timers");
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].wake_at, t0() + chrono::Duration::days(1));
    assert_eq!(t.store.next_due_step().await.expect("read"), None, "nothing is due for a worker");
    assert!(t.tick().await.is_idle());

    // Opted out before enrolling: the exit condition holds before the wait
    // starts, so the step is left to a worker, which exits the enrollment.
    let bob = t.contact("+1 555 0111", true).await;
    t.consent(&bob, ConsentStatus::OptedOut).await;
    let exited = t.enrolled("welcome", &bob).await;
    assert_eq!(t.status(exited).await, EnrollmentStatus::Active);
    assert_eq!(t.steps(exited).await, vec![("pause".to_string(), StepState::Pending, 1)]);
    t.tick().await;
    assert_eq!(t.status(exited).await, EnrollmentStatus::Exited);
    assert_eq!(t.steps(exited).await, vec![("pause".to_string(), StepState::Cancelled, 1)]);
    assert!(t.store.timers_of(exited).await.expect("timers").is_empty());

    t.advance(Duration::from_secs(DAY)).await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(t.outbound.sent().len(), 1, "only Ada's enrollment sends");
    assert_eq!(
        t.steps(id).await,
        vec![("pause".to_string(), StepState::Succeeded, 1), ("hello".to_string(), StepState::Succeeded, 1)]
    );
});

engine_test!(wait_for_reply_takes_the_reply_or_the_timeout_path, |t| {
    let steps = r#"
  - id: ask
    wait_for_reply:
      number: "+1 555-000-1111"
      timeout: 1d
      on_reply: thanks
      on_timeout: nudge
  - id: thanks
    set_property:
      replied: "{{steps.ask.output.reply}}"
    next: done
  - id: nudge
    set_property:
      replied: "no"
  - id: done
    exit:
      reason: asked
"#;
    t.load(&api_workflow("ask", "enrollment:\n  reenroll: always\n", steps)).await;
    let ada = t.contact("+1 555 0106", true).await;
    let replied = t.enrolled("ask", &ada).await;
    t.tick().await;
    t.append("inbound_message", "message:wamid.in.1", &ada, json!({ "text": "yes please", "wamid": "wamid.in.1" }))
        .await;
    t.tick().await;
    assert_eq!(t.status(replied).await, EnrollmentStatus::Exited);
    let contact = t.store.contact(ada.id).await.expect("read").expect("exists");
    assert_eq!(contact.properties["replied"], "yes please");

    let silent = t.enrolled("ask", &ada).await;
    t.tick().await;
    t.advance(Duration::from_secs(DAY)).await;
    assert_eq!(t.status(silent).await, EnrollmentStatus::Exited);
    let steps: Vec<String> = t.steps(silent).await.into_iter().map(|s| s.0).collect();
    assert_eq!(steps, ["ask", "nudge", "done"]);
});

engine_test!(reenrollment_rules_are_enforced, |t| {
    t.load(&api_workflow("once", "", SEND)).await;
    t.load(&api_workflow("weekly", "enrollment:\n  reenroll:\n    after: 7d\n", SEND)).await;
    let steps = format!("\n  - id: pause\n    wait:\n      for: 1d{SEND}");
    t.load(&api_workflow("single", "enrollment:\n  reenroll: always\n", &steps)).await;
    t.load(&api_workflow("vip-only", "enrollment:\n  suppress: 'contact.plan == \"free\"'\n", SEND)).await;
    let ada = t.contact("+1 555 0107", true).await;

    t.enrolled("once", &ada).await;
    t.tick().await;
    assert_eq!(t.enroll("once", &ada, json!({})).await, Enrolled::Skipped { reason: SkipReason::AlreadyEnrolled });

    t.enrolled("weekly", &ada).await;
    t.advance(Duration::from_secs(6 * DAY)).await;
    assert_eq!(t.enroll("weekly", &ada, json!({})).await, Enrolled::Skipped { reason: SkipReason::TooSoon });
    t.advance(Duration::from_secs(DAY)).await;
    assert!(matches!(t.enroll("weekly", &ada, json!({})).await, Enrolled::Enrolled { .. }));

    t.enrolled("single", &ada).await;
    t.tick().await;
    assert_eq!(t.enroll("single", &ada, json!({})).await, Enrolled::Skipped { reason: SkipReason::StillRunning });
    t.advance(Duration::from_secs(DAY)).await;
    assert!(matches!(t.enroll("single", &ada, json!({})).await, Enrolled::Enrolled { .. }));

    assert_eq!(t.enroll("vip-only", &ada, json!({})).await, Enrolled::Skipped { reason: SkipReason::Suppressed });
});

engine_test!(api_enrollment_checks_required_trigger_data, |t| {
    let yaml = format!("id: cart\nname: Cart\ntriggers:\n  - api:\n      required: [cart_id]\nsteps:{SEND}");
    t.load(&yaml).await;
    let ada = t.contact("+1 555 0108", true).await;
    let err = t
        .engine
        .enroll(EnrollRequest { workflow: "cart".into(), contact: ada.id, trigger_data: json!({}) })
        .await
        .expect_err("missing data");
    assert!(matches!(err, EngineError::MissingTriggerData { ref missing, .. } if missing == &["cart_id"]), "{err}");
    let err = t
        .engine
        .enroll(EnrollRequest { workflow: "nope".into(), contact: ada.id, trigger_data: json!({}) })
        .await
        .expect_err("unknown workflow");
    assert!(matches!(err, EngineError::UnknownWorkflow(_)));
    assert!(matches!(t.enroll("cart", &ada, json!({ "cart_id": "c1" })).await, Enrolled::Enrolled { .. }));
});

engine_test!(temporary_errors_retry_with_backoff_then_succeed, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0109", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.outbound.fail_next(CallError::temporary("429 rate limited"));
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Active);
    assert_eq!(
        t.steps(id).await,
        vec![("hello".to_string(), StepState::Failed, 1), ("hello".to_string(), StepState::Pending, 2)]
    );
    t.advance(Duration::from_secs(29)).await;
    assert!(t.outbound.sent().is_empty(), "the retry waits for its backoff");
    // 30 s, plus a jitter of at most a quarter of it.
    t.advance(Duration::from_millis(8_500)).await;
    assert_eq!(t.outbound.sent().len(), 1);
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
});

engine_test!(permanent_error_fails_and_operator_retry_resumes, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0110", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.outbound.fail_next(CallError::permanent("template paused"));
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Failed);
    let enrollment = t.store.enrollment(id).await.expect("read").expect("exists");
    assert!(enrollment.error.as_deref().is_some_and(|e| e.contains("template paused")), "{:?}", enrollment.error);

    t.engine.retry(id).await.expect("retry");
    assert_eq!(t.status(id).await, EnrollmentStatus::Active);
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(
        t.steps(id).await,
        vec![("hello".to_string(), StepState::Failed, 1), ("hello".to_string(), StepState::Succeeded, 2)]
    );
    let err = t.engine.retry(id).await.expect_err("a completed enrollment cannot be retried");
    assert!(matches!(err, EngineError::WrongState { .. }));
});

engine_test!(cancel_stops_a_waiting_enrollment, |t| {
    let steps = format!("\n  - id: pause\n    wait:\n      for: 2h{SEND}");
    t.load(&api_workflow("slow", "", &steps)).await;
    let ada = t.contact("+1 555 0111", true).await;
    let id = t.enrolled("slow", &ada).await;
    t.tick().await;
    t.engine.cancel(id, "operator").await.expect("cancel");
    assert_eq!(t.status(id).await, EnrollmentStatus::Cancelled);
    t.advance(Duration::from_secs(3 * 3600)).await;
    assert!(t.outbound.sent().is_empty());
    assert_eq!(t.steps(id).await, vec![("pause".to_string(), StepState::Cancelled, 1)]);
    assert!(matches!(t.engine.cancel(id, "again").await, Err(EngineError::WrongState { .. })));
});

/// Leaves the enrollment's first step `attempting` under a worker that then
/// "dies": what a SIGKILL mid-send leaves behind.
async fn die_mid_send(t: &TestEngine, ids: &[EnrollmentId]) {
    let now = t.clock.now_utc();
    let claimed =
        t.store.claim_due_steps("dead-worker", now, now + chrono::Duration::seconds(30), 10).await.expect("claim");
    for id in ids {
        let step = claimed.iter().find(|s| s.enrollment_id == *id).expect("claimed");
        assert!(
            t.store
                .mark_attempting(step.id, "dead-worker", None, now, now + chrono::Duration::seconds(30))
                .await
                .expect("attempting")
        );
    }
}

engine_test!(unknown_outcome_follows_the_step_policy, |t| {
    let two_sends = format!("{SEND}  - id: after\n    set_property:\n      done: \"yes\"\n");
    t.load(&api_workflow("keep-going", "", &two_sends)).await;
    let failing = two_sends.replace(
        "      body: [\"{{contact.first_name}}\"]\n",
        "      body: [\"{{contact.first_name}}\"]\n    on_unknown_outcome: fail\n",
    );
    t.load(&api_workflow("stop", "", &failing)).await;
    let repeating = two_sends.replace(
        "      body: [\"{{contact.first_name}}\"]\n",
        "      body: [\"{{contact.first_name}}\"]\n    on_unknown_outcome: repeat\n",
    );
    t.load(&api_workflow("again", "", &repeating)).await;
    let ada = t.contact("+1 555 0112", true).await;
    let keep = t.enrolled("keep-going", &ada).await;
    let stop = t.enrolled("stop", &ada).await;
    let again = t.enrolled("again", &ada).await;
    die_mid_send(&t, &[keep, stop, again]).await;
    t.tick().await;
    assert!(t.outbound.sent().is_empty(), "nothing is settled before the lease runs out");

    t.advance(Duration::from_secs(31)).await;
    assert_eq!(t.status(keep).await, EnrollmentStatus::Completed);
    assert_eq!(
        t.steps(keep).await,
        vec![("hello".to_string(), StepState::Uncertain, 1), ("after".to_string(), StepState::Succeeded, 1)]
    );
    assert_eq!(t.status(stop).await, EnrollmentStatus::Failed);
    assert_eq!(t.steps(stop).await, vec![("hello".to_string(), StepState::Uncertain, 1)]);
    assert_eq!(t.status(again).await, EnrollmentStatus::Completed);
    assert_eq!(t.outbound.sent().len(), 1, "only the `repeat` step sends again");
});

engine_test!(a_limit_answer_waits_on_the_same_attempt_and_never_fails, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0130", true).await;
    let id = t.enrolled("hello", &ada).await;
    // Three limit answers in a row: more than the step's three attempts.
    for _ in 0..3 {
        t.outbound.fail_next(CallError::new(FailureKind::Throttled, "130429").after(Duration::from_secs(6)));
    }
    t.tick().await;
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Pending, 1)], "same attempt, waiting");
    t.advance(Duration::from_secs(5)).await;
    assert!(t.outbound.sent().is_empty(), "not before the wait the answer named");
    t.advance(Duration::from_secs(1)).await;
    t.advance(Duration::from_secs(6)).await;
    t.advance(Duration::from_secs(6)).await;
    assert_eq!(t.outbound.sent().len(), 1);
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Succeeded, 1)]);
});

engine_test!(a_credentials_problem_waits_for_the_operator_without_spending_attempts, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0131", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.outbound.fail_next(CallError::new(FailureKind::Auth, "WhatsApp error 190: token expired"));
    t.tick().await;
    let number = t.store.phone_number_by_graph_id(&t.number.graph_id).await.expect("read").expect("number");
    assert_eq!(number.pause_scope.as_deref(), Some("all"), "the number is paused for every send");
    assert!(number.pause_reason.as_deref().is_some_and(|r| r.contains("token expired")), "{:?}", number.pause_reason);
    for _ in 0..5 {
        t.advance(Duration::from_secs(300)).await;
    }
    assert_eq!(t.outbound.attempts(), 1, "a paused number makes no calls");
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Pending, 1)], "no attempt spent");
    // The operator fixes the token and resumes the number.
    assert!(t.store.resume_number(t.number.id, t.clock.now_utc()).await.expect("resume"));
    t.advance(Duration::from_secs(300)).await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed, "sent once the token works again");
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Succeeded, 1)]);
});

engine_test!(a_send_with_no_answer_is_uncertain_and_not_repeated, |t| {
    let two = format!("{SEND}  - id: after\n    set_property:\n      done: \"yes\"\n");
    t.load(&api_workflow("hello", "", &two)).await;
    let ada = t.contact("+1 555 0132", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.outbound.fail_next(CallError::new(FailureKind::Unknown, "no answer in time after the request was sent"));
    t.tick().await;
    t.advance(Duration::from_secs(3600)).await;
    assert!(t.outbound.sent().is_empty(), "never sent again by default");
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(
        t.steps(id).await,
        vec![("hello".to_string(), StepState::Uncertain, 1), ("after".to_string(), StepState::Succeeded, 1)]
    );
    let uncertain = &t.store.step_executions(id).await.expect("read")[0];
    assert!(uncertain.error.as_deref().is_some_and(|e| e.contains("no answer in time")), "{:?}", uncertain.error);
});

engine_test!(a_template_no_longer_approved_fails_the_send_with_its_status, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    t.store
        .upsert_template(
            NewTemplate {
                account_id: t.number.account_id,
                graph_id: "77".into(),
                name: "welcome".into(),
                language: "en_US".into(),
                status: "PAUSED".into(),
                category: "MARKETING".into(),
                parameter_format: "POSITIONAL".into(),
                components: json!([]),
            },
            t.clock.now_utc(),
        )
        .await
        .expect("template");
    let ada = t.contact("+1 555 0133", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.tick().await;
    assert!(t.outbound.sent().is_empty());
    assert_eq!(t.status(id).await, EnrollmentStatus::Failed);
    let enrollment = t.store.enrollment(id).await.expect("read").expect("exists");
    assert!(enrollment.error.as_deref().is_some_and(|e| e.contains("PAUSED")), "{:?}", enrollment.error);
});

engine_test!(a_used_up_messaging_limit_waits_for_the_moving_window, |t| {
    // The portfolio may reach 50 recipients outside a service window a day.
    t.store
        .upsert_phone_number(
            NewPhoneNumber {
                account_id: t.number.account_id,
                graph_id: t.number.graph_id.clone(),
                display_number: t.number.display_number.clone(),
                normalized_number: t.number.normalized_number.clone(),
                verified_name: None,
                quality_rating: None,
                throughput_mps: 1000,
                messaging_limit_tier: Some("TIER_50".into()),
            },
            t.clock.now_utc(),
        )
        .await
        .expect("number");
    t.load(&api_workflow("hello", "", SEND)).await;
    let (engine, outbound) = t.paced_engine().await;
    let mut first = Vec::new();
    for i in 0..40 {
        let contact = t.contact(&format!("+1 555 7{i:06}"), true).await;
        let request = EnrollRequest { workflow: "hello".into(), contact: contact.id, trigger_data: json!({}) };
        assert!(matches!(engine.enroll(request).await.expect("enroll"), Enrolled::Enrolled { .. }));
        first.push(contact);
    }
    engine.tick().await.expect("tick");
    assert_eq!(outbound.sent().len(), 40);

    // Twelve hours later, 20 more recipients: 10 fit in the day's 50.
    t.clock.advance(Duration::from_secs(12 * 3600));
    for i in 0..20 {
        let contact = t.contact(&format!("+1 555 8{i:06}"), true).await;
        let request = EnrollRequest { workflow: "hello".into(), contact: contact.id, trigger_data: json!({}) };
        assert!(matches!(engine.enroll(request).await.expect("enroll"), Enrolled::Enrolled { .. }));
    }
    engine.tick().await.expect("tick");
    assert_eq!(outbound.sent().len(), 50, "the limit holds");
    t.clock.advance(Duration::from_secs(11 * 3600));
    engine.tick().await.expect("tick");
    assert_eq!(outbound.sent().len(), 50, "nobody left the moving window yet");
    // 24 hours after the first 40: their slots free up, the last 10 go.
    t.clock.advance(Duration::from_secs(3600 + 2));
    engine.tick().await.expect("tick");
    assert_eq!(outbound.sent().len(), 60, "the waiting sends went as the window moved");
    let counts = t.store.enrollment_counts(None).await.expect("counts");
    assert_eq!(counts, vec![(EnrollmentStatus::Completed, 60)], "none failed for the limit");
});

engine_test!(pacing_spaces_a_numbers_sends_at_its_throughput, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let (engine, outbound) = t.paced_engine().await;
    // 80/s by default, paced at 97 %: 77.6 slots a second, one every
    // 12.9 ms; a worker holds slots one second ahead, so of 100 sends due at
    // the same instant 78 go now and the rest wait, none of them failing.
    for i in 0..100 {
        let contact = t.contact(&format!("+1 555 9{i:06}"), true).await;
        let request = EnrollRequest { workflow: "hello".into(), contact: contact.id, trigger_data: json!({}) };
        engine.enroll(request).await.expect("enroll");
    }
    engine.tick().await.expect("tick");
    let now_sent = outbound.sent().len();
    assert!((77..=78).contains(&now_sent), "{now_sent} sent within the first second's slots");
    t.clock.advance(Duration::from_secs(3));
    engine.tick().await.expect("tick");
    assert_eq!(outbound.sent().len(), 100);
    let counts = t.store.enrollment_counts(None).await.expect("counts");
    assert_eq!(counts, vec![(EnrollmentStatus::Completed, 100)]);
});

engine_test!(expired_claims_without_a_call_run_once_elsewhere, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0113", true).await;
    let id = t.enrolled("hello", &ada).await;
    let now = t.clock.now_utc();
    t.store.claim_due_steps("dead-worker", now, now + chrono::Duration::seconds(30), 10).await.expect("claim");
    t.tick().await;
    assert!(t.outbound.sent().is_empty(), "a held claim is not run by another worker");
    t.advance(Duration::from_secs(31)).await;
    assert_eq!(t.outbound.sent().len(), 1);
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Succeeded, 1)]);
});

engine_test!(running_enrollments_finish_on_their_version, |t| {
    let v1 = format!("\n  - id: pause\n    wait:\n      for: 1h{SEND}");
    t.load(&api_workflow("versioned", "enrollment:\n  reenroll: always\n  concurrent: true\n", &v1)).await;
    let ada = t.contact("+1 555 0114", true).await;
    let old = t.enrolled("versioned", &ada).await;
    t.tick().await;
    let v2 = v1.replace("template: welcome", "template: welcome_v2");
    t.load(&api_workflow("versioned", "enrollment:\n  reenroll: always\n  concurrent: true\n", &v2)).await;
    let new = t.enrolled("versioned", &ada).await;
    t.tick().await;
    t.advance(Duration::from_secs(3600)).await;
    let templates: Vec<String> =
        t.outbound.sent().iter().map(|m| m["template"].as_str().expect("template").to_string()).collect();
    assert_eq!(templates.len(), 2);
    assert!(templates.contains(&"welcome".to_string()) && templates.contains(&"welcome_v2".to_string()));
    let old_row = t.store.enrollment(old).await.expect("read").expect("exists");
    let new_row = t.store.enrollment(new).await.expect("read").expect("exists");
    assert_ne!(old_row.workflow_version_id, new_row.workflow_version_id);
    let old_send = t.store.step_executions(old).await.expect("read").pop().expect("send");
    assert_eq!(old_send.output.expect("output")["template"], "welcome");
});

engine_test!(enrollments_take_the_version_the_database_shows_before_this_process_reloads, |t| {
    // Another process (the folder watcher of `kairo serve`, a second API
    // instance) registers a version; this engine has not reloaded yet.
    let extra = "enrollment:\n  reenroll: always\n  concurrent: true\n";
    t.load(&api_workflow("versioned", extra, SEND)).await;
    let v2 = SEND.replace("template: welcome", "template: welcome_v2");
    let valid = workflow::check(Path::new("test.yaml"), &api_workflow("versioned", extra, &v2), None)
        .unwrap_or_else(|problems| panic!("test workflow is invalid: {problems:?}"));
    let saved =
        kairo_engine::registry::register_workflow(&t.store, &valid, t.clock.now_utc()).await.expect("registered");
    let ada = t.contact("+1 555 0115", true).await;
    let id = t.enrolled("versioned", &ada).await;
    let row = t.store.enrollment(id).await.expect("read").expect("exists");
    let current = t.store.workflow_by_key("versioned").await.expect("read").expect("exists");
    assert_eq!(Some(row.workflow_version_id), current.current_version_id, "{saved:?}");
    t.tick().await;
    assert_eq!(t.outbound.sent()[0]["template"], "welcome_v2");
    // A pause the database shows refuses new enrollments at once, too.
    t.store.set_workflow_state("versioned", WorkflowState::Paused, t.clock.now_utc()).await.expect("paused");
    let refused = t
        .engine
        .enroll(EnrollRequest { workflow: "versioned".into(), contact: ada.id, trigger_data: json!({}) })
        .await
        .expect_err("a paused workflow takes no enrollment");
    assert!(matches!(refused, EngineError::WorkflowNotActive { .. }), "{refused:?}");
});

engine_test!(events_trigger_enrollments_exactly_once, |t| {
    let yaml = format!(
        "id: welcome\nname: Welcome\ntriggers:\n  - opt_in:\n      number: \"+1 555-000-1111\"\n  - inbound_message:\n      number: \"+1 555-000-1111\"\n      keywords: [PRICE]\nenrollment:\n  reenroll: always\n  concurrent: true\nsteps:{SEND}"
    );
    t.load(&yaml).await;
    let ada = t.contact("+1 555 0115", true).await;
    t.append("opt_in", "opt_in:wamid.1", &ada, json!({ "keyword": "YES" })).await;
    t.append("inbound_message", "message:wamid.2", &ada, json!({ "text": "price", "wamid": "wamid.2" })).await;
    t.append("inbound_message", "message:wamid.3", &ada, json!({ "text": "hello", "wamid": "wamid.3" })).await;
    // A second engine (another worker) on the same database.
    let other = Engine::new(
        t.store.clone(),
        Arc::new(t.clock.clone()),
        Arc::new(t.outbound.clone()),
        Arc::new(t.http.clone()),
        EngineConfig { owner: "other-worker".into(), ..EngineConfig::default() },
    );
    let (a, b) = tokio::join!(t.engine.tick(), other.tick());
    a.expect("tick");
    b.expect("tick");
    t.tick().await;
    let enrollments = t.store.enrollments_of(ada.id).await.expect("read");
    assert_eq!(enrollments.len(), 2, "opt-in and the PRICE keyword enroll; `hello` does not");
    let mut kinds: Vec<&str> = enrollments.iter().map(|e| e.trigger_kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["inbound_message", "opt_in"]);
    assert_eq!(t.outbound.sent().len(), 2);
    assert!(t.store.unapplied_events(10).await.expect("read").is_empty());
});

engine_test!(schedule_fires_once_per_tick_across_workers, |t| {
    let yaml = format!(
        "id: weekly\nname: Weekly\ntriggers:\n  - schedule:\n      cron: \"0 9 * * 1\"\n      timezone: Europe/Paris\n      contacts:\n        opted_in_on: \"+1 555-000-1111\"\nenrollment:\n  reenroll: always\nsteps:{SEND}"
    );
    t.load(&yaml).await;
    t.contact("+1 555 0116", true).await;
    t.contact("+1 555 0117", false).await;
    // t0 is Monday 2026-03-02 10:00 UTC = 11:00 in Paris: this week's tick
    // (09:00) came before the workflow existed, so nothing fires.
    assert_eq!(t.tick().await.schedules, 0);
    let other = Engine::new(
        t.store.clone(),
        Arc::new(t.clock.clone()),
        Arc::new(t.outbound.clone()),
        Arc::new(t.http.clone()),
        EngineConfig { owner: "other-worker".into(), ..EngineConfig::default() },
    );
    t.clock.advance(Duration::from_secs(7 * DAY));
    let (a, b) = tokio::join!(t.engine.tick(), other.tick());
    assert_eq!(a.expect("tick").schedules + b.expect("tick").schedules, 1, "one tick, fired once");
    t.tick().await;
    assert_eq!(t.outbound.sent().len(), 1, "only the opted-in contact is enrolled");
    // Three weeks of downtime: the latest missed tick fires once, not three.
    t.clock.advance(Duration::from_secs(21 * DAY));
    assert_eq!(t.tick().await.schedules, 1);
    assert_eq!(t.outbound.sent().len(), 2);
});

engine_test!(http_step_renders_and_records_its_answer, |t| {
    let steps = r#"
  - id: notify
    http:
      method: POST
      url: "https://crm.example.com/contacts/{{contact.id}}"
      headers:
        X-Plan: "{{contact.plan}}"
      body:
        name: "{{contact.first_name}}"
"#;
    t.load(&api_workflow("crm", "", steps)).await;
    let ada = t.contact("+1 555 0118", true).await;
    let id = t.enrolled("crm", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    let calls = t.http.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].url, format!("https://crm.example.com/contacts/{}", ada.id));
    assert_eq!(calls[0].headers, vec![("X-Plan".to_string(), "free".to_string())]);
    assert_eq!(calls[0].body, Some(json!({ "name": "Ada" })));
    let row = t.store.step_executions(id).await.expect("read").pop().expect("step");
    assert_eq!(row.output.expect("output")["status"], 200);
});

engine_test!(split_sends_each_enrollment_down_one_stable_arm, |t| {
    let steps = r#"
  - id: ab
    split:
      - percent: 50
        then: a
      - percent: 50
        then: b
  - id: a
    set_property:
      arm: a
    next: done
  - id: b
    set_property:
      arm: b
  - id: done
    exit:
      reason: split
"#;
    t.load(&api_workflow("ab", "enrollment:\n  reenroll: always\n  concurrent: true\n", steps)).await;
    let ada = t.contact("+1 555 0120", true).await;
    let mut arms = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let id = t.enrolled("ab", &ada).await;
        t.tick().await;
        let rows = t.store.step_executions(id).await.expect("read");
        let taken = rows[0].output.as_ref().expect("output")["next"].as_str().expect("next").to_string();
        assert_eq!(rows[1].step_id, taken, "the arm recorded is the arm run");
        *arms.entry(taken).or_insert(0) += 1;
    }
    assert_eq!(arms.len(), 2, "both arms are taken over 40 enrollments: {arms:?}");
});

engine_test!(quiet_hours_defer_a_send_to_the_next_allowed_time, |t| {
    let extra = "quiet_hours:\n  from: \"09:00\"\n  to: \"20:00\"\n  timezone_property: tz\n";
    t.load(&api_workflow("polite", extra, SEND)).await;
    let ada = t.contact("+1 555 0121", true).await;
    let tx = t.store.begin().await.expect("tx");
    let patch = json!({ "tz": "Asia/Tokyo" });
    tx.set_contact_properties(ada.id, patch.as_object().expect("object"), t.clock.now_utc()).await.expect("set");
    tx.commit().await.expect("commit");
    // t0 is 10:00 UTC = 19:00 in Tokyo: inside the window.
    t.clock.advance(Duration::from_secs(3600)); // 20:00 in Tokyo: outside
    let id = t.enrolled("polite", &ada).await;
    t.tick().await;
    assert!(t.outbound.sent().is_empty(), "no send at 20:00 local time");
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Pending, 1)]);
    // Next 09:00 in Tokyo is 00:00 UTC the next day: 13 h later.
    t.advance(Duration::from_secs(13 * 3600 - 1)).await;
    assert!(t.outbound.sent().is_empty());
    t.advance(Duration::from_secs(1)).await;
    assert_eq!(t.outbound.sent().len(), 1);
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
});

engine_test!(without_a_zone_property_quiet_hours_follow_the_phone_numbers_country, |t| {
    let extra = "quiet_hours:\n  from: \"09:00\"\n  to: \"20:00\"\n";
    t.load(&api_workflow("polite", extra, SEND)).await;
    // t0 is 10:00 UTC on 2 March: 10:00 in London, 15:30 in Mumbai, 05:00
    // in New York and midnight in Honolulu.
    let london = t.contact("+44 20 7946 0000", true).await;
    let mumbai = t.contact("+91 98765 43210", true).await;
    let new_york = t.contact("+1 212 555 0100", true).await;
    let uk = t.enrolled("polite", &london).await;
    let india = t.enrolled("polite", &mumbai).await;
    let us = t.enrolled("polite", &new_york).await;
    t.tick().await;
    assert_eq!(t.status(uk).await, EnrollmentStatus::Completed);
    assert_eq!(t.status(india).await, EnrollmentStatus::Completed);
    // A +1 number goes when 09:00-20:00 holds in every US zone: 09:00 in
    // Honolulu (UTC-10) is 19:00 UTC, 14:00 in New York.
    let waiting = &t.store.step_executions(us).await.expect("read")[0];
    assert_eq!(waiting.state, StepState::Pending);
    assert_eq!(waiting.due_at, DateTime::parse_from_rfc3339("2026-03-02T19:00:00Z").expect("valid").to_utc());
    t.clock.set(waiting.due_at);
    t.tick().await;
    assert_eq!(t.status(us).await, EnrollmentStatus::Completed);
    assert_eq!(t.outbound.sent().len(), 3);
});

engine_test!(ensure_thread_and_round_robin_assign_an_owner, |t| {
    let now = t.clock.now_utc();
    let team = t.store.insert_team("Sales", now).await.expect("team");
    for email in ["ana@example.com", "ben@example.com"] {
        let user = t
            .store
            .insert_user(
                NewUser { email: email.into(), name: email.into(), role: kairo_core::status::UserRole::Agent },
                now,
            )
            .await
            .expect("user");
        t.store.add_team_member(team.id, user.id, now).await.expect("member");
    }
    let steps = r#"
  - id: open
    ensure_thread:
      number: "+1 555-000-1111"
  - id: assign
    assign_owner:
      round_robin: Sales
"#;
    t.load(&api_workflow("assign", "enrollment:\n  reenroll: always\n", steps)).await;
    let mut owners = Vec::new();
    for phone in ["+1 555 0122", "+1 555 0123"] {
        let contact = t.contact(phone, true).await;
        let id = t.enrolled("assign", &contact).await;
        t.tick().await;
        assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
        let thread = t.store.open_thread_of(contact.id, t.number.id).await.expect("read").expect("thread opened");
        owners.push(thread.owner_user_id.expect("an owner"));
        assert_eq!(thread.owner_team_id, Some(team.id));
    }
    assert_ne!(owners[0], owners[1], "round robin takes turns");
});

engine_test!(wait_for_an_event_ends_early_or_times_out, |t| {
    let steps = r#"
  - id: until-read
    wait:
      event: read
      timeout: 2d
      on_timeout: nudge
  - id: thanks
    set_property:
      read: "yes"
    next: done
  - id: nudge
    set_property:
      read: "no"
  - id: done
    exit:
      reason: waited
"#;
    t.load(&api_workflow("read", "enrollment:\n  reenroll: always\n", &format!("{SEND}{steps}"))).await;
    let ada = t.contact("+1 555 0124", true).await;
    let read = t.enrolled("read", &ada).await;
    t.tick().await;
    // The status webhook for the message the first step sent.
    let wamid = t.outbound.sent().len();
    t.store
        .append_event(
            NewEvent {
                kind: "message_status".into(),
                dedup_key: format!("status:wamid.test.{wamid}:read"),
                phone_number_id: None,
                contact_id: None,
                payload: json!({ "wamid": format!("wamid.test.{wamid}"), "status": "read" }),
                occurred_at: t.clock.now_utc(),
            },
            t.clock.now_utc(),
        )
        .await
        .expect("event");
    t.advance(Duration::from_secs(60)).await;
    let names: Vec<String> = t.steps(read).await.into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["hello", "until-read", "thanks", "done"]);

    let unread = t.enrolled("read", &ada).await;
    t.tick().await;
    t.advance(Duration::from_secs(2 * DAY)).await;
    let names: Vec<String> = t.steps(unread).await.into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["hello", "until-read", "nudge", "done"]);
});

/// A status webhook as the webhook ingests it.
async fn status_webhook(
    t: &TestEngine,
    wamid: &str,
    status: DeliveryStatus,
    callback: Option<String>,
    error: Option<kairo_core::channel::DeliveryError>,
) {
    let update = kairo_core::channel::StatusUpdate {
        number_id: t.number.graph_id.clone(),
        wamid: wamid.into(),
        status,
        recipient: Some("15550150".into()),
        error,
        callback_data: callback,
        payload: json!({}),
        occurred_at: t.clock.now_utc(),
    };
    let keywords = Keywords::new(&[], &[]);
    kairo_engine::inbox::ingest(
        &t.store,
        &[vec![kairo_core::channel::InboundEvent::Status(update)]],
        &keywords,
        t.clock.now_utc(),
    )
    .await
    .expect("ingest");
}

/// A template in the test number's catalogue.
async fn catalogue_template(t: &TestEngine, name: &str, category: &str) {
    t.store
        .upsert_template(
            NewTemplate {
                account_id: t.number.account_id,
                graph_id: format!("tpl-{name}"),
                name: name.into(),
                language: "en_US".into(),
                status: "APPROVED".into(),
                category: category.into(),
                parameter_format: "POSITIONAL".into(),
                components: json!([]),
            },
            t.clock.now_utc(),
        )
        .await
        .expect("template");
}

engine_test!(a_status_webhook_settles_an_uncertain_send, |t| {
    let two = format!("{SEND}  - id: after\n    set_property:\n      done: \"yes\"\n");
    t.load(&api_workflow("hello", "", &two)).await;
    let ada = t.contact("+1 555 0150", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.outbound.fail_next(CallError::new(FailureKind::Unknown, "the connection dropped after the request was sent"));
    t.tick().await;
    assert_eq!(t.steps(id).await[0], ("hello".to_string(), StepState::Uncertain, 1));
    let uncertain = &t.store.step_executions(id).await.expect("read")[0];
    let callback = uncertain.output.as_ref().and_then(|o| o["sending"]["callback_data"].as_str()).expect("kept");
    assert_eq!(callback, format!("kairo:{id}:hello:1"));

    // A status for a wamid Kairo never recorded, naming the send.
    status_webhook(&t, "wamid.late.1", DeliveryStatus::Delivered, Some(callback.to_string()), None).await;
    t.advance(Duration::from_secs(1)).await;
    let rows = t.store.step_executions(id).await.expect("read");
    assert_eq!(rows[0].state, StepState::Succeeded, "the send is known to have left");
    let output = rows[0].output.clone().expect("output");
    assert_eq!(output["wamid"], "wamid.late.1");
    assert_eq!(output["settled_by"], "status_webhook");
    assert_eq!(output["template"], "welcome");
    let message = t.store.message_by_wamid(&Wamid("wamid.late.1".into())).await.expect("read").expect("recorded");
    assert_eq!(message.status, DeliveryStatus::Delivered, "the status that settled it is applied");
    assert_eq!(message.step_execution_id, Some(rows[0].id));
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed, "the enrollment had gone on and stays");
    assert!(t.outbound.sent().is_empty(), "nothing was sent again");
});

engine_test!(a_send_taken_over_after_a_crash_is_settled_by_a_status_that_came_first, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0151", true).await;
    let id = t.enrolled("hello", &ada).await;
    // A worker claims the send, writes what it sends, and dies after the
    // request left; WhatsApp's status arrives before anyone takes over.
    let now = t.clock.now_utc();
    let claimed =
        t.store.claim_due_steps("dead-worker", now, now + chrono::Duration::seconds(30), 10).await.expect("claim");
    let callback = format!("kairo:{id}:hello:1");
    let sending = json!({ "sending": {
        "number": t.number.id, "message_type": "template", "body": null,
        "template": ["welcome", "en_US", { "body": ["Ada"] }], "callback_data": callback,
    }});
    assert!(
        t.store
            .mark_attempting(claimed[0].id, "dead-worker", Some(sending), now, now + chrono::Duration::seconds(30))
            .await
            .expect("attempting")
    );
    status_webhook(&t, "wamid.crash.1", DeliveryStatus::Sent, Some(callback), None).await;
    t.tick().await;
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Attempting, 1)], "the lease still holds");

    t.advance(Duration::from_secs(31)).await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    let rows = t.store.step_executions(id).await.expect("read");
    assert_eq!(rows[0].state, StepState::Succeeded, "not uncertain: the status proves it left");
    assert_eq!(rows[0].output.as_ref().expect("output")["settled_by"], "status_webhook");
    let message = t.store.message_by_wamid(&Wamid("wamid.crash.1".into())).await.expect("read").expect("recorded");
    assert_eq!(message.status, DeliveryStatus::Sent);
    assert!(t.outbound.sent().is_empty());
});

engine_test!(a_status_that_beats_the_sends_commit_is_applied_to_it, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0152", true).await;
    // The recording channel's first wamid; its status is in before the send commits.
    status_webhook(&t, "wamid.test.1", DeliveryStatus::Delivered, None, None).await;
    let id = t.enrolled("hello", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    let message = t.store.message_by_wamid(&Wamid("wamid.test.1".into())).await.expect("read").expect("recorded");
    assert_eq!(message.status, DeliveryStatus::Delivered);
    assert!(t.store.pending_statuses(&Wamid("wamid.test.1".into())).await.expect("read").is_empty());
});

engine_test!(a_quality_drop_pauses_marketing_sends_until_an_operator_resumes, |t| {
    catalogue_template(&t, "welcome", "MARKETING").await;
    catalogue_template(&t, "receipt", "UTILITY").await;
    t.load(&api_workflow("promo", "", SEND)).await;
    t.load(&api_workflow("receipt", "", &SEND.replace("template: welcome", "template: receipt"))).await;
    let flagged = kairo_core::channel::NumberQualityChange {
        account_id: "1001".into(),
        display_number: "15550001111".into(),
        event: "FLAGGED".into(),
        current_limit: Some("TIER_1K".into()),
        payload: json!({ "display_phone_number": "15550001111", "event": "FLAGGED", "current_limit": "TIER_1K" }),
        occurred_at: t.clock.now_utc(),
    };
    let keywords = Keywords::new(&[], &[]);
    kairo_engine::inbox::ingest(
        &t.store,
        &[vec![kairo_core::channel::InboundEvent::NumberQuality(flagged)]],
        &keywords,
        t.clock.now_utc(),
    )
    .await
    .expect("ingest");
    let number = t.store.phone_number_by_graph_id(&t.number.graph_id).await.expect("read").expect("number");
    assert!(number.paused_at.is_some());
    assert_eq!(number.pause_scope.as_deref(), Some("marketing"));
    assert_eq!(number.pause_reason.as_deref(), Some("quality webhook FLAGGED"));
    assert_eq!(number.messaging_limit_tier.as_deref(), Some("TIER_1K"));
    t.engine.refresh().await.expect("refresh");

    let ada = t.contact("+1 555 0153", true).await;
    let promo = t.enrolled("promo", &ada).await;
    let receipt = t.enrolled("receipt", &ada).await;
    t.tick().await;
    assert_eq!(t.status(receipt).await, EnrollmentStatus::Completed, "a utility template still goes");
    assert_eq!(t.outbound.sent().len(), 1);
    let held = &t.store.step_executions(promo).await.expect("read")[0];
    assert_eq!(held.state, StepState::Pending, "the marketing send waits, no attempt spent");
    assert_eq!(held.output.as_ref().expect("why")["waiting"], "number_paused");
    t.advance(Duration::from_secs(3600)).await;
    assert_eq!(t.outbound.sent().len(), 1, "still held an hour later");

    assert!(t.store.resume_number(t.number.id, t.clock.now_utc()).await.expect("resume"));
    assert!(!t.store.resume_number(t.number.id, t.clock.now_utc()).await.expect("resume twice"), "already resumed");
    t.advance(Duration::from_secs(61)).await;
    assert_eq!(t.status(promo).await, EnrollmentStatus::Completed, "sent within a minute of the resume");
    assert_eq!(t.outbound.sent().len(), 2);
});

engine_test!(an_account_restriction_pauses_every_send_of_its_numbers, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let notice = kairo_core::channel::Notice {
        account_id: "1001".into(),
        field: "account_update".into(),
        restrictions: vec![kairo_core::channel::Restriction {
            kind: "RESTRICTED_BIZ_INITIATED_MESSAGING".into(),
            stops_sends: true,
            until: chrono::DateTime::from_timestamp(1767866400, 0),
            until_text: None,
        }],
        payload: json!({ "event": "ACCOUNT_RESTRICTION", "restriction_info": [
            { "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1767866400 }
        ]}),
        occurred_at: t.clock.now_utc(),
    };
    let keywords = Keywords::new(&[], &[]);
    kairo_engine::inbox::ingest(
        &t.store,
        &[vec![kairo_core::channel::InboundEvent::Notice(notice)]],
        &keywords,
        t.clock.now_utc(),
    )
    .await
    .expect("ingest");
    let number = t.store.phone_number_by_graph_id(&t.number.graph_id).await.expect("read").expect("number");
    assert_eq!(number.pause_scope.as_deref(), Some("all"));
    assert_eq!(
        number.pause_reason.as_deref(),
        Some("account restricted: RESTRICTED_BIZ_INITIATED_MESSAGING until 2026-01-08 10:00 UTC")
    );
    t.engine.refresh().await.expect("refresh");
    let ada = t.contact("+1 555 0154", true).await;
    let id = t.enrolled("hello", &ada).await;
    t.advance(Duration::from_secs(600)).await;
    assert!(t.outbound.sent().is_empty());
    assert_eq!(t.steps(id).await, vec![("hello".to_string(), StepState::Pending, 1)]);
});

engine_test!(pair_rate_answers_make_the_wait_grow, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let ada = t.contact("+1 555 0155", true).await;
    let id = t.enrolled("hello", &ada).await;
    for _ in 0..3 {
        t.outbound.fail_next(
            CallError::new(FailureKind::Throttled, "WhatsApp error 131056: pair rate limit hit")
                .with_code(131056)
                .throttled(ThrottleScope::Recipient),
        );
    }
    let mut waits = Vec::new();
    t.tick().await;
    for _ in 0..3 {
        let row = &t.store.step_executions(id).await.expect("read")[0];
        assert_eq!(row.state, StepState::Pending, "a limit never fails the step");
        assert_eq!(row.attempt, 1, "nor spends an attempt");
        let wait = (row.due_at - t.clock.now_utc()).num_milliseconds();
        waits.push(wait);
        t.clock.set(row.due_at);
        t.tick().await;
    }
    // 6 s, 12 s, 24 s, each with up to a quarter more of jitter.
    for (wait, base) in waits.iter().zip([6_000, 12_000, 24_000]) {
        assert!((base..=base * 5 / 4).contains(wait), "waited {waits:?}");
    }
    assert_eq!(t.status(id).await, EnrollmentStatus::Completed);
    assert_eq!(t.outbound.sent().len(), 1);
});

engine_test!(failed_statuses_show_in_the_history_and_the_workflow_counts, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let contact = t.contact(&format!("+1 555 016{i}"), true).await;
        ids.push(t.enrolled("hello", &contact).await);
    }
    t.tick().await;
    let wamid = |id: EnrollmentId| {
        let t = &t;
        async move {
            let steps = t.store.enrollment_steps(id).await.expect("history");
            steps[0].message.as_ref().and_then(|m| m.wamid.clone()).expect("a recorded send").0
        }
    };
    let failure = |code: i32, title: &str| kairo_core::channel::DeliveryError {
        code,
        title: title.into(),
        details: Some("from the fixture".into()),
        advice: None,
    };
    status_webhook(&t, &wamid(ids[0]).await, DeliveryStatus::Delivered, None, None).await;
    status_webhook(
        &t,
        &wamid(ids[1]).await,
        DeliveryStatus::Failed,
        None,
        Some(failure(131026, "Message undeliverable")),
    )
    .await;
    status_webhook(
        &t,
        &wamid(ids[2]).await,
        DeliveryStatus::Failed,
        None,
        Some(failure(131047, "Re-engagement message")),
    )
    .await;
    status_webhook(
        &t,
        &wamid(ids[3]).await,
        DeliveryStatus::Failed,
        None,
        Some(failure(131026, "Message undeliverable")),
    )
    .await;
    t.advance(Duration::from_secs(1)).await;

    let history = t.store.enrollment_steps(ids[1]).await.expect("history");
    assert_eq!(history.len(), 1);
    let message = history[0].message.as_ref().expect("the send's message");
    assert_eq!(history[0].execution.state, StepState::Succeeded, "the send itself went");
    assert_eq!(message.status, DeliveryStatus::Failed);
    assert_eq!(message.error_code, Some(131026));
    assert_eq!(message.error_title.as_deref(), Some("Message undeliverable"));

    let workflow = t.store.workflow_by_key("hello").await.expect("read").expect("workflow");
    let counts = t.store.step_counts(workflow.id).await.expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].step_id, "hello");
    assert_eq!(counts[0].states.get("succeeded"), Some(&4));
    assert_eq!(counts[0].deliveries.get("delivered"), Some(&1));
    assert_eq!(counts[0].deliveries.get("failed"), Some(&3));
    assert_eq!(counts[0].failures, [(131026, 2), (131047, 1)].into_iter().collect());
});

engine_test!(the_send_estimate_follows_throughput_then_the_messaging_limit, |t| {
    t.load(&api_workflow("hello", "", SEND)).await;
    for i in 0..200 {
        let contact = t.contact(&format!("+1 555 6{i:06}"), true).await;
        t.enrolled("hello", &contact).await;
    }
    let now = t.clock.now_utc();
    let estimates = t.engine.send_estimates().await.expect("estimate");
    assert_eq!(estimates.len(), 1);
    let e = &estimates[0];
    assert_eq!((e.queued, e.bound_by, e.messaging_limit), (200, "throughput", None));
    assert_eq!(e.rate_per_second, 77.6, "80/s at 97 %");
    // 200 sends at 77.6/s: 2.58 s.
    assert_eq!((e.last_send_at - now).num_milliseconds(), 2_578);

    // Under the TIER_50 limit, 50 a day: today's 50, then three more days.
    t.store
        .upsert_phone_number(
            NewPhoneNumber {
                account_id: t.number.account_id,
                graph_id: t.number.graph_id.clone(),
                display_number: t.number.display_number.clone(),
                normalized_number: t.number.normalized_number.clone(),
                verified_name: None,
                quality_rating: None,
                throughput_mps: 80,
                messaging_limit_tier: Some("TIER_50".into()),
            },
            now,
        )
        .await
        .expect("number");
    let e = &t.engine.send_estimates().await.expect("estimate")[0];
    assert_eq!((e.bound_by, e.messaging_limit, e.reached), ("messaging_limit", Some(50), Some(0)));
    let days = (e.last_send_at - now).num_hours() / 24;
    assert_eq!(days, 3, "{:?}", e.last_send_at);
});

// ---------------------------------------------------------------------------
// Issue 14: the semantics users trust. Each test is named after its item.

// B13: the estimate counts a send held by quiet hours from when they end,
// and says a paused number sends nothing until it is resumed.
engine_test!(b13_the_send_estimate_waits_for_quiet_hours_and_pauses, |t| {
    let extra = "quiet_hours:\n  from: \"09:00\"\n  to: \"20:00\"\n  timezone_property: tz\n";
    t.load(&api_workflow("polite", extra, SEND)).await;
    t.clock.advance(Duration::from_secs(3600)); // 20:00 in Tokyo: quiet
    for i in 0..10 {
        let contact = t.contact(&format!("+1 555 7{i:06}"), true).await;
        set_properties(&t, contact.id, json!({ "tz": "Asia/Tokyo" })).await;
        t.enrolled("polite", &contact).await;
    }
    t.tick().await;
    assert!(t.outbound.sent().is_empty(), "all held by quiet hours");
    let now = t.clock.now_utc();
    let e = &t.engine.send_estimates().await.expect("estimate")[0];
    assert_eq!((e.queued, e.bound_by), (10, "throughput"));
    // Quiet until 09:00 in Tokyo, 13 h from now: the last goes just after.
    let hours = (e.last_send_at - now).num_minutes() as f64 / 60.0;
    assert!((12.9..13.1).contains(&hours), "{hours} h: {:?}", e.last_send_at);

    t.store.pause_number(t.number.id, PauseScope::All, "quality RED", now).await.expect("pause");
    let e = &t.engine.send_estimates().await.expect("estimate")[0];
    assert_eq!((e.queued, e.bound_by), (10, "paused"));
    assert_eq!(e.paused.as_deref(), Some("quality RED"));
});

/// Merges `patch` into a contact's properties, as a step would.
async fn set_properties(t: &TestEngine, contact: ContactId, patch: serde_json::Value) {
    let tx = t.store.begin().await.expect("begin");
    tx.set_contact_properties(contact, patch.as_object().expect("an object"), t.clock.now_utc()).await.expect("set");
    tx.commit().await.expect("commit");
}

/// A text message from `from` on the test number, ingested as the webhook
/// journal's applier does (default keywords).
async fn inbound_text(t: &TestEngine, wamid: &str, from: &str, text: &str) {
    inbound_on(t, &t.number, wamid, from, text).await;
}

// 14.A6
engine_test!(resume_wakes_held_sends_at_once, |t| {
    catalogue_template(&t, "welcome", "MARKETING").await;
    t.load(&api_workflow("promo", "", SEND)).await;
    let ada = t.contact("15550160", true).await;
    // The channel says the access token is bad: the number pauses and the send is held.
    t.outbound
        .fail_next(CallError { code: Some(190), ..CallError::new(FailureKind::Auth, "Invalid OAuth access token") });
    let promo = t.enrolled("promo", &ada).await;
    t.tick().await;
    let held = &t.store.step_executions(promo).await.expect("read")[0];
    assert_eq!(held.state, StepState::Pending);
    assert_eq!(held.output.as_ref().expect("why")["waiting"], "number_paused");
    assert!(held.due_at > t.clock.now_utc() + chrono::Duration::seconds(60), "held for minutes");
    assert!(t.outbound.sent().is_empty());

    t.advance(Duration::from_secs(1)).await;
    assert!(t.store.resume_number(t.number.id, t.clock.now_utc()).await.expect("resume"));
    t.engine.refresh().await.expect("refresh");
    t.tick().await;
    assert_eq!(t.outbound.sent().len(), 1, "sent at once after the resume, not minutes later");
    assert_eq!(t.status(promo).await, EnrollmentStatus::Completed);
});

// 14.B7
engine_test!(goals_see_the_trigger_and_a_missing_value_never_meets_them, |t| {
    let extra = "goal:\n  when: 'contact.last_order_cart == trigger.cart_id'\n";
    let steps = format!("\n  - id: pause\n    wait:\n      for: 1d{SEND}");
    t.load(&api_workflow("cart", extra, &steps)).await;
    let ada = t.contact("15550161", true).await;
    let no_cart = t.enrolled("cart", &ada).await;
    let id = match t.enroll("cart", &t.contact("15550162", true).await, json!({ "cart_id": "c-1" })).await {
        Enrolled::Enrolled { enrollment } => enrollment,
        other => panic!("{other:?}"),
    };
    let bob = t.store.enrollment(id).await.expect("read").expect("exists").contact_id;
    let bob = t.store.contact(bob).await.expect("read").expect("exists");
    t.tick().await;
    // A reply, a status and an opt-out word are events; none meets the goal.
    inbound_text(&t, "wamid.goal.1", "15550162", "hello?").await;
    inbound_text(&t, "wamid.goal.2", "15550161", "hi").await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting, "null == null is not a goal met");
    assert_eq!(t.status(no_cart).await, EnrollmentStatus::Waiting);

    // The order for this cart arrives: the next event meets the goal.
    set_properties(&t, bob.id, json!({ "last_order_cart": "c-1" })).await;
    inbound_text(&t, "wamid.goal.3", "15550162", "ordered!").await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::GoalMet);
    assert_eq!(t.status(no_cart).await, EnrollmentStatus::Waiting, "still no cart: no goal");
});

// 14.B7
#[test]
fn a_comparison_with_a_missing_value_is_false() {
    let context = json!({ "contact": { "plan": "pro" }, "trigger": {} });
    let holds = |text: &str| workflow::condition::Condition::parse(text).expect(text).evaluate(&context);
    assert!(!holds("contact.cart == trigger.cart"));
    assert!(!holds("contact.cart != \"x\""));
    assert!(!holds("contact.cart < 3"));
    assert!(holds("contact.cart == null"));
    assert!(!holds("contact.cart != null"));
    assert!(holds("contact.plan != null"));
    assert!(holds("not (contact.cart == \"x\")"));
}

// 14.B8
engine_test!(exit_conditions_are_checked_on_events, |t| {
    let extra = "exit_when:\n  - when: 'contact.status == \"churned\"'\n";
    let steps = format!("\n  - id: pause\n    wait:\n      for: 1d{SEND}");
    t.load(&api_workflow("winback", extra, &steps)).await;
    let ada = t.contact("15550163", true).await;
    let id = t.enrolled("winback", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Waiting);
    set_properties(&t, ada.id, json!({ "status": "churned" })).await;
    inbound_text(&t, "wamid.exit.1", "15550163", "bye").await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Exited);
    let enrollment = t.store.enrollment(id).await.expect("read").expect("exists");
    assert!(enrollment.exit_reason.expect("reason").contains("churned"));
    t.advance(Duration::from_secs(DAY)).await;
    assert!(t.outbound.sent().is_empty(), "nothing sent after the exit");
});

// 14.B13
engine_test!(held_steps_say_why_and_until_when, |t| {
    let extra = "quiet_hours:\n  from: \"08:00\"\n  to: \"21:00\"\n  timezone_property: tz\n";
    t.load(&api_workflow("late", extra, SEND)).await;
    t.clock.advance(Duration::from_secs(12 * 3600)); // 22:00 UTC
    let ada = t.contact("15550164", true).await;
    set_properties(&t, ada.id, json!({ "tz": "UTC" })).await;
    let id = t.enrolled("late", &ada).await;
    t.tick().await;
    let held = &t.store.step_executions(id).await.expect("read")[0];
    assert_eq!(held.state, StepState::Pending);
    let output = held.output.as_ref().expect("why");
    assert_eq!(output["waiting"], "quiet_hours");
    let until: DateTime<Utc> = serde_json::from_value(output["until"].clone()).expect("a time");
    assert_eq!(until, held.due_at);
    assert_eq!(until, t0() + chrono::Duration::hours(22));
});

// 14.A5
engine_test!(a_reply_makes_the_checks_a_workflow_send_makes, |t| {
    catalogue_template(&t, "welcome", "MARKETING").await;
    let ada = t.contact("15550165", true).await;
    inbound_text(&t, "wamid.reply.1", "15550165", "hello").await;
    let thread = t.store.open_thread_of(ada.id, t.number.id).await.expect("read").expect("a thread");
    assert!(
        t.store
            .pause_number(t.number.id, PauseScope::All, "credentials: bad token", t.clock.now_utc())
            .await
            .expect("pause")
    );
    t.engine.refresh().await.expect("refresh");
    let refused = t.engine.reply(thread.id, ReplyContent::Text { text: "hi".into() }, None).await;
    assert!(matches!(refused, Err(ReplyError::NumberPaused { .. })), "{refused:?}");
    assert!(t.outbound.sent().is_empty(), "nothing left a paused number");
    assert!(t.store.resume_number(t.number.id, t.clock.now_utc()).await.expect("resume"));
    t.engine.refresh().await.expect("refresh");
    t.engine.reply(thread.id, ReplyContent::Text { text: "hi".into() }, None).await.expect("sent after the resume");
    assert_eq!(t.outbound.sent().len(), 1);
    // A credentials answer to a reply pauses the number as a step's would.
    t.outbound
        .fail_next(CallError { code: Some(190), ..CallError::new(FailureKind::Auth, "Invalid OAuth access token") });
    let failed = t.engine.reply(thread.id, ReplyContent::Text { text: "again".into() }, None).await;
    assert!(matches!(failed, Err(ReplyError::Refused(_))), "{failed:?}");
    let number = t.store.phone_number_by_graph_id(&t.number.graph_id).await.expect("read").expect("number");
    assert!(number.paused_at.is_some(), "the bad token paused the number");
});

/// A second connected number, `+1 555-000-2222`.
async fn second_number(t: &TestEngine) -> PhoneNumber {
    let number = connect_number(&t.store, "222222222", "+1 555-000-2222", 80, t.clock.now_utc()).await;
    t.engine.refresh().await.expect("refresh");
    number
}

async fn inbound_on(t: &TestEngine, number: &PhoneNumber, wamid: &str, from: &str, text: &str) {
    let message = kairo_core::channel::InboundMessage {
        number_id: number.graph_id.clone(),
        wamid: wamid.into(),
        from: Some(from.into()),
        from_user_id: None,
        profile_name: Some("Ada".into()),
        message_type: "text".into(),
        text: Some(text.into()),
        payload: json!({ "type": "text", "text": { "body": text } }),
        content: None,
        occurred_at: t.clock.now_utc(),
        identity_change: None,
    };
    kairo_engine::inbox::ingest(
        &t.store,
        &[vec![kairo_core::channel::InboundEvent::Message(message)]],
        &Keywords::default(),
        t.clock.now_utc(),
    )
    .await
    .expect("ingest");
}

// 14.B9
engine_test!(assign_owner_assigns_the_thread_of_the_enrollments_own_conversation, |t| {
    let support = second_number(&t).await;
    let team = t.store.insert_team("Support", t.clock.now_utc()).await.expect("team");
    let agent = t
        .store
        .insert_user(
            NewUser { email: "sam@example.com".into(), name: "Sam".into(), role: kairo_core::status::UserRole::Agent },
            t.clock.now_utc(),
        )
        .await
        .expect("user");
    t.store.add_team_member(team.id, agent.id, t.clock.now_utc()).await.expect("member");
    let steps = "\n  - id: assign\n    assign_owner:\n      round_robin: Support\n";
    let yaml = format!(
        "id: routing\nname: Routing\ntriggers:\n  - inbound_message:\n      number: \"+1 555-000-2222\"\nsteps:{steps}"
    );
    t.load(&yaml).await;
    let ada = t.contact("15550170", true).await;
    // Ada has a thread on -1111 first, then writes to support on -2222.
    inbound_on(&t, &t.number, "wamid.own.1", "15550170", "order question").await;
    t.clock.advance(Duration::from_secs(60));
    inbound_on(&t, &support, "wamid.own.2", "15550170", "help!").await;
    t.tick().await;
    let sales_thread = t.store.open_thread_of(ada.id, t.number.id).await.expect("q").expect("thread on -1111");
    let support_thread = t.store.open_thread_of(ada.id, support.id).await.expect("q").expect("thread on -2222");
    assert_eq!(support_thread.owner_user_id, Some(agent.id), "the conversation the enrollment came from");
    assert_eq!(sales_thread.owner_user_id, None, "the other number's thread is left alone");
});

// 14.B10
engine_test!(assign_owner_to_a_team_that_does_not_exist_fails_with_the_reason, |t| {
    let steps = "\n  - id: assign\n    assign_owner:\n      team: Nobody\n      number: \"+1 555-000-1111\"\n";
    t.load(&api_workflow("ghost", "", steps)).await;
    let ada = t.contact("15550171", true).await;
    inbound_text(&t, "wamid.ghost.1", "15550171", "hi").await;
    let id = t.enrolled("ghost", &ada).await;
    t.tick().await;
    assert_eq!(t.status(id).await, EnrollmentStatus::Failed);
    let step = &t.store.step_executions(id).await.expect("read")[0];
    assert_eq!(step.state, StepState::Failed);
    assert!(step.error.as_deref().expect("why").contains("no active team named `Nobody`"), "{:?}", step.error);
});

// 14.B10
engine_test!(validation_names_an_owner_that_does_not_exist_with_its_position, |t| {
    t.store.insert_team("Support", t.clock.now_utc()).await.expect("team");
    let catalog = kairo_engine::registry::catalog(&t.store).await.expect("catalog");
    let yaml = api_workflow("ghost", "", "\n  - id: assign\n    assign_owner:\n      round_robin: Sales\n");
    let problems = workflow::check(Path::new("ghost.yaml"), &yaml, Some(&catalog)).expect_err("rejected");
    let text = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("ghost.yaml:8:20"), "{text}");
    assert!(text.contains("no team named `Sales`") && text.contains("Support"), "{text}");
});

// 14.B11
engine_test!(a_removed_workflow_file_archives_the_workflow_and_stops_its_schedule, |t| {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("minutely.yaml");
    let yaml = format!(
        "id: minutely\nname: Minutely\ntriggers:\n  - schedule:\n      cron: \"* * * * *\"\n      timezone: UTC\n      contacts:\n        opted_in_on: \"+1 555-000-1111\"\n  - api: {{}}\nenrollment:\n  reenroll: always\nsteps:\n  - id: pause\n    wait:\n      for: 1h\n{}",
        SEND.trim_start_matches('\n')
    );
    std::fs::write(&file, &yaml).expect("write");
    let report =
        kairo_engine::registry::load_workflows(&t.store, dir.path(), None, t.clock.now_utc()).await.expect("load");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    t.engine.refresh().await.expect("refresh");
    let ada = t.contact("15550180", true).await;
    t.advance(Duration::from_secs(60)).await;
    let running = t.store.enrollments_of(ada.id).await.expect("read");
    assert_eq!(running.len(), 1, "the schedule fires while the file is there");

    std::fs::remove_file(&file).expect("remove");
    let report =
        kairo_engine::registry::load_workflows(&t.store, dir.path(), None, t.clock.now_utc()).await.expect("load");
    assert_eq!(report.archived, vec!["minutely".to_string()]);
    t.engine.refresh().await.expect("refresh");
    for _ in 0..3 {
        t.advance(Duration::from_secs(60)).await;
    }
    assert_eq!(t.store.enrollments_of(ada.id).await.expect("read").len(), 1, "no tick fires after the file is gone");
    let refused =
        t.engine.enroll(EnrollRequest { workflow: "minutely".into(), contact: ada.id, trigger_data: json!({}) }).await;
    assert!(
        matches!(refused, Err(EngineError::WorkflowNotActive { state: WorkflowState::Archived, .. })),
        "{refused:?}"
    );
    // The running enrollment finishes on its version.
    t.advance(Duration::from_secs(3600)).await;
    assert_eq!(t.status(running[0].id).await, EnrollmentStatus::Completed);
    assert_eq!(t.outbound.sent().len(), 1);

    // Paused and resumed by an operator; the file put back makes it active.
    std::fs::write(&file, &yaml).expect("write");
    kairo_engine::registry::load_workflows(&t.store, dir.path(), None, t.clock.now_utc()).await.expect("load");
    let workflow = t.store.workflow_by_key("minutely").await.expect("read").expect("exists");
    assert_eq!(WorkflowState::of(&workflow), WorkflowState::Active);
    t.store.set_workflow_state("minutely", WorkflowState::Paused, t.clock.now_utc()).await.expect("pause");
    t.engine.refresh().await.expect("refresh");
    let before = t.store.enrollments_of(ada.id).await.expect("read").len();
    t.advance(Duration::from_secs(120)).await;
    assert_eq!(t.store.enrollments_of(ada.id).await.expect("read").len(), before, "a paused workflow enrolls nobody");
    t.store.set_workflow_state("minutely", WorkflowState::Active, t.clock.now_utc()).await.expect("resume");
    t.engine.refresh().await.expect("refresh");
    t.advance(Duration::from_secs(60)).await;
    assert_eq!(t.store.enrollments_of(ada.id).await.expect("read").len(), before + 1, "resumed: it fires again");
});

// 14.C15
engine_test!(a_contact_known_only_by_user_id_gets_sends_but_no_authentication_template, |t| {
    catalogue_template(&t, "welcome", "MARKETING").await;
    catalogue_template(&t, "login_code", "AUTHENTICATION").await;
    t.load(&api_workflow("hello", "", SEND)).await;
    t.load(&api_workflow("otp", "", &SEND.replace("template: welcome", "template: login_code"))).await;
    let user = t
        .store
        .insert_contact(
            NewContact {
                user_id: Some("US.13491208655302741918".into()),
                properties: json!({ "first_name": "Una" }),
                ..NewContact::default()
            },
            t.clock.now_utc(),
        )
        .await
        .expect("contact");
    t.consent(&user, ConsentStatus::OptedIn).await;
    let hello = t.enrolled("hello", &user).await;
    let otp = t.enrolled("otp", &user).await;
    t.tick().await;
    assert_eq!(t.status(hello).await, EnrollmentStatus::Completed);
    let sent = t.outbound.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], "US.13491208655302741918", "the channel sends it as `recipient`");
    assert_eq!(t.status(otp).await, EnrollmentStatus::Failed);
    let step = &t.store.step_executions(otp).await.expect("read")[0];
    assert!(step.error.as_deref().expect("why").contains("131062"), "{:?}", step.error);
});

// 14.C16
engine_test!(sends_go_to_the_number_the_contact_writes_from, |t| {
    t.load(&api_workflow("hello", "enrollment:\n  reenroll: always\n", SEND)).await;
    // Created as the API creates it: phone and mobile phone, no WhatsApp id yet.
    let ada = t
        .store
        .insert_contact(
            NewContact {
                phone: Some("15550190".into()),
                mobile_phone: Some("15550191".into()),
                properties: json!({ "first_name": "Ada" }),
                ..NewContact::default()
            },
            t.clock.now_utc(),
        )
        .await
        .expect("contact");
    t.consent(&ada, ConsentStatus::OptedIn).await;
    t.enrolled("hello", &ada).await;
    t.tick().await;
    assert_eq!(t.outbound.sent()[0]["to"], "15550190", "before any message: the phone");
    inbound_text(&t, "wamid.mobile.1", "15550191", "hi from my mobile").await;
    t.tick().await;
    let learnt = t.store.contact(ada.id).await.expect("read").expect("exists");
    assert_eq!(learnt.wa_id.as_deref(), Some("15550191"));
    t.enrolled("hello", &ada).await;
    t.tick().await;
    assert_eq!(t.outbound.sent()[1]["to"], "15550191", "after it wrote: the number it writes from");
});

// 15.13: a reply on a closed thread reopens it.
engine_test!(a_reply_on_a_closed_thread_reopens_it, |t| {
    let ada = t.contact("15550195", true).await;
    t.engine.refresh().await.expect("refresh");
    inbound_text(&t, "wamid.closed.1", "15550195", "thanks, all good").await;
    let thread = t.store.open_thread_of(ada.id, t.number.id).await.expect("q").expect("a thread");
    assert!(t.store.close_thread(thread.id, None, t.clock.now_utc()).await.expect("close"));
    let sent = t.engine.reply(thread.id, ReplyContent::Text { text: "one more thing".into() }, None).await;
    assert!(sent.is_ok(), "{sent:?}");
    let reopened = t.store.thread(thread.id).await.expect("q").expect("thread");
    assert_eq!(reopened.status, ThreadStatus::Open);
    assert_eq!(t.outbound.sent().len(), 1);
});
