use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::patterns::Metric;

fn ok_integrity() -> Integrity {
    Integrity {
        ok: true,
        statement: "verified 1200 entries, seq 0..=1199, against checkpoint of size 1200".into(),
        from_seq: Some(0),
        to_seq: Some(1199),
        entries_verified: 1200,
        first_bad_seq: None,
        problem: None,
        detail: None,
        checkpoint: Some(CheckpointInfo {
            size: 1200,
            root: "ab".repeat(32),
            signer: "cd".repeat(32),
            signature_valid: true,
            anchors_range: true,
        }),
        checkpoints_stored: 3,
        checkpoints_valid: 3,
        read_model_position: Some(1199),
    }
}

fn failed_integrity() -> Integrity {
    Integrity {
        ok: false,
        statement: "verification failed at seq 42".into(),
        first_bad_seq: Some(42),
        problem: Some("link broken".into()),
        detail: Some("prev_hash of 42 is not the entry hash of 41".into()),
        entries_verified: 42,
        ..ok_integrity()
    }
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn day(day: &str, phi: u64) -> DayTotals {
    DayTotals {
        day: day.into(),
        first_seq: 10,
        last_seq: 20,
        events: phi + 7,
        logins: 5,
        failed_logins: 2,
        phi_accesses: phi,
        after_hours_phi: phi / 4,
        exports: 1,
        phi_by_role: map(&[("nurse", phi - 1), ("physician", 1)]),
        phi_by_action: map(&[("read", phi)]),
        phi_by_resource_type: map(&[("Patient", phi)]),
        phi_by_outcome: map(&[("success", phi)]),
        events_by_source: map(&[("ehr-web", phi + 4), ("cgm, \"coverage\"", 3)]),
        logins_by_source: map(&[("ehr-web", 5)]),
        failed_logins_by_source: map(&[("ehr-web", 2)]),
        changes: map(&[("role_change", 1)]),
    }
}

fn user_day(user: &str, day: &str, phi: u64) -> UserDay {
    UserDay {
        user: user.into(),
        day: day.into(),
        role: Some("nurse".into()),
        events: phi,
        phi_accesses: phi,
        phi_reads: phi,
        distinct_patients: phi / 2,
        first_seq: 1,
        last_seq: 2,
        ..UserDay::default()
    }
}

fn flag() -> Flag {
    Flag {
        user: "k1:u-big".into(),
        role: Some("nurse".into()),
        day: "2026-11-02".into(),
        metric: Metric::DistinctPatients,
        value: 100.0,
        baseline_mean: Some(10.0),
        baseline_sd: Some(2.0),
        history_days: 30,
        peer_percentile: Some(22.5),
        peer_users: 6,
        above_own_baseline: true,
        above_peers: true,
        explanation: "k1:u-big (nurse) accessed 100 distinct patients on 2026-11-02: ...".into(),
        first_seq: 300,
        last_seq: 400,
    }
}

fn change(seq: u64, action: &str, detail: &str) -> Change {
    Change {
        seq,
        entry_hash: format!("{seq:064x}"),
        occurred_at: "2026-11-02T10:00:00.000000Z".into(),
        action: action.into(),
        user: Some("k1:admin".into()),
        role: Some("admin".into()),
        outcome: "success".into(),
        source: "admin-console".into(),
        resource_type: None,
        detail: Some(detail.into()),
    }
}

/// A retention status as the binary passes it (the shape of `retention::report::RetentionStatus`).
fn retention_status() -> Value {
    serde_json::json!({
        "status": "VIOLATION: the latest retention check (entry 1180, 2026-11-04T06:00:00.000000Z) found 1 violation(s): coverage_gap; 2 of 3 checks in the period were compliant",
        "period_start": "2026-11-01T04:00:00.000000Z",
        "period_end": "2026-11-05T05:00:00.000000Z",
        "read_model_position": 1199,
        "policy": {
            "digest": "9f".repeat(32),
            "default_years": 6,
            "rules": [
                {"name": "default", "years": 6, "why": "HIPAA 45 CFR 164.316(b)(2)(i), 164.530(j)(2): six years from creation"},
                {"name": "configuration", "years": 10, "why": "=state schedule, <b>cited</b>"}
            ]
        },
        "holds_in_force": 2,
        "holds_released_in_period": 1,
        "holds": [
            {"seq": 17, "scope": "patient", "subject": "k1:held-patient", "from": null, "to": null,
             "since": "2026-03-01T10:00:00.000000Z", "reason": "litigation 2026-17"},
            {"seq": 905, "scope": "time", "subject": null, "from": "2025-01-01T00:00:00.000000Z",
             "to": "2025-02-01T00:00:00.000000Z", "since": "2026-11-02T10:00:00.000000Z", "reason": "audit"}
        ],
        "checks_run": 3,
        "checks_compliant": 2,
        "latest_check": {"seq": 1180, "recorded_at": "2026-11-04T06:00:00.000000Z",
            "as_of": "2026-11-04T06:00:00.000000Z", "ok": false, "violations": 1,
            "findings": ["coverage_gap"], "entries": 1180, "head": 1179, "in_period": true},
        "checks": [
            {"seq": 1001, "recorded_at": "2026-11-02T06:00:00.000000Z", "as_of": "2026-11-02T06:00:00.000000Z",
             "ok": true, "violations": 0, "findings": [], "entries": 1001, "head": 1000, "in_period": true},
            {"seq": 1090, "recorded_at": "2026-11-03T06:00:00.000000Z", "as_of": "2026-11-03T06:00:00.000000Z",
             "ok": true, "violations": 0, "findings": [], "entries": 1090, "head": 1089, "in_period": true},
            {"seq": 1180, "recorded_at": "2026-11-04T06:00:00.000000Z", "as_of": "2026-11-04T06:00:00.000000Z",
             "ok": false, "violations": 1, "findings": ["coverage_gap"], "entries": 1180, "head": 1179, "in_period": true}
        ],
        "purges_authorized": 2,
        "purges_in_period": 1,
        "payloads_authorized": 70123,
        "purges": [
            {"seq": 400, "recorded_at": "2026-06-01T00:00:00.000000Z", "from": 1, "to": 70000,
             "count": 69990, "authorized_by": "privacy officer, ticket 7", "archive": "ab".repeat(32), "in_period": false},
            {"seq": 1100, "recorded_at": "2026-11-03T12:00:00.000000Z", "from": 70001, "to": 70200,
             "count": 133, "authorized_by": "-counsel", "archive": "cd".repeat(32), "in_period": true}
        ],
        "gaps_ended": 1,
        "gaps": [
            {"source": "cgm-coverage", "from": "2026-11-03T01:00:00.000000Z",
             "to": "2026-11-03T04:10:00.000000Z", "minutes": 190, "resumed_seq": 1120}
        ]
    })
}

fn input(integrity: Integrity) -> HipaaInput {
    HipaaInput {
        generated_at: "2026-12-01T08:00:00Z".into(),
        stream: "default".into(),
        period: Period {
            from: "2026-11-01".into(),
            to: "2026-11-05".into(),
            timezone: "America/New_York".into(),
        },
        integrity,
        days: vec![
            day("2026-11-01", 40),
            day("2026-11-02", 123),
            day("2026-11-04", 9),
        ],
        user_days: vec![
            user_day("k1:u-big", "2026-11-01", 20),
            user_day("k1:u-big", "2026-11-02", 100),
            user_day("k1:u-small", "2026-11-02", 23),
            user_day("k1:u-idle", "2026-11-04", 0),
        ],
        flags: vec![flag()],
        changes: vec![
            change(
                77,
                "config_change",
                "<script>alert(1)</script>, \"quoted\"\nsecond line",
            ),
            change(12, "role_change", "nurse -> charge nurse"),
        ],
        security: SecurityInput {
            available: true,
            events: vec![
                SecurityEventRow {
                    at: "2026-11-02T03:00:00Z".into(),
                    rule: "BRUTE_FORCE".into(),
                    severity: "HIGH".into(),
                    summary: "5 failed logins from one IP in 5 min".into(),
                    first_seq: 50,
                    last_seq: 54,
                },
                SecurityEventRow {
                    at: "2026-11-03T03:00:00Z".into(),
                    rule: "BRUTE_FORCE".into(),
                    severity: "HIGH".into(),
                    summary: "again".into(),
                    first_seq: 60,
                    last_seq: 64,
                },
            ],
            blocks_issued: 2,
            blocks_lifted: 1,
        },
        retention: None,
    }
}

#[test]
fn build_hipaa_sums_the_days_and_ranks_the_users() {
    let r = build_hipaa(input(ok_integrity()));
    assert_eq!(r.warning, None);
    let a = &r.access_summary;
    assert_eq!((a.events, a.logins, a.failed_logins), (172 + 21, 15, 6));
    assert_eq!(a.distinct_users, 3);
    assert_eq!(a.by_source[0].source, "ehr-web");
    assert_eq!(
        (
            a.by_source[0].events,
            a.by_source[0].logins,
            a.by_source[0].failed_logins
        ),
        (184, 15, 6)
    );
    let p = &r.phi_access;
    assert_eq!((p.total, p.after_hours, p.exports), (172, 10 + 30 + 2, 3));
    let per_day: Vec<(&str, u64)> = p
        .per_day
        .iter()
        .map(|d| (d.day.as_str(), d.count))
        .collect();
    assert_eq!(
        per_day,
        [
            ("2026-11-01", 40),
            ("2026-11-02", 123),
            ("2026-11-03", 0),
            ("2026-11-04", 9)
        ]
    );
    assert_eq!(
        p.by_role[0],
        Count {
            key: "nurse".into(),
            count: 169
        }
    );
    let top: Vec<(&str, u64, u64, u64)> = p
        .top_users
        .iter()
        .map(|u| {
            (
                u.user.as_str(),
                u.phi_accesses,
                u.distinct_patients_total,
                u.days_active,
            )
        })
        .collect();
    assert_eq!(top, [("k1:u-big", 120, 60, 2), ("k1:u-small", 23, 11, 1)]);
    let s = &r.security_events;
    assert_eq!(
        s.by_rule,
        [RuleCount {
            rule: "BRUTE_FORCE".into(),
            severity: "HIGH".into(),
            count: 2
        }]
    );
    assert_eq!(
        s.by_severity,
        [Count {
            key: "HIGH".into(),
            count: 2
        }]
    );
    let c = &r.system_changes;
    assert_eq!(
        c.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [12, 77]
    );
    assert_eq!(c.by_action.len(), 2);
    assert!(!r.retention.available);
    assert_eq!(
        r.retention.status,
        "retention checks not available in this version"
    );
}

#[test]
fn top_users_are_the_ten_busiest() {
    let mut i = input(ok_integrity());
    i.user_days = (0..15)
        .map(|n| user_day(&format!("u{n:02}"), "2026-11-01", n + 1))
        .collect();
    let r = build_hipaa(i);
    let users: Vec<&str> = r
        .phi_access
        .top_users
        .iter()
        .map(|u| u.user.as_str())
        .collect();
    assert_eq!(users.len(), 10);
    assert_eq!((users[0], users[9]), ("u14", "u05"));
}

/// The CSV coordinates of every leaf of the JSON model, as `hipaa_csv` documents them.
fn expected_cells(json: &Value) -> BTreeMap<[String; 4], Value> {
    fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    leaves(x, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push((i + 1).to_string());
                    leaves(x, path, out);
                    path.pop();
                }
            }
            leaf => out.push((path.clone(), leaf.clone())),
        }
    }
    let mut all = Vec::new();
    leaves(json, &mut Vec::new(), &mut all);
    all.into_iter()
        .map(|(path, leaf)| {
            let (section, rest) = if json[&path[0]].is_object() {
                (path[0].clone(), &path[1..])
            } else {
                ("report".to_owned(), &path[..])
            };
            let coords = if rest.len() == 1 {
                [section, String::new(), rest[0].clone(), String::new()]
            } else {
                [
                    section,
                    rest[0].clone(),
                    rest[1].clone(),
                    rest[2..].join("."),
                ]
            };
            (coords, leaf)
        })
        .collect()
}

