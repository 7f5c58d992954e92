//! The pages' sign-in rules over HTTP against a real `kairo serve`, on
//! SQLite and PostgreSQL: a one-time password must be replaced at the first
//! sign-in (and then opens nothing), failed sign-ins are limited per
//! account, forms without their CSRF token do nothing, and only local paths
//! are followed after sign-in. (The journeys in a browser are in
//! `inbox_browser.rs`.)

mod util;

use kairo_store::testing::TestDb;
use util::{HANG_GUARD, Server, kairo};

struct Web {
    server: Server,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    url: String,
}

struct Answer {
    status: u16,
    location: String,
    cookies: Vec<String>,
    body: String,
}

impl Answer {
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c.as_str(), ""));
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_string())
        })
    }
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no field {name} in {html}")) + marker.len();
    html[start..].split('"').next().expect("a value").to_string()
}

impl Web {
    async fn start(db: &TestDb) -> Web {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("workflows")).expect("workflows dir");
        let url = db.raw_url();
        let server = Server::start_logging(dir.path(), &url, "info").await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HANG_GUARD)
            .build()
            .expect("a client");
        Web { server, http, _dir: dir, url }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let answer = request.send().await.expect("an answer");
        let status = answer.status().as_u16();
        let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let cookies =
            answer.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect();
        Answer { status, location, cookies, body: answer.text().await.unwrap_or_default() }
    }

    async fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.server.base_url));
        if let Some(session) = session {
            request = request.header("cookie", format!("kairo_session={session}"));
        }
        self.send(request).await
    }

    /// Posts the sign-in form as a browser does (its CSRF cookie and field).
    async fn sign_in(&self, email: &str, password: &str, next: &str) -> Answer {
        let form = self.get("/signin", None).await;
        let token = form.cookie("kairo_signin").expect("the sign-in form sets its token");
        assert_eq!(field(&form.body, "csrf"), token);
        let request = self
            .http
            .post(format!("{}/signin", self.server.base_url))
            .header("cookie", format!("kairo_signin={token}"))
            .header("content-type", util::FORM_TYPE)
            .body(util::form(&[("csrf", token.as_str()), ("email", email), ("password", password), ("next", next)]));
        self.send(request).await
    }

    fn create_user(&self, email: &str) -> String {
        let out = kairo(self._dir.path())
            .args(["--database", &self.url, "user", "create", "--email", email, "--name", "Nia New", "--role", "agent"])
            .output()
            .expect("kairo user create runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
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

on_both!(a_one_time_password_is_replaced_at_the_first_sign_in, failed_sign_ins_are_limited_and_forms_need_their_token,);

async fn a_one_time_password_is_replaced_at_the_first_sign_in(db: &TestDb) {
    let web = Web::start(db).await;
    assert_eq!(web.get("/", None).await.location, "/signin");
    let inbox = web.get("/inbox/threads?q=x", None).await;
    assert_eq!((inbox.status, inbox.location.as_str()), (303, "/signin?next=%2Finbox%2Fthreads%3Fq%3Dx"));

    let one_time = web.create_user("nia@example.com");
    let signed = web.sign_in("NIA@example.com ", &one_time, "/inbox").await;
    assert_eq!((signed.status, signed.location.as_str()), (303, "/password"), "{}", signed.body);
    let session = signed.cookie("kairo_session").expect("a session cookie");
    let raw = signed.cookies.iter().find(|c| c.starts_with("kairo_session=")).expect("the cookie");
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Lax") && !raw.contains("Secure"), "{raw}");
    // Until a password is chosen, the inbox sends the person back.
    assert_eq!(web.get("/inbox", Some(&session)).await.location, "/password");
    let page = web.get("/password", Some(&session)).await;
    assert_eq!(page.status, 200);
    let csrf = field(&page.body, "csrf");
    let choose = |password: &'static str, repeat: &'static str, token: String| {
        web.http
            .post(format!("{}/password", web.server.base_url))
            .header("cookie", format!("kairo_session={session}"))
            .header("content-type", util::FORM_TYPE)
            .body(util::form(&[("csrf", token), ("password", password.to_string()), ("repeat", repeat.to_string())]))
    };
    let differ = web.send(choose("a-long-password-1", "a-long-password-2", csrf.clone())).await;
    assert_eq!(differ.status, 422);
    assert!(differ.body.contains("The two passwords differ"), "{}", differ.body);
    let short = web.send(choose("short", "short", csrf.clone())).await;
    assert_eq!(short.status, 422);
    assert!(short.body.contains("at least 10 characters"), "{}", short.body);
    let forged = web.send(choose("a-long-password-1", "a-long-password-1", "forged".into())).await;
    assert_eq!(forged.status, 403);
    let chosen = web.send(choose("a-long-password-1", "a-long-password-1", csrf)).await;
    assert_eq!((chosen.status, chosen.location.as_str()), (303, "/inbox"), "{}", chosen.body);
    let renewed = chosen.cookie("kairo_session").expect("a new session");
    assert_ne!(renewed, session);
    assert_eq!(web.get("/inbox", Some(&session)).await.status, 303, "the old session ended");
    assert_eq!(web.get("/inbox", Some(&renewed)).await.status, 200);

    // The one-time password opens nothing any more; the chosen one does, and
    // a `next` of another site is not followed.
    assert_eq!(web.sign_in("nia@example.com", &one_time, "/inbox").await.status, 401);
    let again = web.sign_in("nia@example.com", "a-long-password-1", "//evil.example/").await;
    assert_eq!((again.status, again.location.as_str()), (303, "/inbox"));
    let back = web.sign_in("nia@example.com", "a-long-password-1", "/inbox?owner=mine").await;
    assert_eq!(back.location, "/inbox?owner=mine");
}

async fn failed_sign_ins_are_limited_and_forms_need_their_token(db: &TestDb) {
    let web = Web::start(db).await;
    // A sign-in without the form's token is refused before the password is checked.
    let bare = web
        .send(
            web.http
                .post(format!("{}/signin", web.server.base_url))
                .header("content-type", util::FORM_TYPE)
                .body(util::form(&[("email", "sam@sandbox.kairo.test"), ("password", "kairo-sandbox")])),
        )
        .await;
    assert_eq!(bare.status, 403);
    assert!(bare.cookie("kairo_session").is_none());

    let unknown = web.sign_in("nobody@example.com", "whatever-it-is", "/inbox").await;
    let wrong = web.sign_in("sam@sandbox.kairo.test", "not-the-password", "/inbox").await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    let says = |a: &Answer| a.body.contains("the e-mail or the password is not right");
    assert!(says(&unknown) && says(&wrong), "the same answer for an unknown e-mail and a wrong password");
    for _ in 1..8 {
        assert_eq!(web.sign_in("sam@sandbox.kairo.test", "not-the-password", "/inbox").await.status, 401);
    }
    let blocked = web.sign_in("sam@sandbox.kairo.test", "kairo-sandbox", "/inbox").await;
    assert_eq!(blocked.status, 429, "the ninth try waits, right password or not");
    assert!(blocked.body.contains("Too many failed sign-ins"), "{}", blocked.body);
    assert!(blocked.cookie("kairo_session").is_none());
    // Another account from the same address still signs in.
    let sally = web.sign_in("sally@sandbox.kairo.test", "kairo-sandbox", "/inbox").await;
    assert_eq!(sally.status, 303, "{}", sally.body);
    let session = sally.cookie("kairo_session").expect("a session");

    // A page's POST without the session's token does nothing.
    let signout = web
        .send(
            web.http
                .post(format!("{}/signout", web.server.base_url))
                .header("cookie", format!("kairo_session={session}")),
        )
        .await;
    assert_eq!(signout.status, 403);
    assert_eq!(web.get("/inbox", Some(&session)).await.status, 200, "still signed in");
    let page = web.get("/inbox", Some(&session)).await;
    let token = field(&page.body, "csrf");
    let out = web
        .send(
            web.http
                .post(format!("{}/signout", web.server.base_url))
                .header("cookie", format!("kairo_session={session}"))
                .header("x-csrf-token", token),
        )
        .await;
    assert_eq!((out.status, out.location.as_str()), (303, "/signin?signed_out=1"));
    assert_eq!(web.get("/inbox", Some(&session)).await.status, 303, "signed out");
}
