//! The `/v1` HTTP API through a real `kairo serve` on a loopback port, in
//! sandbox mode (no WhatsApp account: the demo catalogue's numbers, sends
//! recorded in the inbox), on SQLite and on PostgreSQL: each endpoint's
//! answers and its bad inputs.

mod util;

use std::path::Path;
use std::time::Duration;

use kairo_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use util::{HANG_GUARD, Server, client, kairo};

/// A test workflow enrolled through the API: one send, then done.
const HELLO: &str = r#"id: api-hello
name: API hello
triggers:
  - api:
      required: [order_id]
enrollment:
  reenroll: always
  concurrent: true
steps:
  - id: hello
    send_template:
      number: "+1 555-000-1111"
      template: hello_world
      language: en_US
"#;

/// A workflow that waits a day before its send: enrollments stay waiting.
const WAITER: &str = r#"id: api-waiter
name: API waiter
triggers:
  - api: {}
enrollment:
  reenroll: never
steps:
  - id: pause
    wait:
      for: 1d
  - id: hello
    send_template:
      number: "+1 555-000-1111"
      template: hello_world
      language: en_US
"#;

struct Api {
    server: Server,
    dir: tempfile::TempDir,
    url: String,
    admin: String,
    enroll: String,
    inbox: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

fn token(dir: &Path, url: &str, name: &str, scope: &str) -> String {
    let out = kairo(dir)
        .args(["--database", url, "token", "create", "--name", name, "--scope", scope])
        .output()
        .expect("kairo token create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    assert!(token.starts_with("kairo_") && token.len() > 40, "{token}");
    token
}

impl Api {
    async fn start(db: &TestDb, settings: &str) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("workflows")).expect("workflows dir");
        std::fs::write(dir.path().join("workflows/api-hello.yaml"), HELLO).expect("write");
        std::fs::write(dir.path().join("workflows/api-waiter.yaml"), WAITER).expect("write");
        std::fs::write(dir.path().join("kairo.toml"), settings).expect("write config");
        let url = db.raw_url();
        // Tokens are made before the server first runs: the database is
        // created by `kairo migrate` (`token create` never creates one).
        let migrated = kairo(dir.path()).args(["--database", &url, "migrate"]).output().expect("kairo migrate runs");
        assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
        let admin = token(dir.path(), &url, "admin", "admin");
        let enroll = token(dir.path(), &url, "enroller", "enroll");
        let inbox = token(dir.path(), &url, "agent", "inbox");
        let server = Server::start(dir.path(), &url).await;
        Api { server, dir, url, admin, enroll, inbox }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        self.send(method, path, token, body.map(|b| ("application/json", b.to_string().into_bytes())), &[]).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = client().request(method, format!("{}{path}", self.server.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Answer { status, headers, body }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// A contact writing to the sandbox number, through `kairo sandbox inbound`.
    fn inbound(&self, from: &str, text: &str) {
        let out = kairo(self.dir.path())
            .args(["sandbox", "inbound", "--from", from, "--text", text, "--url", &self.server.base_url])
            .output()
            .expect("kairo sandbox inbound runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls `path` until `done` holds for its body (under the hang guard).
    async fn until(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let answer = self.get(path, token).await;
            if answer.status == 200 && done(&answer.body) {
                return answer.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path} never got there: {}", answer.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(&kairo_store::testing::TestDb::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(&kairo_store::testing::TestDb::postgres().await).await })*
        }
    };
}

on_both!(
    tokens_scopes_and_malformed_requests_get_json_errors,
    enrollment_is_idempotent_and_its_history_is_readable,
    contacts_keep_their_consent_trail,
    users_and_teams_are_created_listed_and_deactivated,
    inbox_search_replies_owners_and_views,
    bulk_enrollment_reports_each_row_and_replays_keys,
    workflows_pause_and_resume_and_unmatched_statuses_are_listed,
    text_holding_nul_is_refused_naming_its_field,
    a_client_hanging_up_never_leaves_its_idempotency_key_in_progress,
    scopes_are_checked_before_the_body_and_failed_tokens_are_limited,
    concurrent_creates_and_uploads_make_one_contact_per_phone_and_one_enrollment_per_key,
    threads_by_window_and_last_message_views_renamed_and_deleted_people_by_email,
    conversations_keep_what_each_message_holds_and_the_threads_timeline,
);

/// A shared fixture, as WhatsApp would post it.
fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/whatsapp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the fixture")).expect("JSON")
}

/// A photo, a place, a tapped button and a reaction are kept for what they
/// are (the reaction naming the photo it reacts to); a template reply keeps
/// its text as the customer read it; a failed send keeps what to do about
/// it; the thread's timeline holds its opening, the opt-in, the owner
/// changes, the close and the reopen; saved views count their threads (#17).
async fn conversations_keep_what_each_message_holds_and_the_threads_timeline(db: &TestDb) {
    let api = Api::start(db, "").await;
    let image = fixture("webhook_image_message.json");
    let image_wamid = image["entry"][0]["changes"][0]["value"]["messages"][0]["id"].clone();
    let mut reaction = fixture("webhook_reaction.json");
    reaction["entry"][0]["changes"][0]["value"]["messages"][0]["reaction"]["message_id"] = image_wamid.clone();
    let posts = [
        fixture("webhook_text_optin_yes.json"),
        image,
        fixture("webhook_location.json"),
        reaction,
        fixture("webhook_interactive_button_reply.json"),
    ];
    for body in &posts {
        assert_eq!(signed_webhook(&api, body).await, 200);
    }
    let listed = api
        .until("/v1/threads?limit=500", &api.inbox, |b| {
            b["items"].as_array().is_some_and(|items| items.iter().any(|t| t["customer_wa_id"] == "15551234567"))
        })
        .await;
    let thread = listed["items"].as_array().expect("items").iter().find(|t| t["customer_wa_id"] == "15551234567");
    let id = thread.expect("Ana's thread")["id"].as_str().expect("an id").to_string();
    let detail = api
        .until(&format!("/v1/threads/{id}"), &api.inbox, |b| b["messages"].as_array().is_some_and(|m| m.len() == 5))
        .await;
    let of_kind = |kind: &str| -> Value {
        detail["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .find(|m| m["content"]["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} message in {detail}"))
    };
    let photo = of_kind("media");
    assert_eq!(
        (
            photo["content"]["media"].as_str(),
            photo["content"]["caption"].as_str(),
            photo["content"]["mime_type"].as_str()
        ),
        (Some("image"), Some("Is this the blue one?"), Some("image/jpeg")),
    );
    let place = of_kind("location");
    assert_eq!(place["content"]["name"], "Kairo Demo Store Lisbon");
    assert_eq!(place["content"]["latitude"], 38.7101);
    assert_eq!(of_kind("reply")["content"]["title"], "Tomorrow 9-12");
    let reacted = of_kind("reaction");
    assert_eq!(
        (reacted["content"]["message"].clone(), reacted["content"]["emoji"].as_str()),
        (image_wamid, Some("\u{1f44d}"))
    );
    assert_eq!(of_kind("text")["content"]["body"], "YES");

    // A template reply is kept as the customer read it.
    let template =
        json!({"template": {"name": "payment_due", "language": "en_US", "body": ["Ana", "$12.00", "May 1"]}});
    let sent = api.post(&format!("/v1/threads/{id}/replies"), &api.inbox, template).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(sent.body["body"], "Hi Ana, a payment of $12.00 for your subscription is due on May 1.");
    assert_eq!(sent.body["content"]["kind"], "template");
    assert_eq!(sent.body["content"]["footer"], "Questions? Just reply to this message.");
    let found = api.get("/v1/threads?q=payment%20of%20%2412", &api.inbox).await;
    assert_eq!(found.body["items"][0]["id"], id.as_str(), "a template's text is found by a search: {}", found.body);
    // WhatsApp refuses it later: the code, its title and what to do are kept.
    let mut failed = fixture("webhook_status_failed_131047.json");
    failed["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = sent.body["wamid"].clone();
    assert_eq!(signed_webhook(&api, &failed).await, 200);
    let detail = api
        .until(&format!("/v1/threads/{id}"), &api.inbox, |b| {
            b["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["status"] == "failed"))
        })
        .await;
    let refused = detail["messages"].as_array().expect("messages").iter().find(|m| m["status"] == "failed");
    let refused = refused.expect("the failed reply");
    assert_eq!(refused["error_code"], 131047);
    assert!(refused["error_advice"].as_str().is_some_and(|a| a.contains("template")), "{refused}");

    // Owners, close and reopen are in the timeline, after the opening and the opt-in.
    let user = api.post("/v1/users", &api.admin, json!({"email": "dee@example.com", "name": "Dee"})).await;
    let user = user.body["id"].as_str().expect("an id").to_string();
    assert_eq!(api.post(&format!("/v1/threads/{id}/owner"), &api.inbox, json!({"user": user})).await.status, 200);
    assert_eq!(api.post(&format!("/v1/threads/{id}/owner"), &api.inbox, json!({})).await.status, 200);
    assert_eq!(api.post(&format!("/v1/threads/{id}/close"), &api.inbox, json!({})).await.status, 200);
    let reopened = api.post(&format!("/v1/threads/{id}/reopen"), &api.inbox, json!({})).await;
    assert_eq!(reopened.status, 200, "{}", reopened.body);
    let kinds: Vec<&str> =
        reopened.body["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["opened", "opted_in", "assigned", "unassigned", "closed", "reopened"], "{}", reopened.body);
    let events = &reopened.body["events"];
    assert_eq!(events[1]["keyword"], "YES");
    assert_eq!(events[2]["owner_user"], user.as_str());
    assert!(events[2]["by"].is_null(), "an API token is nobody: {}", events[2]);

    // Saved views count their threads.
    let view = api.post("/v1/views", &api.inbox, json!({"name": "Open", "filter": {"status": "open"}})).await;
    assert_eq!((view.status, view.body["threads"].as_u64()), (201, Some(1)), "{}", view.body);
    assert_eq!(api.get("/v1/views", &api.inbox).await.body["items"][0]["threads"], 1);
    api.server.terminate().await;
}

/// Threads are filtered by window and sorted by their last message (paged
/// with the cursor), saved views are shown, renamed, refiltered and
/// deleted, and people are named by email (users) or name (teams) as
/// workflows name them (#15 14).
async fn threads_by_window_and_last_message_views_renamed_and_deleted_people_by_email(db: &TestDb) {
    let api = Api::start(db, "").await;
    api.inbound("+44 7700 900520", "first");
    api.until("/v1/threads", &api.inbox, |b| b["items"].as_array().is_some_and(|i| i.len() == 1)).await;
    api.inbound("+44 7700 900521", "second");
    api.until("/v1/threads", &api.inbox, |b| b["items"].as_array().is_some_and(|i| i.len() == 2)).await;
    // A thread opened by a send: its window never opened.
    let enrolled = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900522", "opt_in": ["+1 555-000-1111"]}, "trigger": {"order_id": "W"}}),
        )
        .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    let all = api.until("/v1/threads", &api.inbox, |b| b["items"].as_array().is_some_and(|i| i.len() == 3)).await;
    let id_of = |wa: &str| {
        all["items"].as_array().expect("items").iter().find(|t| t["customer_wa_id"] == wa).expect("the thread")["id"]
            .as_str()
            .expect("an id")
            .to_string()
    };
    let (first, second, quiet) = (id_of("447700900520"), id_of("447700900521"), id_of("447700900522"));
    let ids = |answer: &Answer| -> Vec<String> {
        answer.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|t| t["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let open = api.get("/v1/threads?window=open", &api.inbox).await;
    assert_eq!(ids(&open).len(), 2, "{}", open.body);
    assert!(open.body["items"].as_array().expect("items").iter().all(|t| t["window_open"] == true));
    assert_eq!(ids(&api.get("/v1/threads?window=closed", &api.inbox).await), [quiet.as_str()]);
    assert_eq!(api.get("/v1/threads?window=ajar", &api.inbox).await.status, 400);

    // A reply in the first thread makes it the one with the latest message.
    let reply = api.post(&format!("/v1/threads/{first}/replies"), &api.inbox, json!({"text": "hello again"})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let newest = ids(&api.get("/v1/threads", &api.inbox).await);
    assert_eq!(newest[0], quiet, "newest thread first by default");
    let by_message = ids(&api.get("/v1/threads?sort=last_message", &api.inbox).await);
    assert_eq!(by_message[0], first, "latest message first: {by_message:?}");
    let page = api.get("/v1/threads?sort=last_message&limit=1", &api.inbox).await;
    let mut walked = ids(&page);
    let mut cursor = page.body["next_cursor"].as_str().map(str::to_string);
    while let Some(next) = cursor {
        let page = api.get(&format!("/v1/threads?sort=last_message&limit=1&cursor={next}"), &api.inbox).await;
        assert_eq!(page.status, 200, "{}", page.body);
        walked.extend(ids(&page));
        cursor = page.body["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(walked, by_message, "pages of one follow the same order");
    assert!(walked.contains(&second));
    assert_eq!(api.get("/v1/threads?sort=last_message&cursor=nonsense", &api.inbox).await.code(), "invalid_cursor");
    let signed = format!("/v1/threads?sort=last_message&cursor=-5.000000000_{first}");
    assert_eq!(api.get(&signed, &api.inbox).await.code(), "invalid_cursor", "a cursor's time is digits");
    // A cursor is the thread's place in either sort: one from the first
    // page by last message goes on, in `newest`, after that thread.
    let first_page = api.get("/v1/threads?sort=last_message&limit=1", &api.inbox).await;
    let cursor = first_page.body["next_cursor"].as_str().expect("a next page").to_string();
    let after = api.get(&format!("/v1/threads?cursor={cursor}"), &api.inbox).await;
    assert_eq!(after.status, 200, "{}", after.body);
    let at = newest.iter().position(|t| *t == by_message[0]).expect("listed");
    assert_eq!(ids(&after), newest[at + 1..], "newest after {}", by_message[0]);

    // Saved views: shown, renamed, refiltered, deleted.
    let view = api.post("/v1/views", &api.inbox, json!({"name": "Open now", "filter": {"window": "open"}})).await;
    assert_eq!(view.status, 201, "{}", view.body);
    let view_id = view.body["id"].as_str().expect("an id").to_string();
    assert_eq!(ids(&api.get(&format!("/v1/threads?view={view_id}"), &api.inbox).await).len(), 2);
    let path = format!("/v1/views/{view_id}");
    assert_eq!(api.get(&path, &api.inbox).await.body["name"], "Open now");
    let renamed = api
        .call(
            Method::PATCH,
            &path,
            Some(&api.inbox),
            Some(json!({"name": "Closed windows", "filter": {"window": "closed"}})),
        )
        .await;
    assert_eq!((renamed.status, renamed.body["name"].as_str()), (200, Some("Closed windows")), "{}", renamed.body);
    assert_eq!(ids(&api.get(&format!("/v1/threads?view={view_id}"), &api.inbox).await), [quiet.as_str()]);
    let other = api.post("/v1/views", &api.inbox, json!({"name": "Other", "filter": {}})).await;
    assert_eq!(other.status, 201);
    let taken = api.call(Method::PATCH, &path, Some(&api.inbox), Some(json!({"name": "Other"}))).await;
    assert_eq!((taken.status, taken.code()), (409, "name_taken"), "{}", taken.body);
    let deleted = api.call(Method::DELETE, &path, Some(&api.inbox), None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api.get(&path, &api.inbox).await.status, 404);
    assert_eq!(api.call(Method::DELETE, &path, Some(&api.inbox), None).await.status, 404);
    let names: Vec<Value> = api.get("/v1/views", &api.inbox).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, [json!("Other")]);

    // People by email and by name.
    let sam = api.post("/v1/users", &api.admin, json!({"email": "sam@example.com", "name": "Sam"})).await;
    assert_eq!(sam.status, 201, "{}", sam.body);
    // An agent unless asked otherwise, with a one-time password shown in
    // this answer only (#17).
    assert_eq!(sam.body["role"], "agent", "{}", sam.body);
    let once = sam.body["one_time_password"].as_str().expect("a one-time password in the create answer");
    assert_eq!(once.len(), 19, "{once}");
    let ada =
        api.post("/v1/users", &api.admin, json!({"email": "ada@example.com", "name": "Ada", "role": "admin"})).await;
    assert_eq!((ada.status, &ada.body["role"]), (201, &json!("admin")), "{}", ada.body);
    let bad_role =
        api.post("/v1/users", &api.admin, json!({"email": "b@example.com", "name": "B", "role": "owner"})).await;
    assert_eq!(bad_role.status, 422, "{}", bad_role.body);
    let listed = api.get("/v1/users", &api.inbox).await;
    assert!(!listed.body.to_string().contains("one_time_password"), "{}", listed.body);
    assert!(!listed.body.to_string().contains(once), "the password is never listed: {}", listed.body);
    let team = api.post("/v1/teams", &api.admin, json!({"name": "Night shift", "members": ["SAM@example.com"]})).await;
    assert_eq!(team.status, 201, "{}", team.body);
    assert_eq!(team.body["members"][0], sam.body["id"]);
    let owned = api.post(&format!("/v1/threads/{second}/owner"), &api.inbox, json!({"user": "sam@example.com"})).await;
    assert_eq!((owned.status, &owned.body["owner_user"]), (200, &sam.body["id"]), "{}", owned.body);
    assert_eq!(ids(&api.get("/v1/threads?owner=sam%40example.com", &api.inbox).await), [second.as_str()]);
    let by_team = api.post(&format!("/v1/threads/{first}/owner"), &api.inbox, json!({"team": "night SHIFT"})).await;
    assert_eq!(by_team.status, 200, "{}", by_team.body);
    assert_eq!(ids(&api.get("/v1/threads?team=Night%20shift", &api.inbox).await), [first.as_str()]);
    // A name that would break a log line (the workflow loader names teams) is refused.
    let forged = api.post("/v1/teams", &api.admin, json!({"name": "Inj\n2026-12-02T01:30:00Z ERROR forged"})).await;
    assert_eq!((forged.status, forged.code()), (422, "invalid_name"), "{}", forged.body);
    let forged = api.post("/v1/users", &api.admin, json!({"email": "x@example.com", "name": "a\rb"})).await;
    assert_eq!((forged.status, forged.code()), (422, "invalid_name"), "{}", forged.body);
    let nobody =
        api.post(&format!("/v1/threads/{first}/owner"), &api.inbox, json!({"user": "nobody@example.com"})).await;
    assert_eq!((nobody.status, nobody.code()), (409, "unknown_user"), "{}", nobody.body);
    let gone = api.post("/v1/users/sam@example.com/deactivate", &api.admin, json!({})).await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(api.post("/v1/users/nobody@example.com/deactivate", &api.admin, json!({})).await.status, 404);
    api.server.terminate().await;
}

/// Concurrency is input too: creates of one new phone at once make one
/// contact (#15 2); three uploads of one keyed file at once enroll each
/// row once (#15 1); unkeyed uploads naming the same new phones at once
/// all complete, with one contact per phone.
async fn concurrent_creates_and_uploads_make_one_contact_per_phone_and_one_enrollment_per_key(db: &TestDb) {
    let api = Api::start(db, "").await;
    let creates = (0..12)
        .map(|i| api.post("/v1/contacts", &api.enroll, json!({"phone": "+44 7700 900950", "properties": {"n": i}})));
    let answers = futures::future::join_all(creates).await;
    if let Some(bad) = answers.iter().find(|a| a.status != 201 && a.status != 200) {
        let body = bad.body.to_string();
        let (_, logs) = api.server.terminate().await;
        panic!("{body}\n{logs}");
    }
    let ids: std::collections::BTreeSet<String> =
        answers.iter().map(|a| a.body["id"].as_str().expect("an id").to_string()).collect();
    assert_eq!(ids.len(), 1, "one contact for one phone: {ids:?}");
    let listed = api.get("/v1/contacts?phone=%2B447700900950", &api.enroll).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "{}", listed.body);

    let rows = 1_200;
    let file = |keyed: bool, base: usize| {
        (0..rows)
            .map(|i| {
                let key = if keyed { format!(r#""key": "row-{i}", "#) } else { String::new() };
                format!(
                    r#"{{{key}"contact": {{"phone": "+44 7700 {:06}"}}, "trigger": {{"order_id": "{i}"}}}}"#,
                    base + i
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let upload = |body: String| {
        let api = &api;
        async move {
            api.send(
                Method::POST,
                "/v1/enrollments/bulk?workflow=api-hello",
                Some(&api.enroll),
                Some(("application/x-ndjson", body.into_bytes())),
                &[],
            )
            .await
        }
    };
    let keyed = file(true, 100_000);
    let jobs = futures::future::join_all((0..3).map(|_| upload(keyed.clone()))).await;
    for job in &jobs {
        assert_eq!((job.status, job.body["status"].as_str()), (200, Some("completed")), "{}", job.body);
        assert_eq!(job.body["rows_failed"].as_i64(), Some(0), "{}", job.body);
    }
    let enrolled: i64 = jobs.iter().filter_map(|j| j.body["rows_enrolled"].as_i64()).sum();
    let replayed: i64 = jobs.iter().filter_map(|j| j.body["rows_replayed"].as_i64()).sum();
    assert_eq!((enrolled, replayed), (rows as i64, 2 * rows as i64), "each keyed row enrolled once");

    let unkeyed = file(false, 200_000);
    let jobs = futures::future::join_all((0..3).map(|_| upload(unkeyed.clone()))).await;
    for job in &jobs {
        assert_eq!((job.status, job.body["status"].as_str()), (200, Some("completed")), "{}", job.body);
        assert_eq!(job.body["rows_failed"].as_i64(), Some(0), "{}", job.body);
    }
    for i in [0, 1, 499, 500, 777, 1_199] {
        for base in [100_000, 200_000] {
            let phone = format!("%2B447700{:06}", base + i);
            let found = api.get(&format!("/v1/contacts?phone={phone}"), &api.enroll).await;
            assert_eq!(found.body["items"].as_array().map(Vec::len), Some(1), "{phone}: {}", found.body);
            if base == 100_000 {
                let contact = found.body["items"][0]["id"].as_str().expect("an id");
                let runs = api.get(&format!("/v1/enrollments?contact={contact}"), &api.enroll).await;
                assert_eq!(runs.body["items"].as_array().map(Vec::len), Some(1), "{phone}: {}", runs.body);
            }
        }
    }
    api.server.terminate().await;
}

/// Clients that send an enrollment with an `Idempotency-Key` and hang up at
/// once: each request still runs to its end and stores its answer, so the
/// retry gets that answer (never 409 `idempotency_in_progress`) and every
/// key enrolled exactly once (#15 3).
async fn a_client_hanging_up_never_leaves_its_idempotency_key_in_progress(db: &TestDb) {
    use tokio::io::AsyncWriteExt;
    let api = Api::start(db, "").await;
    let address = api.server.base_url.trim_start_matches("http://").to_string();
    let body = |i: usize| {
        json!({"workflow": "api-hello", "contact": {"phone": format!("+44 7700 9009{i:02}")}, "trigger": {"order_id": i.to_string()}})
            .to_string()
    };
    for i in 0..30 {
        let body = body(i);
        let request = format!(
            "POST /v1/enrollments HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
             idempotency-key: hang-{i}\r\ncontent-length: {}\r\n\r\n{body}",
            api.enroll,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("writes");
        drop(stream);
    }
    for i in 0..30 {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        let retry = loop {
            let retry = api
                .send(
                    Method::POST,
                    "/v1/enrollments",
                    Some(&api.enroll),
                    Some(("application/json", body(i).into_bytes())),
                    &[("idempotency-key", &format!("hang-{i}"))],
                )
                .await;
            // A first request may still be committing for a moment.
            if retry.code() != "idempotency_in_progress" || tokio::time::Instant::now() > deadline {
                break retry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(retry.status, 201, "key hang-{i}: {}", retry.body);
        let contact = retry.body["contact"].as_str().expect("a contact").to_string();
        let runs = api.get(&format!("/v1/enrollments?contact={contact}&workflow=api-hello"), &api.enroll).await;
        assert_eq!(runs.body["items"].as_array().map(Vec::len), Some(1), "key hang-{i} enrolled once: {}", runs.body);
    }
    api.server.terminate().await;
}

/// A token without the route's scope gets 403 whatever its body (the body
/// is not read), as docs/api.md's scope table says (#15 5); an address
/// trying unknown tokens is refused with 429 after a few, without them
/// being looked up, while a token that works goes on working (#15 6).
async fn scopes_are_checked_before_the_body_and_failed_tokens_are_limited(db: &TestDb) {
    let api = Api::start(db, "").await;
    let bad_body = Some(("application/json", b"{not json".to_vec()));
    let forbidden = api.send(Method::POST, "/v1/enrollments", Some(&api.inbox), bad_body.clone(), &[]).await;
    assert_eq!((forbidden.status, forbidden.code()), (403, "insufficient_scope"), "{}", forbidden.body);
    let forbidden = api.send(Method::POST, "/v1/users", Some(&api.inbox), bad_body.clone(), &[]).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    let message = forbidden.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("needs the scope admin;") && !message.contains("admin or admin"), "{message}");
    let forbidden = api.send(Method::POST, "/v1/views", Some(&api.enroll), bad_body.clone(), &[]).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    // The right scope with the same body is the body's fault.
    let malformed = api.send(Method::POST, "/v1/enrollments", Some(&api.enroll), bad_body, &[]).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    // The scope table: workflows and run history are the enroll scope's.
    for path in ["/v1/workflows", "/v1/workflows/api-hello", "/v1/enrollments"] {
        assert_eq!(api.get(path, &api.inbox).await.status, 403, "{path} with an inbox token");
        assert_eq!(api.get(path, &api.enroll).await.status, 200, "{path} with an enroll token");
    }
    for path in ["/v1/threads", "/v1/views", "/v1/users", "/v1/teams", "/v1/statuses/unmatched"] {
        assert_eq!(api.get(path, &api.enroll).await.status, 403, "{path} with an enroll token");
        assert_eq!(api.get(path, &api.inbox).await.status, 200, "{path} with an inbox token");
    }

    // A token that is not in the shape of one can never be right: 401 each
    // time, and not counted as a guess.
    for i in 0..30 {
        let answer = api.get("/v1/contacts", &format!("kairo_guess{i}")).await;
        assert_eq!((answer.status, answer.code()), (401, "invalid_token"), "{}", answer.body);
    }
    let mut statuses = Vec::new();
    for i in 0..30 {
        let answer = api.get("/v1/contacts", &format!("kairo_{i:064x}")).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            assert_eq!(answer.code(), "too_many_failures", "{}", answer.body);
            assert!(answer.headers.contains_key("retry-after"));
        }
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(api.get("/v1/contacts", &api.enroll).await.status, 200, "a working token still works");
    api.server.terminate().await;
}

/// U+0000 anywhere a client can put text answers 422 naming the field (no
/// database column keeps it); a bulk row holding it is an error for that
/// line and the rows after it are enrolled (#15 4). A JSON array is not
/// taken for an object (#15 16).
async fn text_holding_nul_is_refused_naming_its_field(db: &TestDb) {
    let api = Api::start(db, "").await;
    let nul = "a\u{0}b";
    let refused = |answer: &Answer, field: &str| {
        assert_eq!((answer.status, answer.code()), (422, "invalid_text"), "{field}: {}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{}", answer.body);
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| m.contains("U+0000")), "{}", answer.body);
    };
    let name = api.post("/v1/contacts", &api.enroll, json!({"phone": "+44 7700 900801", "name": nul})).await;
    refused(&name, "name");
    let property =
        api.post("/v1/contacts", &api.enroll, json!({"phone": "+44 7700 900801", "properties": {"plan": nul}})).await;
    refused(&property, "properties.plan");
    let trigger = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900801"}, "trigger": {"order_id": nul}}),
        )
        .await;
    refused(&trigger, "trigger.order_id");
    let reply =
        api.post("/v1/threads/0192f000-0000-7000-8000-000000000000/replies", &api.inbox, json!({"text": nul})).await;
    refused(&reply, "text");
    let view = api.post("/v1/views", &api.inbox, json!({"name": "v", "filter": {"q": nul}})).await;
    refused(&view, "filter.q");
    refused(&api.get("/v1/threads?q=a%00b", &api.inbox).await, "q");
    refused(&api.get("/v1/workflows/api%00hello", &api.enroll).await, "the path");
    assert!(
        api.get("/v1/contacts?phone=%2B447700900801", &api.enroll).await.body["items"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "nothing refused was stored"
    );

    let array = api.post("/v1/users", &api.admin, json!(["a@b.c", "Name"])).await;
    assert_eq!((array.status, array.code()), (422, "invalid_body"), "{}", array.body);
    assert!(
        api.get("/v1/users", &api.admin).await.body["items"]
            .as_array()
            .is_some_and(|u| u.iter().all(|u| u["email"] != "a@b.c"))
    );

    let rows = [
        r#"{"key": "n1", "contact": {"phone": "+44 7700 900811"}, "trigger": {"order_id": "1"}}"#,
        r#"{"key": "n2", "contact": {"phone": "+44 7700 900812", "name": "x\u0000y"}, "trigger": {"order_id": "2"}}"#,
        r#"{"key": "n3", "contact": {"phone": "+44 7700 900813"}, "trigger": {"order_id": "3\u0000"}}"#,
        r#"{"key": "n4", "contact": {"phone": "+44 7700 900814"}, "trigger": {"order_id": "4"}}"#,
    ]
    .join("\n");
    let bulk = api
        .send(
            Method::POST,
            "/v1/enrollments/bulk?workflow=api-hello",
            Some(&api.enroll),
            Some(("application/x-ndjson", rows.into_bytes())),
            &[],
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    assert_eq!(bulk.body["status"], "completed", "{}", bulk.body);
    assert_eq!((bulk.body["rows_enrolled"].as_i64(), bulk.body["rows_failed"].as_i64()), (Some(2), Some(2)));
    let errors = bulk.body["errors"].as_array().expect("errors");
    assert_eq!(errors.iter().map(|e| e["line"].as_i64()).collect::<Vec<_>>(), [Some(2), Some(3)]);
    assert_eq!(errors.iter().map(|e| e["key"].as_str()).collect::<Vec<_>>(), [Some("n2"), Some("n3")]);
    assert!(errors[0]["error"].as_str().is_some_and(|e| e.contains("contact.name") && e.contains("U+0000")));
    assert!(errors[1]["error"].as_str().is_some_and(|e| e.contains("trigger.order_id")));
    let csv = "key,phone,name,trigger.order_id\nk1,+44 7700 900821,A\0,1\nk2,+44 7700 900822,B,2\n";
    let bulk = api
        .send(
            Method::POST,
            "/v1/enrollments/bulk?workflow=api-hello",
            Some(&api.enroll),
            Some(("text/csv", csv.as_bytes().to_vec())),
            &[],
        )
        .await;
    assert_eq!((bulk.body["rows_enrolled"].as_i64(), bulk.body["rows_failed"].as_i64()), (Some(1), Some(1)));
    assert_eq!(bulk.body["errors"][0]["key"], "k1", "{}", bulk.body);
    assert!(bulk.body["errors"][0]["error"].as_str().is_some_and(|e| e.contains("`name`")), "{}", bulk.body);
    api.server.terminate().await;
}

async fn tokens_scopes_and_malformed_requests_get_json_errors(db: &TestDb) {
    let api = Api::start(db, "[api]\nrate_limit = 20\nmax_body_bytes = 4096\n").await;
    let body = json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900001"}, "trigger": {"order_id": "A1"}});

    let missing = api.call(Method::POST, "/v1/enrollments", None, Some(body.clone())).await;
    assert_eq!((missing.status, missing.code()), (401, "missing_token"), "{}", missing.body);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let wrong = api.call(Method::GET, "/v1/workflows", Some("kairo_not_a_token"), None).await;
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_token"));
    let scope = api.post("/v1/enrollments", &api.inbox, body.clone()).await;
    assert_eq!((scope.status, scope.code()), (403, "insufficient_scope"), "{}", scope.body);
    let scope = api.post("/v1/users", &api.enroll, json!({"email": "a@b.c", "name": "A"})).await;
    assert_eq!(scope.status, 403);

    let malformed = api
        .send(
            Method::POST,
            "/v1/enrollments",
            Some(&api.enroll),
            Some(("application/json", b"{\"workflow\":".to_vec())),
            &[],
        )
        .await;
    assert_eq!((malformed.status, malformed.code()), (400, "malformed_json"), "{}", malformed.body);
    let untyped =
        api.send(Method::POST, "/v1/enrollments", Some(&api.enroll), Some(("text/plain", b"{}".to_vec())), &[]).await;
    assert_eq!(untyped.status, 400);
    let unknown_field = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900001"}, "nope": 1}),
        )
        .await;
    assert_eq!((unknown_field.status, unknown_field.code()), (422, "invalid_body"), "{}", unknown_field.body);
    let unknown = api
        .post("/v1/enrollments", &api.enroll, json!({"workflow": "nope", "contact": {"phone": "+44 7700 900001"}}))
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_workflow"));
    let phone = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "07700 900001"}, "trigger": {"order_id": "A1"}}),
        )
        .await;
    assert_eq!((phone.status, phone.code()), (422, "invalid_phone"), "{}", phone.body);
    assert_eq!(phone.body["error"]["details"]["field"], "contact.phone");
    let trigger = api
        .post("/v1/enrollments", &api.enroll, json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900001"}}))
        .await;
    assert_eq!((trigger.status, trigger.code()), (422, "missing_trigger_data"));
    assert_eq!(trigger.body["error"]["details"]["missing"], json!(["order_id"]));
    let big = json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900001", "name": "x".repeat(5000)}});
    let big = api.post("/v1/enrollments", &api.enroll, big).await;
    assert_eq!((big.status, big.code()), (413, "body_too_large"), "{}", big.body);
    let route = api.get("/v1/nothing-here", &api.admin).await;
    assert_eq!((route.status, route.code()), (404, "no_route"));
    // 15.7: a method a path does not take is a JSON error too, with Allow.
    let wrong = api.call(Method::DELETE, "/v1/enrollments", Some(&api.enroll), None).await;
    assert_eq!((wrong.status, wrong.code()), (405, "method_not_allowed"), "{}", wrong.body);
    let allow = wrong.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    // An id this API never gives out names nothing: 404, like an unknown id.
    let path = api.get("/v1/enrollments/not-a-uuid", &api.admin).await;
    assert_eq!((path.status, path.code()), (404, "not_found"), "{}", path.body);
    // A page size outside 1..=500 is refused, as the OpenAPI document says (#15 16).
    for limit in ["0", "501", "9223372036854775808"] {
        for list in ["/v1/enrollments", "/v1/contacts", "/v1/threads", "/v1/statuses/unmatched"] {
            let answer = api.get(&format!("{list}?limit={limit}"), &api.admin).await;
            assert_eq!((answer.status, answer.code()), (422, "invalid_limit"), "{list}?limit={limit}: {}", answer.body);
        }
    }
    let spaced = api
        .send(
            Method::POST,
            "/v1/contacts",
            Some(&api.admin),
            Some(("application/json", b"{}".to_vec())),
            &[("idempotency-key", "a b")],
        )
        .await;
    assert_eq!((spaced.status, spaced.code()), (400, "invalid_idempotency_key"), "{}", spaced.body);
    let cursor = api.get("/v1/enrollments?cursor=zzz", &api.admin).await;
    assert_eq!((cursor.status, cursor.code()), (400, "invalid_cursor"));
    let status = api.get("/v1/enrollments?status=sleeping", &api.admin).await;
    assert_eq!((status.status, status.code()), (400, "invalid_query"));

    // The rate limit holds per token: a burst from one token is cut short
    // with 429 and Retry-After; the other tokens go on.
    let burst = token(api.dir.path(), &api.url, "burst", "inbox");
    let answers = futures::future::join_all((0..80).map(|_| api.get("/v1/views", &burst))).await;
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!limited.is_empty(), "80 requests at once are over a limit of 20/s");
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 429));
    assert_eq!(limited[0].code(), "rate_limited");
    assert!(limited[0].headers.contains_key("retry-after"));
    assert_eq!(api.get("/v1/threads", &api.inbox).await.status, 200);
    // 15.5: workflows and run history are the enroll scope's, as docs/api.md says.
    assert_eq!(api.get("/v1/workflows", &api.inbox).await.code(), "insufficient_scope");
    assert_eq!(api.get("/v1/workflows/api-hello", &api.inbox).await.status, 403);

    // A revoked token is refused at once.
    let out = kairo(api.dir.path()).args(["--database", &api.url, "token", "revoke", "agent"]).output().expect("runs");
    assert!(out.status.success());
    assert_eq!(api.get("/v1/threads", &api.inbox).await.status, 401);
    // 15.10: a revoked token's name can be given to a new token.
    let reused = token(api.dir.path(), &api.url, "agent", "inbox");
    assert_eq!(api.get("/v1/threads", &reused).await.status, 200);
    let out = kairo(api.dir.path()).args(["--database", &api.url, "token", "revoke", "agent"]).output().expect("runs");
    assert!(out.status.success(), "the new `agent` is revoked");
    let again =
        kairo(api.dir.path()).args(["--database", &api.url, "token", "revoke", "agent"]).output().expect("runs");
    assert_eq!(again.status.code(), Some(2));
    api.server.terminate().await;
}

async fn enrollment_is_idempotent_and_its_history_is_readable(db: &TestDb) {
    let api = Api::start(db, "").await;
    let body = json!({"workflow": "api-hello",
        "contact": {"phone": "+44 7700 900123", "name": "Ada", "properties": {"plan": "gold"}, "opt_in": ["+1 555-000-1111"]},
        "trigger": {"order_id": "A1"}});
    let key = [("idempotency-key", "order-A1")];
    let json_body = || Some(("application/json", body.to_string().into_bytes()));
    let first = api.send(Method::POST, "/v1/enrollments", Some(&api.enroll), json_body(), &key).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["result"], "enrolled");
    let enrollment = first.body["enrollment"].as_str().expect("an id").to_string();
    let contact = first.body["contact"].as_str().expect("an id").to_string();
    let replay = api.send(Method::POST, "/v1/enrollments", Some(&api.enroll), json_body(), &key).await;
    assert_eq!((replay.status, &replay.body), (201, &first.body));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other =
        json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900123"}, "trigger": {"order_id": "A2"}});
    let conflict = api
        .send(
            Method::POST,
            "/v1/enrollments",
            Some(&api.enroll),
            Some(("application/json", other.to_string().into_bytes())),
            &key,
        )
        .await;
    assert_eq!((conflict.status, conflict.code()), (409, "idempotency_key_reused"));
    // Another token's key space is its own.
    let admin_first = api.send(Method::POST, "/v1/enrollments", Some(&api.admin), json_body(), &key).await;
    assert_eq!(admin_first.status, 201);
    assert_ne!(admin_first.body["enrollment"], first.body["enrollment"]);
    let listed = api.get(&format!("/v1/enrollments?contact={contact}"), &api.enroll).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(2), "one per key and token: {}", listed.body);

    // The in-process worker runs it: the history shows the send and its message.
    let path = format!("/v1/enrollments/{enrollment}");
    let done = api.until(&path, &api.enroll, |b| b["status"] == "completed").await;
    assert_eq!(done["workflow"], "api-hello");
    assert_eq!(done["workflow_version"], 1);
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{done}");
    assert_eq!(steps[0]["step"], "hello");
    assert_eq!(steps[0]["state"], "succeeded");
    assert_eq!(steps[0]["attempt"], 1);
    assert!(steps[0]["started_at"].is_string() && steps[0]["finished_at"].is_string());
    assert_eq!(steps[0]["message"]["template_name"], "hello_world");
    assert!(steps[0]["message"]["wamid"].as_str().is_some_and(|w| w.starts_with("wamid.sandbox.")));

    // Filters and cursors.
    let waiters: Vec<String> = futures_ids(&api, 3).await;
    let page = api.get("/v1/enrollments?workflow=api-waiter&limit=2", &api.enroll).await;
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["items"][0]["id"], waiters[2].as_str(), "newest first");
    let cursor = page.body["next_cursor"].as_str().expect("a next page").to_string();
    let rest = api.get(&format!("/v1/enrollments?workflow=api-waiter&limit=2&cursor={cursor}"), &api.enroll).await;
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["items"][0]["id"], waiters[0].as_str());
    assert!(rest.body["next_cursor"].is_null());
    let done_list = api.get("/v1/enrollments?workflow=api-hello&status=completed", &api.enroll).await;
    assert!(done_list.body["items"].as_array().is_some_and(|i| i.iter().all(|e| e["status"] == "completed")));
    assert_eq!(api.get("/v1/enrollments?workflow=nope", &api.enroll).await.status, 404);

    // Cancel a waiting enrollment; cancelling again or retrying it conflicts.
    let waiting = format!("/v1/enrollments/{}", waiters[0]);
    api.until(&waiting, &api.enroll, |b| b["status"] == "waiting").await;
    let cancelled = api.post(&format!("{waiting}/cancel"), &api.enroll, json!({"reason": "customer asked"})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        (cancelled.body["status"].as_str(), cancelled.body["exit_reason"].as_str()),
        (Some("cancelled"), Some("customer asked"))
    );
    assert_eq!(api.post(&format!("{waiting}/cancel"), &api.enroll, json!({})).await.code(), "wrong_state");
    assert_eq!(api.post(&format!("{waiting}/retry"), &api.enroll, json!({})).await.status, 409);
    let nobody = api.post("/v1/enrollments/01a21e13-e387-745e-9549-3ef907b33df7/cancel", &api.enroll, json!({})).await;
    assert_eq!(nobody.status, 404);

    // The workflow's funnel counts what happened.
    let workflow = api.until("/v1/workflows/api-hello", &api.enroll, |b| b["versions"][0]["funnel"]["sent"] == 2).await;
    assert_eq!(workflow["current_version"], 1);
    assert_eq!(workflow["versions"][0]["funnel"]["enrolled"], 2);
    assert_eq!(workflow["versions"][0]["enrollments"]["completed"], 2);
    let waiter = api.get("/v1/workflows/api-waiter", &api.enroll).await;
    assert_eq!(waiter.body["versions"][0]["enrollments"]["cancelled"], 1);
    assert_eq!(api.get("/v1/workflows/nope", &api.enroll).await.status, 404);
    let all = api.get("/v1/workflows", &api.enroll).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2));

    // A failed enrollment is retried: a new attempt of its failed step.
    // (Its http step calls a path of this server that answers 404: a
    // permanent failure; the watcher loads the file written now.)
    let failing = format!(
        "id: api-failing\nname: API failing\ntriggers:\n  - api: {{}}\nsteps:\n  - id: call\n    http:\n      method: GET\n      url: {}/v1/no-such-path\n",
        api.server.base_url
    );
    std::fs::write(api.dir.path().join("workflows/api-failing.yaml"), failing).expect("write");
    api.until("/v1/workflows", &api.enroll, |b| b["items"].as_array().is_some_and(|i| i.len() == 3)).await;
    let run =
        api.post("/v1/enrollments", &api.enroll, json!({"workflow": "api-failing", "contact": {"id": contact}})).await;
    assert_eq!(run.status, 201, "{}", run.body);
    let path = format!("/v1/enrollments/{}", run.body["enrollment"].as_str().expect("an id"));
    let failed = api.until(&path, &api.enroll, |b| b["status"] == "failed").await;
    assert!(failed["steps"][0]["error"].as_str().is_some_and(|e| e.contains("404")), "{failed}");
    let retried = api.post(&format!("{path}/retry"), &api.enroll, json!({})).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let again = api
        .until(&path, &api.enroll, |b| b["status"] == "failed" && b["steps"].as_array().is_some_and(|s| s.len() == 2))
        .await;
    assert_eq!((again["steps"][0]["attempt"].as_i64(), again["steps"][1]["attempt"].as_i64()), (Some(1), Some(2)));
    api.server.terminate().await;
}

/// Enrolls three contacts into the waiting workflow; their enrollment ids, oldest first.
async fn futures_ids(api: &Api, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({"workflow": "api-waiter", "contact": {"phone": format!("+44 7700 90020{i}")}});
        let answer = api.post("/v1/enrollments", &api.enroll, body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        ids.push(answer.body["enrollment"].as_str().expect("an id").to_string());
    }
    ids
}

async fn contacts_keep_their_consent_trail(db: &TestDb) {
    let api = Api::start(db, "").await;
    let created = api
        .post("/v1/contacts", &api.inbox, json!({"phone": "+49 30 901820", "name": "Bea", "properties": {"tier": "a", "city": "Berlin"}, "opt_in": ["+1 555-000-1111"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("an id").to_string();
    assert_eq!(created.body["phone"], "4930901820");
    assert_eq!(created.body["consents"][0]["status"], "opted_in");
    assert_eq!(created.body["consents"][0]["display_number"], "+1 555-000-1111");
    assert_eq!(created.body["consents"][0]["history"][0]["source"], "api");

    let patched = api
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(&api.inbox),
            Some(json!({"properties": {"tier": "b", "city": null}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["properties"], json!({"tier": "b"}));
    let bad =
        api.call(Method::PATCH, &format!("/v1/contacts/{id}"), Some(&api.inbox), Some(json!({"phone": "12"}))).await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_phone"));

    let out = api
        .post(
            &format!("/v1/contacts/{id}/consent"),
            &api.enroll,
            json!({"number": "15550001111", "status": "opted_out"}),
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.body["consents"][0]["status"], "opted_out");
    let history = out.body["consents"][0]["history"].as_array().expect("history");
    assert_eq!(
        history.iter().map(|h| h["status"].as_str().unwrap_or_default()).collect::<Vec<_>>(),
        ["opted_in", "opted_out"]
    );
    let unknown_number = api
        .post(
            &format!("/v1/contacts/{id}/consent"),
            &api.enroll,
            json!({"number": "+1 555 999 9999", "status": "opted_in"}),
        )
        .await;
    assert_eq!((unknown_number.status, unknown_number.code()), (409, "unknown_number"));
    assert!(unknown_number.body["error"]["details"]["known_numbers"].as_array().is_some_and(|k| k.len() == 3));

    // The same phone finds the same contact, and so does its mobile phone,
    // for a new contact and for an enrollment alike.
    let again = api.post("/v1/contacts", &api.inbox, json!({"phone": "+4930901820"})).await;
    assert_eq!(again.body["id"], id.as_str());
    let mobile = api
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{id}"),
            Some(&api.inbox),
            Some(json!({"mobile_phone": "+49 151 23456789"})),
        )
        .await;
    assert_eq!(mobile.body["mobile_phone"], "4915123456789");
    let enrolled = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "+49 151 23456789"}, "trigger": {"order_id": "M"}}),
        )
        .await;
    assert_eq!((enrolled.status, enrolled.body["contact"].as_str()), (201, Some(id.as_str())), "{}", enrolled.body);
    let by_phone = api.get("/v1/contacts?phone=%2B49%2030%20901820", &api.inbox).await;
    assert_eq!(by_phone.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        api.get(&format!("/v1/contacts/{}", "01a21e13-e387-745e-9549-3ef907b33df7"), &api.inbox).await.status,
        404
    );
    let no_phone = api.post("/v1/contacts", &api.inbox, json!({"name": "Nobody"})).await;
    assert_eq!((no_phone.status, no_phone.code()), (422, "missing_contact"));

    // Many enrollments at once all go in: on SQLite a writer waits for the
    // lock rather than failing with "database is locked".
    let many = futures::future::join_all((0..48).map(|i| {
        let body = json!({"workflow": "api-hello", "contact": {"phone": format!("+44 7700 9003{i:02}")}, "trigger": {"order_id": i}});
        api.post("/v1/enrollments", &api.enroll, body)
    }))
    .await;
    let statuses: Vec<u16> = many.iter().map(|a| a.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 201),
        "{statuses:?}: {:?}",
        many.iter().find(|a| a.status != 201).map(|a| &a.body)
    );
    api.server.terminate().await;
}

async fn users_and_teams_are_created_listed_and_deactivated(db: &TestDb) {
    let api = Api::start(db, "").await;
    let ana = api.post("/v1/users", &api.admin, json!({"email": "Ana@Example.com", "name": "Ana"})).await;
    assert_eq!(ana.status, 201, "{}", ana.body);
    assert_eq!(ana.body["email"], "ana@example.com");
    let ana = ana.body["id"].as_str().expect("an id").to_string();
    let taken = api.post("/v1/users", &api.admin, json!({"email": "ana@example.com", "name": "Ana 2"})).await;
    assert_eq!((taken.status, taken.code()), (409, "email_taken"));
    let invalid = api.post("/v1/users", &api.admin, json!({"email": "nope", "name": "X"})).await;
    assert_eq!((invalid.status, invalid.code()), (422, "invalid_email"));
    let bo = api.post("/v1/users", &api.admin, json!({"email": "bo@example.com", "name": "Bo"})).await;
    let bo = bo.body["id"].as_str().expect("an id").to_string();

    let team = api.post("/v1/teams", &api.admin, json!({"name": "Billing", "members": [ana, bo]})).await;
    assert_eq!(team.status, 201, "{}", team.body);
    assert_eq!(team.body["members"], json!([ana, bo]));
    let team_id = team.body["id"].as_str().expect("an id").to_string();
    let unknown = api
        .post("/v1/teams", &api.admin, json!({"name": "Legal", "members": ["01a21e13-e387-745e-9549-3ef907b33df7"]}))
        .await;
    assert_eq!((unknown.status, unknown.code()), (409, "unknown_user"));
    let again = api.post("/v1/teams", &api.admin, json!({"name": "Billing"})).await;
    assert_eq!(again.status, 409);
    // The sandbox's demo teams are there too.
    let seeded = api.post("/v1/teams", &api.admin, json!({"name": "Support"})).await;
    assert_eq!(seeded.status, 409, "the sandbox seeds Support");

    let off = api.post(&format!("/v1/users/{bo}/deactivate"), &api.admin, json!({})).await;
    assert_eq!((off.status, &off.body["active"]), (200, &json!(false)));
    let users = api.get("/v1/users", &api.inbox).await;
    let active: Vec<bool> = users.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|u| u["email"].as_str().is_some_and(|e| e.ends_with("@example.com")))
        .map(|u| u["active"] == true)
        .collect();
    assert_eq!(active, [true, false], "Ana then Bo: {}", users.body);
    let team_off = api.post(&format!("/v1/teams/{team_id}/deactivate"), &api.admin, json!({})).await;
    assert_eq!((team_off.status, &team_off.body["active"]), (200, &json!(false)));
    let teams = api.get("/v1/teams", &api.inbox).await.body;
    let billing = teams["items"].as_array().expect("items").iter().find(|t| t["id"] == team_id.as_str()).cloned();
    assert_eq!(billing.expect("listed")["active"], false);
    assert_eq!(
        api.post("/v1/users/01a21e13-e387-745e-9549-3ef907b33df7/deactivate", &api.admin, json!({})).await.status,
        404
    );
    assert_eq!(api.post(&format!("/v1/users/{ana}/deactivate"), &api.inbox, json!({})).await.status, 403);
    api.server.terminate().await;
}

async fn inbox_search_replies_owners_and_views(db: &TestDb) {
    let api = Api::start(db, "").await;
    api.inbound("+44 7700 900500", "Hello, where is my parcel?");
    api.inbound("+44 7700 900501", "YES");
    let threads = api.until("/v1/threads", &api.inbox, |b| b["items"].as_array().is_some_and(|i| i.len() == 2)).await;
    assert!(
        threads["items"].as_array().expect("items").iter().all(|t| t["window_open"] == true && t["status"] == "open")
    );

    let found = api.get("/v1/threads?q=PARCEL", &api.inbox).await;
    assert_eq!(found.body["items"].as_array().map(Vec::len), Some(1), "{}", found.body);
    assert_eq!(found.body["items"][0]["customer_wa_id"], "447700900500");
    let parcel = found.body["items"][0]["id"].as_str().expect("an id").to_string();
    assert_eq!(api.get("/v1/threads?q=invoice", &api.inbox).await.body["items"], json!([]));
    assert_eq!(api.get("/v1/threads?q=900501", &api.inbox).await.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(api.get("/v1/threads?q=%25", &api.inbox).await.body["items"], json!([]), "% is literal");
    let on_number = api.get("/v1/threads?number=%2B1%20555-000-1111&status=open", &api.inbox).await;
    assert_eq!(on_number.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(api.get("/v1/threads?number=%2B1%20555-000-2222", &api.inbox).await.body["items"], json!([]));
    let unknown = api.get("/v1/threads?number=123", &api.inbox).await;
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_number"), "{}", unknown.body);

    // A free-form reply inside the window is sent and recorded.
    let reply = api.post(&format!("/v1/threads/{parcel}/replies"), &api.inbox, json!({"text": "On its way!"})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!((reply.body["status"].as_str(), reply.body["direction"].as_str()), (Some("sent"), Some("outbound")));
    let thread = api.get(&format!("/v1/threads/{parcel}"), &api.inbox).await;
    let bodies: Vec<&str> =
        thread.body["messages"].as_array().expect("messages").iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["Hello, where is my parcel?", "On its way!"]);
    assert!(thread.body["first_response_at"].is_string());
    assert_eq!(api.post(&format!("/v1/threads/{parcel}/replies"), &api.inbox, json!({})).await.code(), "invalid_reply");

    // Outside the window: 409 naming when it closed; a template needs consent.
    let enrolled = api.post("/v1/enrollments", &api.enroll, json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900502", "opt_in": ["+1 555-000-1111"]}, "trigger": {"order_id": "B"}})).await;
    let contact = enrolled.body["contact"].as_str().expect("a contact").to_string();
    let quiet = api
        .until(&format!("/v1/threads?contact={contact}"), &api.inbox, |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    let quiet = quiet["items"][0]["id"].as_str().expect("an id").to_string();
    let closed = api.post(&format!("/v1/threads/{quiet}/replies"), &api.inbox, json!({"text": "hi"})).await;
    assert_eq!((closed.status, closed.code()), (409, "window_closed"), "{}", closed.body);
    assert!(closed.body["error"]["message"].as_str().is_some_and(|m| m.contains("template")));
    let template = json!({"template": {"name": "hello_world", "language": "en_US"}});
    let sent = api.post(&format!("/v1/threads/{quiet}/replies"), &api.inbox, template.clone()).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(sent.body["template_name"], "hello_world");
    let not_approved = api
        .post(
            &format!("/v1/threads/{quiet}/replies"),
            &api.inbox,
            json!({"template": {"name": "back_in_stock", "language": "en_US"}}),
        )
        .await;
    assert_eq!((not_approved.status, not_approved.code()), (409, "template_not_approved"));
    let unknown = api
        .post(
            &format!("/v1/threads/{quiet}/replies"),
            &api.inbox,
            json!({"template": {"name": "no_such_template", "language": "en_US"}}),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (409, "unknown_template"), "{}", unknown.body);
    // Parameters are checked against the template as `kairo validate` checks a send (#15 12).
    let reply_with = |template: Value| {
        let api = &api;
        let quiet = quiet.clone();
        async move { api.post(&format!("/v1/threads/{quiet}/replies"), &api.inbox, json!({ "template": template })).await }
    };
    let short = reply_with(json!({"name": "payment_due", "language": "en_US", "body": ["Bruno"]})).await;
    assert_eq!((short.status, short.code()), (422, "invalid_template_parameters"), "{}", short.body);
    assert!(
        short.body["error"]["message"].as_str().is_some_and(|m| m.contains("1 parameter") && m.contains("takes 3"))
    );
    let named = reply_with(json!({"name": "weekly_promo", "language": "en_US", "header": "Acme",
        "body": {"first_name": "Ada"}, "buttons": [{"index": 0, "coupon_code": "SAVE10"}]}))
    .await;
    assert_eq!(named.status, 422, "{}", named.body);
    assert!(
        named.body["error"]["details"]["problems"][0].as_str().is_some_and(|p| p.contains("plan")),
        "{}",
        named.body
    );
    let no_header = reply_with(json!({"name": "order_update", "language": "en_US", "body": ["Ada", "KA-1"]})).await;
    assert!(
        no_header.body["error"]["message"].as_str().is_some_and(|m| m.contains("IMAGE header")),
        "{}",
        no_header.body
    );
    let no_code = reply_with(json!({"name": "weekly_promo", "language": "en_US", "header": "Acme",
        "body": {"first_name": "Ada", "plan": "gold"}}))
    .await;
    assert!(no_code.body["error"]["message"].as_str().is_some_and(|m| m.contains("copy-code")), "{}", no_code.body);
    let fits =
        reply_with(json!({"name": "payment_due", "language": "en_US", "body": ["Bruno", "$49.90", "May 1"]})).await;
    assert_eq!(fits.status, 201, "{}", fits.body);
    let sample = reply_with(json!({"name": "sample_issue_resolution", "language": "en_US", "body": ["Pablo"]})).await;
    assert_eq!((sample.status, sample.code()), (422, "sample_template"), "{}", sample.body);
    let no_consent = api.post(&format!("/v1/threads/{parcel}/replies"), &api.inbox, template).await;
    assert_eq!((no_consent.status, no_consent.code()), (409, "not_opted_in"));
    // Associated: contacts created with a phone; the inbound ones too (matched by number).
    let associated = api.get("/v1/threads?associated=true", &api.inbox).await;
    assert_eq!(associated.body["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(api.get("/v1/threads?associated=false", &api.inbox).await.body["items"], json!([]));

    // Owners, close and reopen, saved views.
    let user = api.post("/v1/users", &api.admin, json!({"email": "cy@example.com", "name": "Cy"})).await;
    let user = user.body["id"].as_str().expect("an id").to_string();
    let owned = api.post(&format!("/v1/threads/{parcel}/owner"), &api.inbox, json!({"user": user})).await;
    assert_eq!((owned.status, owned.body["owner_user"].as_str()), (200, Some(user.as_str())));
    assert_eq!(
        api.get(&format!("/v1/threads?owner={user}"), &api.inbox).await.body["items"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        api.get("/v1/threads?unassigned=true", &api.inbox).await.body["items"].as_array().map(Vec::len),
        Some(2)
    );
    let nobody = api
        .post(
            &format!("/v1/threads/{parcel}/owner"),
            &api.inbox,
            json!({"user": "01a21e13-e387-745e-9549-3ef907b33df7"}),
        )
        .await;
    assert_eq!((nobody.status, nobody.code()), (409, "unknown_user"));
    let close = api.post(&format!("/v1/threads/{parcel}/close"), &api.inbox, json!({})).await;
    assert_eq!((close.status, close.body["status"].as_str()), (200, Some("closed")));
    assert_eq!(api.post(&format!("/v1/threads/{parcel}/close"), &api.inbox, json!({})).await.code(), "already_closed");
    let view = api.post("/v1/views", &api.inbox, json!({"name": "Closed", "filter": {"status": "closed"}})).await;
    assert_eq!(view.status, 201, "{}", view.body);
    let view_id = view.body["id"].as_str().expect("an id").to_string();
    let in_view = api.get(&format!("/v1/threads?view={view_id}"), &api.inbox).await;
    assert_eq!(in_view.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(in_view.body["items"][0]["id"], parcel.as_str());
    assert_eq!(api.get("/v1/views", &api.inbox).await.body["items"][0]["name"], "Closed");
    assert_eq!(api.post("/v1/views", &api.inbox, json!({"name": "Closed", "filter": {}})).await.status, 409);
    assert_eq!(api.get("/v1/threads?view=01a21e13-e387-745e-9549-3ef907b33df7", &api.inbox).await.status, 404);
    // A new message from the contact opens a new thread; the old one cannot reopen beside it.
    api.inbound("+44 7700 900500", "one more thing");
    api.until("/v1/threads?q=one%20more", &api.inbox, |b| b["items"].as_array().is_some_and(|i| i.len() == 1)).await;
    let reopen = api.post(&format!("/v1/threads/{parcel}/reopen"), &api.inbox, json!({})).await;
    assert_eq!((reopen.status, reopen.code()), (409, "another_thread_open"), "{}", reopen.body);
    assert_eq!(api.get(&format!("/v1/threads/{parcel}"), &api.enroll).await.status, 403);
    api.server.terminate().await;
}

async fn bulk_enrollment_reports_each_row_and_replays_keys(db: &TestDb) {
    let api = Api::start(db, "").await;
    let ndjson = [
        r#"{"key": "r1", "contact": {"phone": "+44 7700 900601", "name": "One", "opt_in": ["+1 555-000-1111"]}, "trigger": {"order_id": "1"}}"#,
        r#"{"key": "r2", "contact": {"phone": "+44 7700 900602"}, "trigger": {"order_id": "2"}}"#,
        r#"{"key": "r3", "contact": {"phone": "not a phone"}, "trigger": {"order_id": "3"}}"#,
        "",
        r#"{"key": "r4", "contact": {"phone": "+44 7700 900604"}}"#,
        r#"{this is not json"#,
        r#"{"key": "r1", "contact": {"phone": "+44 7700 900601", "name": "One", "opt_in": ["+1 555-000-1111"]}, "trigger": {"order_id": "1"}}"#,
        r#"{"contact": {"phone": "+44 7700 900607"}, "trigger": {"order_id": "7"}}"#,
    ]
    .join("\n");
    let upload = |body: String, content_type: &'static str, workflow: &'static str| {
        let api = &api;
        async move {
            api.send(
                Method::POST,
                &format!("/v1/enrollments/bulk?workflow={workflow}"),
                Some(&api.enroll),
                Some((content_type, body.into_bytes())),
                &[],
            )
            .await
        }
    };
    let first = upload(ndjson.clone(), "application/x-ndjson", "api-hello").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let job = &first.body;
    assert_eq!(job["status"], "completed");
    assert_eq!((job["rows_seen"].as_i64(), job["rows_enrolled"].as_i64()), (Some(7), Some(3)), "{job}");
    assert_eq!((job["rows_failed"].as_i64(), job["rows_replayed"].as_i64()), (Some(3), Some(1)));
    let errors: Vec<i64> =
        job["errors"].as_array().expect("errors").iter().filter_map(|e| e["line"].as_i64()).collect();
    assert_eq!(errors, [3, 5, 6], "bad phone, missing trigger field, not JSON: {job}");
    assert!(job["errors"][0]["error"].as_str().is_some_and(|e| e.contains("contact.phone")));
    // A row refused while its chunk is prepared keeps its key (#15 11).
    assert_eq!(job["errors"][0]["key"], "r3", "{job}");
    assert_eq!(job["errors"][1]["key"], "r4", "{job}");
    assert!(job["errors"][1]["error"].as_str().is_some_and(|e| e.contains("order_id")));

    // The same upload again enrolls nothing new: keyed rows replay.
    let second = upload(ndjson, "application/x-ndjson", "api-hello").await;
    assert_eq!(
        (second.body["rows_replayed"].as_i64(), second.body["rows_enrolled"].as_i64()),
        (Some(3), Some(1)),
        "{}",
        second.body
    );
    let job_id = second.body["id"].as_str().expect("an id");
    let rows = api.get(&format!("/v1/bulk-jobs/{job_id}/rows?outcome=replayed"), &api.enroll).await;
    let replayed: Vec<i64> =
        rows.body["items"].as_array().expect("rows").iter().filter_map(|r| r["line"].as_i64()).collect();
    assert_eq!(replayed, [1, 2, 7]);
    assert!(rows.body["items"][0]["enrollment"].is_string());
    let shown = api.get(&format!("/v1/bulk-jobs/{job_id}"), &api.enroll).await;
    assert_eq!((shown.status, shown.body["rows_seen"].as_i64()), (200, Some(7)));
    assert_eq!(api.get("/v1/bulk-jobs", &api.enroll).await.body["items"].as_array().map(Vec::len), Some(2));

    let csv = "key,phone,name,properties.plan,trigger.order_id\nc1,+44 7700 900701,Cat,gold,9\nc2,+44 7700 900702,Dan,,\nc3,nope,Eve,,10\n";
    let from_csv = upload(csv.to_string(), "text/csv", "api-hello").await;
    assert_eq!(from_csv.status, 200, "{}", from_csv.body);
    assert_eq!((from_csv.body["rows_enrolled"].as_i64(), from_csv.body["rows_failed"].as_i64()), (Some(1), Some(2)));
    let lines: Vec<i64> =
        from_csv.body["errors"].as_array().expect("errors").iter().filter_map(|e| e["line"].as_i64()).collect();
    assert_eq!(lines, [3, 4]);
    let cat = api.get("/v1/contacts?phone=%2B447700900701", &api.enroll).await;
    assert_eq!(cat.body["items"][0]["properties"], json!({"plan": "gold"}));

    let bad_header = upload("key,telephone\n1,2\n".into(), "text/csv", "api-hello").await;
    assert_eq!((bad_header.status, bad_header.code()), (400, "invalid_csv"), "{}", bad_header.body);
    let bad_type = upload("{}".into(), "application/json", "api-hello").await;
    assert_eq!((bad_type.status, bad_type.code()), (400, "content_type"));
    let unknown = upload("{}".into(), "application/x-ndjson", "nope").await;
    assert_eq!(unknown.status, 404);
    api.server.terminate().await;
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kairo(dir.path()).arg("openapi").output().expect("kairo openapi runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(format!("{}/docs/openapi.json", env!("CARGO_MANIFEST_DIR")))
        .expect("docs/openapi.json is committed");
    assert!(
        generated == committed,
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json` and commit it"
    );
    let doc: Value = serde_json::from_str(&generated).expect("JSON");
    for path in
        ["/v1/enrollments", "/v1/enrollments/bulk", "/v1/threads/{id}/replies", "/v1/contacts/{id}", "/v1/workflows"]
    {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let db = TestDb::sqlite();
    let api = Api::start(&db, "").await;
    let served = client().get(format!("{}/v1/openapi.json", api.server.base_url)).send().await.expect("answer");
    assert_eq!(served.text().await.expect("body"), committed);
    api.server.terminate().await;
}

#[tokio::test]
async fn metrics_count_requests_enrollments_sends_and_webhook_events() {
    let db = TestDb::sqlite();
    let api = Api::start(&db, "").await;
    let enrolled = api.post("/v1/enrollments", &api.enroll, json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900900", "opt_in": ["+1 555-000-1111"]}, "trigger": {"order_id": "M"}})).await;
    let path = format!("/v1/enrollments/{}", enrolled.body["enrollment"].as_str().expect("an id"));
    api.until(&path, &api.enroll, |b| b["status"] == "completed").await;
    api.inbound("+44 7700 900901", "hi");
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let text = loop {
        let (status, text) = api.server.get_text("/metrics").await;
        assert_eq!(status, 200);
        if text.contains("kairo_webhook_events_total") && text.contains("kairo_sends_total") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never showed the send and the webhook: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains(r#"kairo_enrollments{status="completed"} 1"#), "{text}");
    assert!(text.contains(r#"kairo_sends_total{outcome="accepted",code=""} "#), "{text}");
    assert!(text.contains(r#"kairo_steps_total{state="succeeded"}"#), "{text}");
    assert!(text.contains(r#"kairo_http_requests_total{route="/v1/enrollments",status="201"} 1"#), "{text}");
    assert!(text.contains("kairo_webhook_ingest_seconds_bucket"), "{text}");
    api.server.terminate().await;
}

#[tokio::test]
async fn a_changed_workflow_file_becomes_a_new_version_and_a_broken_one_is_reported() {
    let db = TestDb::sqlite();
    let api = Api::start(&db, "").await;
    let file = api.dir.path().join("workflows/api-hello.yaml");
    std::fs::write(&file, HELLO.replace("name: API hello", "name: API hello, second edition")).expect("write");
    let second = api.until("/v1/workflows/api-hello", &api.enroll, |b| b["current_version"] == 2).await;
    assert_eq!(second["name"], "API hello, second edition");
    // A broken edit is refused; version 2 keeps running and takes enrollments.
    // A new file written after it shows when the folder has been read again.
    std::fs::write(&file, HELLO.replace("template: hello_world", "template: hello_wrld")).expect("write");
    std::fs::write(api.dir.path().join("workflows/api-third.yaml"), HELLO.replace("id: api-hello", "id: api-third"))
        .expect("write");
    api.until("/v1/workflows", &api.enroll, |b| b["items"].as_array().is_some_and(|i| i.len() == 3)).await;
    assert_eq!(api.get("/v1/workflows/api-hello", &api.enroll).await.body["current_version"], 2);
    let enrolled = api
        .post(
            "/v1/enrollments",
            &api.enroll,
            json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900950"}, "trigger": {"order_id": "W"}}),
        )
        .await;
    assert_eq!(enrolled.status, 201, "{}", enrolled.body);
    let (_, logs) = api.server.terminate().await;
    let reported = logs
        .lines()
        .any(|l| l.contains("workflow not loaded") && l.contains("api-hello.yaml:13:") && l.contains("hello_wrld"));
    assert!(reported, "the broken file is reported with its position: {logs}");
}

/// Posts a webhook body signed with the sandbox's app secret.
async fn signed_webhook(api: &Api, body: &Value) -> u16 {
    use hmac::{KeyInit, Mac};
    let bytes = body.to_string().into_bytes();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"kairo-sandbox-app-secret").expect("any key length");
    mac.update(&bytes);
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let answer = api
        .send(
            Method::POST,
            "/webhooks/whatsapp",
            None,
            Some(("application/json", bytes)),
            &[("x-hub-signature-256", &format!("sha256={signature}"))],
        )
        .await;
    answer.status
}

// 14.B11 (pause and resume through the API), 14.C21 (statuses kept for
// messages Kairo never recorded are listed).
async fn workflows_pause_and_resume_and_unmatched_statuses_are_listed(db: &TestDb) {
    let api = Api::start(db, "").await;
    let enroll = |order: &str| json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900700"}, "trigger": {"order_id": order}});
    assert_eq!(api.post("/v1/workflows/api-hello/pause", &api.inbox, json!({})).await.status, 403);
    let paused = api.post("/v1/workflows/api-hello/pause", &api.enroll, json!({})).await;
    assert_eq!((paused.status, paused.body["state"].as_str()), (200, Some("paused")), "{}", paused.body);
    let refused = api.post("/v1/enrollments", &api.enroll, enroll("P1")).await;
    assert_eq!((refused.status, refused.code()), (409, "workflow_paused"), "{}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap_or_default().contains("resume"), "{}", refused.body);
    assert_eq!(api.get("/v1/workflows/api-hello", &api.enroll).await.body["state"], "paused");
    let resumed = api.post("/v1/workflows/api-hello/resume", &api.enroll, json!({})).await;
    assert_eq!(resumed.body["state"], "active");
    assert_eq!(api.post("/v1/enrollments", &api.enroll, enroll("P2")).await.status, 201);
    assert_eq!(api.post("/v1/workflows/nope/pause", &api.enroll, json!({})).await.status, 404);

    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
            "statuses": [{"id": "wamid.sent.elsewhere.1", "status": "delivered", "timestamp": "1767261700",
                "recipient_id": "447700900701"}]}}]}]});
    assert_eq!(signed_webhook(&api, &status).await, 200);
    let listed = api.until("/v1/statuses/unmatched", &api.inbox, |b| b["total"].as_u64() == Some(1)).await;
    assert_eq!(listed["items"][0]["wamid"], "wamid.sent.elsewhere.1");
    assert_eq!(listed["items"][0]["status"], "delivered");
    assert_eq!(api.get("/v1/statuses/unmatched?limit=0", &api.inbox).await.status, 422);
    let out = kairo(api.dir.path()).args(["--database", &api.url, "status"]).output().expect("kairo status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 status(es) for messages Kairo has not recorded") && text.contains("wamid.sent.elsewhere.1"),
        "{text}"
    );
}

// 15.9: no secret in any log line at any level, the webhook handshake's
// verify token included.
#[tokio::test]
async fn the_verify_token_never_reaches_the_log_even_at_debug() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_logging(
        dir.path(),
        &db.raw_url(),
        "debug,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,hyper=info,hyper_util=info,h2=info,notify=info",
    )
    .await;
    let secret = "kairo-sandbox-verify-token";
    let (status, _) = server
        .get_text(&format!("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={secret}&hub.challenge=42"))
        .await;
    assert_eq!(status, 200);
    let (status, _) =
        server.get_text("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=guess-123&hub.challenge=42").await;
    assert_eq!(status, 403);
    let (_, logs) = server.terminate().await;
    assert!(logs.contains("/webhooks/whatsapp"), "requests are logged at debug level: {logs}");
    assert!(!logs.contains(secret) && !logs.contains("guess-123"), "a verify token was logged");
}

// 15.15: a fresh server's /metrics has every family docs/operations.md
// names, at zero, with its help text.
#[tokio::test]
async fn a_fresh_servers_metrics_have_every_family_at_zero_with_help() {
    let db = TestDb::sqlite();
    let api = Api::start(&db, "").await;
    let (status, text) = api.server.get_text("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "kairo_enrollments",
        "kairo_steps_total",
        "kairo_sends_total",
        "kairo_pacing_waits_total",
        "kairo_webhook_events_total",
        "kairo_webhook_backlog",
        "kairo_webhook_apply_lag_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "no help for {family}: {text}");
        assert!(text.lines().any(|l| l.starts_with(family) && l.ends_with(" 0")), "{family} is not at zero: {text}");
    }
    assert!(text.contains(r#"kairo_enrollments{status="goal_met"} 0"#), "{text}");
    assert!(text.contains("# HELP kairo_webhook_ingest_seconds "), "{text}");
    api.server.terminate().await;
}

/// A busy database answers 503 `unavailable` with `Retry-After`, never 500
/// (#15 8): the server keeps `database.max_connections` connections, and
/// while a table every request reads is locked, requests either wait for a
/// connection past `database.acquire_timeout_secs` or for the lock past
/// the lock timeout; the server answers again once the lock is gone.
#[tokio::test]
async fn a_full_connection_pool_answers_503_with_retry_after() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let api = Api::start(&db, "[database]\nmax_connections = 2\nacquire_timeout_secs = 1\n").await;
    assert_eq!(api.get("/v1/contacts", &api.enroll).await.status, 200);
    let mut locker = sqlx::PgConnection::connect(&db.raw_url()).await.expect("a connection of the test's own");
    sqlx::raw_sql("BEGIN; LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.expect("lock");
    let answers = futures::future::join_all((0..8).map(|_| api.get("/v1/contacts", &api.enroll))).await;
    for answer in &answers {
        assert_eq!((answer.status, answer.code()), (503, "unavailable"), "{}", answer.body);
        assert!(answer.headers.contains_key("retry-after"), "{:?}", answer.headers);
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.expect("unlock");
    let again = api.get("/v1/contacts", &api.enroll).await;
    assert_eq!(again.status, 200, "{}", again.body);
    api.server.terminate().await;
}

/// A `workflows/` folder made after `kairo serve` started is found, loaded
/// and watched (#15 22).
#[tokio::test]
async fn a_workflow_folder_made_after_the_server_started_is_loaded_and_watched() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db.raw_url();
    let migrated = kairo(dir.path()).args(["--database", &url, "migrate"]).output().expect("kairo migrate runs");
    assert!(migrated.status.success());
    let enroll = token(dir.path(), &url, "enroller", "enroll");
    let server = Server::start(dir.path(), &url).await;
    let keys = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .map(|i| i.iter().filter_map(|w| w["key"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let list = || async {
        let response = client()
            .get(format!("{}/v1/workflows", server.base_url))
            .bearer_auth(&enroll)
            .send()
            .await
            .expect("answers");
        response.json::<Value>().await.expect("json")
    };
    assert!(keys(&list().await).is_empty());
    std::fs::create_dir(dir.path().join("workflows")).expect("mkdir");
    std::fs::write(dir.path().join("workflows/api-hello.yaml"), HELLO).expect("write");
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !keys(&list().await).contains(&"api-hello".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "the new folder was never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now watched: a second file loads without waiting for a periodic reload.
    std::fs::write(dir.path().join("workflows/api-waiter.yaml"), WAITER).expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !keys(&list().await).contains(&"api-waiter".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "the new file was not picked up by the watch");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate().await;
}
