//! The inbox at scale (issue #17): the web pages and the inbox API against a
//! real `kairo serve` (release) on loopback.
//!
//! 1. The database is seeded with BENCH_THREADS threads (default 100,000)
//!    on the sandbox's first business number, one contact each, and
//!    BENCH_MESSAGES messages (default 1,000,000) spread over them, about
//!    1 % of which mention a "parcel"; plus one more thread holding exactly
//!    1,000 messages. Rows go in multi-row INSERTs, a transaction per 200
//!    threads, written with sqlx as the store's sea-orm binds them (UUIDs as
//!    blobs and timestamps as RFC 3339 text on SQLite, `uuid` and
//!    `timestamptz` on PostgreSQL).
//! 2. As a signed-in agent (the page's fragments) and through the API (a
//!    bearer token), BENCH_REQUESTS (default 200) sequential requests each,
//!    after 10 not measured: the thread list, a search for "parcel", and the
//!    1,000-message conversation. Latency p50/p95/max is measured by the
//!    client on loopback, an upper bound of the server's time.
//! 3. BENCH_AGENTS (default 200) live feeds (`GET /inbox/events`, sharing
//!    one session) open at once: the server's memory (RSS) before and after
//!    they connect, and the time from a new inbound message (a signed
//!    webhook) until every feed has named its thread.
//!
//! Run with `scripts/bench-inbox`. BENCH_BACKEND=postgres runs on a fresh
//! database on KAIRO_TEST_POSTGRES_URL's server (SQLite by default).
//! BENCH_SEED_ROWS (rows per INSERT) and BENCH_SEED_WORKERS (PostgreSQL
//! connections seeding at once) tune the seeding only.

use std::ops::Range;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use kairo_store::testing::TestDb;
use serde_json::{Value, json};
use sqlx::query_builder::Separated;
use sqlx::{Postgres, QueryBuilder, Sqlite};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Requests sent before each measured series, not counted.
const WARMUP: usize = 10;
/// The messages of the one long conversation.
const BIG_THREAD: u32 = 1_000;
/// The word about 1 % of the messages hold, searched for.
const WORD: &str = "parcel";
/// The demo agent the sandbox creates, and its password (src/sandbox.rs).
const AGENT_EMAIL: &str = "sam@sandbox.kairo.test";
const AGENT_PASSWORD: &str = "kairo-sandbox";
/// The sandbox webhook's app secret (src/sandbox.rs).
const APP_SECRET: &str = "kairo-sandbox-app-secret";
/// The sandbox's demo catalogue: its first account and number are the ones
/// the threads are on.
const CATALOG: &str = include_str!("../fixtures/catalog.json");
/// Threads seeded per transaction (with their contacts, events and messages).
const CHUNK_THREADS: usize = 200;
/// The seed of every generated choice: the same data on every run.
const SEED: u64 = 0x6b61_6972_6f00_0017;
/// The thread the live phase's inbound message goes to (kept open).
const LIVE_THREAD: usize = 0;

/// Issue #17's targets.
const LATENCY_TARGET_MS: f64 = 150.0;
const MEMORY_TARGET_MIB: f64 = 50.0;
const DELIVERY_TARGET_MS: f64 = 1_000.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
    pid: u32,
}

