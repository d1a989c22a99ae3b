//! End to end through the binary, on the embedded store: a generated ledger with known answers
//! (who read which patient, one user who suddenly reads ten times as many patients, an entry
//! imported from the legacy system), then `report disclosures` and `report hipaa`: exactly the
//! expected accesses, the snooping user flagged and the steady one not, the same figures in
//! every format, a tampered entry reported as not verifying, and no raw identifier in the
//! outputs, the logs or the store. Then the retention section: a retention check and a legal
//! hold appear in it, the same in every format.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ledger::{PseudonymKey, Pseudonymizer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_auditledger");
const TARGET: &str = "p-target-5521";
const STEADY: &str = "u-steady-1";
const SNOOP: &str = "u-snoop-2";
const NURSES: [&str; 6] = [STEADY, SNOOP, "u-n3", "u-n4", "u-n5", "u-n6"];
/// Monday 2026-10-05 .. ; the snooping happens on the 22nd working day.
const DAYS: usize = 22;

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    for var in [
        "AUDITLEDGER_PSEUDONYM_KEY",
        "AUDITLEDGER_SIGNING_KEY",
        "RUST_LOG",
        "DATABASE_URL",
        "AUDITLEDGER_DATA_DIR",
        "AUDITLEDGER_STREAM",
        "AUDITLEDGER_ANALYTICS",
        "AUDITLEDGER_RETENTION",
    ] {
        c.env_remove(var);
    }
    c.arg("--data-dir")
        .arg(dir)
        .arg("--log-level")
        .arg("debug")
        .args(args)
        .stdin(Stdio::piped())
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

fn raw_ids() -> Vec<String> {
    let mut ids: Vec<String> = NURSES.iter().map(|s| s.to_string()).collect();
    ids.push(TARGET.to_owned());
    ids.push("u-legacy-9".to_owned());
    ids
}

fn assert_no_raw_ids(text: &str, what: &str) {
    for raw in raw_ids() {
        assert!(
            !text.contains(&raw),
            "{what} contains the raw identifier {raw}"
        );
    }
}

/// The `n`-th working day from Monday 2026-10-05, 10:00 New York (14:00Z).
fn working_day(n: usize) -> chrono::NaiveDate {
    let mut d = chrono::NaiveDate::from_ymd_opt(2026, 10, 5).unwrap();
    let mut left = n;
    loop {
        use chrono::Datelike;
        let weekend = matches!(d.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
        if !weekend {
            if left == 0 {
                return d;
            }
            left -= 1;
        }
        d = d.succ_opt().unwrap();
    }
}

fn read(day: usize, minute: usize, user: &str, patient: &str) -> Value {
    json!({"occurred_at": format!("{}T14:{:02}:{:02}.000Z", working_day(day), minute / 60 % 60, minute % 60),
           "action": "read", "outcome": "success",
           "actor": {"user_id": user, "role": "nurse", "ip": "10.1.4.22"},
           "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
           "source": "ehr-web", "detail": "viewed chart summary"})
}

/// Every nurse reads 5 patients a working day; on the last day the snoop reads 50. The target
/// patient is read by the steady nurse on days 3, 7 and 15, and by nobody else.
fn traffic() -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut target_reads = 0;
    for day in 0..DAYS {
        for (u, user) in NURSES.iter().enumerate() {
            let many = if *user == SNOOP && day == DAYS - 1 {
                50
            } else {
                5
            };
            for k in 0..many {
                let patient = format!("p-{}", (u * 7 + day * 3 + k) % 200);
                events.push(read(day, u * 60 + k, user, &patient));
            }
        }
        if [3, 7, 15].contains(&day) {
            events.push(read(day, 500, STEADY, TARGET));
            target_reads += 1;
        }
        events.push(
            json!({"occurred_at": format!("{}T13:00:00.000Z", working_day(day)),
            "action": "login", "outcome": if day % 5 == 0 { "failure" } else { "success" },
            "actor": {"user_id": STEADY, "ip": "10.1.4.22"}, "source": "ehr-web"}),
        );
    }
    events.push(
        json!({"occurred_at": format!("{}T15:00:00.000Z", working_day(4)),
        "action": "role_change", "outcome": "success",
        "actor": {"user_id": "u-n3", "role": "admin"}, "resource": {"type": "Practitioner"},
        "source": "ehr-admin", "detail": "granted the nurse role"}),
    );
    (events, target_reads)
}

fn sha256_hex(raw: &str) -> String {
    Pseudonymizer::legacy_sha256(raw)
        .to_string()
        .trim_start_matches("sha256:")
        .to_owned()
}

