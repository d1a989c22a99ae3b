//! Random mixed streams: a detector restored from a saved state goes on exactly as the
//! original, and evicting forgotten evidence never changes a detection of an event that is
//! within the out-of-order tolerance.

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;

/// 2026-11-23 (a Monday) 14:00 UTC = 09:00 in New York.
const T0: i64 = 1_795_442_400 * SECOND;

#[derive(Debug, Clone)]
enum Kind {
    Failed {
        ip: Option<u8>,
        user: Option<u8>,
        login_failed: bool,
    },
    Denied {
        user: u8,
        phi: bool,
    },
    Session {
        sid: u8,
        ip: Option<u8>,
        agent: Option<u8>,
        logout: bool,
    },
    Read {
        user: u8,
        patient: u8,
    },
    Export {
        records: u64,
    },
    Config {
        action: u8,
    },
}

#[derive(Debug, Clone)]
struct Step {
    /// How far the stream's clock moves on, in seconds.
    advance: i64,
    /// How far behind that clock this event is, in seconds.
    late: i64,
    kind: Kind,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => (prop::option::weighted(0.9, 0..3u8), prop::option::weighted(0.9, 0..6u8), any::<bool>())
            .prop_map(|(ip, user, login_failed)| Kind::Failed { ip, user, login_failed }),
        2 => (0..4u8, prop::bool::weighted(0.9)).prop_map(|(user, phi)| Kind::Denied { user, phi }),
        3 => (0..3u8, prop::option::weighted(0.9, 0..3u8), prop::option::weighted(0.9, 0..2u8), prop::bool::weighted(0.1))
            .prop_map(|(sid, ip, agent, logout)| Kind::Session { sid, ip, agent, logout }),
        4 => (0..3u8, 0..60u8).prop_map(|(user, patient)| Kind::Read { user, patient }),
        1 => (0..2_100u64).prop_map(|records| Kind::Export { records }),
        1 => (0..7u8).prop_map(|action| Kind::Config { action }),
    ]
}

fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![
        20 => 0..30i64,
        4 => 0..600i64,
        1 => 0..7_200i64,
        1 => 40_000..50_000i64,
    ]
}

/// Steps whose events are at most `max_late` seconds behind the stream's clock.
fn steps(len: std::ops::Range<usize>, max_late: i64) -> impl Strategy<Value = Vec<Step>> {
    let late = prop_oneof![3 => Just(0i64), 1 => 0..=max_late];
    prop::collection::vec(
        (advance(), late, kind()).prop_map(|(advance, late, kind)| Step {
            advance,
            late,
            kind,
        }),
        len,
    )
}

fn observations(start: i64, steps: &[Step]) -> Vec<Observation> {
    let mut clock = T0 + start * SECOND;
    let mut seq = 0;
    steps
        .iter()
        .map(|s| {
            clock += s.advance * SECOND;
            seq += 1;
            observation(seq, Timestamp(clock - s.late * SECOND), &s.kind)
        })
        .collect()
}

fn observation(seq: Seq, at: Timestamp, kind: &Kind) -> Observation {
    let mut o = Observation {
        seq,
        at,
        action: "read".into(),
        outcome: "success".into(),
        user: None,
        role: Some("nurse".into()),
        ip: None,
        session: None,
        user_agent: None,
        phi: false,
        patient: None,
        resource_type: None,
        records: None,
    };
    match *kind {
        Kind::Failed {
            ip,
            user,
            login_failed,
        } => {
            o.action = if login_failed {
                "login_failed"
            } else {
                "login"
            }
            .into();
            o.outcome = "failure".into();
            o.ip = ip.map(|i| format!("ip-{i}"));
            o.user = user.map(|u| format!("u{u}"));
        }
        Kind::Denied { user, phi } => {
            o.outcome = "denied".into();
            o.phi = phi;
            o.user = Some(format!("u{user}"));
        }
        Kind::Session {
            sid,
            ip,
            agent,
            logout,
        } => {
            if logout {
                o.action = "logout".into();
            }
            o.session = Some(format!("s{sid}"));
            o.ip = ip.map(|i| format!("ip-{i}"));
            o.user_agent = agent.map(|a| format!("ua-{a}"));
            o.user = Some(format!("u{sid}"));
        }
        Kind::Read { user, patient } => {
            o.action = "record_view".into();
            o.phi = true;
            o.user = Some(format!("u{user}"));
            o.patient = Some(format!("p{patient}"));
        }
        Kind::Export { records } => {
            o.action = "worklist_export".into();
            o.phi = true;
            o.user = Some("u0".into());
            o.records = Some(records);
        }
        Kind::Config { action } => {
            o.action = [
                "role_change",
                "rule_update",
                "config_change",
                "token_create",
                "token_revoke",
                "read",
                "login",
            ][action as usize]
                .into();
            o.user = Some("admin".into());
        }
    }
    o
}

