//! Driving the real `kairo` binary: run a command to completion, or start
//! `kairo serve` on a loopback port and talk HTTP to it.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// Guards against hangs only; nothing here measures speed.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub const KAIRO: &str = env!("CARGO_BIN_EXE_kairo");

/// A `kairo` command in `dir`, with no stray KAIRO_* settings from the caller.
pub fn kairo(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(KAIRO);
    cmd.current_dir(dir)
        .env_remove("KAIRO_DATABASE_URL")
        .env_remove("KAIRO_LISTEN")
        .env_remove("RUST_LOG")
        .timeout(HANG_GUARD);
    cmd
}

/// A running `kairo serve`; killed on drop if still running.
pub struct Server {
    pub child: Child,
    pub base_url: String,
    /// Everything the server logs, read continuously so that a full pipe
    /// never blocks it.
    logs: tokio::task::JoinHandle<String>,
}

impl Server {
    /// Starts `kairo serve` on an ephemeral loopback port and waits for it to
    /// say where it listens.
    pub async fn start(dir: &Path, database_url: &str) -> Server {
        Server::start_logging(
            dir,
            database_url,
            "info,kairo_engine=debug,kairo_api=debug,kairo_store=debug,kairo_whatsapp=debug,kairo_workflow=debug",
        )
        .await
    }

    /// [`Server::start`] with this `RUST_LOG`.
    pub async fn start_logging(dir: &Path, database_url: &str, rust_log: &str) -> Server {
        Server::start_with(dir, database_url, rust_log, &[]).await
    }

    /// [`Server::start_logging`] with these environment variables too.
    pub async fn start_with(dir: &Path, database_url: &str, rust_log: &str, env: &[(&str, String)]) -> Server {
        let mut command = Command::new(KAIRO);
        command
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database_url])
            .env_remove("KAIRO_DATABASE_URL")
            .env_remove("KAIRO_LISTEN")
            .env("RUST_LOG", rust_log);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kairo serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(HANG_GUARD, lines.next_line())
            .await
            .expect("kairo serve announces its address in time")
            .expect("stdout is readable")
            .expect("kairo serve printed a line before exiting");
        let base_url = line
            .strip_prefix("kairo listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = tokio::spawn(drain(stderr));
        Server { child, base_url, logs }
    }

    /// Posts raw bytes with the given headers; returns the status and the body text.
    pub async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
        let mut request = client().post(format!("{}{path}", self.base_url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = client().get(format!("{}{path}", self.base_url)).send().await.expect("request is answered");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = client().get(format!("{}{path}", self.base_url)).send().await.expect("request is answered");
        let status = response.status().as_u16();
        let body = response.json().await.expect("the body is JSON");
        (status, body)
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and all
    /// that was logged.
    pub async fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("the server is still running");
        let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("kairo serve stops after SIGTERM")
            .expect("wait works");
        let logs = tokio::time::timeout(HANG_GUARD, &mut self.logs)
            .await
            .expect("the log pipe closes with the process")
            .expect("the log reader does not panic");
        (status.code(), logs)
    }
}

async fn drain(mut stderr: ChildStderr) -> String {
    let mut logs = String::new();
    let _ = stderr.read_to_string(&mut logs).await;
    logs
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(HANG_GUARD).build().expect("HTTP client")
}

/// A quiet `kairo worker --slots 16` in `dir` on `url`, polling every 50 ms;
/// callers add their own settings and spawn it (killed on drop).
pub fn worker_command(dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new(KAIRO);
    cmd.args(["worker", "--slots", "16"])
        .current_dir(dir)
        .env("KAIRO_DATABASE_URL", url)
        .env("KAIRO_WORKER_POLL_MS", "50")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A form body, as a browser posts it (`.body(form(...))` with
/// `FORM_TYPE`; reqwest is built without its `form` feature).
pub fn form<T: serde::Serialize + ?Sized>(fields: &T) -> String {
    serde_urlencoded::to_string(fields).expect("form fields encode")
}

pub const FORM_TYPE: &str = "application/x-www-form-urlencoded";