fn read_csv(text: &str) -> (Vec<String>, Vec<[String; 5]>) {
    let mut reader = ::csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.len(), 5, "{r:?}");
            std::array::from_fn(|i| r[i].to_owned())
        })
        .collect();
    (header, rows)
}

fn same_value(json: &Value, cell: &str) -> bool {
    match json {
        Value::Null => cell.is_empty(),
        Value::Bool(b) => cell == b.to_string(),
        Value::Number(n) => cell.parse::<f64>().ok() == n.as_f64(),
        Value::String(s) => cell == csv_rows::defuse(s),
        _ => false,
    }
}

#[test]
fn the_three_hipaa_formats_carry_the_same_numbers() {
    let cases = [
        (ok_integrity(), None),
        (failed_integrity(), None),
        (ok_integrity(), Some(retention_status())),
        (failed_integrity(), Some(retention_status())),
    ];
    for (integrity, retention) in cases {
        let with_retention = retention.is_some();
        let r = build_hipaa(HipaaInput {
            retention,
            ..input(integrity)
        });
        let json: Value = serde_json::from_str(&hipaa_json(&r)).unwrap();
        let (header, rows) = read_csv(&hipaa_csv(&r));
        assert_eq!(header, ["section", "table", "key", "subkey", "value"]);
        let expected = expected_cells(&json);
        assert_eq!(rows.len(), expected.len(), "one row per JSON value");
        for row in &rows {
            let coords = [0, 1, 2, 3].map(|i| row[i].clone());
            let want = expected
                .get(&coords)
                .unwrap_or_else(|| panic!("unexpected row {row:?}"));
            assert!(same_value(want, &row[4]), "{row:?} against {want}");
        }
        // Spot checks that the layout reads as documented.
        let find = |s: &str, t: &str, k: &str, sk: &str| {
            rows.iter()
                .find(|r| r[0] == s && r[1] == t && r[2] == k && r[3] == sk)
                .map(|r| r[4].clone())
        };
        assert_eq!(find("phi_access", "", "total", "").as_deref(), Some("172"));
        assert_eq!(
            find("phi_access", "per_day", "3", "count").as_deref(),
            Some("0")
        );
        assert_eq!(
            find("phi_access", "by_role", "1", "key").as_deref(),
            Some("nurse")
        );
        assert_eq!(
            find("integrity", "checkpoint", "size", "").as_deref(),
            Some("1200")
        );
        assert_eq!(
            find("phi_access", "unusual", "1", "peer_percentile").as_deref(),
            Some("22.5")
        );

        let html = hipaa_html(&r);
        let a = &r.access_summary;
        let p = &r.phi_access;
        for n in [
            a.events,
            a.logins,
            a.failed_logins,
            a.distinct_users,
            p.total,
            p.after_hours,
            p.exports,
        ]
        .into_iter()
        .chain(p.per_day.iter().map(|d| d.count))
        .chain(
            a.by_source
                .iter()
                .flat_map(|s| [s.events, s.logins, s.failed_logins]),
        )
        .chain(p.by_role.iter().map(|c| c.count))
        .chain(p.top_users.iter().map(|u| u.phi_accesses))
        .chain([
            r.security_events.blocks_issued,
            r.security_events.blocks_lifted,
        ]) {
            assert!(
                html.contains(&format!(">{n}</td>")),
                "{n} missing from the HTML"
            );
        }
        for d in &p.per_day {
            assert!(html.contains(&format!(
                "<title>{}: {} PHI accesses</title>",
                d.day, d.count
            )));
        }
        if with_retention {
            retention_agrees(&r, &json, &rows, &html);
        }
    }
}

