//! Graceful shutdown and backpressure of `auditledger serve`, end to end: SIGTERM while
//! concurrent clients append must lose no acknowledged event and leave a ledger that
//! verifies; a writer that falls behind pushes back with 503 + Retry-After instead of
//! queueing without bound.

mod http_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use auditledger_client::{ClientError, Receipt};
use http_support::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let server = Server::start(dir.path(), "info", &[]);
    let acked: Arc<std::sync::Mutex<Vec<Receipt>>> = Arc::default();
    let mut clients = Vec::new();
    for t in 0..16usize {
        let c = server.client(&svc);
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut failures = 0;
            // Bounded: at most 5000 requests per client, and the server goes away anyway.
            for i in 0..5000usize {
                let batch = if i.is_multiple_of(5) {
                    vec![event(i), event(i + 1), event(i + 2)]
                } else {
                    vec![event(t * 10_000 + i)]
                };
                match c.append_once(&batch, None).await {
                    Ok(r) => acked.lock().unwrap().extend(r),
                    Err(_) => {
                        failures += 1;
                        if failures > 3 {
                            break;
                        }
                    }
                }
            }
        }));
    }
    // Let the load build, then ask the server to stop while requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = acked.lock().unwrap().len();
    assert!(before >= 500, "the load started");
    let (status, logs) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients end")
            .unwrap();
    }
    assert!(status.success(), "exit status {status:?}\n{logs}");
    assert!(logs.contains("writer flushed"), "{logs}");

    let acked = acked.lock().unwrap().clone();
    eprintln!("{before} receipts before SIGTERM, {} in all", acked.len());
    let stored = stored_hashes(dir.path());
    for r in &acked {
        assert_eq!(
            stored.get(&r.seq),
            Some(&r.entry_hash),
            "acknowledged receipt seq {} is stored with its hash",
            r.seq
        );
    }
    let (code, report) = verify_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert!(report["entries"].as_u64().unwrap() as usize > acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_falls_behind_pushes_back_with_retry_after() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let server = Server::start(
        dir.path(),
        "info",
        &[
            "--max-inflight-appends",
            "2",
            "--queue-depth",
            "1",
            "--retry-after-seconds",
            "2",
            // Exact entry counts below: no projection appending detections meanwhile.
            "--projection-poll-ms",
            "0",
        ],
    );
    let http = raw();
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let http = http.clone();
        let url = format!("{}/v1/events", server.base);
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(svc)
                .json(&vec![event(i); 50])
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status(), retry)
        }));
    }
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(retry.as_deref(), Some("2"));
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, pushed back {busy}");

    // The client's retries (same idempotency key) get through once the writer catches up.
    let c = server.client(&svc);
    let r = c.append(&vec![event(1); 50]).await;
    assert!(
        r.is_ok() || matches!(r, Err(ClientError::Busy { .. })),
        "{r:?}"
    );
    let (status, _) = server.stop();
    assert!(status.success());
    let (code, report) = verify_json(dir.path());
    assert_eq!(code, 0, "{report}");
    // Genesis + one entry per token event + 50 per acknowledged request (+ the retry).
    let entries = report["entries"].as_u64().unwrap();
    let base = 1 + 1 + ok as u64 * 50;
    assert!(
        entries == base || entries == base + 50,
        "{entries} vs {base}"
    );
}
