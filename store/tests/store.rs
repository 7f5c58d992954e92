//! The store on both backends: one schema, every entity round-trips, and the
//! uniqueness rules the product relies on hold.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use kairo_core::ids::*;
use kairo_core::status::*;
use kairo_store::store_test;
use kairo_store::testing::TestDb;
use kairo_store::*;
use serde_json::json;

/// A fixed instant with microsecond precision, which both backends keep.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T09:30:00.123456Z").expect("valid").to_utc().trunc_subsecs(6)
}

/// A portfolio, an account and a connected number: what most rows hang on.
async fn number(store: &Store) -> (Portfolio, Account, PhoneNumber) {
    let portfolio = store
        .upsert_portfolio(
            NewPortfolio { business_id: "1042".into(), name: "Acme".into(), messaging_limit: Some("2k".into()) },
            t0(),
        )
        .await
        .expect("portfolio");
    let account = store
        .upsert_account(
            NewAccount {
                waba_id: "102290129340398".into(),
                name: "Acme WABA".into(),
                portfolio_id: Some(portfolio.id),
            },
            t0(),
        )
        .await
        .expect("account");
    let number = store
        .upsert_phone_number(
            NewPhoneNumber {
                account_id: account.id,
                graph_id: "106540352242922".into(),
                display_number: "+1 555-010-0100".into(),
                normalized_number: "15550100100".into(),
                verified_name: Some("Acme".into()),
                quality_rating: Some("GREEN".into()),
                throughput_mps: 80,
                messaging_limit_tier: None,
            },
            t0(),
        )
        .await
        .expect("number");
    (portfolio, account, number)
}

async fn contact(store: &Store, phone: &str) -> Contact {
    store
        .insert_contact(
            NewContact {
                name: Some("Ada".into()),
                phone: Some(phone.into()),
                mobile_phone: None,
                wa_id: Some(phone.into()),
                user_id: None,
                properties: json!({"plan": "pro", "cart_total": 42.5}),
            },
            t0(),
        )
        .await
        .expect("contact")
}

fn inbound(thread: ThreadId, wamid: &str) -> NewMessage {
    NewMessage {
        thread_id: thread,
        direction: Direction::Inbound,
        wamid: Some(Wamid(wamid.into())),
        message_type: "text".into(),
        body: Some("YES".into()),
        payload: json!({"text": {"body": "YES"}}),
        status: DeliveryStatus::Received,
        template_name: None,
        template_language: None,
        template_params: None,
        enrollment_id: None,
        step_execution_id: None,
        occurred_at: t0(),
        sent_by: None,
        content: None,
    }
}

#[tokio::test]
async fn migrations_give_the_same_schema_on_sqlite_and_postgres() {
    let sqlite = TestDb::sqlite();
    let postgres = TestDb::postgres().await;
    let on_sqlite = sqlite.store().await.describe_schema().await.expect("sqlite schema");
    let on_postgres = postgres.store().await.describe_schema().await.expect("postgres schema");
    assert!(on_sqlite.columns.len() > 150, "suspiciously few columns: {:?}", on_sqlite.columns);
    assert!(
        on_sqlite.indexes.iter().any(|i| i == "messages.uq_messages_wamid: unique wamid"),
        "{:?}",
        on_sqlite.indexes
    );
    assert_eq!(on_sqlite.columns, on_postgres.columns);
    assert_eq!(on_sqlite.indexes, on_postgres.indexes);
}

store_test!(migrating_twice_is_a_no_op_and_leaves_the_store_ready, |store| {
    store.migrate().await.expect("second migration run");
    let status = store.migration_status().await.expect("status");
    assert!(!status.is_empty() && status.iter().all(|m| m.applied), "{status:?}");
    let readiness = store.readiness().await;
    assert!(readiness.is_ready(), "{readiness:?}");
});