/// The retention figures: the same in the JSON, the CSV (at the documented coordinates) and
/// the HTML.
fn retention_agrees(r: &HipaaReport, json: &Value, rows: &[[String; 5]], html: &str) {
    let d = &json["retention"]["detail"];
    assert_eq!(json["retention"]["available"], Value::Bool(true));
    assert_eq!(json["retention"]["status"], d["status"]);
    assert_eq!(r.retention.detail.as_ref(), Some(d));
    let csv = |table: &str, key: &str, subkey: &str| {
        rows.iter()
            .find(|r| r[0] == "retention" && r[1] == table && r[2] == key && r[3] == subkey)
            .map(|r| r[4].clone())
            .unwrap_or_else(|| panic!("no CSV row retention,{table},{key},{subkey}"))
    };
    assert_eq!(csv("", "available", ""), "true");
    assert!(csv("", "status", "").starts_with("VIOLATION: the latest retention check"));
    for key in [
        "holds_in_force",
        "holds_released_in_period",
        "checks_run",
        "checks_compliant",
        "purges_authorized",
        "purges_in_period",
        "payloads_authorized",
        "gaps_ended",
        "read_model_position",
    ] {
        let n = d[key].as_u64().unwrap();
        assert_eq!(csv("detail", key, ""), n.to_string(), "{key}");
        assert!(
            html.contains(&format!(">{n}</td>")),
            "{key} = {n} missing from the HTML"
        );
    }
    assert_eq!(csv("detail", "policy", "default_years"), "6");
    assert_eq!(csv("detail", "policy", "rules.2.years"), "10");
    assert_eq!(
        csv("detail", "policy", "rules.2.why"),
        "'=state schedule, <b>cited</b>"
    );
    assert_eq!(csv("detail", "holds", "1.seq"), "17");
    assert_eq!(csv("detail", "holds", "1.subject"), "k1:held-patient");
    assert_eq!(csv("detail", "holds", "2.subject"), "");
    assert_eq!(csv("detail", "latest_check", "seq"), "1180");
    assert_eq!(csv("detail", "latest_check", "findings.1"), "coverage_gap");
    assert_eq!(csv("detail", "checks", "3.ok"), "false");
    assert_eq!(csv("detail", "purges", "2.count"), "133");
    assert_eq!(csv("detail", "purges", "2.authorized_by"), "'-counsel");
    assert_eq!(csv("detail", "gaps", "1.minutes"), "190");

    // The HTML: every listed record, with its figures.
    for hold in d["holds"].as_array().unwrap() {
        assert!(html.contains(&format!(">{}</td>", hold["seq"])));
    }
    assert!(html.contains("<code>k1:held-patient</code>"));
    for check in d["checks"].as_array().unwrap() {
        for k in ["seq", "entries", "head"] {
            assert!(html.contains(&format!(">{}</td>", check[k])), "check {k}");
        }
    }
    for purge in d["purges"].as_array().unwrap() {
        for k in ["seq", "from", "to", "count"] {
            assert!(html.contains(&format!(">{}</td>", purge[k])), "purge {k}");
        }
        assert!(html.contains(purge["archive"].as_str().unwrap()));
    }
    let gap = &d["gaps"][0];
    assert!(html.contains(&format!(">{}</td>", gap["minutes"])));
    assert!(html.contains(&format!(">{}</td>", gap["resumed_seq"])));
    assert!(html.contains(">cgm-coverage</td>"));
    assert!(html.contains(">coverage_gap</td>"));
    assert!(html.contains("=state schedule, &lt;b&gt;cited&lt;/b&gt;"));
    assert!(html.contains("class=\"banner bad\">VIOLATION: the latest retention check"));
    assert!(!html.contains("Retention checks are not available"));
}