fn pseudonym(dir: &Path, raw: &str) -> String {
    let hex = std::fs::read_to_string(dir.join("keys/pseudonym.key")).unwrap();
    let key = PseudonymKey::from_hex(hex.trim()).unwrap();
    Pseudonymizer::new(key).pseudonymize(raw).to_string()
}

fn jsonl(events: &[Value]) -> String {
    events.iter().map(|e| e.to_string() + "\n").collect()
}

#[test]
fn reports_answer_exactly_flag_the_snoop_and_refuse_a_tampered_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&run(dir, &["init"], None));
    let (events, target_reads) = traffic();
    ok(&run(dir, &["append"], Some(&jsonl(&events))));
    // One access from the legacy system: identifiers hold its unkeyed SHA-256.
    let legacy = json!({"occurred_at": "2021-03-04T15:00:00.000Z", "action": "read", "outcome": "success",
        "actor": {"user_id": sha256_hex("u-legacy-9"), "role": "physician"},
        "resource": {"type": "Patient", "id": sha256_hex(TARGET)}, "patient_id": sha256_hex(TARGET),
        "phi": true, "source": "legacy-ehr"});
    ok(&run(
        dir,
        &["append", "--legacy-hashed"],
        Some(&jsonl(&[legacy])),
    ));
    ok(&run(dir, &["checkpoint"], None));

    // The accounting of disclosures: exactly the four accesses, the legacy one included.
    let out = run(
        dir,
        &[
            "report",
            "disclosures",
            "--patient",
            "-",
            "--format",
            "json",
            "--from",
            "2020-01-01",
        ],
        Some(TARGET),
    );
    let text = ok(&out);
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_raw_ids(&text, "the disclosures report");
    assert_no_raw_ids(&logs, "the disclosures command's logs");
    let report: Value = serde_json::from_str(&text).unwrap();
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), target_reads + 1, "{report:#}");
    assert_eq!(
        lines.iter().filter(|l| l["legacy"] == json!(true)).count(),
        1
    );
    assert!(
        lines.iter().all(|l| l["verified"] == json!(true)),
        "{report:#}"
    );
    let steady = pseudonym(dir, STEADY);
    assert_eq!(
        lines.iter().filter(|l| l["user"] == json!(steady)).count(),
        target_reads
    );
    assert_eq!(report["integrity"]["ok"], json!(true), "{report:#}");
    assert_eq!(report["patient"], json!(pseudonym(dir, TARGET)));
    let request_seq = report["request_seq"]
        .as_u64()
        .expect("the request is recorded");
    // The request is in the ledger as an audit-log read naming the patient's pseudonym.
    let shown = ok(&run(dir, &["show", &request_seq.to_string()], None));
    assert!(shown.contains(&pseudonym(dir, TARGET)), "{shown}");
    assert!(shown.contains("AuditLog"), "{shown}");

    // The compliance report: the snoop is flagged, the steady nurse is not; same figures in
    // every format.
    let period = ["--from", "2026-10-01", "--to", "2026-11-04"];
    let json_text = ok(&run(
        dir,
        &[&["report", "hipaa", "--format", "json"][..], &period[..]].concat(),
        None,
    ));
    assert_no_raw_ids(&json_text, "the compliance report");
    let hipaa: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        hipaa["integrity"]["ok"],
        json!(true),
        "{:#}",
        hipaa["integrity"]
    );
    let flags = hipaa["phi_access"]["unusual"].as_array().unwrap();
    let snoop = pseudonym(dir, SNOOP);
    assert!(
        flags.iter().any(|f| f["user"] == json!(snoop)
            && f["metric"] == json!("distinct_patients")
            && f["day"] == json!(working_day(DAYS - 1).to_string())),
        "the snoop is flagged: {flags:#?}"
    );
    assert!(
        !flags.iter().any(|f| f["user"] == json!(steady)),
        "the steady nurse is not flagged: {flags:#?}"
    );
    let total = hipaa["phi_access"]["total"].as_u64().unwrap();
    assert_eq!(
        total as usize,
        events.len() - DAYS - 1,
        "PHI accesses in the period"
    );
    let csv = ok(&run(
        dir,
        &[&["report", "hipaa", "--format", "csv"][..], &period[..]].concat(),
        None,
    ));
    let html = ok(&run(
        dir,
        &[&["report", "hipaa", "--format", "html"][..], &period[..]].concat(),
        None,
    ));
    assert!(csv.contains(&total.to_string()), "{csv}");
    assert!(html.contains(&total.to_string()) && html.contains("<svg"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert_no_raw_ids(&csv, "the CSV report");
    assert_no_raw_ids(&html, "the HTML report");

    // No raw identifier in the store either (entries, read models, projection state, and the
    // write-ahead logs not yet copied into either file).
    for file in [
        "ledger.db",
        "ledger.db-wal",
        "projections.db",
        "projections.db-wal",
    ] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            assert_no_raw_ids(&String::from_utf8_lossy(&bytes), file);
        }
    }
    assert!(
        dir.join("projections.db").exists(),
        "the read models were written"
    );

    // Tamper with one cited entry: the report says it does not verify, and exits 1.
    let cited = lines.iter().find(|l| l["legacy"] == json!(false)).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let c = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    c.execute_batch("DROP TRIGGER IF EXISTS entries_purge_authorized; DROP TRIGGER IF EXISTS entries_update_only_purges;")
        .unwrap();
    c.execute(
        "UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), 'viewed', 'edited') AS BLOB) WHERE seq = ?1",
        [cited as i64],
    )
    .unwrap();
    drop(c);
    let out = run(
        dir,
        &[
            "report",
            "disclosures",
            "--patient",
            TARGET,
            "--format",
            "json",
            "--from",
            "2020-01-01",
            "--no-catch-up",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["integrity"]["ok"], json!(false));
    assert_eq!(report["integrity"]["first_bad_seq"], json!(cited));
    assert!(report["integrity"]["statement"]
        .as_str()
        .unwrap()
        .starts_with("NOT VERIFIED"));
    let bad = report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["seq"] == json!(cited))
        .unwrap();
    assert_eq!(bad["verified"], json!(false));

    // And the compliance report over the tampered period says so too.
    let out = run(
        dir,
        &[
            &["report", "hipaa", "--format", "json", "--no-catch-up"][..],
            &period[..],
        ]
        .concat(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let hipaa: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hipaa["integrity"]["ok"], json!(false));
    assert_eq!(hipaa["integrity"]["first_bad_seq"], json!(cited));
}

