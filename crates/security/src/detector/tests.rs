//! Each rule driven with streams just under and just over its threshold.

use super::*;

const MIN: i64 = 60 * SECOND;
/// 2026-11-23 (a Monday) 14:00 UTC = 09:00 in New York.
const T0: i64 = 1_795_442_400 * SECOND;

fn obs(seq: Seq, at: i64, action: &str, outcome: &str) -> Observation {
    Observation {
        seq,
        at: Timestamp(at),
        action: action.into(),
        outcome: outcome.into(),
        user: Some("user-a".into()),
        role: Some("nurse".into()),
        ip: Some("ip-1".into()),
        session: None,
        user_agent: None,
        phi: false,
        patient: None,
        resource_type: None,
        records: None,
    }
}

fn run(events: &[Observation]) -> Vec<Detection> {
    run_with(RulesConfig::default(), events)
}

fn run_with(config: RulesConfig, events: &[Observation]) -> Vec<Detection> {
    let mut d = Detector::new(config);
    events.iter().flat_map(|o| d.observe(o)).collect()
}

fn rules(ds: &[Detection]) -> Vec<Rule> {
    ds.iter().map(|d| d.rule).collect()
}

fn failed_logins(
    n: usize,
    spacing: i64,
    user: impl Fn(usize) -> String,
    ip: impl Fn(usize) -> String,
) -> Vec<Observation> {
    (0..n)
        .map(|i| Observation {
            user: Some(user(i)),
            ip: Some(ip(i)),
            ..obs(i as u64, T0 + i as i64 * spacing, "login", "failure")
        })
        .collect()
}

#[test]
fn brute_force_at_five_failures_within_five_minutes() {
    let four = failed_logins(4, MIN, |_| "user-a".into(), |_| "ip-1".into());
    assert!(
        !rules(&run(&four)).contains(&Rule::BruteForce),
        "4 failures are not brute force"
    );
    let five = failed_logins(5, MIN, |_| "user-a".into(), |_| "ip-1".into());
    let ds = run(&five);
    let d = ds
        .iter()
        .find(|d| d.rule == Rule::BruteForce)
        .expect("5 failures within 4 minutes");
    assert_eq!(
        (d.severity, d.first_seq, d.last_seq, d.evidence),
        (Severity::High, 0, 4, 5)
    );
    let block = d.block.as_ref().expect("the IP is blocked");
    assert_eq!(
        (block.ip.as_str(), block.until),
        ("ip-1", Timestamp(T0 + 4 * MIN + 86_400 * SECOND))
    );
    // Five failures spread over 6 minutes are not.
    let slow = failed_logins(5, 90 * SECOND, |_| "user-a".into(), |_| "ip-1".into());
    assert!(!rules(&run(&slow)).contains(&Rule::BruteForce));
    // `login_failed` counts as well, and a burst of 30 is one detection.
    let burst: Vec<_> = (0..30)
        .map(|i| Observation {
            ip: Some("ip-9".into()),
            ..obs(i, T0 + i as i64 * SECOND, "login_failed", "failure")
        })
        .collect();
    assert_eq!(
        run(&burst)
            .iter()
            .filter(|d| d.rule == Rule::BruteForce)
            .count(),
        1
    );
}

#[test]
fn out_of_order_arrivals_within_the_tolerance_still_count() {
    let mut events = failed_logins(5, MIN, |_| "user-a".into(), |_| "ip-1".into());
    // Arrival (seq) order differs from time order: the earliest event arrives last.
    events.rotate_left(1);
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    let ds = run(&events);
    let d = ds
        .iter()
        .find(|d| d.rule == Rule::BruteForce)
        .expect("found once the late event arrives");
    assert_eq!(
        (d.window_from, d.window_to),
        (Timestamp(T0), Timestamp(T0 + 4 * MIN))
    );
    assert_eq!((d.first_seq, d.last_seq), (0, 4));
}

