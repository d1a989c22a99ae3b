//! Checkpoints and proofs over HTTP: the server signs checkpoints every N entries (stored and
//! written to a directory), serves the newest one and proofs against it, and an auditor checks
//! them with only the public key, no store.

mod http_support;

use std::time::{Duration, Instant};

use http_support::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_signs_checkpoints_and_serves_proofs_an_auditor_can_check_offline() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let cp_dir = dir.path().join("offsite");
    let server = Server::start(
        dir.path(),
        "info",
        &[
            "--checkpoint-every-entries",
            "50",
            "--checkpoint-every-seconds",
            "0",
            "--checkpoint-dir",
            cp_dir.to_str().unwrap(),
            // Exact sizes below: no projection appending detections meanwhile.
            "--projection-poll-ms",
            "0",
        ],
    );
    let c = server.client(&svc);
    let checkpoint_files = || {
        let mut files: Vec<_> = std::fs::read_dir(&cp_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    };
    // Two phases of appends, each past 50 new entries: each gets its checkpoint (the
    // checkpointer polls the head, so wait for it, bounded).
    let events: Vec<Value> = (0..130).map(event).collect();
    for (phase, part) in [&events[..60], &events[60..]].into_iter().enumerate() {
        for chunk in part.chunks(10) {
            c.append(chunk).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while checkpoint_files().len() <= phase && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let files = checkpoint_files();
    assert_eq!(
        files.len(),
        2,
        "one checkpoint per phase of more than 50 entries: {files:?}"
    );

    let http = raw();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.base))
            .bearer_auth(&aud)
            .send()
    };
    let note = get("/v1/checkpoint").await.unwrap();
    assert_eq!(note.status(), 200);
    let note = note.text().await.unwrap();
    assert!(note.starts_with("auditledger/default\n"), "{note}");
    let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        size, 133,
        "130 events after the genesis and two token records: {note}"
    );

    // An inclusion proof and a consistency proof, checked with only the public key.
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let public = String::from_utf8(run(dir.path(), &["key", "public"]).stdout).unwrap();
    let key = write("key.pub", &public);
    let cp = write("cp.txt", &note);
    let proof: Value = get(&format!("/v1/proof/inclusion?seq=42&size={size}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proof_file = write("inclusion.json", &proof.to_string());
    let nowhere = work.path().join("no-store");
    let check = |args: &[&str]| {
        let mut full = vec!["check-proof", "--public-key", key.to_str().unwrap()];
        full.extend_from_slice(args);
        run(&nowhere, &full)
    };
    let ok = check(&[
        "--proof",
        proof_file.to_str().unwrap(),
        "--checkpoint",
        cp.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!nowhere.exists(), "checking a proof opens no store");

    let first = std::fs::read_to_string(&files[0]).unwrap();
    let old_size: u64 = first.lines().nth(1).unwrap().parse().unwrap();
    let consistency: Value = get(&format!("/v1/proof/consistency?from={old_size}&to={size}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consistency_file = write("consistency.json", &consistency.to_string());
    let old = write("old.txt", &first);
    let ok = check(&[
        "--proof",
        consistency_file.to_str().unwrap(),
        "--old",
        old.to_str().unwrap(),
        "--new",
        cp.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Bad queries are 400, and a service token may not read proofs.
    assert_eq!(
        get(&format!("/v1/proof/inclusion?seq={size}&size={size}"))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        get("/v1/proof/consistency?from=5&to=2")
            .await
            .unwrap()
            .status(),
        400
    );
    let as_service = http
        .get(format!("{}/v1/checkpoint", server.base))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(as_service.status(), 403);

    // At shutdown, a last checkpoint covers everything acknowledged.
    let (status, _) = server.stop();
    assert!(status.success());
    let (code, report) = verify_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert!(
        report["checkpoints_verified"].as_u64().unwrap() >= 3,
        "{report}"
    );
    let mut files: Vec<_> = std::fs::read_dir(&cp_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let last = std::fs::read_to_string(files.last().unwrap()).unwrap();
    let head_size = report["head_seq"].as_u64().unwrap() + 1;
    assert_eq!(
        last.lines().nth(1),
        Some(head_size.to_string().as_str()),
        "the last checkpoint covers the head (the refused request is recorded too): {last}"
    );
}