store_test!(every_entity_round_trips, |store| {
    let (portfolio, account, number) = number(&store).await;
    assert_eq!(portfolio.messaging_limit.as_deref(), Some("2k"));
    assert_eq!(account.portfolio_id, Some(portfolio.id));
    assert_eq!(store.phone_number_by_graph_id("106540352242922").await.expect("find"), Some(number.clone()));
    assert_eq!(number.connected_at, t0());

    let template = store
        .upsert_template(
            NewTemplate {
                account_id: account.id,
                graph_id: "594425479261596".into(),
                name: "order_confirmation".into(),
                language: "en_US".into(),
                status: "APPROVED".into(),
                category: "UTILITY".into(),
                parameter_format: "POSITIONAL".into(),
                components: json!([{"type": "BODY", "text": "Order {{1}} is confirmed"}]),
            },
            t0(),
        )
        .await
        .expect("template");
    assert_eq!(store.templates(account.id).await.expect("templates"), vec![template.clone()]);

    let ada = contact(&store, "15550100200").await;
    assert_eq!(store.contact(ada.id).await.expect("get"), Some(ada.clone()));
    assert_eq!(ada.properties["cart_total"], json!(42.5));

    let consent = store
        .record_consent(
            ConsentChange {
                contact_id: ada.id,
                phone_number_id: number.id,
                status: ConsentStatus::OptedIn,
                source: ConsentSource::Keyword,
                keyword: Some("YES".into()),
                wamid: Some(Wamid("wamid.in.1".into())),
            },
            t0(),
        )
        .await
        .expect("consent");
    assert_eq!(consent.status, ConsentStatus::OptedIn);
    let history = store.consent_history(ada.id, number.id).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].keyword.as_deref(), Some("YES"));
    assert_eq!(history[0].wamid, Some(Wamid("wamid.in.1".into())));

    let agent = store
        .insert_user(
            NewUser {
                email: "agent@acme.test".into(),
                name: "Agent".into(),
                role: kairo_core::status::UserRole::Agent,
            },
            t0(),
        )
        .await
        .expect("user");
    assert_eq!(store.user(agent.id).await.expect("get user"), Some(agent.clone()));
    let team = store.insert_team("Support", t0()).await.expect("team");
    store.add_team_member(team.id, agent.id, t0()).await.expect("member");
    assert_eq!(store.team_members(team.id).await.expect("members"), vec![agent.id]);
    let rule = store
        .insert_assignment_rule(
            NewAssignmentRule { phone_number_id: number.id, user_id: None, team_id: Some(team.id), position: 0 },
            t0(),
        )
        .await
        .expect("rule");
    assert_eq!(store.assignment_rules(number.id).await.expect("rules"), vec![rule]);

    let thread = store
        .open_thread(
            NewThread { contact_id: ada.id, phone_number_id: number.id, customer_wa_id: "15550100200".into() },
            t0(),
        )
        .await
        .expect("thread");
    assert_eq!(store.thread(thread.id).await.expect("get thread"), Some(thread.clone()));
    assert_eq!(store.open_thread_of(ada.id, number.id).await.expect("open thread"), Some(thread.clone()));
    let message = store.record_message(inbound(thread.id, "wamid.in.1"), t0()).await.expect("message");
    assert_eq!(store.messages(thread.id).await.expect("messages"), vec![message.clone()]);
    assert_eq!(store.message_by_wamid(&Wamid("wamid.in.1".into())).await.expect("by wamid"), Some(message));

    let pending = store
        .keep_pending_status(
            Wamid("wamid.out.9".into()),
            DeliveryStatus::Delivered,
            json!({"status": "delivered"}),
            t0(),
            t0(),
        )
        .await
        .expect("pending status");
    assert_eq!(store.pending_statuses(&Wamid("wamid.out.9".into())).await.expect("pending"), vec![pending]);

    let view = store
        .insert_saved_view(
            NewSavedView {
                name: "Mine, open".into(),
                owner_user_id: Some(agent.id),
                filter: json!({"status": "open"}),
            },
            t0(),
        )
        .await
        .expect("view");
    assert_eq!(store.saved_views().await.expect("views"), vec![view]);

    let saved = store
        .save_workflow_version("welcome", "Welcome", "sha256:aa", json!({"steps": []}), "id: welcome\n", t0())
        .await
        .expect("workflow");
    assert!(saved.created);
    assert_eq!(saved.version.version, 1);
    assert_eq!(saved.workflow.current_version_id, Some(saved.version.id));
    assert_eq!(store.workflow_by_key("welcome").await.expect("wf"), Some(saved.workflow.clone()));
    assert_eq!(store.workflow_version(saved.version.id).await.expect("ver"), Some(saved.version.clone()));

    let enrollment = store
        .insert_enrollment(
            NewEnrollment {
                workflow_id: saved.workflow.id,
                workflow_version_id: saved.version.id,
                contact_id: ada.id,
                trigger_kind: "api".into(),
                trigger_data: json!({"order_id": "A-1"}),
            },
            t0(),
        )
        .await
        .expect("enrollment");
    assert_eq!(enrollment.status, EnrollmentStatus::Active);
    assert_eq!(store.enrollment(enrollment.id).await.expect("get"), Some(enrollment.clone()));

    let step = store
        .insert_step_execution(
            NewStepExecution { enrollment_id: enrollment.id, step_id: "welcome".into(), attempt: 1, due_at: t0() },
            t0(),
        )
        .await
        .expect("step");
    assert_eq!(store.step_executions(enrollment.id).await.expect("steps"), vec![step.clone()]);

    let timer = store
        .insert_timer(
            NewTimer {
                enrollment_id: enrollment.id,
                step_execution_id: Some(step.id),
                kind: kairo_core::status::TimerKind::Wait,
                wake_at: t0() + Duration::days(30),
            },
            t0(),
        )
        .await
        .expect("timer");
    assert!(store.due_timers(t0() + Duration::days(29), 10).await.expect("due").is_empty());
    assert_eq!(store.due_timers(t0() + Duration::days(30), 10).await.expect("due"), vec![timer]);

    assert!(store.record_schedule_tick(saved.workflow.id, "weekly", t0(), t0()).await.expect("tick"));

    let event = store
        .append_event(
            NewEvent {
                kind: "opt_in".into(),
                dedup_key: "opt_in:wamid.in.1".into(),
                phone_number_id: Some(number.id),
                contact_id: Some(ada.id),
                payload: json!({"keyword": "YES"}),
                occurred_at: t0(),
            },
            t0(),
        )
        .await
        .expect("event")
        .expect("first append is stored");
    assert_eq!(store.unapplied_events(10).await.expect("events"), vec![event]);

    let token = store
        .insert_api_token(
            NewApiToken { name: "crm".into(), token_hash: "ab".repeat(32), scopes: vec!["enroll".into()] },
            t0(),
        )
        .await
        .expect("token");
    assert_eq!(store.api_token_by_hash(&"ab".repeat(32)).await.expect("by hash"), Some(token));

    let record = store
        .insert_idempotency_record(
            NewIdempotencyRecord {
                scope: "crm:enroll".into(),
                key: "order-A-1".into(),
                request_hash: "cd".repeat(32),
                response_status: Some(201),
                response_body: Some(json!({"enrollment_id": enrollment.id})),
                expires_at: t0() + Duration::days(1),
            },
            t0(),
        )
        .await
        .expect("idempotency");
    assert_eq!(store.idempotency_record("crm:enroll", "order-A-1").await.expect("get"), Some(record));
});

