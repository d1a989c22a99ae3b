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

// Thresholds from the configured defaults, each just under and just over.

fn defaults() -> RulesConfig {
    RulesConfig::default()
}

fn count(ds: &[Detection], rule: Rule) -> usize {
    ds.iter().filter(|d| d.rule == rule).count()
}

/// `n` failed logins from one IP for one user, evenly spread so that the first and the last
/// are `span` apart.
fn failures_over(n: usize, span: i64) -> Vec<Observation> {
    let step = span / (n as i64 - 1);
    let mut v = failed_logins(n, step, |_| "user-a".into(), |_| "ip-1".into());
    v.last_mut().unwrap().at = Timestamp(T0 + span);
    v
}

#[test]
fn brute_force_thresholds() {
    let c = defaults().brute_force;
    let window = c.window_secs as i64 * SECOND;
    assert_eq!(
        count(&run(&failures_over(c.failures - 1, 0)), Rule::BruteForce),
        0
    );
    assert_eq!(
        count(&run(&failures_over(c.failures, window)), Rule::BruteForce),
        1,
        "exactly the window"
    );
    assert_eq!(
        count(
            &run(&failures_over(c.failures, window + 1)),
            Rule::BruteForce
        ),
        0,
        "just over it"
    );
    // Failures that name no user count as well (the IP is what is attacked from).
    let anonymous: Vec<_> = failures_over(c.failures, MIN)
        .into_iter()
        .map(|o| Observation { user: None, ..o })
        .collect();
    assert_eq!(count(&run(&anonymous), Rule::BruteForce), 1);
    // Failures from no IP are no brute force (nothing to block).
    let no_ip: Vec<_> = failures_over(2 * c.failures, MIN)
        .into_iter()
        .map(|o| Observation { ip: None, ..o })
        .collect();
    assert_eq!(count(&run(&no_ip), Rule::BruteForce), 0);
    // A failure on another IP does not add up.
    let mut two_ips = failures_over(c.failures, MIN);
    two_ips[2].ip = Some("ip-2".into());
    assert_eq!(count(&run(&two_ips), Rule::BruteForce), 0);
}

#[test]
fn password_spraying_thresholds() {
    let c = defaults().password_spraying;
    let window = c.window_secs as i64 * SECOND;
    let spray = |users: usize, span: i64| {
        let step = span / (users as i64 - 1);
        let mut v = failed_logins(users, step, |i| format!("u{i}"), |_| "ip-2".into());
        v.last_mut().unwrap().at = Timestamp(T0 + span);
        v
    };
    assert_eq!(
        count(&run(&spray(c.users - 1, window)), Rule::PasswordSpraying),
        0
    );
    assert_eq!(
        count(&run(&spray(c.users, window)), Rule::PasswordSpraying),
        1
    );
    assert_eq!(
        count(&run(&spray(c.users, window + 1)), Rule::PasswordSpraying),
        0,
        "over the window"
    );
    // Failures that name no user are not one more user.
    let mut unnamed = spray(c.users - 1, MIN);
    let n = unnamed.len() as u64;
    unnamed.extend((0..3).map(|i| Observation {
        user: None,
        ..obs(n + i, T0 + (n + i) as i64 * SECOND, "login", "failure")
    }));
    let ds = run(&unnamed);
    assert_eq!(count(&ds, Rule::PasswordSpraying), 0, "{ds:?}");
}