async fn run() {
    let threads: usize = env_or("BENCH_THREADS", 100_000_usize).max(1);
    let messages: usize = env_or("BENCH_MESSAGES", 1_000_000_usize);
    let requests: usize = env_or("BENCH_REQUESTS", 200_usize).max(1);
    let agents: usize = env_or("BENCH_AGENTS", 200_usize).max(1);
    let db = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("postgres") => TestDb::postgres().await,
        _ => TestDb::sqlite(),
    };
    let url = db.raw_url();
    let backend = if url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("workflows")).expect("workflows");
    println!(
        "kairo inbox bench: {backend}, {threads} threads with {messages} messages plus one of {BIG_THREAD}, \
         kairo serve (release) on loopback, {} cores",
        num_cores()
    );

    run_kairo(dir.path(), &url, &["migrate"]).await;
    let sandbox = SandboxNumber::from_catalog();
    let number = register_number(&db, &sandbox).await;
    let plan = Plan::new(threads, messages, number);
    seed(&url, &plan).await;
    let token = run_kairo(dir.path(), &url, &["token", "create", "--name", "bench", "--scope", "admin"]).await;

    let mut server = start(dir.path(), &url).await;
    // The sandbox registers its numbers again at start: by Graph id, so the
    // seeded threads' number must still be the same row.
    let store = db.store().await;
    let registered = store
        .phone_number_by_graph_id(&sandbox.graph_id)
        .await
        .expect("the sandbox number can be read")
        .expect("the sandbox number is registered");
    assert_eq!(registered.id.as_uuid(), number, "kairo serve registered the sandbox number as a new row");
    store.close().await;

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let session = sign_in(&client, &server.base).await;
    let http = Http { client: &client, base: &server.base, session: &session, token: &token };

    let big = plan.thread_id(plan.big());
    check_data(&http, big).await;
    let figures: [(&str, &str, String, bool); 6] = [
        ("list-web", "thread list, GET /inbox/threads", "/inbox/threads".to_string(), true),
        ("list-api", "thread list, GET /v1/threads", "/v1/threads?sort=last_message&limit=50".to_string(), false),
        ("search-web", "search, GET /inbox/threads?q=parcel", format!("/inbox/threads?q={WORD}"), true),
        ("search-api", "search, GET /v1/threads?q=parcel", format!("/v1/threads?q={WORD}"), false),
        (
            "conversation-web",
            "1,000-message conversation, GET /inbox/{id}/conversation",
            format!("/inbox/{big}/conversation"),
            true,
        ),
        ("conversation-api", "1,000-message conversation, GET /v1/threads/{id}", format!("/v1/threads/{big}"), false),
    ];
    for (figure, what, path, web) in &figures {
        let sample = measure(requests, || if *web { http.web(path) } else { http.api(path) }).await;
        report_latency(backend, figure, what, &sample);
    }

    live(backend, &server, &client, &session, agents, &plan, &sandbox).await;
    let _ = server.child.kill().await;
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kairo() -> String {
    format!("{}/target/release/kairo", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `kairo --database URL ARGS…` in `dir` and returns what it printed.
async fn run_kairo(dir: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(kairo())
        .args(["--database", url])
        .args(args)
        .current_dir(dir)
        .env_remove("KAIRO_DATABASE_URL")
        .env_remove("KAIRO_LISTEN")
        .output()
        .await
        .unwrap_or_else(|err| panic!("kairo {} runs: {err}", args.join(" ")));
    assert!(out.status.success(), "kairo {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

async fn start(dir: &Path, url: &str) -> Server {
    let mut child = Command::new(kairo())
        .args(["serve", "--listen", "127.0.0.1:0", "--database", url])
        .current_dir(dir)
        .env_remove("KAIRO_DATABASE_URL")
        .env_remove("KAIRO_LISTEN")
        .env("KAIRO_API_RATE_LIMIT", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kairo serve starts");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next_line().await.expect("stdout").expect("a line");
    let base = line
        .strip_prefix("kairo listening on ")
        .unwrap_or_else(|| panic!("unexpected first line of kairo serve: {line}"))
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    wait_ready(&base).await;
    Server { child, base, pid }
}

async fn wait_ready(base: &str) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let started = Instant::now();
    loop {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "kairo serve was not ready within 2 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

// --- the sandbox number ------------------------------------------------------

/// The sandbox's first number, as the demo catalogue names it.
struct SandboxNumber {
    waba_id: String,
    graph_id: String,
    display: String,
}

impl SandboxNumber {
    fn from_catalog() -> SandboxNumber {
        let catalog: Value = serde_json::from_str(CATALOG).expect("the demo catalogue is JSON");
        let account = &catalog["accounts"][0];
        let number = &account["numbers"][0];
        let text = |value: &Value| value.as_str().expect("the demo catalogue names its first number").to_string();
        SandboxNumber {
            waba_id: text(&account["waba_id"]),
            graph_id: text(&number["id"]),
            display: text(&number["display_phone_number"]),
        }
    }
}

/// Registers the sandbox's account and first number as `kairo serve` does
/// in sandbox mode (src/sandbox.rs), so that the threads can be seeded
/// before the server first starts; the server's own registration updates
/// the same row (by Graph id). Returns the number's id.
async fn register_number(db: &TestDb, sandbox: &SandboxNumber) -> Uuid {
    let store = db.store().await;
    let now = Utc::now();
    let account = store
        .upsert_account(
            kairo_store::NewAccount { waba_id: sandbox.waba_id.clone(), name: "Sandbox".into(), portfolio_id: None },
            now,
        )
        .await
        .expect("the sandbox account is stored");
    let number = store
        .upsert_phone_number(
            kairo_store::NewPhoneNumber {
                account_id: account.id,
                graph_id: sandbox.graph_id.clone(),
                display_number: sandbox.display.clone(),
                normalized_number: kairo_core::phone::PhoneDigits::of(&sandbox.display).into_string(),
                verified_name: Some("Kairo Sandbox".into()),
                quality_rating: Some("GREEN".into()),
                throughput_mps: 80,
                messaging_limit_tier: None,
            },
            now,
        )
        .await
        .expect("the sandbox number is stored");
    store.close().await;
    number.id.as_uuid()
}

// --- what is seeded ----------------------------------------------------------

/// SplitMix64: a small generator, so that every run seeds the same data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The generator of thread `i`'s rows.
fn thread_seed(i: usize) -> u64 {
    SEED ^ (i as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// A UUID v7 of time `at` (ids are time-ordered, as Kairo writes them),
/// its random bits from `rng`.
fn id_at(at: DateTime<Utc>, rng: &mut Rng) -> Uuid {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis() as u64, &random).into_uuid()
}

/// Thread `i`'s contact's phone (and WhatsApp id): distinct digits.
fn digits(i: usize) -> String {
    format!("4479{i:08}")
}

const FIRST_NAMES: &[&str] = &[
    "Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Grace", "Hugo", "Inês", "Jonas", "Keiko", "Luca", "Maya",
    "Nikos", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tala", "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Souza",
    "Kowalski",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Haddad",
    "Fischer",
    "Novak",
    "Reyes",
    "Mensah",
    "Rossi",
    "Nguyen",
    "Schmidt",
    "Costa",
    "Ivanova",
    "Byrne",
    "Duarte",
    "Yilmaz",
    "Sato",
];

fn contact_name(i: usize) -> String {
    format!("{} {}", FIRST_NAMES[i % FIRST_NAMES.len()], LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()])
}

/// Message texts without the searched word.
const TEXTS: &[&str] = &[
    "Hi! Do you ship to Lisbon?",
    "Thanks, that works for me.",
    "What time do you open tomorrow?",
    "Can I change the delivery address on my order?",
    "Your order is confirmed. We will write again when it leaves the warehouse.",
    "Is the blue one still in stock in size M?",
    "Could you send me the invoice again, please?",
    "Great, thank you so much!",
    "I would like to cancel my booking for Friday.",
    "Your appointment is confirmed for Friday at 10:00.",
    "Sorry for the wait, one of our team will answer shortly.",
    "Do you have a store near the station?",
    "The payment went through, thanks.",
    "Can I pay on delivery?",
    "We have restocked the item you asked about.",
    "Ok, see you then.",
    "How long is the warranty?",
    "Please send a photo of the receipt and we will sort it out.",
];
/// Message texts with the searched word.
const PARCEL_TEXTS: &[&str] = &[
    "Where is my parcel? It has not arrived yet.",
    "Your parcel is on its way and should arrive tomorrow.",
    "The parcel was left with a neighbour, thanks for letting me know.",
    "Can you tell me the tracking number of the parcel?",
];

fn body_text(rng: &mut Rng, parcel: bool) -> String {
    let text = rng.pick(if parcel { PARCEL_TEXTS } else { TEXTS });
    // Some messages are longer, as people write them.
    if rng.below(4) == 0 { format!("{text} {}", rng.pick(TEXTS)) } else { text.to_string() }
}

/// What is seeded: `threads` threads with their share of the messages, and
/// one more (index `threads`) with exactly [`BIG_THREAD`].
struct Plan {
    threads: usize,
    /// Messages per thread, by index.
    counts: Vec<u32>,
    number: Uuid,
    /// Thread `i` opened at `first_opened + i * step`, over 180 days ending
    /// 20 days ago: every seeded change is long past, so the live feed
    /// names none of them.
    first_opened: DateTime<Utc>,
    step: TimeDelta,
    big_opened: DateTime<Utc>,
}

impl Plan {
    fn new(threads: usize, messages: usize, number: Uuid) -> Plan {
        let mut counts = vec![0u32; threads + 1];
        counts[threads] = BIG_THREAD;
        // One message each (as far as they go), the rest at random.
        let each = messages.min(threads);
        for count in &mut counts[..each] {
            *count = 1;
        }
        let mut rng = Rng(SEED);
        for _ in each..messages {
            counts[rng.below(threads as u64) as usize] += 1;
        }
        let now = Utc::now();
        let step = TimeDelta::milliseconds(TimeDelta::days(180).num_milliseconds() / threads as i64);
        Plan {
            threads,
            counts,
            number,
            first_opened: now - TimeDelta::days(200),
            step,
            big_opened: now - TimeDelta::days(30),
        }
    }

    /// Every thread, the long one included.
    fn all(&self) -> usize {
        self.threads + 1
    }

    /// The index of the thread of [`BIG_THREAD`] messages.
    fn big(&self) -> usize {
        self.threads
    }

    fn messages(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    fn opened_at(&self, i: usize) -> DateTime<Utc> {
        if i == self.big() { self.big_opened } else { self.first_opened + self.step * i as i32 }
    }

    fn contact_id(&self, i: usize) -> Uuid {
        id_at(self.opened_at(i), &mut Rng(thread_seed(i) ^ 0xC0))
    }

    fn thread_id(&self, i: usize) -> Uuid {
        id_at(self.opened_at(i), &mut Rng(thread_seed(i) ^ 0x7D))
    }
}

/// One bound value of a seeded row.
enum V {
    Id(Uuid),
    Str(&'static str),
    Text(String),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    Json(Value),
}

/// The rows of a run of threads, in the order they are inserted (a row
/// after those it references).
#[derive(Default)]
struct Chunk {
    contacts: Vec<Vec<V>>,
    threads: Vec<Vec<V>>,
    events: Vec<Vec<V>>,
    messages: Vec<Vec<V>>,
    parcels: u64,
}

impl Chunk {
    fn rows(&self) -> u64 {
        (self.contacts.len() + self.threads.len() + self.events.len() + self.messages.len()) as u64
    }
}

const CONTACTS: &str = "INSERT INTO contacts (id, name, phone, wa_id, properties, created_at, updated_at) ";
const THREADS: &str = "INSERT INTO threads (id, contact_id, phone_number_id, customer_wa_id, status, \
    window_closes_at, last_inbound_at, last_outbound_at, first_response_at, opened_at, closed_at, updated_at) ";
const EVENTS: &str = "INSERT INTO thread_events (id, thread_id, kind, occurred_at) ";
const MESSAGES: &str = "INSERT INTO messages (id, thread_id, direction, wamid, message_type, body, payload, status, \
    occurred_at, sent_at, delivered_at, read_at, created_at, updated_at, content) ";

/// Thread `i`'s contact, thread, events and messages, as Kairo would have
/// recorded them: the contact wrote first, then the two sides took turns
/// at random, a few minutes apart; one thread in ten is closed.
fn seed_thread(plan: &Plan, i: usize, chunk: &mut Chunk) {
    let mut rng = Rng(thread_seed(i));
    let phone = digits(i);
    let opened = plan.opened_at(i);
    let (contact, thread) = (plan.contact_id(i), plan.thread_id(i));
    chunk.contacts.push(vec![
        V::Id(contact),
        V::Text(contact_name(i)),
        V::Text(phone.clone()),
        V::Text(phone.clone()),
        V::Json(json!({})),
        V::Time(opened),
        V::Time(opened),
    ]);
    let mut at = opened;
    let (mut last_in, mut last_out, mut first_response) = (None, None, None);
    for k in 0..plan.counts[i] {
        if k > 0 {
            at += TimeDelta::seconds(5 + rng.below(900) as i64);
        }
        let inbound = k == 0 || rng.below(2) == 0;
        let parcel = rng.below(100) == 0;
        chunk.parcels += u64::from(parcel);
        let body = body_text(&mut rng, parcel);
        let id = id_at(at, &mut rng);
        let wamid = format!("wamid.bench.{i}.{k}");
        let (direction, status, sent, delivered, read, payload) = if inbound {
            last_in = Some(at);
            let payload = json!({
                "from": phone, "id": wamid, "timestamp": at.timestamp().to_string(),
                "text": {"body": body}, "type": "text",
            });
            ("inbound", "received", None, None, None, payload)
        } else {
            if first_response.is_none() && last_in.is_some() {
                first_response = Some(at);
            }
            last_out = Some(at);
            let payload = json!({
                "messaging_product": "whatsapp", "recipient_type": "individual", "to": phone,
                "type": "text", "text": {"body": body},
            });
            let (sent, delivered, read) = (at, at + TimeDelta::seconds(2), at + TimeDelta::seconds(60));
            ("outbound", "read", Some(sent), Some(delivered), Some(read), payload)
        };
        let content = json!({"kind": "text", "body": body});
        chunk.messages.push(vec![
            V::Id(id),
            V::Id(thread),
            V::Str(direction),
            V::Text(wamid),
            V::Str("text"),
            V::Text(body),
            V::Json(payload),
            V::Str(status),
            V::Time(at),
            V::OptTime(sent),
            V::OptTime(delivered),
            V::OptTime(read),
            V::Time(at),
            V::Time(read.unwrap_or(at)),
            V::Json(content),
        ]);
    }
    let last = last_in.into_iter().chain(last_out).max().unwrap_or(opened);
    let closed = i != plan.big() && i != LIVE_THREAD && rng.below(10) == 0;
    let closed_at = closed.then(|| last + TimeDelta::hours(1));
    chunk.threads.push(vec![
        V::Id(thread),
        V::Id(contact),
        V::Id(plan.number),
        V::Text(phone),
        V::Str(if closed { "closed" } else { "open" }),
        V::OptTime(last_in.map(|t| t + TimeDelta::hours(24))),
        V::OptTime(last_in),
        V::OptTime(last_out),
        V::OptTime(first_response),
        V::Time(opened),
        V::OptTime(closed_at),
        V::Time(closed_at.unwrap_or(last)),
    ]);
    chunk.events.push(vec![V::Id(id_at(opened, &mut rng)), V::Id(thread), V::Str("opened"), V::Time(opened)]);
    if let Some(closed_at) = closed_at {
        chunk.events.push(vec![V::Id(id_at(closed_at, &mut rng)), V::Id(thread), V::Str("closed"), V::Time(closed_at)]);
    }
}

// --- seeding -----------------------------------------------------------------

/// The bench's own connections, for seeding only.
#[derive(Clone)]
enum SeedDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

enum SeedTx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl SeedDb {
    async fn connect(url: &str, connections: u32) -> SeedDb {
        if url.starts_with("postgres") {
            // Commits need not wait for the WAL flush: the data can be made
            // again, and the server's own sessions keep their settings.
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .expect("a PostgreSQL URL")
                .options([("synchronous_commit", "off")]);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .connect_with(options)
                .await
                .expect("the bench connects to PostgreSQL");
            SeedDb::Postgres(pool)
        } else {
            // One writer. The file is Kairo's (WAL mode already); NORMAL
            // sync is enough for data the bench can make again.
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .expect("a SQLite URL")
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .expect("the bench opens the SQLite file");
            SeedDb::Sqlite(pool)
        }
    }

    async fn begin(&self) -> SeedTx {
        match self {
            SeedDb::Sqlite(pool) => SeedTx::Sqlite(pool.begin().await.expect("BEGIN")),
            SeedDb::Postgres(pool) => SeedTx::Postgres(pool.begin().await.expect("BEGIN")),
        }
    }

    /// PostgreSQL: the planner's statistics, as autovacuum would have
    /// gathered them on a database that grew to this size. (SQLite: Kairo
    /// never runs ANALYZE, so neither does the bench.)
    async fn analyze(&self) {
        if let SeedDb::Postgres(pool) = self {
            sqlx::raw_sql("ANALYZE").execute(pool).await.expect("ANALYZE");
        }
    }

    async fn close(&self) {
        match self {
            SeedDb::Sqlite(pool) => pool.close().await,
            SeedDb::Postgres(pool) => pool.close().await,
        }
    }
}

impl SeedTx {
    /// Inserts `rows` after `head` (`INSERT INTO t (cols) `), at most
    /// `per_statement` rows per statement.
    async fn insert(&mut self, head: &str, rows: Vec<Vec<V>>, per_statement: usize) {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<Vec<V>> = rows.by_ref().take(per_statement).collect();
            // Full batches share one prepared statement; a last, shorter
            // one is not kept in the connection's cache.
            let full = batch.len() == per_statement;
            let done = match self {
                SeedTx::Sqlite(tx) => {
                    let mut query = QueryBuilder::<Sqlite>::new(head);
                    query.push_values(batch, |mut row, values| {
                        for value in values {
                            bind_sqlite(&mut row, value);
                        }
                    });
                    query.build().persistent(full).execute(&mut **tx).await.map(|_| ())
                }
                SeedTx::Postgres(tx) => {
                    let mut query = QueryBuilder::<Postgres>::new(head);
                    query.push_values(batch, |mut row, values| {
                        for value in values {
                            bind_postgres(&mut row, value);
                        }
                    });
                    query.build().persistent(full).execute(&mut **tx).await.map(|_| ())
                }
            };
            done.unwrap_or_else(|err| panic!("seeding `{}`: {err}", head.trim()));
        }
    }

    async fn commit(self) {
        let done = match self {
            SeedTx::Sqlite(tx) => tx.commit().await,
            SeedTx::Postgres(tx) => tx.commit().await,
        };
        done.expect("COMMIT");
    }
}

fn bind_sqlite(row: &mut Separated<'_, Sqlite, &'static str>, value: V) {
    match value {
        V::Id(v) => row.push_bind(v),
        V::Str(v) => row.push_bind(v),
        V::Text(v) => row.push_bind(v),
        V::Time(v) => row.push_bind(v),
        V::OptTime(v) => row.push_bind(v),
        V::Json(v) => row.push_bind(v),
    };
}

fn bind_postgres(row: &mut Separated<'_, Postgres, &'static str>, value: V) {
    match value {
        V::Id(v) => row.push_bind(v),
        V::Str(v) => row.push_bind(v),
        V::Text(v) => row.push_bind(v),
        V::Time(v) => row.push_bind(v),
        V::OptTime(v) => row.push_bind(v),
        V::Json(v) => row.push_bind(v),
    };
}

/// Seeding's counts, printed every few seconds.
struct Progress {
    started: Instant,
    total_threads: u64,
    total_messages: u64,
    threads: AtomicU64,
    messages: AtomicU64,
    rows: AtomicU64,
    parcels: AtomicU64,
    printed: Mutex<Instant>,
}

impl Progress {
    fn new(plan: &Plan) -> Progress {
        Progress {
            started: Instant::now(),
            total_threads: plan.all() as u64,
            total_messages: plan.messages(),
            threads: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            parcels: AtomicU64::new(0),
            printed: Mutex::new(Instant::now()),
        }
    }

    /// Counts a committed chunk (its threads, messages, rows of every
    /// table, and messages mentioning the word).
    fn add(&self, threads: u64, messages: u64, rows: u64, parcels: u64) {
        let threads = self.threads.fetch_add(threads, Ordering::Relaxed) + threads;
        let messages = self.messages.fetch_add(messages, Ordering::Relaxed) + messages;
        let rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        self.parcels.fetch_add(parcels, Ordering::Relaxed);
        let mut printed = self.printed.lock().expect("the progress lock");
        if printed.elapsed() >= Duration::from_secs(2) {
            *printed = Instant::now();
            eprintln!(
                "  seeding: {threads}/{} threads, {messages}/{} messages, {:.0} rows/s",
                self.total_threads,
                self.total_messages,
                rows as f64 / self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Seeds the plan's contacts, threads, thread events and messages; on
/// PostgreSQL over several connections at once (each a range of threads).
async fn seed(url: &str, plan: &Plan) {
    let postgres = url.starts_with("postgres");
    let workers: usize = if postgres { env_or("BENCH_SEED_WORKERS", 4_usize).max(1) } else { 1 };
    // SQLite: the store's own batch size. PostgreSQL: small statements (see
    // `Store::rows_per_insert`: sqlx leaves Nagle's algorithm on, and large
    // statements wait on the connection), several connections at once.
    let per_statement: usize = env_or("BENCH_SEED_ROWS", if postgres { 50_usize } else { 500 }).max(1);
    let db = SeedDb::connect(url, workers as u32).await;
    let progress = Progress::new(plan);
    eprintln!(
        "  seeding {} contacts and threads and {} messages ({per_statement} rows per INSERT, {workers} connection{})...",
        plan.all(),
        plan.messages(),
        if workers == 1 { "" } else { "s" }
    );
    let all = plan.all();
    let share = all.div_ceil(workers);
    let ranges: Vec<Range<usize>> =
        (0..workers).map(|w| (w * share).min(all)..((w + 1) * share).min(all)).filter(|r| !r.is_empty()).collect();
    futures::future::join_all(ranges.into_iter().map(|range| seed_range(&db, plan, range, per_statement, &progress)))
        .await;
    let inserted = progress.started.elapsed().as_secs_f64();
    db.analyze().await;
    db.close().await;
    let rows = progress.rows.load(Ordering::Relaxed);
    let messages = progress.messages.load(Ordering::Relaxed);
    println!(
        "  seeded {rows} rows ({} threads, {messages} messages, {} of them mentioning \"{WORD}\") in {inserted:.1}s = \
         {:.0} rows/s, {:.0} messages/s{}",
        progress.threads.load(Ordering::Relaxed),
        progress.parcels.load(Ordering::Relaxed),
        rows as f64 / inserted,
        messages as f64 / inserted,
        if postgres {
            format!("; ANALYZE {:.1}s", progress.started.elapsed().as_secs_f64() - inserted)
        } else {
            String::new()
        }
    );
}

async fn seed_range(db: &SeedDb, plan: &Plan, range: Range<usize>, per_statement: usize, progress: &Progress) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + CHUNK_THREADS).min(range.end);
        let mut chunk = Chunk::default();
        for i in start..end {
            seed_thread(plan, i, &mut chunk);
        }
        let (rows, messages, parcels) = (chunk.rows(), chunk.messages.len() as u64, chunk.parcels);
        let mut tx = db.begin().await;
        tx.insert(CONTACTS, chunk.contacts, per_statement).await;
        tx.insert(THREADS, chunk.threads, per_statement).await;
        tx.insert(EVENTS, chunk.events, per_statement).await;
        tx.insert(MESSAGES, chunk.messages, per_statement).await;
        tx.commit().await;
        progress.add((end - start) as u64, messages, rows, parcels);
        start = end;
    }
}

// --- the requests --------------------------------------------------------------

/// What a request needs: the server, the agent's session and the API token.
struct Http<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    session: &'a str,
    token: &'a str,
}

impl Http<'_> {
    /// A page's fragment, as the inbox's script asks for it.
    fn web(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("kairo_session={}", self.session))
            .header("x-kairo-fetch", "1")
    }

    fn api(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base)).bearer_auth(self.token)
    }
}

/// The first value of cookie `name` an answer sets.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookie| {
        let pair = cookie.split(';').next()?;
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name && !value.is_empty()).then(|| value.trim().to_string())
    })
}

