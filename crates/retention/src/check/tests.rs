//! Each violation from hand-built verification reports, holds and coverage rows, and a clean
//! pass, under a six-year policy evaluated on 2026-11-29.

use ledger::record::{HoldScope, PurgeAuthorization};

use super::*;
use crate::config::{Policy, Rule};
use crate::holds::Release;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("a valid RFC 3339 time")
}

fn as_of() -> Timestamp {
    ts("2026-11-29T00:00:00Z")
}

fn intact() -> VerifyReport {
    VerifyReport {
        ok: true,
        stream: StreamId::default(),
        entries: 10_000,
        head_seq: Some(9_999),
        head_hash: Some(Digest([7; 32])),
        first_bad_seq: None,
        problem: None,
        detail: None,
        checkpoint_size: None,
        checkpoints_verified: 2,
        payloads_purged: 0,
        purges: Vec::new(),
    }
}

fn damaged(problem: Problem, seq: Seq, detail: &str) -> VerifyReport {
    VerifyReport {
        ok: false,
        first_bad_seq: Some(seq),
        problem: Some(problem),
        detail: Some(detail.to_owned()),
        ..intact()
    }
}

/// An authorization at entry 9000, recorded 2026-11-01, of 500 payloads of entries 1..=600
/// recorded in 2019 and 2020 under the default rule, naming `holds`.
fn tally(holds: Vec<Seq>) -> PurgeTally {
    PurgeTally {
        seq: 9_000,
        recorded_at: ts("2026-11-01T00:00:00Z"),
        authorization: PurgeAuthorization {
            to: 600,
            from: 1,
            count: 500,
            holds,
            rules: vec![PurgedRule {
                rule: "default".into(),
                count: 500,
                years: 6,
                newest: ts("2020-06-30T00:00:00Z").0,
            }],
            ranges: vec![(1, 500)],
            archive: "ab".repeat(32),
            archive_size: 601,
            authorized_by: "privacy officer, ticket 42".into(),
        },
        purged: 500,
        newest_purged: Some(ts("2020-06-30T00:00:00Z")),
        oldest_purged: Some(ts("2019-01-02T00:00:00Z")),
    }
}

fn with_purge(t: PurgeTally) -> VerifyReport {
    VerifyReport {
        payloads_purged: t.purged,
        purges: vec![t],
        ..intact()
    }
}

fn hold(seq: Seq, scope: HoldScope) -> Hold {
    Hold {
        seq,
        added_at: ts("2025-01-01T00:00:00Z"),
        scope,
        subject: matches!(scope, HoldScope::Patient | HoldScope::User).then(|| "k1:ab".into()),
        from: None,
        to: None,
        reason: "litigation".into(),
        released: None,
    }
}

struct Case {
    config: RetentionConfig,
    verify: VerifyReport,
    holds: HoldSet,
    gaps: Vec<Gap>,
    sources: Vec<SourceRow>,
}

impl Case {
    fn new(verify: VerifyReport) -> Case {
        Case {
            config: RetentionConfig::default(),
            verify,
            holds: HoldSet::default(),
            gaps: Vec::new(),
            sources: Vec::new(),
        }
    }

    fn report(&self) -> CheckReport {
        evaluate(&CheckInput {
            as_of: as_of(),
            config: &self.config,
            verify: &self.verify,
            holds: &self.holds,
            gaps: &self.gaps,
            sources: &self.sources,
        })
    }

    fn kinds(&self) -> Vec<(ViolationKind, Option<Seq>)> {
        self.report()
            .violations
            .iter()
            .map(|v| (v.kind, v.seq))
            .collect()
    }
}

fn source(name: &str, last_seen: Timestamp, regular: bool) -> SourceRow {
    SourceRow {
        source: name.into(),
        last_seen,
        last_seq: 9_998,
        hours: if regular { 24 } else { 8 },
        regular,
    }
}