store_test!(a_wamid_is_stored_once, |store| {
    let (_, _, number) = number(&store).await;
    let ada = contact(&store, "15550100200").await;
    let thread = store
        .open_thread(
            NewThread { contact_id: ada.id, phone_number_id: number.id, customer_wa_id: "15550100200".into() },
            t0(),
        )
        .await
        .expect("thread");
    store.record_message(inbound(thread.id, "wamid.dup"), t0()).await.expect("first");
    let second = store.record_message(inbound(thread.id, "wamid.dup"), t0()).await;
    assert!(matches!(second, Err(StoreError::Duplicate { .. })), "{second:?}");
    assert_eq!(store.messages(thread.id).await.expect("messages").len(), 1);
    // Outbound messages being sent have no wamid yet; many may be in flight.
    let mut sending = inbound(thread.id, "unused");
    sending.wamid = None;
    sending.direction = Direction::Outbound;
    sending.status = DeliveryStatus::Sending;
    store.record_message(sending.clone(), t0()).await.expect("first without wamid");
    store.record_message(sending, t0()).await.expect("second without wamid");
});

store_test!(a_contact_has_one_open_thread_per_number, |store| {
    let (_, _, number) = number(&store).await;
    let ada = contact(&store, "15550100200").await;
    let new = NewThread { contact_id: ada.id, phone_number_id: number.id, customer_wa_id: "15550100200".into() };
    store.open_thread(new.clone(), t0()).await.expect("first");
    let second = store.open_thread(new, t0()).await;
    assert!(matches!(second, Err(StoreError::Duplicate { .. })), "{second:?}");
});