#[test]
fn account_attack_thresholds() {
    let c = defaults().account_attack;
    let window = c.window_secs as i64 * SECOND;
    let attack = |n: usize, ips: usize, span: i64| {
        let step = span / (n as i64 - 1);
        let mut v = failed_logins(n, step, |_| "victim".into(), |i| format!("ip-{}", i % ips));
        v.last_mut().unwrap().at = Timestamp(T0 + span);
        v
    };
    assert_eq!(
        count(
            &run(&attack(c.failures, c.ips - 1, MIN)),
            Rule::AccountAttack
        ),
        0,
        "too few IPs"
    );
    assert_eq!(
        count(
            &run(&attack(c.failures - 1, c.ips, MIN)),
            Rule::AccountAttack
        ),
        0,
        "too few failures"
    );
    assert_eq!(
        count(
            &run(&attack(c.failures, c.ips, window)),
            Rule::AccountAttack
        ),
        1
    );
    assert_eq!(
        count(
            &run(&attack(c.failures, c.ips, window + 1)),
            Rule::AccountAttack
        ),
        0,
        "over the window"
    );
    // Failures with no IP are not one more IP.
    let mut unknown_ip = attack(c.failures, c.ips - 1, MIN);
    unknown_ip[0].ip = None;
    unknown_ip[1].ip = None;
    assert_eq!(count(&run(&unknown_ip), Rule::AccountAttack), 0);
}

#[test]
fn unauthorized_access_thresholds() {
    let c = defaults().unauthorized_access;
    let window = c.window_secs as i64 * SECOND;
    let denied = |seq: u64, at: i64| Observation {
        phi: true,
        ..obs(seq, at, "read", "denied")
    };
    let burst = |first: u64, start: i64, n: usize, span: i64| -> Vec<Observation> {
        let step = span / (n as i64 - 1);
        (0..n)
            .map(|i| denied(first + i as u64, start + i as i64 * step))
            .collect()
    };
    assert!(run(&burst(0, T0, c.denials - 1, MIN)).is_empty());
    let ds = run(&burst(0, T0, c.denials, window));
    assert_eq!(
        ds.iter().map(|d| (d.rule, d.severity)).collect::<Vec<_>>(),
        [(Rule::UnauthorizedAccess, Severity::Medium)]
    );
    let mut slow = burst(0, T0, c.denials, window);
    slow.last_mut().unwrap().at = Timestamp(T0 + window + 1);
    assert!(run(&slow).is_empty(), "over the window");
    // Repeated within `repeat_secs` of the first: HIGH; later than that: MEDIUM again.
    let repeat = c.repeat_secs as i64 * SECOND;
    let twice = |gap: i64| {
        let mut v = burst(0, T0, c.denials, MIN);
        let end = v.last().unwrap().at.0;
        v.extend(burst(c.denials as u64, end + gap, c.denials, MIN));
        run(&v).iter().map(|d| d.severity).collect::<Vec<_>>()
    };
    assert_eq!(twice(repeat), [Severity::Medium, Severity::High]);
    assert_eq!(twice(repeat + 1), [Severity::Medium, Severity::Medium]);
    // Continuous refusals: one detection per window, not one per refusal.
    let steady: Vec<_> = (0..30).map(|i| denied(i, T0 + i as i64 * MIN)).collect();
    let ds = run(&steady);
    assert!((2..=3).contains(&ds.len()), "{ds:?}");
    // Refusals with no user cannot be attributed.
    let nobody: Vec<_> = burst(0, T0, c.denials, MIN)
        .into_iter()
        .map(|o| Observation { user: None, ..o })
        .collect();
    assert!(run(&nobody).is_empty());
}

fn in_session(seq: u64, at: i64, sid: &str, ip: &str, ua: &str) -> Observation {
    Observation {
        session: Some(sid.into()),
        ip: Some(ip.into()),
        user_agent: Some(ua.into()),
        ..obs(seq, at, "read", "success")
    }
}

