//! End-to-end tests of the `auditledger` binary on PostgreSQL with real processes: two
//! writers appending to one schema at once must make one chain, and a writer killed with
//! SIGKILL must leave every receipt it printed in the database. Each test migrates a schema of
//! its own (through `auditledger migrate`) and drops it at the end. An unreachable PostgreSQL
//! fails the test; it never skips.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_auditledger");
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const KEY: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn event(i: usize) -> Value {
    json!({"occurred_at": format!("2026-11-22T14:{:02}:{:02}.250Z", (i / 60) % 60, i % 60),
           "action": if i.is_multiple_of(3) { "update" } else { "read" }, "outcome": "success",
           "actor": {"user_id": format!("u-{}", 1000 + i % 7), "role": "nurse", "ip": "10.1.4.22"},
           "resource": {"type": "Patient", "id": format!("p-{}", 20000 + i % 13)},
           "patient_id": format!("p-{}", 20000 + i % 13), "phi": true,
           "source": "ehr-web", "detail": "viewed chart summary"})
}

/// A schema of this test's own, migrated by the binary, dropped (with a blocking client on
/// its own thread) when the guard goes out of scope, even on panic.
struct Ledger {
    schema: String,
    data: tempfile::TempDir,
}

impl Ledger {
    fn new(tag: &str) -> Ledger {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let l = Ledger {
            schema: format!("t_e2e_{tag}_{}_{nanos}", std::process::id()),
            data: tempfile::tempdir().unwrap(),
        };
        let out = l.run(&["migrate"]);
        assert!(
            out.status.success(),
            "`auditledger migrate` failed (is PostgreSQL reachable at DATABASE_URL? start one with \
             `eval \"$(scripts/start-postgres.sh)\"`; database tests never skip): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        l
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--data-dir"])
            .arg(self.data.path())
            .args(["--database-schema", &self.schema])
            .args(args)
            .env("DATABASE_URL", database_url())
            .env("AUDITLEDGER_PSEUDONYM_KEY", KEY)
            .env_remove("RUST_LOG")
            .env_remove("AUDITLEDGER_DATABASE_SCHEMA");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("the binary runs")
    }

    fn appender(&self) -> Child {
        self.cmd(&["append", "--chunk", "1", "--receipts"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs")
    }

    fn verify(&self) -> Value {
        let out = self.run(&["verify", "--json", "--no-progress"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify failed: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }

    /// `seq -> entry_hash (hex)` of every stored entry, read with psql-free SQL through
    /// tokio-postgres.
    fn stored(&self) -> BTreeMap<u64, String> {
        let sql = format!(
            "SELECT seq, entry_hash FROM {}.entries WHERE stream = 'default' ORDER BY seq",
            self.schema
        );
        on_own_runtime(move |client| async move {
            client.query(&sql, &[]).await.map(|rows| {
                rows.iter()
                    .map(|r| {
                        let seq: i64 = r.get(0);
                        let hash: &[u8] = r.get(1);
                        (seq as u64, hex::encode(hash))
                    })
                    .collect()
            })
        })
        .expect("read the entries back")
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) =
            on_own_runtime(move |client| async move { client.batch_execute(&sql).await })
        {
            eprintln!("could not drop {}: {e}", self.schema);
        }
    }
}

/// Runs `f` with a superuser client on a runtime of its own (the tests are synchronous).
fn on_own_runtime<T, F, Fut>(f: F) -> Result<T, tokio_postgres::Error>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            f(client).await
        })
    })
    .join()
    .expect("the database thread does not panic")
}

fn receipts(stdout: &[u8]) -> Vec<Value> {
    stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a receipt is one JSON object per line"))
        .collect()
}

