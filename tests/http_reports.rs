//! The report routes inside `serve`: an auditor asks for a patient's accounting of disclosures
//! (POST, the raw id in the body) and a compliance report; the server's own projection has
//! kept the read model current; the request is recorded in the ledger; services may not ask;
//! the raw patient id reaches neither the logs nor the answer. The compliance report's
//! retention section shows the legal hold and the retention check recorded before.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{assert_no_raw_ids, event, init, raw, run, token, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_get_reports_over_http_and_the_patient_id_stays_out_of_the_logs() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "privacy-office");
    // A legal hold and a retention check, recorded before the server starts.
    for args in [
        &[
            "retention",
            "hold",
            "add",
            "--whole-stream",
            "--reason",
            "matter 12",
        ][..],
        &["retention", "check", "--no-progress"][..],
    ] {
        let out = run(dir.path(), args);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = Server::start(dir.path(), "debug", &["--projection-poll-ms", "20"]);
    let events: Vec<Value> = (0..40).map(event).collect();
    server.client(&svc).append(&events).await.unwrap();
    // A checkpoint for the evidence to rest on.
    let r = raw()
        .get(format!("{}/v1/checkpoint", server.base))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let url = format!("{}/v1/reports/disclosures", server.base);
    let ask = |tok: &str| {
        raw()
            .post(&url)
            .bearer_auth(tok)
            .json(&json!({"patient": "p-20931", "from": "2026-01-01T00:00:00Z"}))
    };
    assert_eq!(
        ask(&svc).send().await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "services may not read reports"
    );
    // The projection follows the head: all 20 reads of p-20931 appear within moments.
    let started = Instant::now();
    let report: Value = loop {
        let r = ask(&aud).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.text().await.unwrap();
        assert_no_raw_ids(&body, "the disclosures answer");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["lines"].as_array().unwrap().len() == 20 {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        report["integrity"]["ok"],
        json!(true),
        "{:#}",
        report["integrity"]
    );
    assert!(report["request_seq"].as_u64().is_some());
    // The raw id must not sit in a URL: GET is not a route.
    let r = raw()
        .get(format!("{url}?patient=p-20931"))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    let r = raw()
        .get(format!(
            "{}/v1/reports/hipaa?from=2026-11-01&to=2026-12-01&format=html",
            server.base
        ))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("<svg") && !html.contains("https://"));
    assert_no_raw_ids(&html, "the compliance report");
    let r = raw()
        .get(format!(
            "{}/v1/reports/hipaa?from=2026-12-01&to=2026-11-01",
            server.base
        ))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The retention section, in the JSON: the hold and the check, read model current.
    let now = chrono::Utc::now();
    let r = raw()
        .get(format!(
            "{}/v1/reports/hipaa?from={}&to={}&format=json",
            server.base,
            (now - chrono::Duration::days(1)).date_naive(),
            (now + chrono::Duration::days(2)).date_naive(),
        ))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hipaa: Value = r.json().await.unwrap();
    let retention = &hipaa["retention"];
    assert_eq!(retention["available"], json!(true), "{retention:#}");
    let d = &retention["detail"];
    assert_eq!(d["holds_in_force"], json!(1), "{d:#}");
    assert_eq!(d["holds"][0]["scope"], json!("stream"));
    assert_eq!(d["checks_run"], json!(1));
    let (hold, check) = (&d["holds"][0]["seq"], &d["latest_check"]["seq"]);
    assert_eq!(check.as_u64(), Some(hold.as_u64().unwrap() + 1), "{d:#}");
    assert!(d["read_model_position"].as_u64().unwrap() > check.as_u64().unwrap());

    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
    assert_no_raw_ids(&logs, "the server's logs");
    assert!(logs.contains("accounting of disclosures made"), "{logs}");
}