/// Low thresholds and short windows, so random streams reach them, and sessions end.
fn tight() -> RulesConfig {
    let mut c = RulesConfig {
        tolerance_secs: 120,
        ..RulesConfig::default()
    };
    c.brute_force.failures = 4;
    c.brute_force.window_secs = 120;
    c.password_spraying.users = 3;
    c.password_spraying.window_secs = 180;
    c.account_attack.failures = 4;
    c.account_attack.ips = 2;
    c.account_attack.window_secs = 240;
    c.unauthorized_access.window_secs = 300;
    c.unauthorized_access.repeat_secs = 3_600;
    c.session_hijack.max_session_secs = 1_800;
    c.bulk_export.records = 1_000;
    c.bulk_export.patients = 6;
    c.bulk_export.window_secs = 600;
    c.after_hours_phi.cooldown_secs = 1_800;
    c
}

fn config(tight_config: bool) -> RulesConfig {
    if tight_config {
        tight()
    } else {
        RulesConfig::default()
    }
}

fn run(config: &RulesConfig, evict_every: u64, events: &[Observation]) -> Vec<Detection> {
    let mut d = Detector::new(config.clone()).evict_every(evict_every);
    events.iter().flat_map(|o| d.observe(o)).collect()
}

/// Saves and restores the detector before every `period`-th event; checks each saved state
/// decodes to what was saved and encodes to the same bytes again.
fn run_restarting(
    config: &RulesConfig,
    evict_every: u64,
    period: usize,
    events: &[Observation],
) -> Vec<Detection> {
    let mut d = Detector::new(config.clone()).evict_every(evict_every);
    let mut out = Vec::new();
    for (i, o) in events.iter().enumerate() {
        if i % period != 0 {
            out.extend(d.observe(o));
            continue;
        }
        let state = d.snapshot();
        let bytes = encode_state(&state);
        let decoded = decode_state(&bytes).expect("a saved state decodes");
        assert_eq!(decoded, state, "decode(encode(state)) == state");
        assert_eq!(encode_state(&decoded), bytes, "one encoding per state");
        d = Detector::restore(config.clone(), decoded).evict_every(evict_every);
        out.extend(d.observe(o));
    }
    out
}