#[test]
fn a_clean_ledger_is_compliant() {
    let mut case = Case::new(with_purge(tally(vec![])));
    case.sources = vec![
        source("ehr", ts("2026-11-28T23:30:00Z"), true),
        // Not regular: its silence is no outage.
        source("clinic", ts("2026-11-27T18:00:00Z"), false),
        // Regular, but silent for longer than the window: decommissioned long ago.
        source("old", ts("2026-09-01T00:00:00Z"), true),
    ];
    case.gaps = vec![Gap {
        source: "ehr".into(),
        from: ts("2026-09-01T00:00:00Z"),
        to: ts("2026-09-01T05:00:00Z"),
        minutes: 300,
        last_seq: 10,
        resumed_seq: 11,
        hours_before: 24,
    }];
    let r = case.report();
    assert!(r.ok, "{r:#?}");
    assert!(r.violations.is_empty() && r.coverage_gaps.is_empty());
    assert_eq!(r.payloads_purged, 500);
    assert_eq!(r.purges.len(), 1);
    assert_eq!(r.purges[0].purged, 500);
    assert!(r.warnings.is_empty());
    assert_eq!(r.policy_digest, RetentionConfig::default().policy_digest());
    let text = r.text();
    assert!(
        text.starts_with("COMPLIANT: stream default as of 2026-11-29T00:00:00"),
        "{text}"
    );
    assert!(
        text.contains("500 of 500 authorized in entries 1..=600"),
        "{text}"
    );
    let record = r.record();
    assert_eq!(
        (record.ok, record.head, record.entries, record.violations),
        (true, Some(9_999), 10_000, 0)
    );
    assert_eq!(record.as_of, as_of().0);
    assert!(record.findings.is_empty());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["as_of"], "2026-11-29T00:00:00.000000Z");
    assert_eq!(json["ok"], true);
}

#[test]
fn chain_damage_is_named_by_kind() {
    for (problem, kind) in [
        (Problem::Gap, ViolationKind::EntryMissing),
        (Problem::PayloadMissing, ViolationKind::PayloadMissing),
        (Problem::Truncated, ViolationKind::Rollback),
        (Problem::Rewritten, ViolationKind::Rollback),
        (Problem::LinkBroken, ViolationKind::ChainDamaged),
        (Problem::PayloadModified, ViolationKind::ChainDamaged),
    ] {
        let case = Case::new(damaged(problem, 77, "entry 77 is missing"));
        let r = case.report();
        assert!(!r.ok);
        assert_eq!(case.kinds(), [(kind, Some(77))], "{problem:?}");
        assert!(r.violations[0].detail.contains(problem.as_str()));
        assert!(r.violations[0].detail.contains("entry 77 is missing"));
        let text = r.text();
        assert!(text.starts_with("VIOLATION"), "{text}");
        assert!(
            text.contains(&format!("  - {} (entry 77): ", kind.as_str())),
            "{text}"
        );
        assert_eq!(r.record().findings, [kind.as_str()]);
    }
    let mut truncated = damaged(
        Problem::Truncated,
        9_000,
        "entries 9000 to 9999 were deleted",
    );
    truncated.checkpoint_size = Some(10_000);
    let r = Case::new(truncated).report();
    assert!(r.violations[0].detail.contains("checkpoint of size 10000"));
}

#[test]
fn a_purge_inside_the_horizon() {
    // Purged entries recorded in 2021: less than six years before the authorization.
    let mut t = tally(vec![]);
    t.newest_purged = Some(ts("2021-06-30T00:00:00Z"));
    t.authorization.rules[0].newest = ts("2021-06-30T00:00:00Z").0;
    let case = Case::new(with_purge(t));
    let kinds = case.kinds();
    assert!(!kinds.is_empty());
    assert!(kinds
        .iter()
        .all(|k| *k == (ViolationKind::PurgedInsideHorizon, Some(9_000))));
    assert_eq!(kinds.len(), 2, "the floor and the rule's own horizon");

    // The rule's horizon ends a day after the authorization, though the floor is met.
    let mut t = tally(vec![]);
    t.newest_purged = Some(ts("2020-06-30T00:00:00Z"));
    t.authorization.rules[0].newest = ts("2020-11-01T12:00:00Z").0;
    t.newest_purged = Some(ts("2020-11-01T12:00:00Z"));
    let case = Case::new(with_purge(t));
    assert_eq!(
        case.kinds(),
        [(ViolationKind::PurgedInsideHorizon, Some(9_000))]
    );

    // A rule authorized with fewer than six years.
    let mut t = tally(vec![]);
    t.authorization.rules[0].years = 5;
    t.authorization.rules[0].rule = "short".into();
    let r = Case::new(with_purge(t)).report();
    assert_eq!(r.violations.len(), 1);
    assert!(r.violations[0].detail.contains("shorter than HIPAA's six"));
}