store_test!(repeated_event_deliveries_are_logged_once, |store| {
    let new = NewEvent {
        kind: "inbound_message".into(),
        dedup_key: "message:wamid.same".into(),
        phone_number_id: None,
        contact_id: None,
        payload: json!({}),
        occurred_at: t0(),
    };
    assert!(store.append_event(new.clone(), t0()).await.expect("first").is_some());
    assert!(store.append_event(new, t0()).await.expect("second").is_none());
    assert_eq!(store.unapplied_events(10).await.expect("events").len(), 1);
});

store_test!(a_schedule_tick_fires_once, |store| {
    let saved = store.save_workflow_version("promo", "Promo", "h1", json!({}), "", t0()).await.expect("wf");
    assert!(store.record_schedule_tick(saved.workflow.id, "weekly", t0(), t0()).await.expect("first"));
    assert!(!store.record_schedule_tick(saved.workflow.id, "weekly", t0(), t0()).await.expect("second"));
});

store_test!(unchanged_content_is_not_a_new_version, |store| {
    let first = store.save_workflow_version("cart", "Cart", "h1", json!({"v": 1}), "a", t0()).await.expect("v1");
    let same = store.save_workflow_version("cart", "Cart", "h1", json!({"v": 1}), "a", t0()).await.expect("again");
    assert!(!same.created);
    assert_eq!(same.version.id, first.version.id);
    let second = store.save_workflow_version("cart", "Cart", "h2", json!({"v": 2}), "b", t0()).await.expect("v2");
    assert!(second.created);
    assert_eq!(second.version.version, 2);
    assert_eq!(second.workflow.current_version_id, Some(second.version.id));
});

store_test!(consent_changes_keep_their_audit_trail, |store| {
    let (_, _, number) = number(&store).await;
    let ada = contact(&store, "15550100200").await;
    let change = |status, keyword: &str| ConsentChange {
        contact_id: ada.id,
        phone_number_id: number.id,
        status,
        source: ConsentSource::Keyword,
        keyword: Some(keyword.into()),
        wamid: None,
    };
    assert_eq!(store.consent(ada.id, number.id).await.expect("none yet"), None);
    store.record_consent(change(ConsentStatus::OptedIn, "YES"), t0()).await.expect("in");
    store.record_consent(change(ConsentStatus::OptedIn, "START"), t0() + Duration::minutes(1)).await.expect("in again");
    let out =
        store.record_consent(change(ConsentStatus::OptedOut, "STOP"), t0() + Duration::minutes(2)).await.expect("out");
    assert_eq!(out.status, ConsentStatus::OptedOut);
    assert_eq!(out.changed_at, t0() + Duration::minutes(2));
    let keywords: Vec<_> = store
        .consent_history(ada.id, number.id)
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.keyword.unwrap_or_default())
        .collect();
    assert_eq!(keywords, ["YES", "START", "STOP"]);
});

