//! User journeys through the real binary (issue 14, "how it is shown"): a
//! sandbox `kairo serve` with the example workflows, driven as its users
//! drive it: contacts write on WhatsApp (signed webhooks, and `kairo
//! sandbox inbound`), marketers enroll through the API, WhatsApp reports
//! statuses, and hours pass (the process clock is moved forward with
//! `KAIRO_CLOCK_OFFSET_FILE`). Each journey checks what a user would look
//! at: the contact, the thread and its messages, the enrollment.
//!
//! - opt-in: YES opts in and the welcome template goes out; its delivered and
//!   read statuses reach the message; a YES in an image caption opts in
//!   nobody; STOP opts out.
//! - support: a message to the support number is routed to the Support team
//!   and "broken" flags it urgent.
//! - abandoned cart: the reminder waits an hour and keeps quiet hours in the
//!   contact's zone; a button reply hands the contact to Sales; the goal
//!   (the order placed) ends a run before its reminder; STOP exits one.
//! - a changed file mid-run: new enrollments take the new version, running
//!   ones keep theirs.
//! - the monthly win-back: its cron schedule enrolls the opted-in contacts
//!   its condition picks, and the offer goes out.

mod util;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hmac::{KeyInit, Mac};
use kairo_store::testing::TestDb;
use serde_json::{Value, json};
use util::{HANG_GUARD, Server, client};

/// The sandbox's business numbers (fixtures/catalog.json).
const SALES_NUMBER: (&str, &str) = ("+1 555-000-1111", "106540352242922");
const SUPPORT_NUMBER: (&str, &str) = ("+1 555-000-2222", "106540352242933");
const SANDBOX_SECRET: &str = "kairo-sandbox-app-secret";

struct Journey {
    dir: tempfile::TempDir,
    /// The database the server and the CLI share.
    url: String,
    server: Server,
    token: String,
    offset_file: PathBuf,
    /// How far the server's clock is ahead of the wall clock.
    offset: Mutex<chrono::Duration>,
    next_message: AtomicU64,
}

impl Journey {
    async fn start(db: &TestDb) -> Journey {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = env!("CARGO_MANIFEST_DIR");
        std::fs::create_dir(dir.path().join("workflows")).expect("workflows folder");
        for entry in std::fs::read_dir(format!("{root}/workflows")).expect("examples").flatten() {
            std::fs::copy(entry.path(), dir.path().join("workflows").join(entry.file_name())).expect("copy");
        }
        let url = db.raw_url();
        util::kairo(dir.path()).args(["--database", &url, "migrate"]).assert().success();
        let created = util::kairo(dir.path())
            .args(["--database", &url, "token", "create", "--name", "journeys", "--scope", "admin"])
            .output()
            .expect("kairo token create");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let token = String::from_utf8(created.stdout).expect("utf-8").trim().to_string();
        let offset_file = dir.path().join("clock-offset");
        std::fs::write(&offset_file, "0").expect("offset file");
        let env = [
            ("KAIRO_CLOCK_OFFSET_FILE", offset_file.display().to_string()),
            ("KAIRO_WORKER_POLL_MS", "50".to_string()),
        ];
        let server = Server::start_with(dir.path(), &url, "info", &env).await;
        let journey = Journey {
            dir,
            url,
            server,
            token,
            offset_file,
            offset: Mutex::new(chrono::Duration::zero()),
            next_message: AtomicU64::new(0),
        };
        journey
            .eventually("the example workflows are loaded", || async {
                let workflows = journey.get("/v1/workflows").await;
                (workflows["items"].as_array().map_or(0, Vec::len) >= 6).then_some(())
            })
            .await;
        journey
    }

