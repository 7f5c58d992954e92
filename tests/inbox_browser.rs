//! The inbox in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, as `scripts/ensure-chromium` installs it) against a real
//! `kairo serve` in sandbox mode on a loopback port, with the example
//! workflows, on SQLite and on PostgreSQL. Each test walks an agent's
//! journey; on a failure the page's screenshot and HTML are saved under
//! `target/browser/` and named in the panic message. Screenshots of the
//! journey's pages are saved there too (`docs/inbox.md` shows them; set
//! `KAIRO_DOCS_SCREENSHOTS=1` to write them into `docs/screenshots/`).

mod util;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use kairo_store::testing::TestDb;
use serde_json::{Value, json};
use util::{HANG_GUARD, Server, client, kairo};

/// How long a page may take to show a change (a hang guard, not a measure:
/// the live feed polls twice a second).
const SHOWN_WITHIN: Duration = Duration::from_secs(15);

/// A workflow the API enrolls into: one template, which opens a thread
/// whose window never opened (templates only).
const HELLO: &str = r#"id: api-hello
name: API hello
triggers:
  - api: {}
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

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

async fn driver() -> Driver {
    let path = std::env::var("KAIRO_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_string());
    assert!(
        Path::new(&path).exists(),
        "chromedriver is not at {path}: run the tests with scripts/test (it installs Debian's chromium and \
         chromium-driver), or set KAIRO_TEST_CHROMEDRIVER"
    );
    let port = free_port();
    let child = std::process::Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(answer) = client().get(format!("{url}/status")).send().await
            && answer.status().is_success()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "chromedriver never answered on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

/// One browser window of one agent.
struct Browser {
    client: Client,
    name: String,
    base: String,
    _profile: tempfile::TempDir,
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&dir).expect("target/browser can be created");
    dir
}

impl Browser {
    async fn open(driver: &Driver, base: &str, name: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": std::env::var("KAIRO_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,860",
                    format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session starts");
        Browser { client, name: name.to_string(), base: base.to_string(), _profile: profile }
    }

    /// Saves the page's screenshot and HTML under target/browser/.
    async fn keep(&self, label: &str) -> PathBuf {
        let dir = artifacts();
        let stem = format!("{}-{label}", self.name);
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{stem}.png")), png);
        }
        if let Ok(html) = self.client.source().await {
            let _ = std::fs::write(dir.join(format!("{stem}.html")), html);
        }
        dir.join(stem)
    }

    /// A screenshot for the docs (docs/screenshots/ with KAIRO_DOCS_SCREENSHOTS=1).
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(artifacts().join(format!("{name}.png")), &png).expect("write the screenshot");
        if std::env::var("KAIRO_DOCS_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs/screenshots");
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("write the docs screenshot");
        }
    }

    /// Fails the test with the page kept.
    async fn fail(&self, what: &str) -> ! {
        let kept = self.keep("failure").await;
        panic!("{}: {what} (the page is saved as {}.png and .html)", self.name, kept.display());
    }

    async fn goto(&self, path: &str) {
        if let Err(err) = self.client.goto(&format!("{}{path}", self.base)).await {
            self.fail(&format!("cannot open {path}: {err}")).await;
        }
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(SHOWN_WITHIN).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(err) => self.fail(&format!("`{css}` never appeared: {err}")).await,
        }
    }

    /// The text of `css`; found again when a live update replaced it
    /// between finding and reading.
    async fn text_of(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(err) if tokio::time::Instant::now() > deadline => {
                    self.fail(&format!("cannot read `{css}`: {err}")).await
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until the text of `css` contains `wanted` (without a reload:
    /// the page's own script has to bring it).
    async fn until_text(&self, css: &str, wanted: &str) {
        let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.text().await.is_ok_and(|t| t.contains(wanted))
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!("`{css}` never showed {wanted:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn until_path(&self, prefix: &str) {
        let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
        while !self.path().await.starts_with(prefix) {
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!("never reached {prefix} (at {})", self.path().await)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        if let Err(err) = element.send_keys(text).await {
            self.fail(&format!("cannot type into `{css}`: {err}")).await;
        }
    }

    /// Clicks `css`; found again when a live update replaced it between
    /// finding and clicking (the page refreshes parts of itself).
    async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
        loop {
            let element = self.find(css).await;
            match element.click().await {
                Ok(()) => return,
                Err(err) if err.to_string().contains("stale") && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => self.fail(&format!("cannot click `{css}`: {err}")).await,
            }
        }
    }

    async fn script(&self, source: &str) -> Value {
        match self.client.execute(source, vec![]).await {
            Ok(value) => value,
            Err(err) => self.fail(&format!("the script failed: {err}")).await,
        }
    }

    /// Marks the page, so that a later check can tell it was not reloaded.
    async fn mark(&self) {
        self.script("window.kairoTestMark = 'still here'; return null;").await;
    }

    async fn still_marked(&self) -> bool {
        self.script("return window.kairoTestMark || null;").await == json!("still here")
    }

    async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/inbox").await;
        self.until_path("/signin").await;
        self.type_into("#email", email).await;
        self.type_into("#password", password).await;
        self.click("form[action='/signin'] button[type=submit]").await;
        self.until_path("/inbox").await;
    }
}

struct Inbox {
    server: Server,
    dir: tempfile::TempDir,
    admin: String,
}

impl Inbox {
    async fn start(db: &TestDb) -> Inbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let workflows = dir.path().join("workflows");
        std::fs::create_dir(&workflows).expect("workflows dir");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        for entry in std::fs::read_dir(examples).expect("the example workflows") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, workflows.join(path.file_name().expect("a name"))).expect("copy");
            }
        }
        std::fs::write(workflows.join("api-hello.yaml"), HELLO).expect("write");
        let url = db.raw_url();
        let migrated = kairo(dir.path()).args(["--database", &url, "migrate"]).output().expect("kairo migrate runs");
        assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
        let out = kairo(dir.path())
            .args(["--database", &url, "token", "create", "--name", "admin", "--scope", "admin"])
            .output()
            .expect("kairo token create runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let admin = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
        let server = Server::start_logging(dir.path(), &url, "info").await;
        Inbox { server, dir, admin }
    }

    fn inbound(&self, from: &str, to: &str, name: &str, text: &str) {
        let out = kairo(self.dir.path())
            .args(["sandbox", "inbound", "--from", from, "--to", to, "--name", name, "--text", text])
            .args(["--url", &self.server.base_url])
            .output()
            .expect("kairo sandbox inbound runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// A delivery shaped as WhatsApp posts it, signed with the sandbox's
    /// app secret.
    async fn webhook(&self, body: &Value) {
        use hmac::{KeyInit, Mac};
        let bytes = body.to_string().into_bytes();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"kairo-sandbox-app-secret").expect("any key length");
        mac.update(&bytes);
        let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let answer = client()
            .post(format!("{}/webhooks/whatsapp", self.server.base_url))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(bytes)
            .send()
            .await
            .expect("the webhook answers");
        assert_eq!(answer.status().as_u16(), 200);
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = client().request(method, format!("{}{path}", self.server.base_url)).bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("the API answers");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// The id of the thread of `wa_id`, once there is one.
    async fn thread_of(&self, wa_id: &str) -> String {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let (_, page) = self.api(reqwest::Method::GET, "/v1/threads?limit=500", None).await;
            let found = page["items"].as_array().into_iter().flatten().find(|t| t["customer_wa_id"] == wa_id);
            if let Some(thread) = found {
                return thread["id"].as_str().expect("an id").to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no thread for {wa_id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(&kairo_store::testing::TestDb::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(&kairo_store::testing::TestDb::postgres().await).await })*
        }
    };
}

on_both!(
    an_agent_signs_in_sees_a_message_arrive_live_answers_it_and_signs_out,
    templates_consent_and_a_second_agent,
    messages_shown_for_what_they_are_views_unread_markers_and_the_contact_edited,
);

/// A shared fixture, as WhatsApp would post it.
fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/whatsapp").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the fixture")).expect("JSON")
}