/// Signs the sandbox's demo agent in as a browser does (the sign-in form's
/// CSRF cookie and field); returns the session cookie's value.
async fn sign_in(client: &reqwest::Client, base: &str) -> String {
    let form = client.get(format!("{base}/signin")).send().await.expect("GET /signin is answered");
    let csrf = set_cookie(form.headers(), "kairo_signin").expect("the sign-in form sets its CSRF cookie");
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("email", AGENT_EMAIL),
        ("password", AGENT_PASSWORD),
        ("next", "/inbox"),
    ])
    .expect("a form");
    let signed = client
        .post(format!("{base}/signin"))
        .header("cookie", format!("kairo_signin={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST /signin is answered");
    let status = signed.status();
    let location =
        signed.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let session = set_cookie(signed.headers(), "kairo_session");
    let text = signed.text().await.unwrap_or_default();
    let Some(session) = session.filter(|_| status.is_redirection()) else {
        panic!("signing in as {AGENT_EMAIL} failed ({status}): {}", text.chars().take(300).collect::<String>());
    };
    assert_ne!(location, "/password", "{AGENT_EMAIL} must choose a password first: the sandbox did not set one");
    session
}

/// One request's answer as text; panics unless it succeeded.
async fn fetch_text(request: reqwest::RequestBuilder, what: &str) -> String {
    let answer = request.send().await.unwrap_or_else(|err| panic!("{what}: {err}"));
    let status = answer.status();
    let text = answer.text().await.unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(status.is_success(), "{what} answered {status}: {}", text.chars().take(300).collect::<String>());
    text
}