#[test]
fn hipaa_json_round_trips() {
    let r = build_hipaa(input(failed_integrity()));
    let back: HipaaReport = serde_json::from_str(&hipaa_json(&r)).unwrap();
    assert_eq!(back, r);
    let r = build_hipaa(HipaaInput {
        retention: Some(retention_status()),
        ..input(ok_integrity())
    });
    let back: HipaaReport = serde_json::from_str(&hipaa_json(&r)).unwrap();
    assert_eq!(back, r);
}

#[test]
fn the_retention_section_takes_the_status_line_and_says_when_it_is_missing() {
    let r = build_hipaa(HipaaInput {
        retention: Some(retention_status()),
        ..input(ok_integrity())
    });
    assert!(r.retention.available);
    assert_eq!(
        r.retention.status,
        retention_status()["status"].as_str().unwrap()
    );
    let html = hipaa_html(&build_hipaa(input(ok_integrity())));
    assert!(html.contains(
        "Retention checks are not available: retention checks not available in this version."
    ));
    // A status without checks, holds or purges renders its empty notes.
    let mut empty = retention_status();
    for list in ["holds", "checks", "purges", "gaps"] {
        empty[list] = Value::Array(vec![]);
    }
    empty["latest_check"] = Value::Null;
    empty["status"] = "NO CHECK: no retention check was recorded".into();
    let html = hipaa_html(&build_hipaa(HipaaInput {
        retention: Some(empty),
        ..input(ok_integrity())
    }));
    for note in [
        "No retention check was recorded before the end of the period.",
        "No legal hold in force.",
        "No retention check was recorded in this period.",
        "No purge authorization was recorded before the end of the period.",
        "No coverage gap ended in this period.",
    ] {
        assert!(html.contains(note), "{note}");
    }
    assert!(html.contains("class=\"banner warn\">NO CHECK"));
}