    /// The server's time.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("offset lock")
    }

    /// Moves the server's clock to `at` (never backwards) and gives it the
    /// moment it takes to read it.
    async fn set_clock(&self, at: DateTime<Utc>) {
        let offset = at - Utc::now();
        {
            let mut current = self.offset.lock().expect("offset lock");
            assert!(offset >= *current, "the clock only moves forward");
            *current = offset;
        }
        let seconds = offset.num_milliseconds() as f64 / 1000.0;
        std::fs::write(&self.offset_file, format!("{seconds}")).expect("offset file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = client().request(method, format!("{}{path}", self.server.base_url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.request(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        answer
    }

    /// Polls `check` until it gives a value (a guard against hangs, not a
    /// speed assertion).
    async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Posts a signed webhook delivery, as WhatsApp does.
    async fn deliver(&self, value: Value) {
        let body = serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{ "id": "102290129340398", "changes": [{ "value": value, "field": "messages" }] }]
        }))
        .expect("JSON");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SANDBOX_SECRET.as_bytes()).expect("key");
        mac.update(&body);
        let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let (status, answer) = self
            .server
            .post("/webhooks/whatsapp", &[("x-hub-signature-256", format!("sha256={signature}"))], body)
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// A fixture's `value`, from `from` to `number`, stamped now.
    fn message(&self, fixture: &str, number: (&str, &str), from: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let text = std::fs::read_to_string(format!("{}/fixtures/whatsapp/{fixture}", env!("CARGO_MANIFEST_DIR")))
            .expect("fixture");
        let delivery: Value = serde_json::from_str(&text).expect("fixture JSON");
        let mut value = delivery["entry"][0]["changes"][0]["value"].clone();
        let digits: String = from.chars().filter(char::is_ascii_digit).collect();
        value["metadata"] = json!({
            "display_phone_number": number.0.chars().filter(char::is_ascii_digit).collect::<String>(),
            "phone_number_id": number.1,
        });
        value["contacts"][0]["wa_id"] = json!(digits);
        let message = &mut value["messages"][0];
        message["from"] = json!(digits);
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        message["id"] = json!(format!("wamid.journey.{}.{n}", self.now().timestamp_micros()));
        message["timestamp"] = json!(self.now().timestamp().to_string());
        edit(message);
        value
    }

    async fn text(&self, number: (&str, &str), from: &str, text: &str) {
        let value = self.message("webhook_text_message.json", number, from, |m| m["text"]["body"] = json!(text));
        self.deliver(value).await;
    }

    /// A status for one of our messages, as WhatsApp reports it.
    async fn status(&self, wamid: &str, to: &str, status: &str) {
        let text = std::fs::read_to_string(format!(
            "{}/fixtures/whatsapp/webhook_status_delivered.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        let delivery: Value = serde_json::from_str(&text).expect("fixture JSON");
        let mut value = delivery["entry"][0]["changes"][0]["value"].clone();
        value["metadata"]["phone_number_id"] = json!(SALES_NUMBER.1);
        let entry = &mut value["statuses"][0];
        entry["id"] = json!(wamid);
        entry["status"] = json!(status);
        entry["recipient_id"] = json!(to.chars().filter(char::is_ascii_digit).collect::<String>());
        entry["timestamp"] = json!(self.now().timestamp().to_string());
        if let Some(fields) = entry.as_object_mut() {
            fields.remove("biz_opaque_callback_data");
        }
        self.deliver(value).await;
    }

    async fn contact(&self, phone: &str) -> Option<Value> {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        let found = self.get(&format!("/v1/contacts?phone=%2B{digits}")).await;
        found["items"].as_array().and_then(|items| items.first()).cloned()
    }

    async fn contact_detail(&self, id: &str) -> Value {
        self.get(&format!("/v1/contacts/{id}")).await
    }

    /// The contact's enrollments into `workflow`, oldest first.
    async fn enrollments(&self, contact: &str, workflow: &str) -> Vec<Value> {
        let page = self.get(&format!("/v1/enrollments?contact={contact}&workflow={workflow}")).await;
        let mut items = page["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        items
    }

    /// The contact's thread on `number`, with its messages.
    async fn thread(&self, contact: &str, number: &str) -> Option<Value> {
        let threads = self.get(&format!("/v1/threads?contact={contact}")).await;
        let thread = threads["items"].as_array()?.iter().find(|t| t["display_number"] == number)?.clone();
        Some(self.get(&format!("/v1/threads/{}", thread["id"].as_str()?)).await)
    }

    /// Outbound template messages of the contact on `number`.
    async fn templates_sent(&self, contact: &str, number: &str, template: &str) -> Vec<Value> {
        let Some(thread) = self.thread(contact, number).await else { return Vec::new() };
        thread["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .filter(|m| m["direction"] == "outbound" && m["template_name"] == template)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn enroll_cart(&self, phone: &str, cart: &str) -> (String, String) {
        let answer = self
            .post(
                "/v1/enrollments",
                json!({
                    "workflow": "abandoned-cart",
                    "contact": { "phone": phone, "opt_in": [SALES_NUMBER.0] },
                    "trigger": { "cart_id": cart, "item_count": 2 },
                }),
            )
            .await;
        assert_eq!(answer["result"], "enrolled", "{answer}");
        let contact = answer["contact"].as_str().expect("the contact's id").to_string();
        (contact, answer["enrollment"].as_str().expect("the enrollment's id").to_string())
    }

    async fn enrollment(&self, id: &str) -> Value {
        self.get(&format!("/v1/enrollments/{id}")).await
    }

    async fn status_becomes(&self, id: &str, status: &str) -> Value {
        self.eventually(&format!("enrollment {id} becomes {status}"), || async {
            let enrollment = self.enrollment(id).await;
            (enrollment["status"] == status).then_some(enrollment)
        })
        .await
    }
}

/// The id of the user with `email` in a `GET /v1/users` answer.
fn user_id(users: &Value, email: &str) -> Value {
    let found = users["items"].as_array().and_then(|u| u.iter().find(|u| u["email"] == email));
    found.unwrap_or_else(|| panic!("no user {email}: {users}"))["id"].clone()
}

/// The next instant at `hour`:`minute` in London, at least `after`.
fn london(after: DateTime<Utc>, hour: u32, minute: u32) -> DateTime<Utc> {
    let zone = chrono_tz::Europe::London;
    let local = after.with_timezone(&zone).date_naive();
    (0..3)
        .filter_map(|days| {
            let day = local + chrono::Days::new(days);
            zone.from_local_datetime(&day.and_hms_opt(hour, minute, 0)?).single()
        })
        .map(|at| at.to_utc())
        .find(|at| *at >= after)
        .expect("one of three days has that time")
}

/// The next 1st of a month at 09:00 in New York, after `after`.
fn first_of_the_month_in_new_york(after: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Datelike;
    let zone = chrono_tz::America::New_York;
    let local = after.with_timezone(&zone);
    (0..3)
        .filter_map(|months| {
            let month0 = local.month0() + months;
            let (year, month) = (local.year() + (month0 / 12) as i32, month0 % 12 + 1);
            let day = chrono::NaiveDate::from_ymd_opt(year, month, 1)?;
            zone.from_local_datetime(&day.and_hms_opt(9, 0, 0)?).single()
        })
        .map(|at| at.to_utc())
        .find(|at| *at > after)
        .expect("one of three months")
}

async fn journeys(db: TestDb) {
    let j = Journey::start(&db).await;
    // The day starts at 10:00 in London, where the contacts (+44) live.
    let morning = london(Utc::now() + chrono::Duration::minutes(1), 10, 0);
    j.set_clock(morning).await;

    // Opt-in: YES through `kairo sandbox inbound`, as the README shows.
    let ana = "+44 7700 900601";
    // The command answers once the message is in the inbox, so what the
    // README does next (`curl /v1/threads`) sees it at once.
    let said = util::kairo(j.dir.path())
        .args(["--database", &j.url, "sandbox", "inbound", "--from", ana, "--text", "YES", "--name", "Ana"])
        .args(["--url", &j.server.base_url])
        .output()
        .expect("kairo sandbox inbound runs");
    let stdout = String::from_utf8_lossy(&said.stdout);
    assert!(
        said.status.success() && stdout.contains("in the inbox, thread"),
        "{stdout}{}",
        String::from_utf8_lossy(&said.stderr)
    );
    let ana_id = j.contact(ana).await.expect("Ana's contact is there when the command answers")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let threads = j.get(&format!("/v1/threads?contact={ana_id}")).await;
    let thread = stdout.rsplit("thread ").next().unwrap_or_default().trim();
    assert!(
        threads["items"].as_array().is_some_and(|items| items.iter().any(|t| t["id"] == thread)),
        "the thread the command named ({thread}) is in the list: {threads}"
    );
    let welcome = j
        .eventually("the welcome template goes to Ana", || async {
            j.templates_sent(&ana_id, SALES_NUMBER.0, "welcome_optin").await.into_iter().next()
        })
        .await;
    let wamid = welcome["wamid"].as_str().expect("the send's wamid").to_string();
    let run = j.enrollments(&ana_id, "opt-in-welcome").await;
    assert_eq!(run.len(), 1, "{run:?}");
    let run = j.status_becomes(run[0]["id"].as_str().expect("id"), "completed").await;
    assert_eq!(run["trigger_kind"], "opt_in", "{run}");
    let detail = j.contact_detail(&ana_id).await;
    assert_eq!(detail["properties"]["subscribed_via"], "whatsapp", "{detail}");
    assert_eq!(detail["properties"]["welcomed_wamid"], wamid.as_str(), "{detail}");
    // WhatsApp reports the message delivered, then read.
    j.status(&wamid, ana, "delivered").await;
    j.status(&wamid, ana, "read").await;
    j.eventually("the welcome shows as read", || async {
        let sent = j.templates_sent(&ana_id, SALES_NUMBER.0, "welcome_optin").await;
        sent.into_iter().find(|m| m["status"] == "read" && !m["delivered_at"].is_null() && !m["read_at"].is_null())
    })
    .await;

    // A YES in an image caption opts in nobody (#14 C17).
    let bea = "+44 7700 900602";
    let captioned =
        j.message("webhook_image_message.json", SALES_NUMBER, bea, |m| m["image"]["caption"] = json!("YES"));
    j.deliver(captioned).await;
    let bea_id = j.eventually("Bea's contact is created", || async { j.contact(bea).await }).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    j.eventually("Bea's image is in her thread", || async { j.thread(&bea_id, SALES_NUMBER.0).await }).await;
    assert!(j.enrollments(&bea_id, "opt-in-welcome").await.is_empty(), "a caption is not a keyword");
    let consents = j.contact_detail(&bea_id).await["consents"].clone();
    assert!(
        !consents.as_array().is_some_and(|c| c.iter().any(|c| c["status"] == "opted_in")),
        "Bea did not opt in: {consents}"
    );

    // Support: routed to the Support team, "broken" flagged urgent.
    let cy = "+44 7700 900603";
    j.text(SUPPORT_NUMBER, cy, "my parcel arrived broken").await;
    let cy_id = j.eventually("Cy's contact is created", || async { j.contact(cy).await }).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let routed = j
        .eventually("Cy's message is routed", || async {
            let runs = j.enrollments(&cy_id, "support-inbox").await;
            runs.into_iter().find(|r| r["status"] == "exited")
        })
        .await;
    assert_eq!(routed["exit_reason"], "routed", "{routed}");
    let users = j.get("/v1/users").await;
    let sam = user_id(&users, "sam@sandbox.kairo.test");
    let thread = j.thread(&cy_id, SUPPORT_NUMBER.0).await.expect("Cy's support thread");
    assert_eq!(thread["owner_user"], sam, "Sam, the Support team's one member, owns it: {thread}");
    assert_eq!(j.contact_detail(&cy_id).await["properties"]["support_priority"], "high");

    // Abandoned carts, enrolled through the API at 10:00.
    let (dan_id, dan_run) = j.enroll_cart("+44 7700 900604", "cart-dan").await; // answers the reminder
    let (eve_id, eve_run) = j.enroll_cart("+44 7700 900605", "cart-eve").await; // orders (the goal)
    let (fay_id, fay_run) = j.enroll_cart("+44 7700 900606", "cart-fay").await; // opts out
    for run in [&dan_run, &eve_run, &fay_run] {
        let waiting = j.status_becomes(run, "waiting").await;
        assert_eq!(waiting["current_step"], "wait-an-hour", "{waiting}");
    }
    assert!(j.templates_sent(&dan_id, SALES_NUMBER.0, "cart_reminder").await.is_empty(), "no reminder before the hour");
    // Eve places the order; Fay writes STOP.
    let (status, patched) = j
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{eve_id}"),
            Some(json!({ "properties": { "last_order_cart": "cart-eve" } })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    j.text(SALES_NUMBER, "+44 7700 900606", "STOP").await;
    let fay = j.status_becomes(&fay_run, "exited").await;
    assert_eq!(fay["exit_reason"], "opted out", "{fay}");

    // An hour later: Dan's reminder goes; Eve's run ends at its goal.
    j.set_clock(morning + chrono::Duration::minutes(61)).await;
    let reminder = j
        .eventually("Dan's reminder is sent", || async {
            j.templates_sent(&dan_id, SALES_NUMBER.0, "cart_reminder").await.into_iter().next()
        })
        .await;
    assert_eq!(reminder["template_params"]["body"][1], "2 items", "{reminder}");
    let eve = j.status_becomes(&eve_run, "goal_met").await;
    assert_eq!(eve["exit_reason"], "goal met", "{eve}");
    assert!(j.templates_sent(&eve_id, SALES_NUMBER.0, "cart_reminder").await.is_empty(), "Eve ordered: no reminder");
    assert!(j.templates_sent(&fay_id, SALES_NUMBER.0, "cart_reminder").await.is_empty(), "Fay opted out");

    // Dan taps the template's quick-reply button: handed to Sales.
    j.status_becomes(&dan_run, "waiting").await;
    let reminder_wamid = reminder["wamid"].as_str().expect("wamid").to_string();
    let tapped = j.message("webhook_template_quick_reply_button.json", SALES_NUMBER, "+44 7700 900604", |m| {
        m["context"]["id"] = json!(reminder_wamid);
    });
    j.deliver(tapped).await;
    let dan = j.status_becomes(&dan_run, "exited").await;
    assert_eq!(dan["exit_reason"], "reminders sent", "{dan}");
    let sally = user_id(&users, "sally@sandbox.kairo.test");
    let thread = j.thread(&dan_id, SALES_NUMBER.0).await.expect("Dan's thread");
    assert_eq!(thread["owner_user"], sally, "Sally (Sales) owns Dan's conversation: {thread}");

    // Evening: a cart enrolled at 20:30 would remind at 21:30, inside the
    // quiet hours (sends 09:00 to 21:00): it waits for the morning. The
    // file changes meanwhile: new runs take the new version.
    let evening = london(morning, 20, 30);
    j.set_clock(evening).await;
    let (gus_id, gus_run) = j.enroll_cart("+44 7700 900607", "cart-gus").await;
    let gus = j.status_becomes(&gus_run, "waiting").await;
    let file = j.dir.path().join("workflows/abandoned-cart.yaml");
    let text = std::fs::read_to_string(&file).expect("the example");
    assert!(text.contains("for: 1h"), "the example waits an hour");
    std::fs::write(&file, text.replacen("for: 1h", "for: 2h", 1)).expect("edit the file");
    let before = gus["workflow_version"].as_i64().expect("a version number");
    j.eventually("the changed file is a new version", || async {
        let workflow = j.get("/v1/workflows/abandoned-cart").await;
        (workflow["current_version"].as_i64() == Some(before + 1)).then_some(())
    })
    .await;
    let (_, hal_run) = j.enroll_cart("+44 7700 900608", "cart-hal").await;
    let hal = j.enrollment(&hal_run).await;
    assert_eq!(hal["workflow_version"].as_i64(), Some(before + 1), "{hal}");
    assert_eq!(j.enrollment(&gus_run).await["workflow_version"].as_i64(), Some(before), "Gus keeps his version");
    j.set_clock(evening + chrono::Duration::minutes(61)).await;
    let gus = j
        .eventually("Gus's hour is up and the reminder waits for the quiet hours", || async {
            let gus = j.enrollment(&gus_run).await;
            (gus["current_step"] == "first-reminder").then_some(gus)
        })
        .await;
    let step = gus["steps"]
        .as_array()
        .and_then(|steps| steps.iter().rev().find(|s| s["step"] == "first-reminder"))
        .cloned()
        .unwrap_or_else(|| panic!("the reminder step: {gus}"));
    assert_eq!(step["output"]["waiting"], "quiet_hours", "{step}");
    let next_morning = london(evening, 9, 0);
    let until: DateTime<Utc> = step["output"]["until"].as_str().expect("until").parse().expect("a time");
    assert!((until - next_morning).num_minutes().abs() <= 1, "until {until}, the morning is {next_morning}");
    assert!(j.templates_sent(&gus_id, SALES_NUMBER.0, "cart_reminder").await.is_empty(), "quiet at night");
    let hal = j.enrollment(&hal_run).await;
    assert_eq!(hal["current_step"], "wait-an-hour", "the new version waits two hours: {hal}");
    // The morning after, Gus's reminder goes.
    j.set_clock(next_morning + chrono::Duration::minutes(1)).await;
    j.eventually("Gus's reminder goes in the morning", || async {
        j.templates_sent(&gus_id, SALES_NUMBER.0, "cart_reminder").await.into_iter().next()
    })
    .await;

    // The monthly win-back (a cron schedule, 09:00 New York on the 1st):
    // Ana, opted in and 90 days since her last order, gets the standard
    // offer; Cy, never opted in on that number, gets nothing.
    let (status, patched) = j
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{ana_id}"),
            Some(json!({ "properties": { "first_name": "Ana", "days_since_last_order": 90, "lifetime_orders": 1 } })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    j.set_clock(first_of_the_month_in_new_york(j.now()) + chrono::Duration::minutes(1)).await;
    let offer = j
        .eventually("the win-back goes to Ana", || async {
            j.templates_sent(&ana_id, SALES_NUMBER.0, "we_miss_you").await.into_iter().next()
        })
        .await;
    assert_eq!(offer["template_params"]["body"], json!(["Ana", "5%"]), "{offer}");
    let runs = j.enrollments(&ana_id, "re-engagement").await;
    assert_eq!((runs.len(), &runs[0]["trigger_kind"]), (1, &json!("schedule")), "{runs:?}");
    assert!(j.enrollments(&cy_id, "re-engagement").await.is_empty(), "Cy never opted in on the sales number");

    let Journey { server, dir: _dir, .. } = j;
    let (code, logs) = server.terminate().await;
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_through_the_example_workflows_on_sqlite() {
    journeys(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_through_the_example_workflows_on_postgres() {
    journeys(TestDb::postgres().await).await;
}
