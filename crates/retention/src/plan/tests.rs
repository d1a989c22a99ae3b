//! Plans over hand-built entries: ranges per rule with holds punching holes, what is never
//! eligible, the authorization's tallies, and (property) that the ranges are exactly a
//! brute-force classification of every entry.

use std::collections::BTreeMap;

use ledger::payload::{StoredActor, StoredResource};
use ledger::record::{HoldRelease, LegalHold, Record};
use ledger::{Columns, Digest, Genesis, HashAlg, StreamId};
use proptest::prelude::*;

use super::*;
use crate::config::{Rule, DEFAULT_RULE};
use crate::holds::{Hold, Release};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("a valid RFC 3339 time")
}

fn as_of() -> Timestamp {
    ts("2026-11-29T00:00:00Z")
}

fn event(action: &str, user: Option<&str>, patient: Option<&str>, occurred_at: i64) -> StoredEvent {
    StoredEvent {
        phi: patient.is_some(),
        idem: None,
        actor: StoredActor {
            user_id: user.map(str::to_owned),
            ..StoredActor::default()
        },
        action: action.to_owned(),
        detail: None,
        record: None,
        source: "ehr-web".into(),
        outcome: "success".into(),
        request: None,
        resource: patient.map(|p| StoredResource {
            id: Some(p.to_owned()),
            kind: "Patient".into(),
        }),
        patient_id: patient.map(str::to_owned),
        occurred_at,
    }
}

/// What an entry holds.
#[derive(Debug, Clone)]
enum Body {
    Event(Box<StoredEvent>),
    Purged,
    Genesis,
    Garbage,
}

fn entry(seq: Seq, recorded_at: Timestamp, body: &Body) -> Entry {
    let payload = match body {
        Body::Event(e) => Some(Payload::Event((**e).clone()).encode()),
        Body::Genesis => Some(
            Payload::Genesis(Genesis::new(
                &StreamId::default(),
                HashAlg::Sha256,
                recorded_at,
            ))
            .encode(),
        ),
        Body::Garbage => Some(b"not cbor".to_vec()),
        Body::Purged => None,
    };
    Entry {
        stream: StreamId::default(),
        seq,
        recorded_at,
        payload,
        payload_digest: Digest::ZERO,
        prev_hash: Digest::ZERO,
        entry_hash: Digest::ZERO,
        columns: Columns::undecodable(),
    }
}

fn plan(policy: &Policy, holds: &HoldSet, entries: &[Entry]) -> Plan {
    let mut p = Planner::new(policy, holds, as_of());
    for e in entries {
        p.push(e);
    }
    let union = p.eligible_ranges().to_vec();
    let plan = p.finish();
    assert_eq!(plan.eligible_ranges(), union);
    plan
}

fn patient_hold(seq: Seq, patient: &str) -> Hold {
    Hold {
        seq,
        added_at: ts("2026-01-01T00:00:00Z"),
        scope: HoldScope::Patient,
        subject: Some(patient.to_owned()),
        from: None,
        to: None,
        reason: "litigation".into(),
        released: None,
    }
}