/// Checks that the pages and the API see the seeded data before anything
/// is measured: a full list, search results, the 1,000 messages.
async fn check_data(http: &Http<'_>, big: Uuid) {
    let list = fetch_text(http.web("/inbox/threads"), "the list fragment").await;
    let search = fetch_text(http.web(&format!("/inbox/threads?q={WORD}")), "the search fragment").await;
    let api_list: Value =
        serde_json::from_str(&fetch_text(http.api("/v1/threads?sort=last_message&limit=50"), "/v1/threads").await)
            .expect("JSON");
    let api_search: Value =
        serde_json::from_str(&fetch_text(http.api(&format!("/v1/threads?q={WORD}")), "/v1/threads?q=").await)
            .expect("JSON");
    let detail: Value =
        serde_json::from_str(&fetch_text(http.api(&format!("/v1/threads/{big}")), "/v1/threads/{id}").await)
            .expect("JSON");
    let conversation = fetch_text(http.web(&format!("/inbox/{big}/conversation")), "the conversation fragment").await;
    let items = |page: &Value| page["items"].as_array().map_or(0, Vec::len);
    let messages = detail["messages"].as_array().map_or(0, Vec::len);
    println!(
        "  the pages list {} threads ({} KiB), find {} for \"{WORD}\"; the API lists {} and finds {}; the long \
         conversation has {messages} messages ({} KiB as a fragment)",
        list.matches("data-id=").count(),
        list.len() / 1024,
        search.matches("data-id=").count(),
        items(&api_list),
        items(&api_search),
        conversation.len() / 1024
    );
    assert!(items(&api_list) > 0, "the API lists no thread: the seeded data is not seen");
    assert!(items(&api_search) > 0, "the API finds no thread for \"{WORD}\"");
    assert_eq!(messages, BIG_THREAD as usize, "the long conversation's messages");
}

