//! The README is tested (#15 24): its set-up and "Using it" commands run in
//! order in a fresh folder (a copy of the checkout's workflows, examples and
//! fixtures; sandbox, SQLite), as a newcomer types them, so that a command
//! or a path in the README can never drift from the product again.
//!
//! Only the port changes (a free one for 8080, loopback for 0.0.0.0), and
//! `kairo` is the binary under test. `kairo serve` and `kairo worker` run in
//! the background, as in a terminal of their own. Two commands cannot work
//! in a sandbox, and must say why: `kairo sync` (no WhatsApp account) and
//! migrating a PostgreSQL server named `db` that this machine does not have.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use util::HANG_GUARD;

/// The lines of the ```sh blocks of the section under `heading`, comments cut.
fn commands(readme: &str, heading: &str) -> Vec<String> {
    let after = readme.split_once(heading).map(|(_, rest)| rest).expect("the README has the section");
    let section = after.split_once("\n## ").map_or(after, |(section, _)| section);
    let mut lines = Vec::new();
    let mut rest = section;
    while let Some((_, block)) = rest.split_once("```sh\n") {
        let (block, after) = block.split_once("```").expect("a closed block");
        rest = after;
        lines.extend(
            block
                .lines()
                .map(|line| match line.find("  #").or_else(|| line.find(" # ")) {
                    Some(i) => line[..i].trim().to_string(),
                    None => line.trim().to_string(),
                })
                .filter(|line| !line.is_empty()),
        );
    }
    lines
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

struct Shell {
    dir: tempfile::TempDir,
    path: String,
    port: u16,
    token: Option<String>,
    background: Vec<(String, Child)>,
}

impl Shell {
    fn command(&self, line: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(line)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("KAIRO_LISTEN", format!("127.0.0.1:{}", self.port))
            .env_remove("KAIRO_DATABASE_URL")
            .env("RUST_LOG", "warn");
        if let Some(token) = &self.token {
            command.env("TOKEN", token);
        }
        command
    }

    fn healthy(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn run(&mut self, line: &str) {
        let line = line.replace("0.0.0.0", "127.0.0.1").replace("8080", &self.port.to_string());
        // `cargo run --release -- serve` is `kairo serve`, built by the suite.
        let line = line.replace("cargo run --release --", "kairo");
        if line.starts_with("kairo serve") || line.starts_with("kairo worker") {
            let child = self.command(&line).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawns");
            self.background.push((line.clone(), child));
            if line.starts_with("kairo serve") {
                let deadline = std::time::Instant::now() + HANG_GUARD;
                while !self.healthy() {
                    assert!(std::time::Instant::now() < deadline, "`{line}` never listened");
                    std::thread::sleep(Duration::from_millis(50));
                }
            } else {
                std::thread::sleep(Duration::from_millis(500));
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("TOKEN=$(").and_then(|l| l.strip_suffix(')')) {
            let out = self.command(rest).output().expect("runs");
            assert!(out.status.success(), "`{line}`: {}", String::from_utf8_lossy(&out.stderr));
            self.token = Some(String::from_utf8(out.stdout).expect("utf-8").trim().to_string());
            return;
        }
        let out = self.command(&line).output().expect("runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!stderr.contains("panicked"), "`{line}` panicked: {stderr}");
        if line == "kairo sync" {
            assert_eq!(out.status.code(), Some(1), "`{line}`: {stdout}{stderr}");
            assert!(stderr.contains("no WhatsApp account is configured: add a [[whatsapp.accounts]]"), "{stderr}");
        } else if line.starts_with("kairo --database postgres://kairo:PASSWORD@db/") {
            assert_eq!(out.status.code(), Some(1), "`{line}`: {stdout}{stderr}");
            assert!(stderr.contains("cannot connect to database"), "{stderr}");
            assert!(!stderr.contains("PASSWORD"), "the password never shows: {stderr}");
        } else {
            assert!(out.status.success(), "`{line}` failed: {stdout}{stderr}");
            if line.starts_with("curl") {
                assert!(!stdout.contains("\"error\""), "`{line}`: {stdout}");
            }
        }
        if line.contains("/v1/threads") {
            assert!(stdout.contains("447700900123"), "the contact who opted in is in the inbox: {stdout}");
        }
        if line.contains("/readyz") {
            assert!(stdout.contains("\"ready\""), "{stdout}");
        }
        if line.starts_with("kairo simulate") {
            assert!(stdout.contains("Is it in blue?"), "the reply shows in the simulation: {stdout}");
        }
        if line.contains("kairo schema >") {
            assert!(self.dir.path().join("schema/workflow.schema.json").exists());
        }
    }
}

#[test]
fn the_readmes_commands_work_in_order_in_a_fresh_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dir = tempfile::tempdir().expect("tempdir");
    for folder in ["workflows", "examples", "fixtures"] {
        copy_dir(&root.join(folder), &dir.path().join(folder));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_kairo")).parent().expect("bin dir").display().to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut shell = Shell { dir, path, port, token: None, background: Vec::new() };

    let setup = commands(&readme, "## Set-up on a fresh Debian machine");
    assert_eq!(setup, ["cargo run --release -- serve", "scripts/test"], "the set-up is two commands");
    assert!(root.join("scripts/test").exists(), "scripts/test is there");
    // The first runs the server the way "Using it" then uses it.
    shell.run(&setup[0]);
    let using = commands(&readme, "## Using it");
    assert!(using.len() >= 15, "{using:?}");
    for line in &using {
        // The server of the set-up is the one "Using it" talks to.
        if line.starts_with("kairo serve") && shell.healthy() {
            continue;
        }
        shell.run(line);
    }
    assert!(shell.dir.path().join("kairo.db").exists(), "kairo serve made ./kairo.db");
    for (line, mut child) in shell.background.drain(..) {
        assert!(child.try_wait().expect("status").is_none(), "`{line}` stopped early");
        let _ = child.kill();
        let _ = child.wait();
    }
}
