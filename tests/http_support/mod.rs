//! Shared by the `tests/http_*.rs` end-to-end tests: a data directory, tokens made with the
//! real `auditledger token` command, and `auditledger serve` started as a child process on
//! 127.0.0.1 port 0 (the bound address is read from its stdout), its stderr (the logs)
//! collected for inspection. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_auditledger");
/// Raw identifiers the tests send; none may appear in storage, answers or logs.
pub const RAW_IDS: [&str; 5] = ["u-1042", "10.1.4.22", "s-88f1", "p-20931", "p-77001"];

pub fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(dir).args(args);
    for var in [
        "AUDITLEDGER_PSEUDONYM_KEY",
        "RUST_LOG",
        "DATABASE_URL",
        "AUDITLEDGER_DATABASE_URL",
        "AUDITLEDGER_LISTEN",
        "AUDITLEDGER_CONFIG",
    ] {
        c.env_remove(var);
    }
    c
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    let out = cmd(dir, args)
        .stdin(Stdio::null())
        .output()
        .expect("run auditledger");
    out
}

pub fn init() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["init"]);
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Creates a token with the real command; returns it.
pub fn token(dir: &Path, role: &str, name: &str) -> String {
    let out = run(dir, &["token", "create", "--role", role, "--name", name]);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("al_"), "{token}");
    token
}

pub fn event(i: usize) -> Value {
    json!({"occurred_at": format!("2026-11-22T14:{:02}:{:02}.250Z", (i / 60) % 60, i % 60),
           "action": if i.is_multiple_of(3) { "update" } else { "read" }, "outcome": "success",
           "actor": {"user_id": "u-1042", "role": "nurse", "ip": "10.1.4.22", "session_id": "s-88f1",
                     "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
           "resource": {"type": "Patient", "id": if i.is_multiple_of(2) { "p-20931" } else { "p-77001" }},
           "patient_id": if i.is_multiple_of(2) { "p-20931" } else { "p-77001" }, "phi": true,
           "request": {"method": "GET", "path": "/patients/{id}"},
           "source": "ehr-web", "detail": "viewed chart summary"})
}

pub fn assert_no_raw_ids(text: &str, what: &str) {
    for raw in RAW_IDS {
        assert!(
            !text.contains(raw),
            "{what} contains the raw identifier {raw}"
        );
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    logs: Arc<Mutex<String>>,
    log_thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `auditledger serve --listen 127.0.0.1:0 EXTRA...` on `dir` with JSON logs at
    /// `log_level`.
    pub fn start(dir: &Path, log_level: &str, extra: &[&str]) -> Server {
        let mut c = cmd(
            dir,
            &[
                "--log-level",
                log_level,
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
        );
        c.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn serve");
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let log_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not print its address: {}", logs.lock().unwrap());
            }
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Server {
            child: Some(child),
            base,
            logs,
            log_thread: Some(log_thread),
        }
    }

    pub fn client(&self, token: &str) -> auditledger_client::Client {
        auditledger_client::Client::new(&self.base, token).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status and the logs.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.sigterm();
        let status = self.wait(Duration::from_secs(60));
        if let Some(t) = self.log_thread.take() {
            let _ = t.join();
        }
        (status, self.logs())
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `auditledger verify --json` on the stopped ledger.
pub fn verify_json(dir: &Path) -> (i32, Value) {
    let out = run(dir, &["verify", "--json", "--no-progress"]);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// Every (seq, entry_hash hex) of the default stream, read from the embedded store's file.
pub fn stored_hashes(dir: &Path) -> std::collections::HashMap<u64, String> {
    let c = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let mut stmt = c
        .prepare("SELECT seq, entry_hash FROM entries WHERE stream = 'default'")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                hex::encode(r.get::<_, Vec<u8>>(1)?),
            ))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Raw HTTP for cases the typed client deliberately does not make (no token, wrong type).
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}