const EXTERNAL: [&str; 7] = [
    "http://", "https://", "src=", "<link", "url(", "@import", "//cdn",
];

#[test]
fn html_is_self_contained_escaped_and_has_a_chart() {
    let html = hipaa_html(&build_hipaa(input(ok_integrity())));
    for bad in EXTERNAL {
        assert!(!html.contains(bad), "{bad} in the HTML");
    }
    assert!(html.contains("<svg") && html.contains("</svg>"));
    assert!(html.contains("@media print"));
    assert!(html.contains("<table class=\"sortable\">"));
    // The only script is ours; the change's detail is shown, escaped.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;, &quot;quoted&quot;"));
    assert!(html.contains("cgm, &quot;coverage&quot;"));
    assert!(html.contains("The ledger verified over this period"));
    assert!(!html.contains("did NOT verify"));
}

#[test]
fn html_without_days_or_data_still_renders() {
    let mut i = input(ok_integrity());
    i.period.to = i.period.from.clone();
    i.days.clear();
    i.user_days.clear();
    i.flags.clear();
    i.changes.clear();
    i.security = SecurityInput::default();
    i.integrity.checkpoint = None;
    let html = hipaa_html(&build_hipaa(i));
    assert!(html.contains("No days in this period."));
    assert!(html.contains("The security projection was not available"));
    assert!(html.contains("No checkpoint anchors this verification"));
}