#[test]
fn holds_punch_holes_in_the_ranges() {
    let old = ts("2019-05-01T00:00:00Z");
    let mut bodies: Vec<(Timestamp, Body)> = vec![(old, Body::Genesis)];
    for seq in 1..=20u64 {
        let t = Timestamp(old.0 + seq as i64);
        let body = match seq {
            5 | 6 | 12 => Body::Event(Box::new(event("read", None, Some("k1:held"), t.0))),
            10 => Body::Purged,
            15 => {
                bodies.push((
                    ts("2021-01-01T00:00:00Z"),
                    Body::Event(Box::new(event("read", None, None, 0))),
                ));
                continue;
            }
            17 => Body::Event(Box::new(StoredEvent {
                record: Some(Record::HoldRelease(HoldRelease {
                    hold: 1,
                    reason: "r".into(),
                })),
                ..event("legal_hold_release", None, None, t.0)
            })),
            19 => Body::Garbage,
            _ => Body::Event(Box::new(event("read", Some("k1:u"), Some("k1:other"), t.0))),
        };
        bodies.push((t, body));
    }
    let entries: Vec<Entry> = bodies
        .iter()
        .enumerate()
        .map(|(seq, (t, b))| entry(seq as Seq, *t, b))
        .collect();
    let holds = HoldSet::new([patient_hold(900, "k1:held")]);
    let p = plan(&Policy::default(), &holds, &entries);
    assert_eq!(
        p.eligible_ranges(),
        [
            (1, 4),
            (7, 9),
            (11, 11),
            (13, 14),
            (16, 16),
            (18, 18),
            (20, 20)
        ]
    );
    assert_eq!(p.per_rule.len(), 1);
    let d = &p.per_rule[0];
    assert_eq!((d.rule.as_str(), d.years, d.count), (DEFAULT_RULE, 6, 13));
    assert_eq!(d.ranges, p.eligible_ranges());
    assert_eq!(d.cutoff, ts("2020-11-29T00:00:00Z"));
    assert_eq!(d.oldest, Some(Timestamp(old.0 + 1)));
    assert_eq!(d.newest, Some(Timestamp(old.0 + 20)));
    assert_eq!(
        p.held,
        [HeldCount {
            hold: 900,
            scope: Some(HoldScope::Patient),
            count: 3
        }]
    );
    assert_eq!(
        (
            p.entries,
            p.eligible,
            p.already_purged,
            p.inside_horizon,
            p.never_eligible
        ),
        (21, 13, 1, 1, 3),
        "never eligible: the genesis, the release, the garbage"
    );
    let text = p.text();
    assert!(text.contains("13 eligible in 7 ranges"), "{text}");
    assert!(text.contains("1-4, 7-9, 11, 13-14, 16, 18, 20"), "{text}");
    assert!(
        text.contains("held: 3 past their horizon, kept by hold 900 (patient)"),
        "{text}"
    );

    // Released, the hold keeps nothing.
    let mut released = patient_hold(900, "k1:held");
    released.released = Some(Release {
        seq: 950,
        at: as_of(),
        reason: "settled".into(),
    });
    let p = plan(&Policy::default(), &HoldSet::new([released]), &entries);
    assert_eq!(
        p.eligible_ranges(),
        [(1, 9), (11, 14), (16, 16), (18, 18), (20, 20)]
    );
    assert!(p.held.is_empty());
}

type RangesAndCount<'a> = (&'a [(Seq, Seq)], u64);

#[test]
fn each_rule_has_its_own_horizon_and_ranges() {
    let policy = Policy {
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
    let at = |s: &str| ts(s);
    let rows = [
        (at("2015-03-01T00:00:00Z"), "role_change"), // 1: past ten years
        (at("2015-03-01T00:00:01Z"), "read"),        // 2: past six
        (at("2017-01-01T00:00:00Z"), "role_change"), // 3: inside ten
        (at("2017-01-01T00:00:01Z"), "read"),        // 4
        (at("2018-01-01T00:00:00Z"), "read"),        // 5
        (at("2020-11-28T23:59:59Z"), "read"),        // 6: a second before the cutoff
        (at("2020-11-29T00:00:00Z"), "read"),        // 7: exactly six years: past
        (at("2020-11-29T00:00:01Z"), "read"),        // 8: inside
    ];
    let mut entries = vec![entry(0, at("2015-01-01T00:00:00Z"), &Body::Genesis)];
    for (i, (t, action)) in rows.iter().enumerate() {
        entries.push(entry(
            i as Seq + 1,
            *t,
            &Body::Event(Box::new(event(action, None, None, t.0))),
        ));
    }
    let p = plan(&policy, &HoldSet::default(), &entries);
    let per: BTreeMap<&str, RangesAndCount> = p
        .per_rule
        .iter()
        .map(|r| (r.rule.as_str(), (r.ranges.as_slice(), r.count)))
        .collect();
    assert_eq!(per["default"], (&[(2, 2), (4, 7)][..], 5));
    assert_eq!(per["access-control"], (&[(1, 1)][..], 1));
    assert_eq!(
        p.eligible_ranges(),
        [(1, 2), (4, 7)],
        "the union joins the rules' runs"
    );
    assert_eq!(p.inside_horizon, 2);
    assert_eq!(p.per_rule[1].cutoff, ts("2016-11-29T00:00:00Z"));
    assert_eq!(
        p.purged_rules(),
        [
            PurgedRule {
                rule: "default".into(),
                count: 5,
                years: 6,
                newest: at("2020-11-29T00:00:00Z").0,
            },
            PurgedRule {
                rule: "access-control".into(),
                count: 1,
                years: 10,
                newest: at("2015-03-01T00:00:00Z").0,
            },
        ]
    );
    assert_eq!(p.policy_digest, policy.digest());

    let none = HoldSet::default();
    let planner = Planner::new(&policy, &none, as_of());
    assert_eq!(planner.earliest_cutoff(), ts("2016-11-29T00:00:00Z"));
    assert_eq!(planner.latest_cutoff(), ts("2020-11-29T00:00:00Z"));
    assert_eq!(planner.stop_at(), ts("2020-12-01T00:00:00Z"));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["eligible_ranges"], serde_json::json!([[1, 2], [4, 7]]));
    assert_eq!(json["per_rule"][0]["cutoff"], "2020-11-29T00:00:00.000000Z");
}