store_test!(contacts_are_found_by_phone_or_mobile_phone, |store| {
    let ada = contact(&store, "15550100200").await;
    let bob = store
        .insert_contact(NewContact { mobile_phone: Some("15550100200".into()), ..NewContact::default() }, t0())
        .await
        .expect("bob");
    assert_eq!(bob.properties, json!({}));
    let found: Vec<_> = store.contacts_by_phone("15550100200").await.expect("find").into_iter().map(|c| c.id).collect();
    assert_eq!(found.len(), 2);
    assert!(found.contains(&ada.id) && found.contains(&bob.id));
    assert!(store.contacts_by_phone("15550100999").await.expect("none").is_empty());
});

store_test!(unique_names_are_refused_with_a_duplicate_error, |store| {
    store
        .insert_user(
            NewUser { email: "a@acme.test".into(), name: "A".into(), role: kairo_core::status::UserRole::Agent },
            t0(),
        )
        .await
        .expect("first");
    let again = store
        .insert_user(
            NewUser { email: "a@acme.test".into(), name: "A2".into(), role: kairo_core::status::UserRole::Agent },
            t0(),
        )
        .await;
    match again {
        Err(err @ StoreError::Duplicate { .. }) => {
            assert!(err.to_string().contains("user a@acme.test already exists"), "{err}")
        }
        other => panic!("expected a duplicate error, got {other:?}"),
    }
});

#[tokio::test]
async fn an_unreachable_postgres_is_reported_with_its_url_but_not_its_password() {
    let url = DatabaseUrl::new("postgres://kairo:hunter2@127.0.0.1:1/kairo");
    let err = Store::open(&url).await.expect_err("nothing listens on port 1");
    let shown = err.to_string();
    assert!(shown.contains("postgres://kairo:***@127.0.0.1:1/kairo"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains('\n'), "{shown}");
}

#[tokio::test]
async fn a_wrong_postgres_password_is_reported_without_it() {
    let db = TestDb::postgres().await;
    let raw = db.raw_url();
    let (scheme_user, rest) = raw.split_once('@').expect("the test URL has credentials");
    let user = scheme_user.rsplit_once(':').expect("user:password").0;
    let wrong = format!("{user}:not-the-password-xyz@{rest}");
    let err = Store::open(&DatabaseUrl::new(&wrong)).await.expect_err("wrong password");
    let shown = err.to_string();
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(!shown.contains("not-the-password-xyz"), "{shown}");
}

#[tokio::test]
async fn an_unsupported_scheme_says_which_urls_work() {
    let err = Store::open(&DatabaseUrl::new("mysql://root:pw@localhost/kairo")).await.expect_err("mysql");
    assert_eq!(
        err.to_string(),
        "unsupported database URL `mysql://root:***@localhost/kairo`: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
    );
}

#[tokio::test]
async fn sqlite_file_is_created_with_durable_settings() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    let path = db.url.to_string().trim_start_matches("sqlite://").to_string();
    assert!(std::path::Path::new(&path).exists(), "{path}");
    let pragmas = store.sqlite_pragmas().await.expect("pragmas");
    assert_eq!(pragmas.journal_mode, "wal");
    assert_eq!(pragmas.synchronous, 2, "FULL");
    assert!(pragmas.foreign_keys);
    assert!(pragmas.busy_timeout_ms >= 1000);
    assert_eq!(pragmas.wal_autocheckpoint, 0, "the store's own task checkpoints, not a committing writer");
}