#[test]
fn a_failed_verification_warns_in_every_hipaa_format() {
    let r = build_hipaa(input(failed_integrity()));
    let warning = "The ledger did NOT verify over this period: link broken at seq 42 \
                   (prev_hash of 42 is not the entry hash of 41)";
    assert!(r.warning.as_deref().unwrap().starts_with(warning));
    let json: Value = serde_json::from_str(&hipaa_json(&r)).unwrap();
    assert!(json["warning"].as_str().unwrap().starts_with(warning));
    let (_, rows) = read_csv(&hipaa_csv(&r));
    assert_eq!(
        rows[0][..4],
        ["report", "", "warning", ""].map(String::from)
    );
    assert!(rows[0][4].starts_with(warning));
    let html = hipaa_html(&r);
    assert!(html.contains("class=\"banner bad\""));
    assert!(html.contains(warning));
    assert!(!html.contains("The ledger verified over this period"));
}

#[test]
fn hipaa_csv_round_trips_awkward_text() {
    let r = build_hipaa(input(ok_integrity()));
    let (_, rows) = read_csv(&hipaa_csv(&r));
    let details: Vec<&str> = rows
        .iter()
        .filter(|r| r[0] == "system_changes" && r[1] == "changes" && r[3] == "detail")
        .map(|r| r[4].as_str())
        .collect();
    assert_eq!(
        details,
        [
            "nurse -> charge nurse",
            "<script>alert(1)</script>, \"quoted\"\nsecond line"
        ]
    );
    assert!(rows
        .iter()
        .any(|r| r[0] == "access_summary" && r[4] == "cgm, \"coverage\""));
}

#[test]
fn csv_text_cannot_run_as_a_spreadsheet_formula() {
    let mut i = input(ok_integrity());
    i.changes = vec![change(5, "config_change", "=HYPERLINK(\"x\",\"y\")")];
    i.security.events[0].summary = "@SUM(1+1)".into();
    let (_, rows) = read_csv(&hipaa_csv(&build_hipaa(i)));
    let cell =
        |t: &str, sk: &str| rows.iter().find(|r| r[1] == t && r[3] == sk).unwrap()[4].clone();
    assert_eq!(cell("changes", "detail"), "'=HYPERLINK(\"x\",\"y\")");
    assert_eq!(cell("events", "summary"), "'@SUM(1+1)");
    assert_eq!(cell("changes", "seq"), "5");
}

