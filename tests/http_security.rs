//! The security projection inside `serve`: a brute-force burst sent over HTTP is detected by the
//! server's own projection, recorded in the ledger, and the block list answers services (GET and
//! POST) without the raw IP reaching the logs.

mod http_support;

use std::time::{Duration, Instant};

use http_support::{assert_no_raw_ids, init, raw, token, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ATTACKER: &str = "198.51.100.23";

async fn check(server: &Server, tok: &str, post: bool) -> Value {
    let url = format!("{}/v1/blocklist/check", server.base);
    let req = if post {
        raw().post(&url).json(&json!({ "ip": ATTACKER }))
    } else {
        raw().get(format!("{url}?ip={ATTACKER}"))
    };
    let r = req.bearer_auth(tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_detects_a_brute_force_and_services_see_the_block() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let server = Server::start(dir.path(), "debug", &["--projection-poll-ms", "20"]);
    let c = server.client(&svc);
    assert_eq!(check(&server, &svc, false).await["blocked"], false);
    // Not an address: refused, not pseudonymized as if it were one.
    let r = raw()
        .post(format!("{}/v1/blocklist/check", server.base))
        .json(&json!({"ip": "198.51.100"}))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let now = chrono::Utc::now();
    let burst: Vec<Value> = (0..6)
        .map(|i| {
            json!({"occurred_at": (now + chrono::Duration::seconds(i)).to_rfc3339(),
                   "action": "login", "outcome": "failure",
                   "actor": {"user_id": format!("u-{i}"), "ip": ATTACKER}, "source": "ehr-web"})
        })
        .collect();
    c.append(&burst).await.unwrap();

    // The projection follows the head: the block appears within moments.
    let started = Instant::now();
    let answer = loop {
        let a = check(&server, &svc, true).await;
        if a["blocked"] == true {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no block after 20 s: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let until = chrono::DateTime::parse_from_rfc3339(answer["until"].as_str().unwrap()).unwrap();
    assert!(
        until > now + chrono::Duration::hours(23),
        "blocked for a day: {answer}"
    );
    assert_eq!(answer["rule"], "brute_force");
    assert_eq!(check(&server, &aud, false).await["blocked"], true);

    // Auditors list it; services may not.
    let events: Value = raw()
        .get(format!("{}/v1/security/events?severity=high", server.base))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["rule"], "brute_force");
    let seq = events[0]["ledger_seq"].as_u64().unwrap();
    let entry = server.client(&aud).entry(seq).await.unwrap().unwrap();
    assert_eq!(entry["event"]["action"], "security_event", "{entry}");
    let r = raw()
        .get(format!("{}/v1/security/events", server.base))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = raw()
        .get(format!("{}/v1/blocklist/check", server.base))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = raw()
        .get(format!("{}/v1/blocklist/check?ip={ATTACKER}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains(ATTACKER), "the raw IP reached the logs");
    assert_no_raw_ids(&logs, "server logs");
}