#[tokio::test]
async fn postgres_connections_plan_each_query_for_its_values() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    // A generic plan cached while a table was empty would be kept however
    // large the table grows (until the next ANALYZE).
    assert_eq!(store.postgres_setting("plan_cache_mode").await.expect("setting"), "force_custom_plan");
    assert!(TestDb::sqlite().store().await.postgres_setting("plan_cache_mode").await.is_err());
}

#[tokio::test]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let path = db.url.to_string().trim_start_matches("sqlite://").to_string();
    let contacts: Vec<NewContact> = (0..2_000)
        .map(|i| NewContact {
            name: Some(format!("Contact {i}")),
            phone: Some(format!("4477009{i:05}")),
            mobile_phone: None,
            wa_id: None,
            user_id: None,
            properties: serde_json::json!({ "padding": "x".repeat(500) }),
        })
        .collect();
    let tx = store.begin().await.expect("begin");
    tx.insert_contacts(contacts, chrono::Utc::now()).await.expect("insert");
    tx.commit().await.expect("commit");
    let wal = std::path::PathBuf::from(format!("{path}-wal"));
    let wal_pages = std::fs::metadata(&wal).expect("the WAL exists").len() / 4096;
    assert!(wal_pages > 200, "the insert went to the WAL ({wal_pages} pages)");
    // Nothing else writes: the checkpointer copies every frame into the
    // database file within a few of its rounds.
    let mut copied = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let db_pages = std::fs::metadata(&path).expect("the database file").len() / 4096;
        if db_pages > 200 {
            copied = true;
            break;
        }
    }
    assert!(copied, "the WAL was checkpointed into the database file");
}

/// A database from before phones were unique may hold one phone on several
/// contacts; the migration keeps the oldest as the number's contact and
/// the later ones reachable by it as their mobile phone, and from then on
/// the database refuses a second contact for a phone.
#[tokio::test]
async fn duplicate_phones_from_before_are_kept_apart_by_the_unique_phone_migration() {
    for db in [TestDb::sqlite(), TestDb::postgres().await] {
        let store = Store::open(&db.url).await.expect("opens");
        store.migrate_some(7).await.expect("the migrations before unique phones");
        let mut made = Vec::new();
        for (i, mobile) in [None, None, Some("447700900999")].into_iter().enumerate() {
            let new = NewContact {
                name: Some(format!("dup {i}")),
                phone: Some("447700900123".into()),
                mobile_phone: mobile.map(str::to_string),
                ..NewContact::default()
            };
            made.push(store.insert_contact(new, t0() + Duration::seconds(i as i64)).await.expect("a duplicate"));
        }
        store.migrate().await.expect("the rest of the migrations");
        let found = store.contacts_by_phone("447700900123").await.expect("found");
        assert_eq!(found.len(), 2, "the oldest by phone, the second by mobile phone: {found:?}");
        let oldest = store.contact(made[0].id).await.expect("read").expect("there");
        assert_eq!(oldest.phone.as_deref(), Some("447700900123"));
        let second = store.contact(made[1].id).await.expect("read").expect("there");
        assert_eq!((second.phone.as_deref(), second.mobile_phone.as_deref()), (None, Some("447700900123")));
        let third = store.contact(made[2].id).await.expect("read").expect("there");
        assert_eq!((third.phone.as_deref(), third.mobile_phone.as_deref()), (None, Some("447700900999")));
        assert_eq!(third.properties["duplicate_phone"], "447700900123", "{:?}", third.properties);
        let again = NewContact { phone: Some("447700900123".into()), ..NewContact::default() };
        assert!(matches!(store.insert_contact(again, t0()).await, Err(StoreError::Duplicate { .. })));
    }
}