/// Sign in; a message arrives in the list without a reload; open it and
/// answer inside the window (recorded as the agent's, in the page and in
/// `GET /v1/threads/{id}`); the composer works with the keyboard alone; a
/// POST without its CSRF token is refused; sign out.
async fn an_agent_signs_in_sees_a_message_arrive_live_answers_it_and_signs_out(db: &TestDb) {
    let inbox = Inbox::start(db).await;
    let driver = driver().await;
    let sam = Browser::open(&driver, &inbox.server.base_url, &format!("{}-sam", backend(db))).await;

    // A wrong password is refused where it was typed.
    sam.goto("/inbox").await;
    sam.until_path("/signin?next=").await;
    sam.type_into("#email", "sam@sandbox.kairo.test").await;
    sam.type_into("#password", "not-the-password").await;
    sam.click("form[action='/signin'] button[type=submit]").await;
    let refused = sam.text_of("#signin-error").await;
    assert!(refused.contains("not right"), "{refused}");
    sam.shot("signin").await;

    sam.sign_in("sam@sandbox.kairo.test", "kairo-sandbox").await;
    assert!(sam.text_of(".topbar .who").await.contains("Sam Support"));
    sam.mark().await;

    // The support number's routing workflow gives the thread to Sam's team
    // (round-robin: Sam); it appears without a reload.
    inbox.inbound("+44 7700 900601", "+1 555-000-2222", "Ada Lovelace", "Hello, my order arrived broken");
    sam.until_text("#threads", "Ada Lovelace").await;
    assert!(sam.still_marked().await, "the list changed without a reload");
    let thread = inbox.thread_of("447700900601").await;

    // Open it with the keyboard: j selects, Enter opens.
    sam.script("document.activeElement && document.activeElement.blur(); return null;").await;
    sam.client.active_element().await.expect("the body").send_keys("j").await.expect("keys");
    let selected = sam.find("#threads li.selected a").await;
    selected.send_keys("\u{E007}").await.expect("Enter");
    sam.until_path(&format!("/inbox/{thread}")).await;
    sam.until_text("ol.messages", "my order arrived broken").await;
    assert!(sam.text_of("#window").await.contains("Reply window open"));

    // Reply with the keyboard alone: r focuses the composer, Ctrl+Enter sends.
    sam.mark().await;
    sam.client.active_element().await.expect("the body").send_keys("r").await.expect("keys");
    let focused = sam.client.active_element().await.expect("the focused element");
    assert_eq!(focused.attr("id").await.expect("an id"), Some("reply-text".to_string()), "r focuses the reply");
    focused.send_keys("Sorry about that, a new one is on its way").await.expect("typing");
    focused.send_keys("\u{E009}\u{E007}").await.expect("Ctrl+Enter");
    sam.until_text("ol.messages", "a new one is on its way").await;
    sam.until_text("ol.messages li.message.out", "sent by Sam Support").await;
    assert!(sam.still_marked().await, "the reply went without a reload");
    sam.shot("inbox-conversation").await;

    // The API shows who sent it, and the first response time.
    let (status, detail) = inbox.api(reqwest::Method::GET, &format!("/v1/threads/{thread}"), None).await;
    assert_eq!(status, 200, "{detail}");
    let reply = detail["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["body"] == "Sorry about that, a new one is on its way")
        .expect("the reply is recorded");
    assert_eq!(reply["sent_by"]["email"], "sam@sandbox.kairo.test", "{reply}");
    assert_eq!(reply["sent_by"]["name"], "Sam Support");
    assert!(detail["first_response_at"].is_string(), "{detail}");

    // A POST without the session's CSRF token does nothing.
    let cookie = sam.client.get_named_cookie("kairo_session").await.expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    let forged = client()
        .post(format!("{}/inbox/{thread}/close", inbox.server.base_url))
        .header("cookie", format!("kairo_session={}", cookie.value()))
        .header("content-type", util::FORM_TYPE)
        .body(util::form(&[("nothing", "here")]))
        .send()
        .await
        .expect("an answer");
    assert_eq!(forged.status().as_u16(), 403);
    let (_, after) = inbox.api(reqwest::Method::GET, &format!("/v1/threads/{thread}"), None).await;
    assert_eq!(after["status"], "open", "the forged close did nothing");

    // Sign out: the session ends, the pages ask to sign in again.
    sam.click(".topbar form[action='/signout'] button").await;
    sam.until_path("/signin?signed_out=1").await;
    sam.goto("/inbox").await;
    sam.until_path("/signin").await;
    let reused = client()
        .get(format!("{}/inbox", inbox.server.base_url))
        .header("cookie", format!("kairo_session={}", cookie.value()))
        .header("x-kairo-fetch", "1")
        .send()
        .await
        .expect("an answer");
    assert_eq!(reused.status().as_u16(), 401, "a signed-out session opens nothing");
    sam.client.close().await.expect("the browser closes");
}

/// Outside the window only templates are offered and sending one works; a
/// contact who opted out is refused with the reason where the agent typed;
/// an assignment to a team appears in a second agent's open page; a
/// deactivated agent's open page loses its session.
async fn templates_consent_and_a_second_agent(db: &TestDb) {
    let inbox = Inbox::start(db).await;
    let driver = driver().await;
    let sam = Browser::open(&driver, &inbox.server.base_url, &format!("{}-sam2", backend(db))).await;
    let sally = Browser::open(&driver, &inbox.server.base_url, &format!("{}-sally", backend(db))).await;

    // A thread opened by a workflow's send: its window never opened.
    let (status, body) = inbox
        .api(
            reqwest::Method::POST,
            "/v1/enrollments",
            Some(json!({"workflow": "api-hello", "contact": {"phone": "+44 7700 900603", "name": "Grace Hopper", "opt_in": ["+1 555-000-1111"]}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let quiet = inbox.thread_of("447700900603").await;

    sam.sign_in("sam@sandbox.kairo.test", "kairo-sandbox").await;
    sam.goto(&format!("/inbox/{quiet}")).await;
    sam.until_text("#window", "only approved templates").await;
    assert!(sam.client.find(Locator::Css("#reply-text")).await.is_err(), "no free text outside the window");
    sam.find("select#template").await.select_by_value("hello_world|en_US").await.expect("pick the template");
    sam.until_text("fieldset[data-template='hello_world|en_US'] .preview", "Hello World").await;
    sam.shot("inbox-template").await;
    let before = sam.client.find_all(Locator::Css("ol.messages li.message.out")).await.expect("messages").len();
    sam.click("form[data-template-form] button[type=submit]").await;
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    while sam.client.find_all(Locator::Css("ol.messages li.message.out")).await.expect("messages").len() <= before {
        if tokio::time::Instant::now() > deadline {
            sam.fail("the template reply never appeared").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sam.until_text("ol.messages", "sent by Sam Support").await;

    // A contact who opted out: the template is refused with the reason.
    inbox.inbound("+44 7700 900604", "+1 555-000-1111", "Alan Turing", "STOP");
    let stopped = inbox.thread_of("447700900604").await;
    sam.goto(&format!("/inbox/{stopped}")).await;
    sam.until_text("#panel", "Opted out").await;
    sam.click("details.templates summary").await;
    sam.find("select#template").await.select_by_value("hello_world|en_US").await.expect("pick the template");
    sam.click("form[data-template-form] button[type=submit]").await;
    sam.until_text("#composer .error", "has not opted in").await;

    // Sally has the same thread open; Sam gives it to the Sales team.
    sally.sign_in("sally@sandbox.kairo.test", "kairo-sandbox").await;
    sally.goto(&format!("/inbox/{stopped}")).await;
    sally.until_text("#conversation .thread-head", "unassigned").await;
    sally.mark().await;
    let (_, teams) = inbox.api(reqwest::Method::GET, "/v1/teams", None).await;
    let sales =
        teams["items"].as_array().expect("teams").iter().find(|t| t["name"] == "Sales").expect("the Sales team")["id"]
            .as_str()
            .expect("an id")
            .to_string();
    sam.find("select#assign-to").await.select_by_value(&format!("team:{sales}")).await.expect("pick Sales");
    sam.click("form.assign button[type=submit]").await;
    sam.until_text("#conversation .thread-head", "team Sales").await;
    sally.until_text("#conversation .thread-head", "team Sales").await;
    assert!(sally.still_marked().await, "Sally saw it without a reload");

    // Sally is deactivated: her open page loses its session.
    let (_, users) = inbox.api(reqwest::Method::GET, "/v1/users", None).await;
    let sally_id = users["items"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "sally@sandbox.kairo.test")
        .expect("Sally")["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let (status, body) = inbox.api(reqwest::Method::POST, &format!("/v1/users/{sally_id}/deactivate"), None).await;
    assert_eq!(status, 200, "{body}");
    sally.until_path("/signin").await;
    sally.goto("/inbox").await;
    sally.until_path("/signin").await;
    sam.client.close().await.expect("closes");
    sally.client.close().await.expect("closes");
}

/// A photo, a place, a tapped button and a reaction show for what they
/// are (the reaction on the photo); the thread is unread for the agent
/// until opened; the timeline shows the opt-in and the assignment; a
/// template is shown as the customer read it; a search is saved as a view
/// with its count, renamed and deleted; the contact is edited in the panel.
async fn messages_shown_for_what_they_are_views_unread_markers_and_the_contact_edited(db: &TestDb) {
    let inbox = Inbox::start(db).await;
    let driver = driver().await;
    let sam = Browser::open(&driver, &inbox.server.base_url, &format!("{}-sam3", backend(db))).await;
    sam.sign_in("sam@sandbox.kairo.test", "kairo-sandbox").await;

    let image = fixture("webhook_image_message.json");
    let mut reaction = fixture("webhook_reaction.json");
    reaction["entry"][0]["changes"][0]["value"]["messages"][0]["reaction"]["message_id"] =
        image["entry"][0]["changes"][0]["value"]["messages"][0]["id"].clone();
    for body in [
        fixture("webhook_text_optin_yes.json"),
        image,
        fixture("webhook_location.json"),
        reaction,
        fixture("webhook_interactive_button_reply.json"),
    ] {
        inbox.webhook(&body).await;
    }
    let thread = inbox.thread_of("15551234567").await;
    let row = format!("#threads li[data-id='{thread}']");

    // Unread for Sam until he opens it.
    sam.goto("/inbox").await;
    sam.until_text(&row, "unread").await;
    sam.goto(&format!("/inbox/{thread}")).await;
    sam.until_text("ol.messages", "Is this the blue one?").await;
    // The journal applies the deliveries in turn: wait for the last ones.
    sam.until_text("ol.messages", "Tomorrow 9-12").await;
    sam.until_text("ol.messages li.message[data-kind='image'] .reactions", "\u{1f44d}").await;
    let photo = sam.text_of("ol.messages li.message[data-kind='image']").await;
    assert!(photo.contains("Photo") && photo.contains("image/jpeg"), "{photo}");
    assert!(sam.client.find(Locator::Css("li.message[data-kind='reaction']")).await.is_err(), "shown on the photo");
    let place = sam.text_of("ol.messages .location").await;
    assert!(place.contains("Kairo Demo Store Lisbon") && place.contains("38.71010, -9.13690"), "{place}");
    assert!(sam.text_of("ol.messages .reply-choice").await.contains("Tomorrow 9-12"));
    sam.until_text("ol.messages li.event[data-kind='opted_in']", "Opted in by writing YES").await;
    assert!(sam.text_of("#panel .consent-trail").await.contains("Consent history (1)"));
    sam.script("document.querySelector(\"li.message[data-kind='image']\").scrollIntoView(); return null;").await;
    sam.shot("inbox-message-kinds").await;
    sam.goto("/inbox").await;
    sam.find(&row).await;
    assert!(sam.client.find(Locator::Css(&format!("{row}.unread"))).await.is_err(), "read once opened");

    // An assignment: the timeline says who did it.
    sam.goto(&format!("/inbox/{thread}")).await;
    let (_, teams) = inbox.api(reqwest::Method::GET, "/v1/teams", None).await;
    let sales = teams["items"].as_array().expect("teams").iter().find(|t| t["name"] == "Sales").expect("Sales")["id"]
        .as_str()
        .expect("an id")
        .to_string();
    sam.find("select#assign-to").await.select_by_value(&format!("team:{sales}")).await.expect("pick Sales");
    sam.click("form.assign button[type=submit]").await;
    sam.until_text("ol.messages", "Sam Support assigned it to team Sales").await;

    // The window is closed (the fixtures are old): a template, as Ana reads it.
    sam.find("select#template").await.select_by_value("payment_due|en_US").await.expect("pick the template");
    let fields = "fieldset[data-template='payment_due|en_US']";
    sam.type_into(&format!("{fields} input[name='body.1']"), "Ana").await;
    sam.type_into(&format!("{fields} input[name='body.2']"), "$12.00").await;
    sam.type_into(&format!("{fields} input[name='body.3']"), "May 1").await;
    sam.until_text(&format!("{fields} .preview"), "a payment of $12.00").await;
    sam.click("form[data-template-form] button[type=submit]").await;
    sam.until_text("ol.messages", "Hi Ana, a payment of $12.00 for your subscription is due on May 1.").await;
    let seen = sam
        .script("return Array.from(document.querySelectorAll('ol.messages .template-seen')).map(e => e.innerText).join('|');")
        .await;
    assert!(
        seen.as_str()
            .is_some_and(|s| s.split('|').any(|t| t.contains("due on May 1.") && t.contains("Questions? Just reply"))),
        "the footer under the body: {seen}"
    );

    // The contact, edited in the panel.
    sam.click("details.edit-contact summary").await;
    let name = sam.find("#c-name").await;
    name.clear().await.expect("clear the name");
    name.send_keys("Ana Souza").await.expect("typing");
    sam.type_into("#c-new-key", "city").await;
    sam.type_into("#c-new-value", "Lisbon").await;
    sam.click("form.contact-form button[type=submit]").await;
    sam.until_text("#panel dl", "Lisbon").await;
    let (_, detail) = inbox.api(reqwest::Method::GET, &format!("/v1/threads/{thread}"), None).await;
    assert_eq!(detail["contact_detail"]["name"], "Ana Souza", "{detail}");
    assert_eq!(detail["contact_detail"]["properties"]["city"], "Lisbon");
    sam.click("details.edit-contact summary").await;
    let bad = sam.find("#c-phone").await;
    bad.clear().await.expect("clear");
    bad.send_keys("not a phone").await.expect("typing");
    sam.click("form.contact-form button[type=submit]").await;
    sam.until_text("#panel .error", "phone").await;

    // A search saved as a view, with its count; renamed; deleted.
    sam.goto("/inbox?q=Lisbon").await;
    sam.click("details.save-view summary").await;
    sam.type_into("#view-name", "Lisbon").await;
    sam.click("details.save-view button[type=submit]").await;
    sam.until_path("/inbox?view=").await;
    sam.until_text("ul.view-list a[aria-current]", "Lisbon").await;
    assert_eq!(sam.text_of("ul.view-list a[aria-current] .count").await, "1");
    assert!(sam.text_of("#threads").await.contains("Ana Souza"));
    sam.shot("inbox-views").await;
    sam.click("details.save-view summary").await;
    sam.type_into("#view-name", "Lisbon").await;
    sam.click("details.save-view button[type=submit]").await;
    sam.until_text("#view-problem", "already exists").await;
    sam.click("details.edit-view summary").await;
    let rename = sam.find("#view-rename").await;
    rename.clear().await.expect("clear");
    rename.send_keys("Lisbon shop").await.expect("typing");
    sam.click("details.edit-view form button[type=submit]").await;
    sam.until_text("ul.view-list a[aria-current]", "Lisbon shop").await;
    sam.click("details.edit-view summary").await;
    sam.click("details.edit-view button.danger").await;
    sam.until_text(".views", "No saved view yet.").await;

    // Sixty more conversations: the list loads the older ones as it
    // scrolls to its end, without a reload.
    let mut batch = fixture("webhook_text_message.json");
    let value = &mut batch["entry"][0]["changes"][0]["value"];
    let message = value["messages"][0].clone();
    let (mut messages, mut contacts) = (Vec::new(), Vec::new());
    for n in 0..60 {
        let sender = format!("4477009{n:05}");
        let mut one = message.clone();
        one["id"] = json!(format!("wamid.scroll.{n}"));
        one["from"] = json!(sender);
        one["text"] = json!({ "body": format!("scroll test {n}") });
        messages.push(one);
        contacts.push(json!({ "profile": { "name": format!("Scroll {n}") }, "wa_id": sender }));
    }
    value["messages"] = json!(messages);
    value["contacts"] = json!(contacts);
    inbox.webhook(&batch).await;
    inbox.thread_of("447700900059").await;
    sam.goto("/inbox").await;
    let count = "return document.querySelectorAll('#threads li.thread').length;";
    assert_eq!(sam.script(count).await, json!(50), "one page first");
    sam.mark().await;
    sam.script("document.querySelector('#threads a.more').scrollIntoView(); return null;").await;
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    while sam.script(count).await.as_u64().unwrap_or_default() <= 50 {
        if tokio::time::Instant::now() > deadline {
            sam.fail("older conversations never loaded on scrolling").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sam.still_marked().await, "loaded without a reload");
    assert_eq!(sam.script(count).await, json!(61), "every conversation, once");
    sam.client.close().await.expect("closes");
}

fn backend(db: &TestDb) -> &'static str {
    if db.raw_url().starts_with("sqlite") { "sqlite" } else { "postgres" }
}