fn disclosures(integrity: Integrity) -> DisclosureReport {
    let line = |seq: u64, legacy: bool, verified: bool| DisclosureLine {
        occurred_at: format!("2026-11-0{}T10:00:00.000000Z", seq % 9 + 1),
        user: Some("k1:nurse-7".into()),
        role: Some("nurse".into()),
        action: "read".into(),
        outcome: "success".into(),
        source: "ehr-web <b>".into(),
        resource_type: Some("Observation".into()),
        seq,
        entry_hash: format!("{seq:064x}"),
        legacy,
        verified,
    };
    DisclosureReport {
        generated_at: "2026-12-01T08:00:00Z".into(),
        stream: "default".into(),
        patient: "k1:0f0f".into(),
        legacy_pseudonym: "sha256:abab".into(),
        from: "2020-12-01".into(),
        to: "2026-12-02".into(),
        lines: vec![
            line(5, true, true),
            line(17, false, true),
            line(40, false, false),
        ],
        integrity,
        requested_by: Some("k1:privacy-officer".into()),
        request_seq: Some(1300),
    }
}

#[test]
fn disclosures_text_leads_with_integrity_and_lists_every_line() {
    let text = disclosures_text(&disclosures(ok_integrity()));
    assert!(
        // The statement carries its own verdict (VERIFIED / NOT VERIFIED).
        text.starts_with("Integrity: verified 1200 entries"),
        "{text}"
    );
    assert!(text.contains("Patient (pseudonym): k1:0f0f"));
    assert!(text.contains("Requested by:        k1:privacy-officer (request recorded at seq 1300)"));
    assert!(text.contains("3 accesses (1 through the legacy pseudonym, 1 not verified)"));
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("OCCURRED AT"))
        .collect();
    assert_eq!(table.len(), 4, "{text}");
    assert!(table[1].contains("legacy") && table[3].ends_with("NO"));
    // Hashes are shortened in the terminal only.
    assert!(table[2].contains(&format!("{}…", &format!("{:064x}", 17)[..16])));
    let failed = disclosures_text(&disclosures(failed_integrity()));
    assert!(failed.starts_with("WARNING: The ledger did NOT verify over this period: link broken"));
}

#[test]
fn disclosures_json_csv_and_html_carry_the_lines_and_the_warning() {
    for integrity in [ok_integrity(), failed_integrity()] {
        let failed = !integrity.ok;
        let r = disclosures(integrity);
        let json: Value = serde_json::from_str(&disclosures_json(&r)).unwrap();
        assert_eq!(json["warning"].is_string(), failed);
        let back: DisclosureReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r);

        let (_, rows) = read_csv(&disclosures_csv(&r));
        let expected = expected_cells(&json);
        assert_eq!(rows.len(), expected.len());
        for row in &rows {
            let want = &expected[&[0, 1, 2, 3].map(|i| row[i].clone())];
            assert!(same_value(want, &row[4]), "{row:?}");
        }
        let seqs: Vec<&str> = rows
            .iter()
            .filter(|r| r[..2] == ["report", "lines"] && r[3] == "seq")
            .map(|r| r[4].as_str())
            .collect();
        assert_eq!(seqs, ["5", "17", "40"]);
        assert_eq!(rows[0][2] == "warning" && !rows[0][4].is_empty(), failed);

        let html = disclosures_html(&r);
        for bad in EXTERNAL {
            assert!(!html.contains(bad), "{bad}");
        }
        assert!(html.contains("<table class=\"sortable\">"));
        assert!(html.contains("ehr-web &lt;b&gt;") && !html.contains("ehr-web <b>"));
        assert!(html.contains(&format!("{:064x}", 40)));
        assert_eq!(
            html.contains("The ledger did NOT verify over this period"),
            failed
        );
    }
}

#[test]
fn an_empty_accounting_says_so() {
    let mut r = disclosures(ok_integrity());
    r.lines.clear();
    assert!(disclosures_text(&r).contains("No access to this patient's PHI in this period."));
    assert!(disclosures_html(&r).contains("No access to this patient&#39;s PHI in this period."));
}