#[test]
fn password_spraying_counts_distinct_users() {
    let nine = failed_logins(9, 30 * SECOND, |i| format!("u{i}"), |_| "ip-2".into());
    assert!(!rules(&run(&nine)).contains(&Rule::PasswordSpraying));
    let ten = failed_logins(10, 30 * SECOND, |i| format!("u{i}"), |_| "ip-2".into());
    assert!(rules(&run(&ten)).contains(&Rule::PasswordSpraying));
    let same_user = failed_logins(12, 30 * SECOND, |_| "u0".into(), |_| "ip-2".into());
    assert!(!rules(&run(&same_user)).contains(&Rule::PasswordSpraying));
}

#[test]
fn account_attack_needs_ten_failures_from_three_ips() {
    let two_ips = failed_logins(10, MIN, |_| "victim".into(), |i| format!("ip-{}", i % 2));
    assert!(!rules(&run(&two_ips)).contains(&Rule::AccountAttack));
    let nine = failed_logins(9, MIN, |_| "victim".into(), |i| format!("ip-{}", i % 3));
    assert!(!rules(&run(&nine)).contains(&Rule::AccountAttack));
    let ten = failed_logins(10, MIN, |_| "victim".into(), |i| format!("ip-{}", i % 3));
    let ds = run(&ten);
    let d = ds
        .iter()
        .find(|d| d.rule == Rule::AccountAttack)
        .expect("10 from 3 IPs in 9 minutes");
    assert_eq!(d.severity, Severity::Medium);
    assert_eq!(d.subjects, vec![("user", "victim".to_string())]);
}

#[test]
fn unauthorized_access_and_its_repetition() {
    let denied = |seq: u64, at: i64| Observation {
        phi: true,
        ..obs(seq, at, "read", "denied")
    };
    assert!(
        run(&[denied(0, T0), denied(1, T0 + MIN)]).is_empty(),
        "2 refusals"
    );
    let ds = run(&[denied(0, T0), denied(1, T0 + MIN), denied(2, T0 + 2 * MIN)]);
    assert_eq!(
        ds.iter().map(|d| (d.rule, d.severity)).collect::<Vec<_>>(),
        [(Rule::UnauthorizedAccess, Severity::Medium)]
    );
    // A second burst an hour later is HIGH.
    let mut events: Vec<_> = (0..3).map(|i| denied(i, T0 + i as i64 * MIN)).collect();
    events.extend((3..6).map(|i| denied(i, T0 + 60 * MIN + i as i64 * MIN)));
    let severities: Vec<_> = run(&events).iter().map(|d| d.severity).collect();
    assert_eq!(severities, [Severity::Medium, Severity::High]);
    // Refusals of non-PHI requests do not count.
    let not_phi: Vec<_> = (0..5)
        .map(|i| obs(i, T0 + i as i64 * MIN, "read", "denied"))
        .collect();
    assert!(run(&not_phi).is_empty());
}

#[test]
fn a_session_from_a_second_ip_or_agent_is_hijacked() {
    let s = |seq: u64, ip: &str, ua: &str| Observation {
        session: Some("sess-1".into()),
        ip: Some(ip.into()),
        user_agent: Some(ua.into()),
        ..obs(seq, T0 + seq as i64 * MIN, "read", "success")
    };
    assert!(run(&[s(0, "ip-1", "ua"), s(1, "ip-1", "ua"), s(2, "ip-1", "ua")]).is_empty());
    let ds = run(&[s(0, "ip-1", "ua"), s(1, "ip-1", "ua"), s(2, "ip-2", "ua")]);
    assert_eq!(
        ds.iter().map(|d| (d.rule, d.severity)).collect::<Vec<_>>(),
        [(Rule::SessionHijack, Severity::Critical)]
    );
    assert_eq!((ds[0].first_seq, ds[0].last_seq), (0, 2));
    assert_eq!(
        rules(&run(&[s(0, "ip-1", "ua-1"), s(1, "ip-1", "ua-2")])),
        [Rule::SessionHijack]
    );
    // After logout the session id may be reused.
    let mut logout = s(1, "ip-1", "ua");
    logout.action = "logout".into();
    assert!(run(&[s(0, "ip-1", "ua"), logout, s(2, "ip-2", "ua")]).is_empty());
}

