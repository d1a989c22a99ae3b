//! End to end through the binary: init, append, checkpoint, prove, check-proof with nothing but
//! the public key, and a truncation done in the SQLite file caught by `verify --checkpoint`.

use std::path::Path;
use std::process::{Command, Output};

fn auditledger(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auditledger"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("AUDITLEDGER_PSEUDONYM_KEY")
        .env_remove("AUDITLEDGER_SIGNING_KEY")
        .env_remove("AUDITLEDGER_STREAM")
        .env_remove("AUDITLEDGER_ORIGIN")
        // This test is about the embedded store; scripts/test exports DATABASE_URL for others.
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn events(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"occurred_at":"2026-11-22T10:{:02}:{:02}.000Z","action":"read","outcome":"success","actor":{{"user_id":"u-{}","role":"nurse","ip":"10.1.4.22"}},"resource":{{"type":"Patient","id":"p-{}"}},"patient_id":"p-{}","phi":true,"source":"ehr-web","detail":"viewed chart summary"}}"#,
                i / 60 % 60,
                i % 60,
                1000 + i % 7,
                20000 + i % 11,
                20000 + i % 11
            ) + "\n"
        })
        .collect()
}

#[test]
fn checkpoint_prove_check_and_catch_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let auditor = tmp.path().join("auditor");
    std::fs::create_dir_all(&auditor).unwrap();
    ok(&auditledger(&data, &["init"]));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("keys/signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second init keeps the key.
    let key_before = std::fs::read(data.join("keys/signing.key")).unwrap();
    ok(&auditledger(&data, &["init"]));
    assert_eq!(
        std::fs::read(data.join("keys/signing.key")).unwrap(),
        key_before
    );

    let input = tmp.path().join("events.jsonl");
    std::fs::write(&input, events(60)).unwrap();
    ok(&auditledger(
        &data,
        &["append", "--file", input.to_str().unwrap()],
    ));

    // The auditor keeps the public key and a checkpoint.
    let public = ok(&auditledger(&data, &["key", "public"]));
    assert!(public.starts_with("auditledger/default+"), "{public}");
    let key_file = auditor.join("ledger.pub");
    std::fs::write(&key_file, &public).unwrap();
    let cp61 = auditor.join("cp61.txt");
    let printed = ok(&auditledger(
        &data,
        &["checkpoint", "--out", cp61.to_str().unwrap()],
    ));
    let note = std::fs::read_to_string(&cp61).unwrap();
    assert_eq!(printed, note);
    assert!(note.starts_with("auditledger/default\n61\n"), "{note}");

    // Inclusion of entry 42 in that checkpoint, checked with no store at all.
    let proof = auditor.join("incl42.json");
    ok(&auditledger(
        &data,
        &[
            "prove",
            "inclusion",
            "--seq",
            "42",
            "--checkpoint",
            cp61.to_str().unwrap(),
            "--out",
            proof.to_str().unwrap(),
        ],
    ));
    let nowhere = tmp.path().join("no-store-here");
    let check = [
        "check-proof",
        "--public-key",
        key_file.to_str().unwrap(),
        "--checkpoint",
        cp61.to_str().unwrap(),
        "--proof",
        proof.to_str().unwrap(),
    ];
    let said = ok(&auditledger(&nowhere, &check));
    assert!(said.starts_with("valid: entry 42"), "{said}");
    assert!(
        !nowhere.exists(),
        "check-proof must not open or create a store"
    );

    // A tampered proof is refused with status 1.
    let mut doctored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    doctored["seq"] = 41.into();
    let bad_proof = auditor.join("bad.json");
    std::fs::write(&bad_proof, doctored.to_string()).unwrap();
    let mut bad_check = check;
    bad_check[6] = bad_proof.to_str().unwrap();
    assert_eq!(auditledger(&nowhere, &bad_check).status.code(), Some(1));

    // More entries, a second checkpoint, and a consistency proof between the two.
    std::fs::write(&input, events(20)).unwrap();
    ok(&auditledger(
        &data,
        &["append", "--file", input.to_str().unwrap()],
    ));
    let cp81 = auditor.join("cp81.txt");
    ok(&auditledger(
        &data,
        &["checkpoint", "--out", cp81.to_str().unwrap()],
    ));
    let cons = auditor.join("cons.json");
    ok(&auditledger(
        &data,
        &[
            "prove",
            "consistency",
            "--old",
            cp61.to_str().unwrap(),
            "--new",
            cp81.to_str().unwrap(),
            "--out",
            cons.to_str().unwrap(),
        ],
    ));
    let said = ok(&auditledger(
        &nowhere,
        &[
            "check-proof",
            "--public-key",
            key_file.to_str().unwrap(),
            "--old",
            cp61.to_str().unwrap(),
            "--new",
            cp81.to_str().unwrap(),
            "--proof",
            cons.to_str().unwrap(),
        ],
    ));
    assert!(said.starts_with("valid:"), "{said}");
    let intact = ok(&auditledger(
        &data,
        &[
            "verify",
            "--json",
            "--checkpoint",
            cp61.to_str().unwrap(),
            "--checkpoint",
            cp81.to_str().unwrap(),
        ],
    ));
    let r: serde_json::Value = serde_json::from_str(&intact).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["checkpoints_verified"], 4, "two given, two stored: {r}");

    // A checkpoint edited after signing is refused before anything is verified.
    let forged = auditor.join("forged.txt");
    std::fs::write(&forged, note.replacen("\n61\n", "\n60\n", 1)).unwrap();
    let out = auditledger(&data, &["verify", "--checkpoint", forged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{out:?}"
    );

    // The attacker: drops the append-only triggers and deletes the newest entries, the
    // Merkle nodes over them and the stored checkpoints, leaving a ledger that is consistent
    // in itself.
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER entries_purge_authorized; DROP TRIGGER entries_update_only_purges; DROP TRIGGER entries_no_delete; DROP TRIGGER entries_continue_chain;
         DROP TRIGGER merkle_nodes_no_delete; DROP TRIGGER checkpoints_no_delete;
         DELETE FROM entries WHERE seq >= 70;
         DELETE FROM merkle_nodes WHERE ((idx + 1) << level) > 70;
         DELETE FROM checkpoints;",
    )
    .unwrap();
    drop(db);
    let plain = ok(&auditledger(&data, &["verify", "--json"]));
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(
        plain["ok"], true,
        "without a checkpoint nothing shows it: {plain}"
    );

    let out = auditledger(
        &data,
        &[
            "verify",
            "--json",
            "--public-key",
            key_file.to_str().unwrap(),
            "--checkpoint",
            cp81.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false);
    assert_eq!(r["problem"], "truncated", "{r}");
    assert_eq!(r["checkpoint_size"], 81, "{r}");
    assert_eq!(r["first_bad_seq"], 70, "{r}");
}