/// Latencies of a series of sequential requests.
struct Sample {
    /// Sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// The `q` quantile of `sorted` (nearest rank), in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// Sends `count` requests one after another, after [`WARMUP`] that are not
/// measured; each is timed from sending until its whole body is read.
async fn measure(count: usize, request: impl Fn() -> reqwest::RequestBuilder) -> Sample {
    let mut latencies = Vec::with_capacity(count);
    let (mut errors, mut first_error) = (0, None);
    for n in 0..WARMUP + count {
        let started = Instant::now();
        let outcome = send_and_read(request()).await;
        let elapsed = started.elapsed();
        if n < WARMUP {
            continue;
        }
        latencies.push(elapsed);
        if let Err(err) = outcome {
            errors += 1;
            if first_error.is_none() {
                first_error = Some(err);
            }
        }
    }
    latencies.sort();
    Sample { latencies, errors, first_error }
}

/// Sends a request and reads its whole body; an error unless it succeeded.
async fn send_and_read(request: reqwest::RequestBuilder) -> Result<(), String> {
    let answer = request.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let body = answer.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body).chars().take(200).collect::<String>()))
    }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "no" }
}

fn report_latency(backend: &str, figure: &str, what: &str, sample: &Sample) {
    let at = |q| quantile_ms(&sample.latencies, q);
    let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
    let met = sample.errors == 0 && p95 < LATENCY_TARGET_MS;
    println!(
        "  {what}: {} requests, p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms, {} errors{}",
        sample.latencies.len(),
        sample.errors,
        sample.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    println!(
        "SUMMARY inbox backend={backend} figure={figure} p50_ms={p50:.1} p95_ms={p95:.1} max_ms={max:.1} \
         target=p95<{LATENCY_TARGET_MS:.0}ms errors={} met={}",
        sample.errors,
        yes_no(met)
    );
}

// --- the live feed -------------------------------------------------------------

/// An event of a server-sent event stream: its name and its data.
fn parse_event(block: &str) -> (String, String) {
    let (mut event, mut data) = ("message".to_string(), String::new());
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim_start().to_string();
        } else if let Some(more) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(more.trim_start());
        }
    }
    (event, data)
}

