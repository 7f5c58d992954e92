//! Test support: a fresh, migrated database per test on either backend.
//!
//! SQLite tests get a file in a temporary directory. PostgreSQL tests get a
//! database of their own, created from `KAIRO_TEST_POSTGRES_URL` (a role with
//! CREATEDB; `scripts/test` sets it up) and dropped when the test ends, so
//! tests run in parallel and leave nothing behind.

use crate::{DatabaseUrl, Store};

/// The environment variable naming the PostgreSQL server tests use.
pub const POSTGRES_URL_VAR: &str = "KAIRO_TEST_POSTGRES_URL";

/// A database that lives as long as the value.
#[derive(Debug)]
pub struct TestDb {
    pub url: DatabaseUrl,
    /// SQLite: the directory holding the file.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (admin URL, database name) to drop on `Drop`.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// An empty SQLite file database.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let url = format!("sqlite://{}", dir.path().join("kairo.db").display());
        TestDb { url: DatabaseUrl::new(&url), _dir: Some(dir), postgres: None }
    }

    /// An empty PostgreSQL database of its own.
    pub async fn postgres() -> TestDb {
        let admin = postgres_admin_url();
        let name = format!("kairo_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin_connection(&admin).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
        let url = with_database(&admin, &name);
        TestDb { url: DatabaseUrl::new(&url), _dir: None, postgres: Some((admin, name)) }
    }

    /// Opens and migrates a store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::open(&self.url).await.expect("the test database opens");
        store.migrate().await.expect("migrations run on an empty database");
        store
    }

    /// The raw URL, password included, for a child process under test.
    pub fn raw_url(&self) -> String {
        match &self.postgres {
            Some((admin, name)) => with_database(admin, name),
            None => self.url.to_string(),
        }
    }
}

impl TestDb {
    /// PostgreSQL only: drops the database now, while clients may still be
    /// connected, to see how they cope with losing it.
    pub fn destroy(&mut self) {
        drop_database(self.postgres.take());
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(self.postgres.take());
    }
}

fn drop_database(postgres: Option<(String, String)>) {
    {
        let Some((admin, name)) = postgres else { return };
        // Drop runs outside any runtime guarantee: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = admin_connection(&admin).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test database; it is named kairo_test_*");
        }
    }
}

fn postgres_admin_url() -> String {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{POSTGRES_URL_VAR} is not set: run the test suite with scripts/test, which starts PostgreSQL \
             and sets it, or point it at a role that may CREATE DATABASE"
        ),
    }
}

async fn admin_connection(admin: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|err| panic!("connecting to {} : {err}", DatabaseUrl::new(admin)))
}

/// `admin` with its database name replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..].find('/').map_or(base.len(), |i| after_scheme + i);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Runs one async test body against SQLite and against PostgreSQL, as two
/// tests named `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let db = $crate::testing::TestDb::sqlite();
                let $store = db.store().await;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let db = $crate::testing::TestDb::postgres().await;
                let $store = db.store().await;
                $body
            }
        }
    };
}

/// The account `1001` ("Acme") with one business number: `graph_id`,
/// shown as `display` (digits kept as its normalised form), at `throughput`
/// messages per second.
pub async fn connect_number(
    store: &Store,
    graph_id: &str,
    display: &str,
    throughput: i32,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::PhoneNumber {
    use crate::{NewAccount, NewPhoneNumber};
    let account = store
        .upsert_account(NewAccount { waba_id: "1001".into(), name: "Acme".into(), portfolio_id: None }, now)
        .await
        .expect("account");
    let number = NewPhoneNumber {
        account_id: account.id,
        graph_id: graph_id.into(),
        display_number: display.into(),
        normalized_number: kairo_core::phone::PhoneDigits::of(display).into_string(),
        verified_name: None,
        quality_rating: None,
        throughput_mps: throughput,
        messaging_limit_tier: None,
    };
    store.upsert_phone_number(number, now).await.expect("number")
}