/// Runs events `..k`, saves and restores the detector, runs events `k..`.
fn run_restarted_at(
    config: &RulesConfig,
    evict_every: u64,
    events: &[Observation],
    k: usize,
) -> Vec<Detection> {
    let mut d = Detector::new(config.clone()).evict_every(evict_every);
    let mut out: Vec<Detection> = events[..k].iter().flat_map(|o| d.observe(o)).collect();
    let bytes = encode_state(&d.snapshot());
    let mut d =
        Detector::restore(config.clone(), decode_state(&bytes).unwrap()).evict_every(evict_every);
    assert_eq!(d.observed(), k as u64);
    out.extend(events[k..].iter().flat_map(|o| d.observe(o)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_restored_detector_goes_on_as_the_original(
        steps in steps(1..400, 120),
        start in 0..7 * 86_400i64,
        tight_config in any::<bool>(),
        evict_every in prop_oneof![Just(0u64), 1..40u64, Just(EVICT_EVERY)],
        k in any::<prop::sample::Index>(),
    ) {
        let config = config(tight_config);
        let events = observations(start, &steps);
        let once = run(&config, evict_every, &events);
        prop_assert_eq!(&run_restarting(&config, evict_every, 1, &events), &once);
        let k = k.index(events.len() + 1);
        prop_assert_eq!(&run_restarted_at(&config, evict_every, &events, k), &once);
    }

    /// Events far more late than the tolerance: no panic, no detection that the evidence does
    /// not support, and a restore is still exact.
    #[test]
    fn very_late_events_are_harmless(
        steps in steps(1..300, 30_000),
        start in 0..7 * 86_400i64,
        tight_config in any::<bool>(),
        evict_every in 1..40u64,
    ) {
        let config = config(tight_config);
        let events = observations(start, &steps);
        let evicting = run(&config, evict_every, &events);
        prop_assert_eq!(&run_restarting(&config, evict_every, 1, &events), &evicting);
        for d in &evicting {
            let evidence: Vec<&Observation> = events
                .iter()
                .filter(|o| (d.first_seq..=d.last_seq).contains(&o.seq))
                .collect();
            prop_assert!(!evidence.is_empty());
            prop_assert!(d.window_from <= d.window_to);
            prop_assert!(d.evidence <= evidence.len());
        }
        // The rules without state see every event, however late.
        let stateless = |ds: &[Detection]| -> Vec<Detection> {
            ds.iter()
                .filter(|d| d.rule == Rule::ConfigurationChange
                    || (d.rule == Rule::BulkExport && d.evidence == 1))
                .cloned()
                .collect()
        };
        prop_assert_eq!(stateless(&evicting), stateless(&run(&config, 0, &events)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn eviction_does_not_change_detections_of_events_within_the_tolerance(
        steps in steps(1..400, 120),
        start in 0..7 * 86_400i64,
        tight_config in any::<bool>(),
        evict_every in 1..40u64,
    ) {
        let config = config(tight_config);
        let events = observations(start, &steps);
        let never = run(&config, 0, &events);
        prop_assert_eq!(&run(&config, 1, &events), &never);
        prop_assert_eq!(&run(&config, evict_every, &events), &never);
        prop_assert_eq!(&run(&config, EVICT_EVERY, &events), &never);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Longer than the default eviction interval, with restarts around it.
    #[test]
    fn restores_across_the_default_eviction(
        steps in steps(4_100..5_000, 120),
        tight_config in any::<bool>(),
    ) {
        let config = config(tight_config);
        let events = observations(0, &steps);
        let once = run(&config, EVICT_EVERY, &events);
        prop_assert_eq!(&run(&config, 0, &events), &once, "eviction is invisible");
        for k in [0, 1, 4_095, 4_096, 4_097, events.len()] {
            prop_assert_eq!(&run_restarted_at(&config, EVICT_EVERY, &events, k), &once);
        }
        prop_assert_eq!(&run_restarting(&config, EVICT_EVERY, 211, &events), &once);
    }
}

#[test]
fn random_streams_reach_every_rule() {
    // The generators above are only worth something if their streams trigger the rules.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let steps = steps(300..400, 120)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for tight_config in [false, true] {
            let events = observations(0, &steps);
            seen.extend(
                run(&config(tight_config), 0, &events)
                    .iter()
                    .map(|d| d.rule),
            );
        }
    }
    assert_eq!(seen.len(), 8, "rules seen: {seen:?}");
}

#[test]
fn bad_saved_states_are_refused() {
    let mut d = Detector::new(RulesConfig::default());
    let events = observations(
        0,
        &[Step {
            advance: 1,
            late: 0,
            kind: Kind::Failed {
                ip: Some(0),
                user: Some(0),
                login_failed: true,
            },
        }],
    );
    d.observe(&events[0]);
    let bytes = encode_state(&d.snapshot());
    assert_eq!(decode_state(&bytes).unwrap().observed(), 1);
    assert_eq!(
        decode_state(&bytes).unwrap().watermark(),
        Some(events[0].at)
    );
    assert_eq!(DetectorState::default().watermark(), None);
    assert!(matches!(
        decode_state(&bytes[..bytes.len() - 1]),
        Err(StateError::Cbor(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode_state(&longer),
        Err(StateError::Trailing(1))
    ));
    let mut other = Vec::new();
    ciborium::into_writer(&(STATE_VERSION + 1, d.snapshot()), &mut other).unwrap();
    assert!(matches!(
        decode_state(&other),
        Err(StateError::Version { found }) if found == STATE_VERSION + 1
    ));
    let mut wrong = Vec::new();
    ciborium::into_writer(&(STATE_VERSION, "not a state"), &mut wrong).unwrap();
    assert!(matches!(decode_state(&wrong), Err(StateError::Shape(_))));
    assert!(decode_state(b"").is_err());
}
