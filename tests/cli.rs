//! The `kairo` command line: every command answers --help, migrations run
//! on a fresh database, and bad input gets one precise line, never a panic.

mod util;

use kairo_store::testing::TestDb;
use predicates::prelude::*;
use util::kairo;

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in [
        &[][..],
        &["serve"],
        &["worker"],
        &["migrate"],
        &["migrate", "status"],
        &["validate"],
        &["simulate"],
        &["numbers"],
        &["numbers", "resume"],
        &["status"],
        &["workflows"],
        &["workflows", "pause"],
        &["version"],
    ] {
        let mut args: Vec<&str> = command.to_vec();
        args.push("--help");
        kairo(dir.path()).args(&args).assert().success().stdout(predicate::str::contains("Usage: kairo"));
    }
}

#[test]
fn version_prints_the_package_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kairo(dir.path()).arg("version").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("kairo {}", env!("CARGO_PKG_VERSION")));
    // The schema version it promises: the number of migrations and the last one.
    assert!(lines[1].starts_with("database schema ") && lines[1].contains("_inbox_timeline)"), "{text}");
}

#[test]
fn migrate_creates_kairo_db_in_the_working_directory_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path()).arg("migrate").assert().success().stdout(
        predicate::str::is_match(r"^\d+ migration\(s\) applied to sqlite://kairo\.db; schema is up to date")
            .expect("regex"),
    );
    assert!(dir.path().join("kairo.db").exists());
    kairo(dir.path())
        .args(["migrate", "status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("applied  m20261125_000001_initial"));
    // A second run has nothing left to do.
    kairo(dir.path()).args(["migrate", "up"]).assert().success().stdout(predicate::str::contains("0 migration(s)"));
}

#[test]
fn migrate_status_lists_pending_migrations_before_the_first_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path())
        .args(["migrate", "status", "--database", "sqlite://fresh.db"])
        .assert()
        .success()
        .stdout(predicate::str::contains("pending  m20261125_000001_initial"));
}

#[tokio::test]
async fn migrate_runs_on_postgres_named_by_the_environment() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path())
        .env("KAIRO_DATABASE_URL", db.raw_url())
        .arg("migrate")
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^\d+ migration\(s\) applied to postgres://").expect("regex"))
        .stdout(predicate::str::contains("kairo_test:***@"));
    let store = kairo_store::Store::open(&db.url).await.expect("open");
    assert!(store.readiness().await.is_ready());
}

#[test]
fn an_unreachable_database_is_one_line_naming_the_url_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let assert = kairo(dir.path())
        .args(["migrate", "--database", "postgres://kairo:hunter2@127.0.0.1:1/kairo"])
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot connect to database postgres://kairo:***@127.0.0.1:1/kairo"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_malformed_database_url_is_rejected_with_what_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path())
        .args(["migrate", "--database", "kairo.db"])
        .assert()
        .failure()
        .stderr("error: unsupported database URL `kairo.db`: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB\n");
}

#[test]
fn a_bad_config_file_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kairo.toml"), "listen = 8080\n").expect("write");
    kairo(dir.path())
        .arg("migrate")
        .assert()
        .failure()
        .stderr(predicate::str::contains("key `listen`"))
        .stderr(predicate::str::contains("kairo.toml"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn a_missing_config_file_given_with_config_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path())
        .args(["--config", "nope.toml", "version"])
        .assert()
        .failure()
        .stderr("error: config file nope.toml does not exist: create it or leave out --config\n");
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path()).arg("frobnicate").assert().code(2).stderr(predicate::str::contains("unrecognized subcommand"));
}

// 15.20: commands other than serve, worker and migrate do not create a
// database; they say which one they looked for and what to do.
#[test]
fn token_create_in_a_folder_without_a_database_creates_none_and_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in
        [&["token", "create", "--name", "me", "--scope", "admin"][..], &["numbers"], &["status"], &["workflows"]]
    {
        kairo(dir.path())
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("no Kairo database at").and(predicate::str::contains("kairo.db")))
            .stderr(predicate::str::contains("kairo migrate"));
    }
    assert!(!dir.path().join("kairo.db").exists(), "nothing was created");
    kairo(dir.path()).arg("migrate").assert().success();
    kairo(dir.path())
        .args(["token", "create", "--name", "me", "--scope", "admin"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("kairo_"))
        .stderr(predicate::str::contains("in sqlite://kairo.db").and(predicate::str::contains("keep it now")));
}