#[test]
fn a_plan_with_nothing_eligible() {
    let entries = [
        entry(0, ts("2025-01-01T00:00:00Z"), &Body::Genesis),
        entry(
            1,
            ts("2025-01-01T00:00:01Z"),
            &Body::Event(Box::new(event("read", None, None, 0))),
        ),
    ];
    let p = plan(&Policy::default(), &HoldSet::default(), &entries);
    assert!(p.eligible_ranges().is_empty());
    assert!(p.purged_rules().is_empty());
    assert!(p.text().contains("none eligible"));
}

/// A generated entry: `(years ago x 100 days, action, user, patient, kind)`.
type Spec = (u16, u8, u8, u8, u8);

fn body_of(s: &Spec, at: i64) -> Body {
    let (_, action, user, patient, kind) = *s;
    match kind {
        0 => Body::Purged,
        1 => Body::Garbage,
        2 => Body::Event(Box::new(StoredEvent {
            record: Some(Record::LegalHold(LegalHold {
                to: None,
                from: None,
                scope: HoldScope::Stream,
                reason: "r".into(),
                subject: None,
            })),
            ..event("legal_hold_add", None, None, at)
        })),
        _ => Body::Event(Box::new(event(
            ["read", "role_change", "export"][action as usize % 3],
            (user < 4).then(|| format!("k1:u{user}")).as_deref(),
            (patient < 5).then(|| format!("k1:p{patient}")).as_deref(),
            at,
        ))),
    }
}

fn hold_of(i: usize, (scope, subject, from, released): (u8, u8, u16, bool)) -> Hold {
    let scope = [
        HoldScope::Patient,
        HoldScope::User,
        HoldScope::Time,
        HoldScope::Stream,
    ][scope as usize % 4];
    let day = 86_400_000_000i64;
    let base = ts("2014-01-01T00:00:00Z").0;
    Hold {
        seq: 10_000 + i as Seq,
        added_at: as_of(),
        scope,
        subject: match scope {
            HoldScope::Patient => Some(format!("k1:p{}", subject % 6)),
            HoldScope::User => Some(format!("k1:u{}", subject % 5)),
            _ => None,
        },
        from: (scope == HoldScope::Time).then(|| Timestamp(base + i64::from(from) * day)),
        to: (scope == HoldScope::Time).then(|| Timestamp(base + (i64::from(from) + 200) * day)),
        reason: "r".into(),
        released: released.then(|| Release {
            seq: 20_000,
            at: as_of(),
            reason: "r".into(),
        }),
    }
}