#[test]
fn the_current_policy_can_lengthen_a_horizon() {
    // The default is now ten years: entries of 2020 purged under six are inside it.
    let mut case = Case::new(with_purge(tally(vec![])));
    case.config.policy.default_years = 10;
    let r = case.report();
    assert_eq!(
        r.violations.iter().map(|v| v.kind).collect::<Vec<_>>(),
        [ViolationKind::PurgedInsideHorizon]
    );
    assert!(r.violations[0]
        .detail
        .contains("now keeps entries 10 years"));

    // A rule of another name, or a longer horizon already over, is no violation.
    let mut case = Case::new(with_purge(tally(vec![])));
    case.config.policy = Policy {
        default_years: 6,
        rules: vec![Rule {
            name: "access-control".into(),
            years: 10,
            actions: vec!["role_change".into()],
            resource_types: vec![],
            sources: vec![],
            why: "state law".into(),
        }],
    };
    assert!(case.report().ok);
    let mut t = tally(vec![]);
    t.authorization.rules[0].newest = ts("2012-01-01T00:00:00Z").0;
    t.newest_purged = Some(ts("2012-01-01T00:00:00Z"));
    t.oldest_purged = Some(ts("2011-01-01T00:00:00Z"));
    let mut case = Case::new(with_purge(t));
    case.config.policy.default_years = 10;
    assert!(case.report().ok, "{:#?}", case.report().violations);
}

#[test]
fn a_purge_beyond_its_authorization() {
    let mut t = tally(vec![]);
    t.purged = 501;
    assert_eq!(
        Case::new(with_purge(t)).kinds(),
        [(ViolationKind::PurgeExceedsAuthorization, Some(9_000))]
    );
    // A tally's times are its runs' times: a run reaching into a later purge's range (here
    // an entry of 2020-11) is no violation of this one.
    let mut t = tally(vec![]);
    t.newest_purged = Some(ts("2020-11-20T00:00:00Z"));
    assert!(Case::new(with_purge(t)).report().ok);
    // An authorization that names no rule.
    let mut t = tally(vec![]);
    t.authorization.rules.clear();
    assert_eq!(
        Case::new(with_purge(t)).kinds(),
        [(ViolationKind::PurgeExceedsAuthorization, Some(9_000))]
    );
    // An authorization under which nothing was purged is nothing to check.
    let mut t = tally(vec![]);
    t.purged = 0;
    t.newest_purged = None;
    t.oldest_purged = None;
    t.authorization.rules.clear();
    assert!(Case::new(with_purge(t)).report().ok);
}