#[test]
fn session_hijack_thresholds() {
    let life = defaults().session_hijack.max_session_secs as i64 * SECOND;
    let s = |seq: u64, at: i64, ip: &str, ua: &str| in_session(seq, at, "sess-1", ip, ua);
    assert!(run(&[s(0, T0, "ip-1", "ua"), s(1, T0 + MIN, "ip-1", "ua")]).is_empty());
    assert_eq!(
        rules(&run(&[
            s(0, T0, "ip-1", "ua"),
            s(1, T0 + MIN, "ip-2", "ua")
        ])),
        [Rule::SessionHijack],
        "a second IP"
    );
    assert_eq!(
        rules(&run(&[
            s(0, T0, "ip-1", "ua"),
            s(1, T0 + MIN, "ip-1", "ua-2")
        ])),
        [Rule::SessionHijack],
        "a second agent"
    );
    assert_eq!(
        run(&[s(0, T0, "ip-1", "ua"), s(1, T0 + MIN, "ip-2", "ua-2")]).len(),
        1,
        "both at once: one detection"
    );
    // Within its lifetime of the last use, the session is the same; past it, a new one.
    assert_eq!(
        rules(&run(&[
            s(0, T0, "ip-1", "ua"),
            s(1, T0 + life, "ip-2", "ua")
        ])),
        [Rule::SessionHijack]
    );
    assert!(run(&[s(0, T0, "ip-1", "ua"), s(1, T0 + life + 1, "ip-2", "ua")]).is_empty());
    // Each use extends it.
    let kept_alive = [
        s(0, T0, "ip-1", "ua"),
        s(1, T0 + life, "ip-1", "ua"),
        s(2, T0 + 2 * life, "ip-2", "ua"),
    ];
    assert_eq!(rules(&run(&kept_alive)), [Rule::SessionHijack]);
    // One detection per new IP: going back and forth is not new.
    let ds = run(&[
        s(0, T0, "ip-1", "ua"),
        s(1, T0 + MIN, "ip-2", "ua"),
        s(2, T0 + 2 * MIN, "ip-1", "ua"),
        s(3, T0 + 3 * MIN, "ip-2", "ua"),
        s(4, T0 + 4 * MIN, "ip-3", "ua"),
    ]);
    assert_eq!(
        ds.iter().map(|d| d.last_seq).collect::<Vec<_>>(),
        [1, 4],
        "ip-2 once, ip-3 once"
    );
    // A session id used again after a logout is a new session: taking it over again is
    // detected again.
    let mut logout = s(2, T0 + 2 * MIN, "ip-1", "ua");
    logout.action = "logout".into();
    let ds = run(&[
        s(0, T0, "ip-1", "ua"),
        s(1, T0 + MIN, "ip-2", "ua"),
        logout,
        s(3, T0 + 3 * MIN, "ip-1", "ua"),
        s(4, T0 + 4 * MIN, "ip-2", "ua"),
    ]);
    assert_eq!(ds.iter().map(|d| d.last_seq).collect::<Vec<_>>(), [1, 4]);
    // Events without IP or agent tell nothing.
    let mut bare = s(1, T0 + MIN, "ip-1", "ua");
    bare.ip = None;
    bare.user_agent = None;
    assert!(run(&[s(0, T0, "ip-1", "ua"), bare]).is_empty());
}

#[test]
fn bulk_export_thresholds() {
    let c = defaults().bulk_export;
    let export = |action: &str, records| Observation {
        records: Some(records),
        phi: true,
        ..obs(0, T0, action, "success")
    };
    assert!(run(&[export("export", c.records)]).is_empty());
    assert_eq!(
        rules(&run(&[export("export", c.records + 1)])),
        [Rule::BulkExport]
    );
    assert_eq!(
        rules(&run(&[export("patient_export", c.records + 1)])),
        [Rule::BulkExport]
    );
    assert!(
        run(&[export("read", c.records + 1)]).is_empty(),
        "not an export"
    );
    let window = c.window_secs as i64 * SECOND;
    let reads = |patients: usize, n: usize, span: i64| -> Vec<Observation> {
        let step = span / (n as i64 - 1);
        (0..n)
            .map(|i| Observation {
                phi: true,
                patient: Some(format!("p{}", i % patients)),
                ..obs(i as u64, T0 + i as i64 * step, "record_view", "success")
            })
            .collect()
    };
    assert!(run(&reads(c.patients - 1, c.patients - 1, window)).is_empty());
    assert!(
        run(&reads(c.patients - 1, 3 * c.patients, window)).is_empty(),
        "reading the same patients again"
    );
    let ds = run(&reads(c.patients, c.patients, window));
    assert_eq!(rules(&ds), [Rule::BulkExport]);
    assert_eq!(
        (ds[0].evidence, ds[0].severity),
        (c.patients, Severity::High)
    );
    let mut slow = reads(c.patients, c.patients, window);
    slow.last_mut().unwrap().at = Timestamp(T0 + window + 1);
    assert!(run(&slow).is_empty(), "over the window");
    // Refused reads are not reads.
    let denied: Vec<_> = reads(c.patients, c.patients, MIN)
        .into_iter()
        .map(|o| Observation {
            outcome: "denied".into(),
            user: Some("user-b".into()),
            ..o
        })
        .collect();
    assert_eq!(count(&run(&denied), Rule::BulkExport), 0);
}