#[test]
fn two_processes_appending_at_once_make_one_chain() {
    const PER_PROCESS: usize = 1000;
    let ledger = Ledger::new("two");
    let mut children: Vec<Child> = (0..2).map(|_| ledger.appender()).collect();
    // Feed both at once, each from its own thread, so their appends interleave; drain each
    // one's stdout on its own thread too (a full pipe would stall a child, and with it its
    // feeder).
    let feeders: Vec<_> = children
        .iter_mut()
        .enumerate()
        .map(|(p, child)| {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                for i in 0..PER_PROCESS {
                    writeln!(stdin, "{}", event(p * PER_PROCESS + i)).unwrap();
                }
            })
        })
        .collect();
    let waiters: Vec<_> = children
        .into_iter()
        .map(|c| std::thread::spawn(move || c.wait_with_output().unwrap()))
        .collect();
    for f in feeders {
        f.join().unwrap();
    }
    let outputs: Vec<Output> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    let mut all = Vec::new();
    for out in &outputs {
        assert!(
            out.status.success(),
            "appender failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = receipts(&out.stdout);
        assert_eq!(r.len(), PER_PROCESS, "every event gets its receipt");
        all.extend(r);
    }
    // One chain: every seq from 1 to 2 * PER_PROCESS exactly once, no gap, no duplicate.
    let mut seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=(2 * PER_PROCESS) as u64).collect::<Vec<_>>());
    let stored = ledger.stored();
    assert_eq!(
        stored.len(),
        2 * PER_PROCESS + 1,
        "genesis plus every event"
    );
    for r in &all {
        let seq = r["seq"].as_u64().unwrap();
        assert_eq!(
            stored.get(&seq).map(String::as_str),
            r["entry_hash"].as_str(),
            "receipt of seq {seq} matches the stored entry"
        );
    }
    let report = ledger.verify();
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["entries"], json!(2 * PER_PROCESS + 1), "{report}");
    assert_eq!(report["first_bad_seq"], Value::Null, "{report}");
}

#[test]
fn a_writer_killed_mid_stream_loses_no_acknowledged_event() {
    const BEFORE_KILL: usize = 150;
    let ledger = Ledger::new("sigkill");
    let mut child = ledger.appender();
    let mut stdin = child.stdin.take().unwrap();
    // A stream with no end: the feeder stops when the killed process's pipe breaks.
    let feeder = std::thread::spawn(move || {
        for i in 0.. {
            if writeln!(stdin, "{}", event(i)).is_err() {
                break;
            }
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while printed.len() < BEFORE_KILL {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the appender stopped before being killed");
        assert!(Instant::now() < deadline, "appends too slow");
        printed.push(serde_json::from_str::<Value>(line.trim()).unwrap());
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
                                    // Whatever it printed before dying is a receipt too.
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            printed.push(v);
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the appender was killed, not finished");
    feeder.join().unwrap();

    let stored = ledger.stored();
    for r in &printed {
        let seq = r["seq"].as_u64().unwrap();
        assert_eq!(
            stored.get(&seq).map(String::as_str),
            r["entry_hash"].as_str(),
            "acknowledged seq {seq} is stored with its hash"
        );
    }
    let report = ledger.verify();
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["entries"], json!(stored.len()), "{report}");

    // The ledger goes on after the crash: a new writer continues the chain.
    let mut next = ledger.appender();
    writeln!(next.stdin.take().unwrap(), "{}", event(0)).unwrap();
    let out = next.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        receipts(&out.stdout)[0]["seq"].as_u64().unwrap(),
        stored.len() as u64
    );
    assert!(ledger.verify()["ok"].as_bool().unwrap());
}

/// `init` against a schema that was never migrated fails, says to migrate, and writes no key
/// file: nothing is left half set up.
#[test]
fn init_before_migrate_fails_without_writing_keys() {
    let data = tempfile::tempdir().unwrap();
    let schema = format!("t_e2e_unmigrated_{}", std::process::id());
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--database-schema", &schema, "init"])
        .env("DATABASE_URL", database_url())
        .env_remove("AUDITLEDGER_PSEUDONYM_KEY")
        .env_remove("AUDITLEDGER_SIGNING_KEY")
        .env_remove("AUDITLEDGER_DATABASE_SCHEMA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("migrate"), "{err}");
    assert!(
        !data.path().join("keys").exists(),
        "no key file is written: {err}"
    );
}
