//! End-to-end tests of the retention commands of the `auditledger` binary on the embedded
//! store: holds, the check (exit status, its entry, a violation), archive and its offline
//! verification, purge and what `verify` says afterwards. The ledger's past (2019 to 2026) is
//! written through the library with a manual clock, as if it had been recorded then; the
//! binary then runs on today's clock. (Every scenario on both stores, with a manual clock
//! throughout, is the conformance suite's: crates/store-conformance/src/retention.rs.)

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use ledger::{
    GroupCommitWriter, Ingest, ManualClock, PseudonymKey, Pseudonymizer, Store, StreamId,
    Timestamp, WriterConfig,
};
use serde_json::{json, Value};
use store_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_auditledger");

fn bin(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for var in [
        "AUDITLEDGER_PSEUDONYM_KEY",
        "AUDITLEDGER_SIGNING_KEY",
        "AUDITLEDGER_RETENTION",
        "RUST_LOG",
        "DATABASE_URL",
        "AUDITLEDGER_DATA_DIR",
        "AUDITLEDGER_STREAM",
    ] {
        c.env_remove(var);
    }
    c.arg("--data-dir").arg(dir).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = bin(dir, args);
    (o.status.code().unwrap_or(-1), text(&o))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out) = status(dir, args);
    assert_eq!(code, 0, "{args:?}: {out}");
    out
}

fn json_of(dir: &Path, args: &[&str], expect: i32) -> Value {
    let o = bin(dir, args);
    assert_eq!(o.status.code(), Some(expect), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o)))
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

