//! End-to-end tests of the `auditledger` binary on the embedded store: what a new user, an
//! operator and an auditor see.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_auditledger");
/// Raw identifiers used in the events below; none may appear in storage, logs or output.
const RAW_IDS: [&str; 5] = ["u-1042", "10.1.4.22", "s-88f1", "p-20931", "p-77001"];

/// The binary, with nothing inherited that would point it elsewhere (scripts/test exports
/// DATABASE_URL for the PostgreSQL tests; these are about the embedded store).
fn bin() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "AUDITLEDGER_PSEUDONYM_KEY",
        "AUDITLEDGER_SIGNING_KEY",
        "RUST_LOG",
        "DATABASE_URL",
        "AUDITLEDGER_DATA_DIR",
        "AUDITLEDGER_STREAM",
    ] {
        c.env_remove(var);
    }
    c
}

struct Ledger {
    dir: tempfile::TempDir,
}

impl Ledger {
    fn new() -> Ledger {
        let l = Ledger {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = l.run(&["init"], None);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        l
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.arg("--data-dir").arg(self.path()).args(args);
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn verify_json(&self) -> (i32, Value) {
        let out = self.run(&["verify", "--json"], None);
        (
            out.status.code().unwrap(),
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        )
    }

    fn db(&self) -> PathBuf {
        self.path().join("ledger.db")
    }
}

fn event(i: usize) -> Value {
    json!({"occurred_at": format!("2026-11-22T14:{:02}:{:02}.250Z", (i / 60) % 60, i % 60),
           "action": if i.is_multiple_of(3) { "update" } else { "read" }, "outcome": "success",
           "actor": {"user_id": "u-1042", "role": "nurse", "ip": "10.1.4.22", "session_id": "s-88f1",
                     "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
           "resource": {"type": "Patient", "id": if i.is_multiple_of(2) { "p-20931" } else { "p-77001" }},
           "patient_id": if i.is_multiple_of(2) { "p-20931" } else { "p-77001" }, "phi": true,
           "request": {"method": "GET", "path": "/patients/{id}"},
           "source": "ehr-web", "detail": "viewed chart summary"})
}

fn lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| event(i).to_string() + "\n").collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_raw_ids(text: &str, what: &str) {
    for raw in RAW_IDS {
        assert!(
            !text.contains(raw),
            "{what} contains the raw identifier {raw}:\n{text}"
        );
    }
}

/// An attacker with access to the file: triggers off, then raw SQL.
fn tamper(l: &Ledger, sql: &str) {
    let c = rusqlite::Connection::open(l.db()).unwrap();
    c.execute_batch("DROP TRIGGER IF EXISTS entries_purge_authorized; DROP TRIGGER IF EXISTS entries_update_only_purges; DROP TRIGGER IF EXISTS entries_no_delete; DROP TRIGGER IF EXISTS entries_continue_chain;")
        .unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn init_creates_an_owner_only_key_and_never_overwrites_it() {
    let l = Ledger::new();
    let key = l.path().join("keys/pseudonym.key");
    let before = std::fs::read_to_string(&key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = l.run(&["init"], None);
    assert!(again.status.success());
    assert!(stderr(&again).contains("kept"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), before);
    assert!(
        !stderr(&again).contains(before.trim()),
        "the key is never printed"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = l.run(&["append"], Some(&lines(0..1)));
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("readable by other users"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn the_key_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let run = |key: &str| {
        let mut c = bin();
        c.arg("--data-dir")
            .arg(dir.path())
            .args(["append", "--receipts"])
            .env("AUDITLEDGER_PSEUDONYM_KEY", key);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines(0..2).as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = run(&"ab".repeat(32));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!dir.path().join("keys/pseudonym.key").exists());
    let bad = run("not-a-key");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("AUDITLEDGER_PSEUDONYM_KEY"));
    assert!(
        !stderr(&bad).contains("not-a-key"),
        "the offending value is not echoed"
    );
}

#[test]
fn a_batch_with_one_bad_event_writes_nothing_and_names_line_and_field() {
    let l = Ledger::new();
    let mut bad = event(1);
    bad["outcome"] = json!("maybe");
    let mut phi = event(2);
    phi["detail"] = json!("patient ssn 123-45-6789");
    let input = format!("{}\n{}\n{}\nnot json\n", event(0), bad, phi);
    let out = l.run(&["append"], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("line 2: outcome: must be one of success, failure, denied, error"),
        "{err}"
    );
    assert!(
        err.contains("line 3: detail: looks like it contains PHI (ssn)"),
        "{err}"
    );
    assert!(
        err.contains("line 4: $: must be one JSON object per line"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!err.contains("123-45-6789"), "PHI is not echoed: {err}");
    let (code, report) = l.verify_json();
    assert_eq!(
        (code, report["entries"].as_u64()),
        (0, Some(1)),
        "only the genesis entry: {report}"
    );

    // Redaction instead of refusal, when the site says so.
    let out = l.run(
        &["append", "--phi-policy", "redact", "--receipts"],
        Some(&format!("{phi}\n")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = l.run(&["show", "1"], None);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("[REDACTED:ssn]") && !text.contains("123-45-6789"),
        "{text}"
    );
}

#[test]
fn receipts_are_printed_and_an_idempotent_retry_returns_them_again() {
    let l = Ledger::new();
    let input = lines(0..5);
    let first = l.run(
        &["append", "--receipts", "--idempotency-key", "batch-7"],
        Some(&input),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let receipts: Vec<Value> = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(receipts.len(), 5);
    assert_eq!(
        receipts
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    for r in &receipts {
        assert_eq!(r["entry_hash"].as_str().unwrap().len(), 64);
        assert!(r["recorded_at"].as_str().unwrap().ends_with('Z'));
    }
    let retry = l.run(
        &["append", "--receipts", "--idempotency-key", "batch-7"],
        Some(&input),
    );
    assert!(retry.status.success());
    assert_eq!(
        retry.stdout, first.stdout,
        "a retry returns the original receipts"
    );
    assert_eq!(l.verify_json().1["entries"], 6, "nothing was written twice");
}

#[test]
fn verify_reports_intact_then_names_the_damage_with_exit_status() {
    let l = Ledger::new();
    assert!(l.run(&["append"], Some(&lines(0..50))).status.success());
    let (code, r) = l.verify_json();
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (
            r["ok"].as_bool(),
            r["entries"].as_u64(),
            r["head_seq"].as_u64()
        ),
        (Some(true), Some(51), Some(50))
    );
    assert!(r["first_bad_seq"].is_null() && r["problem"].is_null());
    assert_eq!(r["head_hash"].as_str().unwrap().len(), 64);

    let text = l.run(&["verify"], None);
    assert!(String::from_utf8_lossy(&text.stdout)
        .starts_with("intact: stream default, 51 entries verified"));

    tamper(&l, "UPDATE entries SET action = 'delete' WHERE seq = 30;");
    let (code, r) = l.verify_json();
    assert_eq!(code, 1, "{r}");
    assert_eq!(
        (
            r["ok"].as_bool(),
            r["first_bad_seq"].as_u64(),
            r["problem"].as_str()
        ),
        (Some(false), Some(30), Some("column_mismatch"))
    );
    let text = l.run(&["verify"], None);
    assert!(String::from_utf8_lossy(&text.stdout)
        .contains("DAMAGED: stream default, first bad entry seq 30: column_mismatch"));

    tamper(&l, "UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), 'viewed', 'edited') AS BLOB) WHERE seq = 12;");
    let (code, r) = l.verify_json();
    assert_eq!(
        (code, r["first_bad_seq"].as_u64(), r["problem"].as_str()),
        (1, Some(12), Some("payload_modified")),
        "{r}"
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("--data-dir")
        .arg(dir.path().join("nothing"))
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("auditledger init"),
        "{}",
        stderr(&out)
    );
    let out = bin().args(["verify", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["--stream", "Bad Name", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid stream name"));
}

#[test]
fn export_verifies_offline_and_damage_in_the_file_is_found() {
    let l = Ledger::new();
    assert!(l.run(&["append"], Some(&lines(0..40))).status.success());
    let file = l.path().join("day.cbor");
    let out = l.run(&["export", "--out", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = l.run(&["export", "--out", file.to_str().unwrap()], None);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing file is not overwritten"
    );

    // Offline: no store at all (a data dir that does not exist).
    let offline = |path: &Path| {
        let o = bin()
            .args([
                "--data-dir",
                "/nonexistent/auditledger",
                "verify",
                "--json",
                "--export",
            ])
            .arg(path)
            .output()
            .unwrap();
        (
            o.status.code().unwrap(),
            serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null),
        )
    };
    let (code, r) = offline(&file);
    let (_, store_report) = l.verify_json();
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["head_hash"], store_report["head_hash"]);
    assert_eq!(r["entries"], 41);

    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(6).rposition(|w| w == b"viewed").unwrap();
    bytes[at] = b'V';
    let damaged = l.path().join("damaged.cbor");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, r) = offline(&damaged);
    assert_eq!(
        (code, r["problem"].as_str(), r["first_bad_seq"].as_u64()),
        (1, Some("payload_modified"), Some(40)),
        "{r}"
    );

    let junk = l.path().join("junk.cbor");
    std::fs::write(&junk, b"hello").unwrap();
    assert_eq!(offline(&junk).0, 2);
}

#[test]
fn nothing_raw_reaches_storage_output_or_logs() {
    let l = Ledger::new();
    let mut all_logs = String::new();
    let logged = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec!["--log-level", "trace", "--log-format", "json"];
        full.extend_from_slice(args);
        l.run(&full, stdin)
    };
    for (args, stdin) in [
        (vec!["append", "--receipts"], Some(lines(0..30))),
        (
            vec!["append", "--chunk", "3", "--receipts"],
            Some(lines(30..40)),
        ),
        (vec!["verify"], None),
        (vec!["show", "2", "-n", "5"], None),
        (vec!["tail", "-n", "50"], None),
    ] {
        let out = logged(&args, stdin.as_deref());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        all_logs.push_str(&stderr(&out));
        assert_no_raw_ids(
            &String::from_utf8_lossy(&out.stdout),
            &format!("stdout of {args:?}"),
        );
    }
    // A refused event with raw identifiers in bad places: the error names fields, not values.
    let mut bad = event(0);
    bad["actor"]["ip"] = json!("p-20931");
    let out = logged(&["append"], Some(&format!("{bad}\n")));
    assert_eq!(out.status.code(), Some(1));
    all_logs.push_str(&stderr(&out));

    assert!(
        all_logs.contains("TRACE") || all_logs.contains("DEBUG") || all_logs.contains("\"level\""),
        "logs were captured: {all_logs}"
    );
    assert_no_raw_ids(&all_logs, "logs");
    let key = std::fs::read_to_string(l.path().join("keys/pseudonym.key")).unwrap();
    assert!(!all_logs.contains(key.trim()), "the key is never logged");

    // Storage: no raw identifier anywhere in the database files (or their WALs).
    for file in [
        "ledger.db",
        "ledger.db-wal",
        "projections.db",
        "projections.db-wal",
    ] {
        if let Ok(bytes) = std::fs::read(l.path().join(file)) {
            for raw in RAW_IDS {
                assert!(
                    !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
                    "{file} contains {raw}"
                );
            }
        }
    }
}

#[test]
fn a_crash_between_write_and_acknowledge_loses_no_acknowledged_entry() {
    let l = Ledger::new();
    let mut child = l
        .cmd(&["append", "--chunk", "1", "--receipts"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..1_000_000 {
            if stdin
                .write_all((event(i).to_string() + "\n").as_bytes())
                .is_err()
            {
                return; // the process is gone
            }
        }
    });
    let mut receipts = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while receipts.len() < 2000 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "append ended early");
        receipts.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    child.kill().unwrap(); // SIGKILL: no chance to flush or clean up
    child.wait().unwrap();
    feeder.join().unwrap();
    // Receipts already written to the pipe but not yet read are acknowledged too.
    while out.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            receipts.push(v);
        }
        line.clear();
    }

    let (code, r) = l.verify_json();
    assert_eq!(code, 0, "the ledger verifies after the crash: {r}");
    let c = rusqlite::Connection::open(l.db()).unwrap();
    for receipt in &receipts {
        let seq = receipt["seq"].as_i64().unwrap();
        let stored: Vec<u8> = c
            .query_row(
                "SELECT entry_hash FROM entries WHERE stream = 'default' AND seq = ?1",
                [seq],
                |row| row.get(0),
            )
            .unwrap_or_else(|_| panic!("acknowledged entry {seq} is missing"));
        assert_eq!(
            hex::encode(stored),
            receipt["entry_hash"].as_str().unwrap(),
            "entry {seq}"
        );
    }
    assert!(r["head_seq"].as_u64().unwrap() >= receipts.len() as u64);
}

#[test]
fn demo_runs_on_a_fresh_directory_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("--data-dir")
        .arg(dir.path().join("demo"))
        .args(["demo", "--events", "3000", "--appenders", "8"])
        .env_remove("AUDITLEDGER_PSEUDONYM_KEY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for expected in [
        "brute-force burst",
        "role change",
        "group commits",
        "intact",
        "pseudonyms",
    ] {
        assert!(
            text.contains(expected),
            "demo output lacks {expected:?}:\n{text}"
        );
    }
}

#[test]
fn every_command_explains_itself() {
    let top = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success());
    for cmd in ["init", "append", "verify", "export", "show", "tail", "demo"] {
        assert!(text.contains(cmd), "--help lists {cmd}");
        let out = bin().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).lines().count() > 5,
            "{cmd} --help says something"
        );
    }
}

#[test]
fn two_processes_appending_to_one_file_make_one_chain() {
    let l = Ledger::new();
    let spawn = |from: usize| {
        let mut child = l
            .cmd(&["append", "--chunk", "3", "--receipts"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = lines(from..from + 600);
        let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        (child, feeder)
    };
    let (a, fa) = spawn(0);
    let (b, fb) = spawn(10_000);
    fa.join().unwrap();
    fb.join().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let mut seqs: Vec<u64> = [a.stdout, b.stdout]
        .iter()
        .flat_map(|out| {
            String::from_utf8_lossy(out)
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=1200).collect::<Vec<u64>>(),
        "every acknowledged entry has its own seq, no gap, no duplicate"
    );
    let (code, r) = l.verify_json();
    assert_eq!((code, r["entries"].as_u64()), (0, Some(1201)), "{r}");
}
