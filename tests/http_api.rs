//! End-to-end tests of `auditledger serve` over the embedded store: what a backend service, an
//! auditor and an attacker see. The server is the real binary on 127.0.0.1, port 0.

mod http_support;

use std::time::{Duration, Instant};

use auditledger_client::ClientError;
use http_support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_answer_durable_receipts_and_a_retry_returns_the_original() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    // Exact seqs below: no projection appending detections (of the token creations) meanwhile.
    let server = Server::start(dir.path(), "info", &["--projection-poll-ms", "0"]);
    let c = server.client(&svc);
    let before = server.client(&aud).head().await.unwrap()["seq"]
        .as_u64()
        .unwrap();

    // One object and an array.
    let one = c.append_once(&[event(0)], None).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].seq, before + 1);
    let three = c.append(&[event(1), event(2), event(3)]).await.unwrap();
    assert_eq!(
        three.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![before + 2, before + 3, before + 4]
    );
    let single_object = raw()
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&svc)
        .json(&event(4))
        .send()
        .await
        .unwrap();
    assert_eq!(single_object.status(), StatusCode::OK);
    assert!(single_object.headers().contains_key("x-request-id"));
    let body: Value = single_object.json().await.unwrap();
    assert_eq!(body["receipts"][0]["seq"], before + 5);
    assert_eq!(
        body["receipts"][0]["entry_hash"].as_str().unwrap().len(),
        64
    );
    assert!(body["receipts"][0]["recorded_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // Idempotent retry: same key, same events → the original receipts, nothing new written.
    let first = c
        .append_with_key(&[event(5), event(6)], "req-7f3a")
        .await
        .unwrap();
    let again = c
        .append_with_key(&[event(5), event(6)], "req-7f3a")
        .await
        .unwrap();
    assert_eq!(first, again);
    let head = server.client(&aud).head().await.unwrap();
    assert_eq!(head["seq"], first[1].seq, "the retry wrote nothing");
    // The same key for different events is a client bug: 409, nothing written.
    let err = c
        .append_with_key(&[event(9), event(10)], "req-7f3a")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err:?}");
    assert_eq!(
        server.client(&aud).head().await.unwrap()["seq"],
        first[1].seq
    );

    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
    let stored = stored_hashes(dir.path());
    for r in one.iter().chain(&three).chain(&first) {
        assert_eq!(
            stored.get(&r.seq),
            Some(&r.entry_hash),
            "receipt {} is stored",
            r.seq
        );
    }
    let (code, report) = verify_json(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_whole_naming_each_field_without_echoing_values() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let server = Server::start(
        dir.path(),
        "info",
        &[
            "--max-body-bytes",
            "4000",
            "--max-events-per-request",
            "3",
            // The head must stay put: no projection appending detections meanwhile.
            "--projection-poll-ms",
            "0",
        ],
    );
    let c = server.client(&svc);
    let head = || async { server.client(&aud).head().await.unwrap()["seq"].clone() };
    let before = head().await;

    let mut bad = event(1);
    bad["actor"]["ip"] = json!("10.1.4.22.999");
    bad.as_object_mut().unwrap().remove("outcome");
    bad["detail"] = json!("patient SSN 123-45-6789");
    let err = c
        .append_once(&[event(0), bad, event(2)], None)
        .await
        .unwrap_err();
    let ClientError::Invalid { problems } = err else {
        panic!("expected 400, got {err:?}")
    };
    let named: Vec<(Option<usize>, &str)> = problems
        .iter()
        .map(|p| (p.index, p.field.as_str()))
        .collect();
    assert!(named.contains(&(Some(1), "actor.ip")), "{named:?}");
    assert!(named.contains(&(Some(1), "outcome")), "{named:?}");
    assert!(named.contains(&(Some(1), "detail")), "{named:?}");
    assert!(
        named.iter().all(|(i, _)| *i == Some(1)),
        "only event 1 is bad"
    );
    assert_eq!(head().await, before, "nothing of the batch was written");

    // The raw answer echoes no value.
    let mut bad = event(1);
    bad["actor"]["ip"] = json!("p-20931");
    let resp = raw()
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&svc)
        .json(&json!([bad]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.unwrap();
    assert!(text.contains("actor.ip"), "{text}");
    assert!(!text.contains("p-20931"), "values are never echoed: {text}");

    // Not JSON, not an event, no content type.
    for (body, ctype, want) in [
        (
            "{\"occurred_at\": ",
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        ("42", "application/json", StatusCode::BAD_REQUEST),
        ("[]", "application/json", StatusCode::BAD_REQUEST),
        ("{}", "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let resp = raw()
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(&svc)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{body}");
    }

    // Too large: by bytes and by count.
    let big = serde_json::to_vec(&vec![event(0); 20]).unwrap();
    assert!(big.len() > 4000);
    let err = c.append_body(big, None).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge(_)), "{err:?}");
    let err = c
        .append_once(&[event(0), event(1), event(2), event(3)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TooLarge(_)), "{err:?}");
    assert_eq!(head().await, before, "nothing was written");
    let (status, logs) = server.stop();
    assert!(status.success(), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_401_or_403_and_each_lands_in_the_ledger() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let admin = token(dir.path(), "admin", "ops");
    let server = Server::start(dir.path(), "info", &["--auth-reload-ms", "100"]);
    let auditor = server.client(&aud);
    let start = auditor.head().await.unwrap()["seq"].as_u64().unwrap();
    let http = raw();

    // Health needs no token; everything else does.
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = http
        .post(format!("{}/v1/events", server.base))
        .json(&event(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let forged = format!("al_{}", "ab".repeat(32));
    let err = server
        .client(&forged)
        .append_once(&[event(0)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized), "{err:?}");
    // Wrong role: the auditor may not append, the service may not read or list tokens.
    let err = auditor.append_once(&[event(0)], None).await.unwrap_err();
    assert!(matches!(err, ClientError::Forbidden), "{err:?}");
    let err = server.client(&svc).entries(0, 10).await.unwrap_err();
    assert!(matches!(err, ClientError::Forbidden), "{err:?}");
    let r = http
        .get(format!("{}/v1/tokens", server.base))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .get(format!("{}/v1/tokens", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed = r.text().await.unwrap();
    assert!(
        listed.contains("ehr-web") && !listed.contains(&svc),
        "{listed}"
    );

    // Revocation by the command line reaches the running server.
    let out = run(dir.path(), &["token", "revoke", "ehr-web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.client(&svc).append_once(&[event(0)], None).await {
            Err(ClientError::Unauthorized) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("a revoked token still works: {other:?}"),
        }
    }

    // The ledger holds every refusal and the token events, pseudonymized.
    let page = auditor.entries(start + 1, 1000).await.unwrap();
    let events: Vec<&Value> = page.entries.iter().map(|e| &e["event"]).collect();
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert!(
        count("login_failed", "failure") >= 3,
        "missing, forged and revoked: {events:?}"
    );
    assert_eq!(count("access_denied", "denied"), 3, "{events:?}");
    assert_eq!(count("token_revoke", "success"), 1, "{events:?}");
    let denied = events
        .iter()
        .find(|e| e["action"] == "access_denied")
        .unwrap();
    assert_eq!(denied["source"], "auditledger");
    let all = serde_json::to_string(&page.entries).unwrap();
    assert!(
        !all.contains("127.0.0.1"),
        "the caller's IP is pseudonymized"
    );
    for t in [&svc, &aud, &admin, &forged] {
        assert!(!all.contains(t.as_str()), "a token reached the ledger");
    }
    let (status, logs) = server.stop();
    assert!(status.success());
    for t in [&svc, &aud, &admin, &forged] {
        assert!(!logs.contains(t.as_str()), "a token reached the logs");
    }
}

/// Shaped like the FHIR R4 specification's AuditEvent examples (`example-login`,
/// `example-search`, `example-rest` (vread of a patient record), `example-error`).
fn fhir_examples() -> Vec<Value> {
    let agent = json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                       "who": {"identifier": {"value": "u-1042"}}, "altId": "601847123", "name": "Grahame Grieve", "requestor": true,
                       "network": {"address": "10.1.4.22", "type": "2"}});
    let source = json!({"site": "Cloud", "observer": {"display": "hl7connect.healthintersections.com.au"},
                        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "3", "display": "Web Server"}]});
    vec![
        json!({"resourceType": "AuditEvent", "id": "example-login",
               "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"},
               "subtype": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110122", "display": "Login"}],
               "action": "E", "recorded": "2013-06-20T23:41:23Z", "outcome": "0",
               "agent": [agent], "source": source}),
        json!({"resourceType": "AuditEvent", "id": "example-search",
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"},
               "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "search", "display": "search"}],
               "action": "E", "recorded": "2015-08-22T23:42:24Z", "outcome": "0",
               "agent": [agent], "source": source,
               "entity": [{"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                           "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
                           "query": "aHR0cDovL2ZoaXItZGV2LmhlYWx0aGludGVyc2VjdGlvbnMuY29tLmF1L29wZW4vRW5jb3VudGVyP3BhcnRpY2lwYW50PTEz"}]}),
        json!({"resourceType": "AuditEvent", "id": "example-rest",
               "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">read of a patient record</div>"},
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"},
               "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "vread", "display": "vread"}],
               "action": "R", "recorded": "2013-06-20T23:42:24Z", "outcome": "0",
               "agent": [agent, {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153", "display": "Source Role ID"}]},
                                 "who": {"identifier": {"system": "urn:oid:2.16.840.1.113883.4.2", "value": "2.16.840.1.113883.4.2"}},
                                 "altId": "6580", "requestor": false,
                                 "network": {"address": "Workstation1.ehr.familyclinic.com", "type": "1"}}],
               "source": source,
               "entity": [{"what": {"reference": "Patient/p-20931/_history/1"},
                           "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                           "lifecycle": {"system": "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle", "code": "6", "display": "Access / Use"}}]}),
        json!({"resourceType": "AuditEvent", "id": "example-error",
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"},
               "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "create", "display": "create"}],
               "action": "C", "recorded": "2017-09-07T23:42:24Z", "outcome": "8",
               "outcomeDesc": "Invalid request to create an Operation resource on the Patient endpoint.",
               "agent": [agent], "source": source,
               "entity": [{"what": {"reference": "Patient/p-77001"}, "type": {"code": "1"}}]}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_audit_events_map_to_the_event_contract() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-fhir");
    let aud = token(dir.path(), "auditor", "compliance");
    let server = Server::start(dir.path(), "info", &[]);
    let c = server.client(&svc);
    let auditor = server.client(&aud);

    // The same patient through the JSON contract, for comparing pseudonyms.
    let plain = c.append(&[event(0)]).await.unwrap();
    let plain = auditor.entry(plain[0].seq).await.unwrap().unwrap();

    let mut stored = Vec::new();
    for ex in fhir_examples() {
        let r = c.post_fhir_audit_event(&ex, None).await.unwrap();
        stored.push(auditor.entry(r.seq).await.unwrap().unwrap()["event"].clone());
    }
    let [login, search, read, error] = &stored[..] else {
        panic!()
    };
    assert_eq!(login["action"], "login");
    assert_eq!(login["outcome"], "success");
    assert_eq!(search["action"], "search");
    assert_eq!(read["action"], "read");
    assert_eq!(error["action"], "create");
    assert_eq!(error["outcome"], "error");
    // The requestor is the actor, pseudonymized exactly like the JSON contract's user and IP.
    for e in &stored {
        assert_eq!(
            e["actor"],
            json!({"user_id": plain["event"]["actor"]["user_id"], "role": "IRCP",
                                      "ip": plain["event"]["actor"]["ip"]}),
            "{e}"
        );
        assert_eq!(e["source"], "hl7connect.healthintersections.com.au");
    }
    assert_eq!(
        read["patient"], plain["event"]["patient"],
        "same patient, same pseudonym: {read}"
    );
    assert_eq!(read["phi"], true);
    assert!(login.get("patient").is_none_or(Value::is_null));
    let all = serde_json::to_string(&stored).unwrap();
    assert_no_raw_ids(&all, "stored FHIR events");
    assert!(
        !all.contains("Grahame") && !all.contains("Invalid request"),
        "free text is dropped"
    );

    // An invalid AuditEvent: OperationOutcome naming each element, nothing written.
    let head = auditor.head().await.unwrap();
    let mut bad = fhir_examples().remove(0);
    bad["outcome"] = json!("5");
    bad.as_object_mut().unwrap().remove("recorded");
    bad["agent"][0]["network"]["address"] = json!("10.1.4.22");
    bad["unknownElement"] = json!(true);
    let resp = raw()
        .post(format!("{}/fhir/AuditEvent", server.base))
        .bearer_auth(&svc)
        .header("content-type", "application/fhir+json")
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let oo: Value = resp.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let exprs: Vec<&str> = oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap())
        .collect();
    for want in [
        "AuditEvent.outcome",
        "AuditEvent.recorded",
        "AuditEvent.unknownElement",
    ] {
        assert!(exprs.contains(&want), "{want} in {exprs:?}");
    }
    assert!(!oo.to_string().contains("10.1.4.22"));
    assert_eq!(auditor.head().await.unwrap(), head, "nothing written");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_verify_and_export_with_pseudonyms_only() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let server = Server::start(dir.path(), "info", &["--max-read-limit", "50"]);
    let c = server.client(&svc);
    let auditor = server.client(&aud);
    let events: Vec<Value> = (0..120).map(event).collect();
    for chunk in events.chunks(40) {
        c.append(chunk).await.unwrap();
    }
    let head = auditor.head().await.unwrap();
    let size = head["size"].as_u64().unwrap();
    assert_eq!(head["seq"].as_u64().unwrap() + 1, size);

    // Paging: the server caps the page, next_from_seq continues it.
    let mut seen = 0;
    let mut from = 0;
    for _ in 0..100 {
        let page = auditor.entries(from, 1000).await.unwrap();
        assert!(page.entries.len() <= 50);
        if page.entries.is_empty() {
            break;
        }
        assert_eq!(page.entries[0]["seq"], from);
        seen += page.entries.len() as u64;
        from = page.next_from_seq.unwrap();
    }
    assert_eq!(seen, size);
    let one = auditor.entry(5).await.unwrap().unwrap();
    assert_eq!(one["seq"], 5);
    assert!(auditor.entry(size + 10).await.unwrap().is_none());
    let r = raw()
        .get(format!("{}/v1/entries/not-a-number", server.base))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Verify over HTTP while appends go on: intact, and the same JSON as the command line.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                c.append(&[event(i)]).await.unwrap();
            }
        })
    };
    let report = auditor.verify().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["entries"].as_u64().unwrap() >= size);
    writer.await.unwrap();

    // Export: streamed, and verifiable offline.
    let mut bytes = Vec::new();
    auditor.export_to(&mut bytes).await.unwrap();
    let path = dir.path().join("export.cbor");
    std::fs::write(&path, &bytes).unwrap();
    let out = run(
        dir.path(),
        &["verify", "--json", "--export", path.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["ok"], true);

    let all = serde_json::to_string(&auditor.entries(0, 50).await.unwrap().entries).unwrap();
    assert_no_raw_ids(&all, "entries");
    assert_no_raw_ids(&String::from_utf8_lossy(&bytes), "export");

    // Metrics, with a token.
    let metrics = raw()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&aud)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "auditledger_append_requests_total{outcome=\"ok\"}",
        "auditledger_appended_entries_total",
        "auditledger_append_ack_seconds_bucket",
        "auditledger_append_request_events_bucket",
        "auditledger_verify_runs_total{outcome=\"intact\"}",
        "auditledger_writer_batches_total",
        "auditledger_projection_lag_entries{projection=\"phi-access\"}",
        "auditledger_projection_row_writes_total{projection=\"security\"}",
        "auditledger_projection_seconds_total{projection=\"retention\",phase=\"commit_wait\"}",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    let unauth = raw()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);

    let (status, _) = server.stop();
    assert!(status.success());
    let (code, cli) = verify_json(dir.path());
    assert_eq!(code, 0);
    let mut http_report = report.clone();
    // The CLI ran later, on a longer ledger with the checkpoint the server takes at shutdown:
    // compare the shape and the verdict.
    for k in ["entries", "head_seq", "head_hash", "checkpoints_verified"] {
        http_report[k] = cli[k].clone();
    }
    assert_eq!(http_report, cli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_request_ids_and_no_raw_identifier_or_token() {
    let dir = init();
    let svc = token(dir.path(), "service", "ehr-web");
    let aud = token(dir.path(), "auditor", "compliance");
    let server = Server::start(dir.path(), "trace", &[]);
    let c = server.client(&svc);
    c.append(&[event(0), event(1)]).await.unwrap();
    let mut bad = event(2);
    bad["actor"]["ip"] = json!("p-20931");
    assert!(c.append_once(&[bad], None).await.is_err());
    let forged = format!("al_{}", "cd".repeat(32));
    assert!(server.client(&forged).head().await.is_err());
    assert!(server.client(&svc).head().await.is_err(), "403");
    let auditor = server.client(&aud);
    auditor.entries(0, 10).await.unwrap();
    auditor.verify().await.unwrap();
    c.post_fhir_audit_event(&fhir_examples()[2], Some("k-1"))
        .await
        .unwrap();
    let (status, logs) = server.stop();
    assert!(status.success());
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "trace logs were captured"
    );
    assert!(logs.contains("request finished"), "{logs}");
    assert!(logs.contains("\"id\":\""), "request ids are logged");
    assert_no_raw_ids(&logs, "logs");
    for t in [&svc, &aud, &forged] {
        assert!(!logs.contains(t.as_str()), "a token reached the logs");
        // Not even the part after the prefix.
        assert!(
            !logs.contains(&t[3..20]),
            "a token fragment reached the logs"
        );
    }
    let key = std::fs::read_to_string(dir.path().join("keys/pseudonym.key")).unwrap();
    assert!(!logs.contains(key.trim()));
}