/// One agent's live feed: says when it is connected (its first event,
/// `hello`), then returns how long after `posted` an event named `target`.
async fn follow(
    client: reqwest::Client,
    url: String,
    cookie: String,
    target: String,
    posted: Arc<OnceLock<Instant>>,
    connected: tokio::sync::mpsc::Sender<Result<(), String>>,
) -> Option<Duration> {
    let answer = client.get(url.as_str()).header("cookie", cookie).header("accept", "text/event-stream").send().await;
    let mut answer = match answer {
        Ok(answer) if answer.status().is_success() => answer,
        Ok(answer) => {
            let _ = connected.send(Err(format!("GET /inbox/events answered {}", answer.status()))).await;
            return None;
        }
        Err(err) => {
            let _ = connected.send(Err(format!("GET /inbox/events: {err}"))).await;
            return None;
        }
    };
    let (mut buffer, mut hello) = (String::new(), false);
    while let Ok(Some(chunk)) = answer.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (event, data) = parse_event(&block);
            match event.as_str() {
                "hello" if !hello => {
                    hello = true;
                    let _ = connected.send(Ok(())).await;
                }
                "threads" if data.contains(&target) => {
                    if let Some(posted) = posted.get() {
                        return Some(posted.elapsed());
                    }
                }
                _ => {}
            }
        }
    }
    if !hello {
        let _ = connected.send(Err("the feed ended before its first event".to_string())).await;
    }
    None
}