#[test]
fn bulk_export_by_records_or_by_distinct_patients() {
    let export = |records| Observation {
        records: Some(records),
        phi: true,
        ..obs(0, T0, "worklist_export", "success")
    };
    assert!(run(&[export(1000)]).is_empty());
    assert_eq!(rules(&run(&[export(1001)])), [Rule::BulkExport]);
    let reads = |n: usize, spacing: i64| -> Vec<Observation> {
        (0..n)
            .map(|i| Observation {
                phi: true,
                patient: Some(format!("p{i}")),
                ..obs(i as u64, T0 + i as i64 * spacing, "record_view", "success")
            })
            .collect()
    };
    assert!(run(&reads(49, MIN)).is_empty(), "49 patients");
    let ds = run(&reads(50, MIN));
    assert_eq!(rules(&ds), [Rule::BulkExport]);
    assert_eq!(ds[0].evidence, 50);
    assert!(
        run(&reads(50, 75 * SECOND)).is_empty(),
        "50 patients over 61 minutes"
    );
}

#[test]
fn configuration_changes_are_each_reported() {
    let ds = run(&[
        obs(0, T0, "role_change", "success"),
        obs(1, T0, "read", "success"),
        obs(2, T0, "token_revoke", "success"),
    ]);
    assert_eq!(
        ds.iter().map(|d| (d.rule, d.last_seq)).collect::<Vec<_>>(),
        [
            (Rule::ConfigurationChange, 0),
            (Rule::ConfigurationChange, 2)
        ]
    );
}

#[test]
fn after_hours_phi_in_the_site_time_zone() {
    let at = |utc_hour: i64, seq: u64| Observation {
        phi: true,
        ..obs(
            seq,
            T0 - 14 * 3600 * SECOND + utc_hour * 3600 * SECOND,
            "read",
            "success",
        )
    };
    // 14:00 UTC = 09:00 New York: working hours.
    assert!(run(&[at(14, 0)]).is_empty());
    // 03:00 UTC = 22:00 New York the evening before: after hours; the second read is quiet.
    let ds = run(&[at(3, 0), at(3, 1)]);
    assert_eq!(
        ds.iter().map(|d| (d.rule, d.severity)).collect::<Vec<_>>(),
        [(Rule::AfterHoursPhi, Severity::Low)]
    );
    let mut utc = RulesConfig::default();
    utc.after_hours_phi.timezone = "UTC".into();
    assert!(run_with(utc, &[at(14, 0)]).is_empty());
    let mut off = RulesConfig::default();
    off.after_hours_phi.enabled = false;
    assert!(run_with(off, &[at(3, 0)]).is_empty());
}

#[test]
fn replay_gives_the_same_detections_and_restarts_in_the_middle_do_not_change_them() {
    let mut events = failed_logins(
        40,
        20 * SECOND,
        |i| format!("u{}", i % 12),
        |i| format!("ip-{}", i % 2),
    );
    events.extend((40..120).map(|i| Observation {
        phi: true,
        patient: Some(format!("p{}", i % 70)),
        session: Some(format!("s{}", i % 3)),
        ip: Some(format!("ip-{}", i % 4)),
        ..obs(i, T0 + i as i64 * 30 * SECOND, "record_view", "success")
    }));
    let once = run(&events);
    assert!(!once.is_empty());
    assert_eq!(run(&events), once, "deterministic");
    // A projection that stops after k entries replays them into a fresh detector before going
    // on: the same detections, none twice.
    for k in [1, 17, 60, 119] {
        let mut before = Detector::new(RulesConfig::default());
        let mut got: Vec<Detection> = events[..k].iter().flat_map(|o| before.observe(o)).collect();
        let mut after = Detector::new(RulesConfig::default());
        for o in &events[..k] {
            after.observe(o);
        }
        got.extend(events[k..].iter().flat_map(|o| after.observe(o)));
        assert_eq!(got, once, "restart after {k}");
    }
}