#[test]
fn configuration_change_thresholds() {
    let c = defaults().configuration_change;
    for (i, action) in c.actions.iter().enumerate() {
        let ds = run(&[obs(i as u64, T0, action, "success")]);
        assert_eq!(
            ds.iter().map(|d| (d.rule, d.severity)).collect::<Vec<_>>(),
            [(Rule::ConfigurationChange, Severity::Medium)],
            "{action}"
        );
    }
    for unrelated in ["read", "login", "role_changed", "config", "export"] {
        assert!(
            run(&[obs(0, T0, unrelated, "success")]).is_empty(),
            "{unrelated}"
        );
    }
    // A refused attempt is reported too.
    assert_eq!(
        rules(&run(&[obs(0, T0, "role_change", "denied")])),
        [Rule::ConfigurationChange]
    );
    let mut off = defaults();
    off.configuration_change.enabled = false;
    assert!(run_with(off, &[obs(0, T0, "role_change", "success")]).is_empty());
}

#[test]
fn after_hours_phi_thresholds() {
    let c = defaults().after_hours_phi;
    let tz: Tz = c.timezone.parse().unwrap();
    // Site time -> event time.
    let site = |(y, mo, d): (i32, u32, u32), h: u32, mi: u32, s: u32| -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp_micros()
    };
    let read_at = |at: i64| Observation {
        phi: true,
        ..obs(0, at, "read", "success")
    };
    let flagged = |config: RulesConfig, at: i64| !run_with(config, &[read_at(at)]).is_empty();
    // A Monday in winter (UTC-5) and one in summer (UTC-4).
    for day in [(2026, 11, 23), (2026, 7, 6)] {
        assert!(
            flagged(defaults(), site(day, c.start_hour - 1, 59, 59)),
            "{day:?} just before start"
        );
        assert!(
            !flagged(defaults(), site(day, c.start_hour, 0, 0)),
            "{day:?} at start"
        );
        assert!(
            !flagged(defaults(), site(day, c.end_hour - 1, 59, 59)),
            "{day:?} just before end"
        );
        assert!(
            flagged(defaults(), site(day, c.end_hour, 0, 0)),
            "{day:?} at end"
        );
    }
    // The weekend, in site time: Saturday 10:00 and Sunday 10:00; Friday 23:30 site time is
    // already Saturday in UTC but still a (late) weekday.
    let mut all_week = defaults();
    all_week.after_hours_phi.weekdays_only = false;
    for day in [(2026, 11, 28), (2026, 11, 29)] {
        assert!(flagged(defaults(), site(day, 10, 0, 0)), "{day:?}");
        assert!(
            !flagged(all_week.clone(), site(day, 10, 0, 0)),
            "{day:?} all week"
        );
    }
    assert!(flagged(all_week.clone(), site((2026, 11, 27), 23, 30, 0)));
    // Only successful PHI access.
    let night = site((2026, 11, 23), 23, 0, 0);
    assert!(run(&[Observation {
        phi: false,
        ..read_at(night)
    }])
    .is_empty());
    assert!(run(&[Observation {
        outcome: "denied".into(),
        ..read_at(night)
    }])
    .iter()
    .all(|d| d.rule != Rule::AfterHoursPhi));
    // One per user per cooldown (on a Saturday, so that all of it is outside working hours).
    let cooldown = c.cooldown_secs as i64 * SECOND;
    let night = site((2026, 11, 28), 1, 0, 0);
    let ds = run(&[
        Observation {
            seq: 0,
            ..read_at(night)
        },
        Observation {
            seq: 1,
            ..read_at(night + cooldown)
        },
        Observation {
            seq: 2,
            ..read_at(night + cooldown + 1)
        },
        Observation {
            seq: 3,
            user: Some("user-b".into()),
            ..read_at(night + 1)
        },
    ]);
    assert_eq!(ds.iter().map(|d| d.last_seq).collect::<Vec<_>>(), [0, 2, 3]);
}