/// A ledger in `dir` with a weekly PHI read from 2019-01-01 to 2026-11-10, recorded at those
/// times, under the key `init` will find in the directory.
async fn past_ledger(dir: &Path) {
    let key = [9u8; 32];
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
    let clock = Arc::new(ManualClock::new(at("2019-01-01T00:00:00Z")));
    let (writer, task) = GroupCommitWriter::start(
        store,
        StreamId::default(),
        clock.clone(),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let mut ingest = Ingest::new(Pseudonymizer::new(PseudonymKey::from_bytes(key)));
    ingest.alg = writer.hash_alg();
    let week = 7 * 86_400 * 1_000_000;
    let mut t = at("2019-01-01T09:00:00Z");
    let mut i = 0;
    while t < at("2026-11-10T00:00:00Z") {
        clock.set(t);
        let patient = format!("p-{}", i % 7);
        let body = json!({"occurred_at": t.to_rfc3339(), "action": "read", "outcome": "success",
            "actor": {"user_id": format!("u-{}", i % 5), "role": "nurse"},
            "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
            "source": "records-batch"});
        writer
            .append(vec![ingest.prepare(&body, None).unwrap()])
            .await
            .unwrap();
        t = Timestamp(t.micros() + week);
        i += 1;
    }
    drop(writer);
    task.await.unwrap();
    std::fs::write(dir.join("keys/pseudonym.key"), hex::encode(key)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("keys/pseudonym.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_archive_purge_and_the_check_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    past_ledger(&dir).await;
    ok(&dir, &["init"]); // the signing key; the ledger and its key are kept
    let public = tmp.path().join("key.pub");
    std::fs::write(
        &public,
        ok(&dir, &["key", "public"]).lines().next().unwrap(),
    )
    .unwrap();

    // A clean ledger is compliant; the check is recorded in the ledger.
    let report = json_of(&dir, &["retention", "check", "--json"], 0);
    assert_eq!(report["ok"], json!(true), "{report}");
    let last = json_of(&dir, &["tail", "-n", "1"], 0);
    assert_eq!(last["event"]["action"], json!("retention_check"), "{last}");

    // Holds: refused without PHI-looking reasons; a patient hold is two holds.
    let (code, out) = status(
        &dir,
        &[
            "retention",
            "hold",
            "add",
            "--patient",
            "p-3",
            "--reason",
            "call 555-123-4567",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let out = ok(
        &dir,
        &[
            "retention",
            "hold",
            "add",
            "--patient",
            "p-3",
            "--reason",
            "matter 2026-17",
        ],
    );
    assert_eq!(out.matches("legal hold").count(), 2, "{out}");
    let holds = json_of(&dir, &["retention", "hold", "list", "--json"], 0);
    assert_eq!(holds.as_array().unwrap().len(), 2, "{holds}");
    assert!(!holds.to_string().contains("\"p-3\""), "no raw id: {holds}");
    let (code, out) = status(
        &dir,
        &[
            "retention",
            "hold",
            "release",
            "--hold",
            "1",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, 1, "entry 1 is no hold: {out}");

    // The plan: about 99 weeks are past six years, some of them held.
    let plan = json_of(&dir, &["retention", "plan", "--json"], 0);
    assert!(plan["eligible"].as_u64().unwrap() > 70, "{plan}");

    // Archive, verified offline with the public key alone.
    let archive = tmp.path().join("old.archive");
    let a = archive.to_str().unwrap();
    let out = ok(&dir, &["archive", "--before", "2021-01-01", "--out", a]);
    assert!(out.contains("sha256 "), "{out}");
    let out = ok(
        &tmp.path().join("elsewhere"),
        &[
            "verify",
            "--export",
            a,
            "--public-key",
            public.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("intact"), "{out}");
    let (code, out) = status(&dir, &["archive", "--before", "2021-01-01", "--out", a]);
    assert_eq!(code, 1, "an archive is never overwritten: {out}");

    // Purge: payloads of the archived entries past six years, except the held ones.
    let out = ok(
        &dir,
        &[
            "purge",
            "--archive",
            a,
            "--authorized-by",
            "J. Doe, privacy officer, PRIV-88",
        ],
    );
    assert!(out.contains("payload(s) purged"), "{out}");
    let v = json_of(&dir, &["verify", "--json"], 0);
    let purged = v["payloads_purged"].as_u64().unwrap();
    assert!(purged > 60, "{v}");
    assert_eq!(v["purges"][0]["purged"].as_u64(), Some(purged), "{v}");
    assert_eq!(
        v["purges"][0]["authorization"]["authorized_by"],
        json!("J. Doe, privacy officer, PRIV-88")
    );
    let out = ok(&dir, &["verify"]);
    assert!(
        out.contains(&format!("{purged} payload(s) purged")),
        "{out}"
    );
    let report = json_of(&dir, &["retention", "check", "--json"], 0);
    assert_eq!(report["payloads_purged"].as_u64(), Some(purged), "{report}");
    // A full export carries the authorization with the purged entries: it verifies offline.
    let full = tmp.path().join("full.cbor");
    ok(&dir, &["export", "--out", full.to_str().unwrap()]);
    let v = json_of(
        &tmp.path().join("elsewhere"),
        &["verify", "--json", "--export", full.to_str().unwrap()],
        0,
    );
    assert_eq!(v["payloads_purged"].as_u64(), Some(purged), "{v}");
    assert_eq!(v["purges"][0]["purged"].as_u64(), Some(purged), "{v}");

    // Again: nothing left to purge; refused, and the refusal recorded.
    let (code, out) = status(&dir, &["purge", "--archive", a, "--authorized-by", "again"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    let last = json_of(&dir, &["tail", "-n", "1"], 0);
    assert_eq!(
        last["event"]["action"],
        json!("retention_purge_refused"),
        "{last}"
    );

    // A client cannot write a ledger record's action.
    let (code, out) = {
        let mut c = Command::new(BIN);
        c.env_remove("DATABASE_URL")
            .arg("--data-dir")
            .arg(&dir)
            .arg("append")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"occurred_at":"2026-11-22T14:03:11Z","action":"retention_purge","outcome":"success","actor":{"role":"x"},"source":"evil"}"#)
            .unwrap();
        let o = child.wait_with_output().unwrap();
        (o.status.code().unwrap_or(-1), text(&o))
    };
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("reserved"), "{out}");

    // An entry of 2025 deleted by someone with the file: a violation naming it, exit 1.
    let db = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let victim: i64 = db
        .query_row(
            "SELECT min(seq) FROM entries WHERE recorded_at >= ?1",
            [at("2025-01-01T00:00:00Z").micros()],
            |r| r.get(0),
        )
        .unwrap();
    db.execute_batch("DROP TRIGGER entries_no_delete;").unwrap();
    db.execute("DELETE FROM entries WHERE seq = ?1", [victim])
        .unwrap();
    drop(db);
    let report = json_of(&dir, &["retention", "check", "--json"], 1);
    assert_eq!(
        report["violations"][0]["kind"],
        json!("entry_missing"),
        "{report}"
    );
    assert_eq!(report["violations"][0]["seq"].as_i64(), Some(victim));
    let (code, out) = status(&dir, &["retention", "check"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("VIOLATION"), "{out}");
}