// 15.18: a closed pipe ends a command quietly.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["openapi", "schema"] {
        let mut child = std::process::Command::new(util::KAIRO)
            .arg(command)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starts");
        // Read one byte, then hang up, as `| head -c1` does.
        let mut stdout = child.stdout.take().expect("piped");
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut stdout, &mut first).expect("some output");
        drop(stdout);
        let out = child.wait_with_output().expect("exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "kairo {command}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "kairo {command} panicked");
    }
}

// 15.19: a number given as the README writes it, unquoted.
#[test]
fn numbers_resume_takes_a_number_written_as_several_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    kairo(dir.path()).arg("migrate").assert().success();
    kairo(dir.path())
        .args(["numbers", "resume", "+1", "555-000-1111"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no business number `+1 555-000-1111`"));
}

/// `kairo user` from an operator's shell (#17): the first admin of a new
/// install, a reset, and the mistakes an operator makes; on both databases.
async fn users_are_created_and_given_passwords_from_the_command_line(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| kairo(dir.path()).env("KAIRO_DATABASE_URL", url).args(args).output().expect("runs");
    assert!(run(&["migrate"]).status.success());
    let created = run(&["user", "create", "--email", "Ada@Example.com", "--name", "Ada", "--role", "admin"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let first = String::from_utf8(created.stdout).expect("utf-8").trim().to_string();
    assert_eq!(first.len(), 19, "only the password on stdout: {first}");
    let told = String::from_utf8_lossy(&created.stderr).to_string();
    assert!(told.contains("ada@example.com") && told.contains("admin") && told.contains("one-time"), "{told}");

    let store = kairo_store::Store::open(&kairo_store::DatabaseUrl::new(url)).await.expect("open");
    let ada = store.user_by_email("ada@example.com").await.expect("read").expect("created");
    assert_eq!(ada.role, kairo_core::status::UserRole::Admin);
    let check = |password: String| {
        let (store, ada) = (store.clone(), ada.clone());
        async move { kairo_engine::people::check_password(&store, &ada, &password).await.expect("check") }
    };
    assert_eq!(check(first.clone()).await, Some(true), "the printed password signs in, once");
    assert_eq!(check("not-the-password".into()).await, None);

    let again = run(&["user", "create", "--email", "ada@example.com", "--name", "Ada"]);
    assert_eq!(again.status.code(), Some(2));
    let told = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(told.contains("already exists") && told.contains("kairo user password ada@example.com"), "{told}");
    let bad = run(&["user", "create", "--email", "bo@example.com", "--name", "Bo", "--role", "owner"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use admin or agent"));
    let bad = run(&["user", "create", "--email", "not-an-email", "--name", "Bo"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an e-mail address"));

    let reset = run(&["user", "password", "ada@example.com"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let second = String::from_utf8(reset.stdout).expect("utf-8").trim().to_string();
    assert_ne!(second, first);
    assert_eq!(check(first).await, None, "the old password no longer signs in");
    assert_eq!(check(second).await, Some(true));
    let unknown = run(&["user", "password", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user with e-mail nobody@example.com"));

    let listed = String::from_utf8(run(&["user", "list"]).stdout).expect("utf-8");
    assert!(listed.contains("ada@example.com") && listed.contains("admin") && listed.contains("active"), "{listed}");
    assert!(!listed.contains('$'), "no hash is listed: {listed}");
    store.close().await;
}

#[tokio::test]
async fn users_are_created_and_given_passwords_from_the_command_line_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    users_are_created_and_given_passwords_from_the_command_line(&url).await;
}

#[tokio::test]
async fn users_are_created_and_given_passwords_from_the_command_line_on_postgres() {
    let db = TestDb::postgres().await;
    users_are_created_and_given_passwords_from_the_command_line(&db.raw_url()).await;
}