// Out of time order.

#[test]
fn late_events_within_the_tolerance_count_even_after_eviction() {
    let c = defaults();
    let tolerance = c.tolerance_secs as i64 * SECOND;
    // A burst detected once; the quiet period after it ends at the last failure + window.
    let mut events = failed_logins(9, MIN, |_| "user-a".into(), |_| "ip-1".into());
    let detected_at = T0 + (c.brute_force.failures as i64 - 1) * MIN;
    let quiet_end = detected_at + c.brute_force.window_secs as i64 * SECOND;
    // The clock passes the end of the quiet period...
    events.push(obs(9, quiet_end + tolerance / 2, "read", "success"));
    // ...and a failure from within it arrives late, but within the tolerance: still quiet,
    // whether or not eviction ran in between.
    events.push(Observation {
        seq: 10,
        ..failed_logins(1, 0, |_| "user-a".into(), |_| "ip-1".into())[0].clone()
    });
    events[10].at = Timestamp(quiet_end);
    for evict_every in [0, 1] {
        let mut d = Detector::new(c.clone()).evict_every(evict_every);
        let ds: Vec<_> = events.iter().flat_map(|o| d.observe(o)).collect();
        assert_eq!(count(&ds, Rule::BruteForce), 1, "evict every {evict_every}");
    }
    // A session used again late, within the tolerance and its lifetime, from another IP.
    let life = c.session_hijack.max_session_secs as i64 * SECOND;
    let events = [
        in_session(0, T0, "sess-1", "ip-1", "ua"),
        obs(1, T0 + life + tolerance / 2, "read", "success"),
        in_session(2, T0 + life, "sess-1", "ip-2", "ua"),
    ];
    for evict_every in [0, 1] {
        let mut d = Detector::new(c.clone()).evict_every(evict_every);
        let ds: Vec<_> = events.iter().flat_map(|o| d.observe(o)).collect();
        assert_eq!(
            rules(&ds),
            [Rule::SessionHijack],
            "evict every {evict_every}"
        );
    }
}

#[test]
fn events_later_than_the_tolerance_after_eviction_detect_nothing_twice() {
    let c = defaults();
    let mut events = failed_logins(10, 10 * SECOND, |_| "user-a".into(), |_| "ip-1".into());
    // Much later, the clock is far ahead and eviction runs.
    events.push(obs(10, T0 + 3 * 3600 * SECOND, "read", "success"));
    // The same burst again, replayed hours late (and with new seqs).
    events.extend(
        failed_logins(10, 10 * SECOND, |_| "user-a".into(), |_| "ip-1".into())
            .into_iter()
            .map(|o| Observation {
                seq: o.seq + 11,
                ..o
            }),
    );
    // A configuration change that late is reported all the same.
    events.push(obs(21, T0, "role_change", "success"));
    // Eviction runs after the clock moved on, and again at the end.
    assert_eq!(events.len(), 22);
    let mut d = Detector::new(c.clone()).evict_every(11);
    let ds: Vec<_> = events.iter().flat_map(|o| d.observe(o)).collect();
    assert_eq!(
        rules(&ds),
        [Rule::BruteForce, Rule::ConfigurationChange],
        "{ds:?}"
    );
    // Evicted down to nothing about the old burst.
    let s = d.snapshot();
    assert!(s.failed_by_ip.is_empty() && s.failed_by_user.is_empty());
    assert!(s.quiet_until.is_empty());
}