/// The retention section of `report hipaa`: after `retention check` and `retention hold add`,
/// the check and the hold are in it (the hold under pseudonyms only), with the same figures in
/// the JSON, the CSV and the HTML; `project retention --rebuild` gives the same section.
#[test]
fn the_compliance_report_shows_retention_checks_and_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&run(dir, &["init"], None));
    let now = chrono::Utc::now();
    let at = |minutes_ago: i64| {
        (now - chrono::Duration::minutes(minutes_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({"occurred_at": at(30 - i), "action": "read", "outcome": "success",
                   "actor": {"user_id": STEADY, "role": "nurse"},
                   "resource": {"type": "Patient", "id": TARGET}, "patient_id": TARGET,
                   "phi": true, "source": "ehr-web"})
        })
        .collect();
    ok(&run(dir, &["append"], Some(&jsonl(&events))));

    // A retention check (its verdict is recorded whatever it is), then a hold on the patient.
    let out = run(
        dir,
        &["retention", "check", "--json", "--no-progress"],
        None,
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let check_seq: u64 = stderr
        .split("recorded as ledger entry seq ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the check names its entry: {stderr}"));
    let held = ok(&run(
        dir,
        &[
            "retention",
            "hold",
            "add",
            "--patient",
            TARGET,
            "--reason",
            "litigation 2026-17",
        ],
        None,
    ));
    // One hold under the keyed pseudonym, one under the legacy one.
    let hold_seqs: Vec<u64> = held
        .lines()
        .filter_map(|l| l.strip_prefix("legal hold "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(hold_seqs.len(), 2, "{held}");
    ok(&run(dir, &["checkpoint"], None));

    let from = (now - chrono::Duration::days(1)).date_naive().to_string();
    let to = (now + chrono::Duration::days(2)).date_naive().to_string();
    let report = |format: &str| {
        let out = run(
            dir,
            &[
                "report", "hipaa", "--format", format, "--from", &from, "--to", &to,
            ],
            None,
        );
        let text = ok(&out);
        assert_no_raw_ids(&text, "the compliance report");
        assert_no_raw_ids(&String::from_utf8_lossy(&out.stderr), "the report's logs");
        text
    };
    let json_text = report("json");
    let hipaa: Value = serde_json::from_str(&json_text).unwrap();
    let section = &hipaa["retention"];
    assert_eq!(section["available"], json!(true), "{section:#}");
    let d = &section["detail"];
    assert_eq!(d["checks_run"], json!(1), "{d:#}");
    let latest = &d["latest_check"];
    assert_eq!(latest["seq"], json!(check_seq));
    assert_eq!(latest["ok"], check["ok"]);
    assert_eq!(latest["in_period"], json!(true));
    assert_eq!(d["checks"][0]["seq"], json!(check_seq));
    assert_eq!(
        d["checks_compliant"],
        json!(u64::from(check["ok"] == json!(true)))
    );
    let verdict = if check["ok"] == json!(true) {
        "COMPLIANT"
    } else {
        "VIOLATION"
    };
    assert!(
        section["status"].as_str().unwrap().starts_with(verdict),
        "{section:#}"
    );
    assert_eq!(d["holds_in_force"], json!(2));
    let holds = d["holds"].as_array().unwrap();
    let seqs: Vec<u64> = holds.iter().map(|h| h["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, hold_seqs);
    assert_eq!(holds[0]["scope"], json!("patient"));
    assert_eq!(holds[0]["subject"], json!(pseudonym(dir, TARGET)));
    assert_eq!(
        holds[1]["subject"],
        json!(format!("sha256:{}", sha256_hex(TARGET)))
    );
    assert_eq!(holds[0]["reason"], json!("litigation 2026-17"));
    assert_eq!(d["policy"]["default_years"], json!(6));
    assert_eq!(d["purges_authorized"], json!(0));
    assert_eq!(
        d["read_model_position"],
        hipaa["integrity"]["read_model_position"]
    );

    // The CSV and the HTML carry the same figures.
    let csv = report("csv");
    for row in [
        "retention,detail,checks_run,,1".to_owned(),
        "retention,detail,holds_in_force,,2".to_owned(),
        format!("retention,detail,latest_check,seq,{check_seq}"),
        format!("retention,detail,holds,1.seq,{}", hold_seqs[0]),
        format!("retention,detail,holds,2.seq,{}", hold_seqs[1]),
        format!(
            "retention,detail,holds,1.subject,{}",
            pseudonym(dir, TARGET)
        ),
        "retention,,available,,true".to_owned(),
    ] {
        assert!(csv.lines().any(|l| l == row), "{row} not in the CSV");
    }
    let html = report("html");
    for n in [check_seq, hold_seqs[0], hold_seqs[1]] {
        assert!(html.contains(&format!(">{n}</td>")), "{n} not in the HTML");
    }
    assert!(html.contains(&format!("<code>{}</code>", pseudonym(dir, TARGET))));
    assert!(html.contains(verdict));

    // A rebuilt retention projection gives the same section.
    let rebuilt = ok(&run(
        dir,
        &["project", "retention", "--rebuild", "--json"],
        None,
    ));
    let summary: Value = serde_json::from_str(rebuilt.trim()).unwrap();
    assert_eq!(summary["projection"], json!("retention"));
    assert_eq!(summary["ok"], json!(true));
    assert!(summary["row_writes"].as_u64().unwrap() > 0, "{summary}");
    for phase in ["read", "apply", "commit_wait"] {
        assert!(
            summary["phase_seconds"][phase].as_f64().unwrap() >= 0.0,
            "{summary}"
        );
    }
    let again: Value = serde_json::from_str(&report("json")).unwrap();
    assert_eq!(&again["retention"], section);
}

/// The phi-access rows depend on the configuration: after a change to what they depend on, the
/// projection and the reports refuse the old rows until a rebuild; a change of a report-time
/// threshold does not.
#[test]
fn a_changed_configuration_of_the_rows_requires_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&run(dir, &["init"], None));
    let events: Vec<Value> = (0..5).map(|k| read(0, k, STEADY, TARGET)).collect();
    ok(&run(dir, &["append"], Some(&jsonl(&events))));
    ok(&run(dir, &["checkpoint"], None));
    ok(&run(dir, &["project", "phi-access"], None));
    let hipaa = [
        "report",
        "hipaa",
        "--format",
        "json",
        "--from",
        "2026-10-01",
        "--to",
        "2026-11-01",
    ];

    std::fs::write(dir.join("phi-access.toml"), "[unusual]\nsigma = 4.0\n").unwrap();
    ok(&run(dir, &hipaa, None));

    std::fs::write(dir.join("phi-access.toml"), "late_days = 5\n").unwrap();
    let entries = |dir: &Path| ok(&run(dir, &["tail", "-n", "1000"], None)).lines().count();
    let before = entries(dir);
    let disclosures = [
        "report",
        "disclosures",
        "--patient",
        "-",
        "--format",
        "json",
    ];
    for (args, stdin) in [
        (&["project", "phi-access"][..], None),
        (&hipaa[..], None),
        (&disclosures[..], Some(TARGET)),
    ] {
        let out = run(dir, args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("another phi-access configuration")
                && err.contains("auditledger project phi-access --rebuild"),
            "{err}"
        );
    }
    assert_eq!(
        entries(dir),
        before,
        "a refused disclosures request is not recorded as answered"
    );
    ok(&run(dir, &["project", "phi-access", "--rebuild"], None));
    let report: Value = serde_json::from_str(&ok(&run(dir, &hipaa, None))).unwrap();
    assert_eq!(
        report["phi_access"]["total"],
        json!(5),
        "rebuilt under the new configuration"
    );
}