#[test]
fn a_purge_under_hold() {
    // A patient hold in force that the authorization names: fine (the plan kept its entries).
    let mut case = Case::new(with_purge(tally(vec![5])));
    case.holds = HoldSet::new([hold(5, HoldScope::Patient)]);
    assert!(case.report().ok);
    assert_eq!(case.report().holds_active, [5]);

    // ... and one it does not name.
    let mut case = Case::new(with_purge(tally(vec![])));
    case.holds = HoldSet::new([hold(5, HoldScope::Patient)]);
    let r = case.report();
    assert_eq!(r.violations.len(), 1);
    assert_eq!(r.violations[0].kind, ViolationKind::PurgeUnderHold);
    assert!(r.violations[0].detail.contains("does not name it"));

    // A stream hold, named or not.
    let mut case = Case::new(with_purge(tally(vec![6])));
    case.holds = HoldSet::new([hold(6, HoldScope::Stream)]);
    let r = case.report();
    assert_eq!(r.violations.len(), 1);
    assert!(r.violations[0].detail.contains("every entry"));

    // A time hold overlapping the purged span, and one that does not.
    let mut overlapping = hold(7, HoldScope::Time);
    overlapping.from = Some(ts("2020-06-01T00:00:00Z"));
    overlapping.to = Some(ts("2020-08-01T00:00:00Z"));
    let mut later = hold(8, HoldScope::Time);
    later.from = Some(ts("2020-07-01T00:00:00Z"));
    let mut case = Case::new(with_purge(tally(vec![7, 8])));
    case.holds = HoldSet::new([overlapping, later]);
    let r = case.report();
    assert_eq!(
        r.violations
            .iter()
            .map(|v| (v.kind, v.detail.contains("hold 7")))
            .collect::<Vec<_>>(),
        [(ViolationKind::PurgeUnderHold, true)]
    );

    // Holds added after the authorization, or released before it, were not in force.
    let mut after = hold(9_500, HoldScope::Stream);
    after.added_at = ts("2026-11-10T00:00:00Z");
    let mut released = hold(3, HoldScope::Stream);
    released.released = Some(Release {
        seq: 8_000,
        at: ts("2026-10-01T00:00:00Z"),
        reason: "settled".into(),
    });
    let mut case = Case::new(with_purge(tally(vec![])));
    case.holds = HoldSet::new([after, released]);
    let r = case.report();
    assert!(r.ok, "{:#?}", r.violations);
    assert_eq!(r.holds_active, [9_500]);
}

#[test]
fn coverage_gaps_and_silent_sources() {
    let gap = |to: &str, seq: Seq| Gap {
        source: "ehr".into(),
        from: Timestamp(ts(to).0 - 5 * 3_600_000_000),
        to: ts(to),
        minutes: 300,
        last_seq: seq - 1,
        resumed_seq: seq,
        hours_before: 24,
    };
    let mut case = Case::new(intact());
    case.gaps = vec![
        gap("2026-11-20T05:00:00Z", 500),
        gap("2026-10-30T00:00:00Z", 400), // exactly 30 days before: inside
        gap("2026-10-29T23:59:59Z", 300), // outside the window
        gap("2026-11-30T00:00:00Z", 600), // after as-of (a what-if in the past)
    ];
    case.sources = vec![
        // Silent for 121 minutes: open silence.
        source("lab", ts("2026-11-28T21:59:00Z"), true),
        // Silent for exactly 120 minutes: not longer than allowed.
        source("ehr", ts("2026-11-28T22:00:00Z"), true),
    ];
    let r = case.report();
    assert_eq!(
        r.violations
            .iter()
            .map(|v| (v.kind, v.seq))
            .collect::<Vec<_>>(),
        [
            (ViolationKind::CoverageGap, Some(400)),
            (ViolationKind::CoverageGap, Some(500)),
            (ViolationKind::SourceSilent, Some(9_998)),
        ]
    );
    assert!(
        r.violations[0].detail.contains("5 h 00 min"),
        "{}",
        r.violations[0].detail
    );
    assert!(r.violations[2].detail.contains("\"lab\""));
    assert_eq!(r.coverage_gaps.len(), 3);
    assert_eq!(r.coverage_gaps[2].to, None);
    assert_eq!(r.coverage_gaps[2].minutes, 121);
    assert_eq!(r.record().findings, ["coverage_gap", "source_silent"]);
    assert_eq!(r.record().violations, 3);
}

#[test]
fn a_check_without_checkpoints_warns() {
    let mut v = intact();
    v.checkpoints_verified = 0;
    let r = Case::new(v).report();
    assert!(r.ok);
    assert_eq!(r.warnings.len(), 1);
    assert!(r.text().contains("warning: no checkpoint was verified"));
}

#[test]
fn durations_read_naturally() {
    assert_eq!(minutes(95), "95 minutes");
    assert_eq!(minutes(185), "3 h 05 min");
    assert_eq!(minutes(3000), "2 days 2 h");
}