#[test]
fn eviction_forgets_what_no_rule_can_use() {
    let c = defaults();
    let life = c.session_hijack.max_session_secs as i64 * SECOND;
    let denied = |seq: u64, at: i64| Observation {
        phi: true,
        ..obs(seq, at, "read", "denied")
    };
    let mut events = vec![
        in_session(0, T0, "sess-1", "ip-1", "ua"),
        in_session(1, T0 + MIN, "sess-1", "ip-2", "ua"),
    ];
    events.extend((2..5).map(|i| denied(i, T0 + i as i64 * MIN)));
    events.extend(
        failed_logins(5, SECOND, |_| "user-a".into(), |_| "ip-1".into())
            .into_iter()
            .map(|o| Observation {
                seq: o.seq + 5,
                ..o
            }),
    );
    let mut d = Detector::new(c.clone()).evict_every(1);
    let ds: Vec<_> = events.iter().flat_map(|o| d.observe(o)).collect();
    assert_eq!(
        rules(&ds),
        [
            Rule::SessionHijack,
            Rule::UnauthorizedAccess,
            Rule::BruteForce
        ]
    );
    let s = d.snapshot();
    assert!(!s.sessions.is_empty() && !s.quiet_until.is_empty() && !s.last_unauthorized.is_empty());
    // Two session lifetimes and the repetition period later, nothing is left.
    let later =
        T0 + 2 * life + c.unauthorized_access.repeat_secs as i64 * SECOND + 3 * 3600 * SECOND;
    d.observe(&obs(20, later, "read", "success"));
    assert_eq!(
        d.snapshot(),
        DetectorState {
            watermark: Timestamp(later),
            observed: 11,
            forgotten: d.state().forgotten,
            ..DetectorState::default()
        }
    );
    assert_eq!(d.observed(), 11);
}

#[test]
fn extreme_times_and_durations_do_not_panic() {
    let mut c = defaults();
    c.brute_force.window_secs = u64::MAX;
    c.brute_force.block_secs = u64::MAX;
    c.after_hours_phi.cooldown_secs = u64::MAX;
    c.session_hijack.max_session_secs = u64::MAX;
    c.unauthorized_access.repeat_secs = u64::MAX;
    c.tolerance_secs = u64::MAX;
    for config in [defaults(), c] {
        for evict_every in [0, 1] {
            let mut d = Detector::new(config.clone()).evict_every(evict_every);
            for (i, at) in [i64::MIN, 0, i64::MAX, i64::MIN + 1, i64::MAX - 1, 0]
                .into_iter()
                .enumerate()
            {
                for (j, action) in ["login", "role_change", "read", "export"]
                    .iter()
                    .enumerate()
                {
                    let o = Observation {
                        phi: true,
                        patient: Some("p".into()),
                        session: Some("s".into()),
                        records: Some(u64::MAX),
                        ip: Some(format!("ip-{}", i % 2)),
                        ..obs(
                            (i * 4 + j) as u64,
                            at,
                            action,
                            if j == 0 { "failure" } else { "success" },
                        )
                    };
                    d.observe(&o);
                    let mut denied = o.clone();
                    denied.outcome = "denied".into();
                    d.observe(&denied);
                }
            }
            let bytes = encode_state(&d.snapshot());
            assert_eq!(decode_state(&bytes).unwrap(), d.snapshot());
        }
    }
}