store_test!(the_live_inbox_reads_the_threads_changed_since_a_moment, |store| {
    let (_, _, number) = number(&store).await;
    let ada = contact(&store, "15550100200").await;
    let bo = contact(&store, "15550100201").await;
    let open = |contact: ContactId, wa: &str| NewThread {
        contact_id: contact,
        phone_number_id: number.id,
        customer_wa_id: wa.to_string(),
    };
    let first = store.open_thread(open(ada.id, "15550100200"), t0()).await.expect("thread");
    let second = store.open_thread(open(bo.id, "15550100201"), t0() + Duration::seconds(1)).await.expect("thread");
    let all = store.threads_changed_since(t0() - Duration::seconds(1), 100).await.expect("changes");
    assert_eq!(all, vec![(first.id, t0()), (second.id, t0() + Duration::seconds(1))], "oldest change first");
    assert!(store.threads_changed_since(t0() + Duration::seconds(1), 100).await.expect("changes").is_empty());

    // A message (or a status applied to one) is a change of its thread.
    let later = t0() + Duration::seconds(5);
    let mut message = inbound(first.id, "wamid.live.1");
    message.occurred_at = later;
    store.record_message(message, later).await.expect("message");
    let after = store.threads_changed_since(t0() + Duration::seconds(2), 100).await.expect("changes");
    assert_eq!(after, vec![(first.id, later)]);

    // Past the limit, only what was read of each table is returned, so
    // that going on from the newest time returned misses nothing.
    let limited = store.threads_changed_since(t0() - Duration::seconds(1), 1).await.expect("changes");
    assert_eq!(limited, vec![(first.id, t0())], "{limited:?}");
});

store_test!(a_threads_changes_are_its_timeline_and_each_agent_reads_it_forward_only, |store| {
    let (_, _, number) = number(&store).await;
    let ada = contact(&store, "15550100300").await;
    let new = NewThread { contact_id: ada.id, phone_number_id: number.id, customer_wa_id: "15550100300".into() };
    let thread = store.open_thread(new, t0()).await.expect("thread");
    let agent = store
        .insert_user(NewUser { email: "t@acme.test".into(), name: "T".into(), role: UserRole::Agent }, t0())
        .await
        .expect("user");
    let at = |s: i64| t0() + Duration::seconds(s);
    store.assign_thread(thread.id, (Some(agent.id), None), Some(agent.id), at(1)).await.expect("assign");
    assert!(store.close_thread(thread.id, None, at(2)).await.expect("close"));
    assert!(!store.close_thread(thread.id, None, at(3)).await.expect("close again"), "closed once");
    assert!(store.reopen_thread(thread.id, Some(agent.id), at(4)).await.expect("reopen"));
    store.assign_thread(thread.id, (None, None), None, at(5)).await.expect("unassign");
    let events = store.thread_events(thread.id).await.expect("events");
    let kinds: Vec<ThreadEventKind> = events.iter().map(|e| e.kind).collect();
    use ThreadEventKind::*;
    assert_eq!(kinds, vec![Opened, Assigned, Closed, Reopened, Unassigned], "no event for a close that did nothing");
    assert_eq!((events[1].actor_user_id, events[1].owner_user_id), (Some(agent.id), Some(agent.id)));
    assert_eq!(events[2].actor_user_id, None);
    assert_eq!(events[3].occurred_at, at(4));

    // Reads move forward only.
    assert!(store.threads_read_by(agent.id, &[thread.id]).await.expect("reads").is_empty());
    store.mark_thread_read(thread.id, agent.id, at(10)).await.expect("read");
    store.mark_thread_read(thread.id, agent.id, at(7)).await.expect("an older read");
    let reads = store.threads_read_by(agent.id, &[thread.id]).await.expect("reads");
    assert_eq!(reads.get(&thread.id), Some(&at(10)));

    // A filter counts what it lists.
    let open = ThreadFilter { status: Some(ThreadStatus::Open), ..ThreadFilter::default() };
    assert_eq!(store.count_threads(&open, at(11)).await.expect("count"), 1);
    let closed = ThreadFilter { status: Some(ThreadStatus::Closed), ..ThreadFilter::default() };
    assert_eq!(store.count_threads(&closed, at(11)).await.expect("count"), 0);
});