/// Inclusive runs of the ascending seqs.
fn runs_of(seqs: &[Seq]) -> Vec<(Seq, Seq)> {
    let mut out: Vec<(Seq, Seq)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, e)) if *e + 1 == s => *e = s,
            _ => out.push((s, s)),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The plan is exactly a classification of each entry on its own (its rule and horizon,
    /// the holds checked one by one), grouped into runs.
    #[test]
    fn ranges_are_a_brute_force_classification(
        specs in prop::collection::vec((0u16..45, 0u8..3, 0u8..6, 0u8..7, 0u8..14), 1..150),
        hold_specs in prop::collection::vec((0u8..4, 0u8..6, 0u16..3000, any::<bool>()), 0..4),
        rule_years in prop::option::of(6u32..12),
        skip in prop::collection::btree_set(1usize..150, 0..5),
    ) {
        let policy = Policy {
            default_years: 6,
            rules: rule_years.into_iter().map(|years| Rule {
                name: "longer".into(),
                years,
                actions: vec!["role_change".into(), "export".into()],
                resource_types: vec![],
                sources: vec![],
                why: "w".into(),
            }).collect(),
        };
        let holds_list: Vec<Hold> = hold_specs.into_iter().enumerate().map(|(i, h)| hold_of(i, h)).collect();
        let holds = HoldSet::new(holds_list.clone());
        // recorded_at non-decreasing with seq, from about 12 years ago to now.
        let mut specs = specs;
        specs.sort_by_key(|s| std::cmp::Reverse(s.0));
        let day = 86_400_000_000i64;
        let mut entries = vec![entry(0, ts("2014-01-01T00:00:00Z"), &Body::Genesis)];
        let mut bodies = vec![Body::Genesis];
        for (i, s) in specs.iter().enumerate() {
            let t = Timestamp(as_of().0 - i64::from(s.0) * 100 * day + i as i64);
            let body = body_of(s, t.0 - 3_600_000_000);
            entries.push(entry(i as Seq + 1, t, &body));
            bodies.push(body);
        }
        // Some entries are not fed at all (a caller reading part of the ledger).
        let fed: Vec<(Entry, Body)> = entries.into_iter().zip(bodies)
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, x)| x)
            .collect();

        let mut expected_union = Vec::new();
        let mut expected_rule: BTreeMap<String, Vec<Seq>> = BTreeMap::new();
        let mut held: BTreeMap<Seq, u64> = BTreeMap::new();
        let (mut inside, mut purged, mut never) = (0u64, 0u64, 0u64);
        for (e, body) in &fed {
            let ev = match body {
                Body::Event(ev) if ev.record.is_none() => ev,
                Body::Purged => { purged += 1; continue; }
                _ => { never += 1; continue; }
            };
            let rule = policy.rule_for(ev);
            if expires_at(e.recorded_at, rule.years) > as_of() {
                inside += 1;
                continue;
            }
            let covering = holds_list.iter()
                .filter(|h| h.released.is_none() && h.covers(ev))
                .map(|h| h.seq)
                .min();
            if let Some(h) = covering {
                *held.entry(h).or_default() += 1;
                continue;
            }
            expected_union.push(e.seq);
            expected_rule.entry(rule.name.to_owned()).or_default().push(e.seq);
        }

        let mut planner = Planner::new(&policy, &holds, as_of());
        for (e, _) in &fed {
            planner.push(e);
        }
        let p = planner.finish();
        let union = runs_of(&expected_union);
        prop_assert_eq!(p.eligible_ranges(), union.as_slice());
        for r in &p.per_rule {
            let seqs = expected_rule.get(&r.rule).cloned().unwrap_or_default();
            prop_assert_eq!(&r.ranges, &runs_of(&seqs));
            prop_assert_eq!(r.count, seqs.len() as u64);
        }
        let held_got: BTreeMap<Seq, u64> = p.held.iter().map(|h| (h.hold, h.count)).collect();
        prop_assert_eq!(held_got, held);
        prop_assert_eq!(p.eligible, expected_union.len() as u64);
        prop_assert_eq!((p.inside_horizon, p.already_purged, p.never_eligible), (inside, purged, never));
        prop_assert_eq!(p.entries, fed.len() as u64);
        let tallied: u64 = p.purged_rules().iter().map(|r| r.count).sum();
        prop_assert_eq!(tallied, p.eligible);
    }
}