/// A contact's text message to the sandbox number, as WhatsApp posts it
/// (fixtures/whatsapp/webhook_text_message.json), signed with the sandbox's
/// app secret; returns the body and its `X-Hub-Signature-256`.
fn signed_inbound(sandbox: &SandboxNumber, from: &str, text: &str) -> (Vec<u8>, String) {
    use hmac::{KeyInit, Mac};
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": sandbox.waba_id,
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": kairo_core::phone::PhoneDigits::of(&sandbox.display).into_string(),
                        "phone_number_id": sandbox.graph_id,
                    },
                    "contacts": [{ "profile": { "name": "Bench contact" }, "wa_id": from }],
                    "messages": [{
                        "from": from,
                        "id": format!("wamid.bench.live.{}", Uuid::now_v7().simple()),
                        "timestamp": Utc::now().timestamp().to_string(),
                        "text": { "body": text },
                        "type": "text",
                    }],
                },
                "field": "messages",
            }],
        }],
    });
    let bytes = serde_json::to_vec(&body).expect("JSON");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key length");
    mac.update(&bytes);
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    (bytes, format!("sha256={signature}"))
}

async fn live(
    backend: &str,
    server: &Server,
    client: &reqwest::Client,
    session: &str,
    agents: usize,
    plan: &Plan,
    sandbox: &SandboxNumber,
) {
    // No overall timeout: a feed stays open as long as the bench reads it.
    let feeds_client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().expect("a client for the feeds");
    let target = plan.thread_id(LIVE_THREAD).to_string();
    let posted = Arc::new(OnceLock::new());
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(agents);
    let rss_before = rss_mib(server.pid);
    let opening = Instant::now();
    let mut feeds = tokio::task::JoinSet::new();
    for _ in 0..agents {
        feeds.spawn(follow(
            feeds_client.clone(),
            format!("{}/inbox/events", server.base),
            format!("kairo_session={session}"),
            target.clone(),
            posted.clone(),
            connected_tx.clone(),
        ));
    }
    drop(connected_tx);
    let (mut connected, mut failed) = (0, 0);
    while connected + failed < agents {
        match tokio::time::timeout(Duration::from_secs(60), connected_rx.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(err))) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("  a live feed failed: {err}");
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let opened_in = opening.elapsed().as_secs_f64();
    // Let the connections' first allocations settle before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_mib(server.pid);
    let delta = rss_after - rss_before;
    println!(
        "  live feeds: {connected}/{agents} connected in {opened_in:.2}s ({failed} failed); server RSS \
         {rss_before:.1} MiB before, {rss_after:.1} MiB after = {delta:+.1} MiB"
    );
    println!(
        "SUMMARY inbox backend={backend} figure=live-memory agents={agents} connected={connected} \
         rss_before_mib={rss_before:.1} rss_after_mib={rss_after:.1} delta_mib={delta:.1} \
         target=delta<{MEMORY_TARGET_MIB:.0}MiB met={}",
        yes_no(connected == agents && delta < MEMORY_TARGET_MIB)
    );

    let (body, signature) = signed_inbound(sandbox, &digits(LIVE_THREAD), "Hello, is my order ready?");
    let _ = posted.set(Instant::now());
    let answer = client
        .post(format!("{}/webhooks/whatsapp", server.base))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("the webhook is answered");
    let answered_ms = posted.get().map_or(0.0, |at| at.elapsed().as_secs_f64() * 1000.0);
    let status = answer.status();
    assert!(status.is_success(), "the webhook answered {status}: {}", answer.text().await.unwrap_or_default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut delivered = Vec::with_capacity(agents);
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, feeds.join_next()).await {
        if let Ok(Some(took)) = done {
            delivered.push(took);
        }
    }
    feeds.abort_all();
    delivered.sort();
    let at = |q| quantile_ms(&delivered, q);
    let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
    println!(
        "  a new inbound message (webhook answered in {answered_ms:.1} ms) reached {}/{agents} feeds: p50 {p50:.1} ms, \
         p95 {p95:.1} ms, max {max:.1} ms",
        delivered.len()
    );
    println!(
        "SUMMARY inbox backend={backend} figure=live-delivery agents={agents} received={} p50_ms={p50:.1} \
         p95_ms={p95:.1} max_ms={max:.1} target=all<{DELIVERY_TARGET_MS:.0}ms met={}",
        delivered.len(),
        yes_no(delivered.len() == agents && max < DELIVERY_TARGET_MS)
    );
}
