//! The projection on hand-built verified entries, without a store: holds added and released,
//! releases that release nothing, gaps only for regular sources, purged entries skipped, and
//! that a state saved and restored anywhere in the stream gives the rows of one run.

use std::collections::BTreeMap;

use ledger::payload::{StoredActor, StoredEvent};
use ledger::record::{
    HoldRelease, HoldScope, LegalHold, PurgeAuthorization, PurgedRule, RetentionCheck,
};
use ledger::Digest;
use proptest::prelude::*;

use super::*;

const HOUR_US: i64 = HOUR;
/// 2026-11-23T00:00:00Z.
const T0: i64 = 1_795_392_000_000_000;

fn event(source: &str, record: Option<Record>) -> StoredEvent {
    StoredEvent {
        phi: false,
        idem: None,
        actor: StoredActor::default(),
        action: "read".into(),
        detail: None,
        record,
        source: source.to_owned(),
        outcome: "success".into(),
        request: None,
        resource: None,
        patient_id: None,
        occurred_at: 0,
    }
}

fn hold_record(scope: HoldScope, subject: Option<&str>) -> Record {
    Record::LegalHold(LegalHold {
        to: None,
        from: None,
        scope,
        reason: "litigation 2026-17".into(),
        subject: subject.map(str::to_owned),
    })
}

fn release_record(hold: Seq) -> Record {
    Record::HoldRelease(HoldRelease {
        hold,
        reason: "settled".into(),
    })
}

fn hash_of(seq: Seq) -> Digest {
    Digest([seq as u8; 32])
}

/// One entry of a test stream: `None` is a purged payload.
#[derive(Debug, Clone)]
struct Item {
    at: i64,
    event: Option<StoredEvent>,
}

fn item(at: i64, source: &str) -> Item {
    Item {
        at,
        event: Some(event(source, None)),
    }
}

fn with_record(at: i64, record: Record) -> Item {
    Item {
        at,
        event: Some(event("auditledger", Some(record))),
    }
}

/// A read model in memory: what a store holds after the changes.
type Rows = BTreeMap<(String, String, i64), (Timestamp, String)>;

fn commit(rows: &mut Rows, effects: Effects) {
    assert!(effects.own.is_empty(), "the projection appends no entries");
    for c in effects.changes {
        match c {
            RowChange::Put(r) => {
                rows.insert((r.table, r.key, r.ord), (r.at, r.value));
            }
            RowChange::Delete { table, key, ord } => {
                rows.remove(&(table, key, ord));
            }
        }
    }
}

/// Runs the projection over a genesis entry (seq 0) and `items` (seq 1..), committing (flush,
/// snapshot, restore into a new projection) before each index in `cuts`, and at the end.
fn run(config: &CoverageConfig, items: &[Item], cuts: &[usize]) -> (Rows, Vec<u8>) {
    let mut rows = Rows::new();
    let mut p = RetentionProjection::new(config.clone());
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|c| *c <= items.len()).collect();
    cuts.sort();
    cuts.push(items.len());
    let mut at = 0;
    let mut effects = Effects::default();
    p.apply(
        &VerifiedEntry {
            seq: 0,
            entry_hash: hash_of(0),
            recorded_at: Timestamp(T0 - 1000 * HOUR_US),
            event: None,
        },
        &mut effects,
    );
    for cut in cuts {
        for (i, it) in items.iter().enumerate().take(cut).skip(at) {
            let seq = i as Seq + 1;
            p.apply(
                &VerifiedEntry {
                    seq,
                    entry_hash: hash_of(seq),
                    recorded_at: Timestamp(it.at),
                    event: it.event.as_ref(),
                },
                &mut effects,
            );
        }
        p.flush(&mut effects);
        commit(&mut rows, std::mem::take(&mut effects));
        let state = p.snapshot();
        p = RetentionProjection::new(config.clone());
        p.restore(&state).unwrap();
        assert_eq!(p.snapshot(), state, "restore then snapshot is the identity");
        at = cut;
    }
    (rows, p.snapshot())
}

fn table<T: serde::de::DeserializeOwned>(rows: &Rows, name: &str) -> Vec<(String, i64, T)> {
    rows.iter()
        .filter(|((t, _, _), _)| t == name)
        .map(|((_, k, o), (_, v))| (k.clone(), *o, serde_json::from_str(v).unwrap()))
        .collect()
}

/// A source writing every `step` from `from` for `hours` hours.
fn steady(source: &str, from: i64, hours: i64, step: i64) -> Vec<Item> {
    (0..hours * HOUR_US / step)
        .map(|i| item(from + i * step, source))
        .collect()
}

#[test]
fn holds_are_added_and_released() {
    let items = [
        with_record(T0, hold_record(HoldScope::Patient, Some("k1:p"))),
        item(T0 + 1, "ehr"),
        with_record(T0 + 2, hold_record(HoldScope::Stream, None)),
        with_record(T0 + 3, release_record(1)),
    ];
    for cuts in [vec![], vec![1], vec![3], vec![1, 2, 3]] {
        let (rows, _) = run(&CoverageConfig::default(), &items, &cuts);
        let holds: Vec<(String, i64, Hold)> = table(&rows, HOLDS);
        assert_eq!(holds.len(), 2, "{cuts:?}");
        let (key, ord, first) = &holds[0];
        assert_eq!((key.as_str(), *ord), ("1", 0));
        assert_eq!(first.seq, 1);
        assert_eq!(first.added_at, Timestamp(T0));
        assert_eq!(first.scope, HoldScope::Patient);
        assert_eq!(first.subject.as_deref(), Some("k1:p"));
        assert_eq!(first.reason, "litigation 2026-17");
        assert_eq!(
            first.released,
            Some(Release {
                seq: 4,
                at: Timestamp(T0 + 3),
                reason: "settled".into()
            })
        );
        assert_eq!(rows[&(HOLDS.into(), "1".into(), 0)].0, Timestamp(T0));
        assert_eq!(holds[1].2.seq, 3);
        assert_eq!(holds[1].2.released, None);
        assert!(table::<OrphanRelease>(&rows, ORPHAN_RELEASES).is_empty());
    }
}

#[test]
fn a_release_of_nothing_is_kept_visible() {
    let items = [
        with_record(T0, hold_record(HoldScope::User, Some("k1:u"))),
        with_record(T0 + 1, release_record(1)),
        // Released twice.
        with_record(T0 + 2, release_record(1)),
        // Names an ordinary entry, and a seq that does not exist yet.
        item(T0 + 3, "ehr"),
        with_record(T0 + 4, release_record(4)),
        with_record(T0 + 5, release_record(99)),
    ];
    let (rows, state) = run(&CoverageConfig::default(), &items, &[2]);
    let orphans: Vec<(String, i64, OrphanRelease)> = table(&rows, ORPHAN_RELEASES);
    let seen: Vec<(String, Seq, &str)> = orphans
        .iter()
        .map(|(k, _, o)| (k.clone(), o.hold, o.why.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("3".into(), 1, "hold 1 was already released by entry 2"),
            ("5".into(), 4, "no legal hold was recorded at entry 4"),
            ("6".into(), 99, "no legal hold was recorded at entry 99"),
        ]
    );
    let holds: Vec<(String, i64, Hold)> = table(&rows, HOLDS);
    assert_eq!(holds[0].2.released.as_ref().map(|r| r.seq), Some(2));
    let mut p = RetentionProjection::new(CoverageConfig::default());
    p.restore(&state).unwrap();
    assert_eq!(p.holds().count(), 1);
}

#[test]
fn gaps_are_found_only_for_regular_sources() {
    let config = CoverageConfig::default(); // 120 min, 20 of 24 hours
    let mut items = Vec::new();
    // "ehr" writes every 10 minutes for a day, falls silent for 3 hours, then resumes.
    items.extend(steady("ehr", T0, 24, 10 * 60_000_000));
    // "clinic" writes every 10 minutes, but only 12 hours a day: not regular.
    items.extend(steady("clinic", T0, 12, 10 * 60_000_000));
    // "lab" writes every hour for 24 hours, then a silence of exactly 120 minutes: not longer.
    items.extend(steady("lab", T0, 24, HOUR_US));
    items.sort_by_key(|i| i.at);
    items.push(item(T0 + 23 * HOUR_US + 2 * HOUR_US, "lab"));
    items.push(item(T0 + 27 * HOUR_US, "ehr"));
    items.push(item(T0 + 40 * HOUR_US, "clinic"));
    items.sort_by_key(|i| i.at);
    let (rows, _) = run(&config, &items, &[]);
    let gaps: Vec<(String, i64, Gap)> = table(&rows, GAPS);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (key, ord, gap) = &gaps[0];
    assert_eq!(key, "ehr");
    assert_eq!(gap.from, Timestamp(T0 + 24 * HOUR_US - 10 * 60_000_000));
    assert_eq!(gap.to, Timestamp(T0 + 27 * HOUR_US));
    assert_eq!(gap.minutes, 190);
    assert_eq!(gap.hours_before, 24);
    assert_eq!(*ord, gap.resumed_seq as i64);
    assert!(
        gap.last_seq + 1 < gap.resumed_seq,
        "other sources wrote between"
    );

    let sources: Vec<(String, i64, SourceRow)> = table(&rows, SOURCES);
    let by: BTreeMap<&str, &SourceRow> = sources.iter().map(|(k, _, s)| (k.as_str(), s)).collect();
    assert_eq!(by.len(), 3);
    assert_eq!(by["ehr"].last_seen, Timestamp(T0 + 27 * HOUR_US));
    // The 24 hours up to its last entry: the one it resumed in, and 20 of the day before.
    assert_eq!((by["ehr"].hours, by["ehr"].regular), (21, true));
    assert_eq!(by["lab"].hours, 23, "the lab skipped hour 24");
    assert!(by["lab"].regular);
    assert!(!by["clinic"].regular);
    let row_at = rows[&(SOURCES.into(), "lab".into(), 0)].0;
    assert_eq!(
        row_at, by["lab"].last_seen,
        "a source row's time is its last entry"
    );
}

#[test]
fn purged_entries_and_the_genesis_are_skipped() {
    let mut items = steady("ehr", T0, 24, HOUR_US / 2);
    // Every other entry purged, and a purged entry in the middle of a silence.
    for (i, it) in items.iter_mut().enumerate() {
        if i % 2 == 1 {
            it.event = None;
        }
    }
    items.push(Item {
        at: T0 + 25 * HOUR_US,
        event: None,
    });
    items.push(item(T0 + 28 * HOUR_US, "ehr"));
    let (rows, _) = run(&CoverageConfig::default(), &items, &[5, 49]);
    let gaps: Vec<(String, i64, Gap)> = table(&rows, GAPS);
    assert_eq!(gaps.len(), 1, "the purged entry did not end the silence");
    assert_eq!(gaps[0].2.resumed_seq, items.len() as Seq);
    let sources: Vec<(String, i64, SourceRow)> = table(&rows, SOURCES);
    assert_eq!(sources.len(), 1);
    assert!(table::<Hold>(&rows, HOLDS).is_empty());
}

#[test]
fn source_rows_are_written_once_per_commit() {
    let items = steady("ehr", T0, 2, 60_000_000);
    let mut p = RetentionProjection::new(CoverageConfig::default());
    let mut effects = Effects::default();
    for (i, it) in items.iter().enumerate() {
        p.apply(
            &VerifiedEntry {
                seq: i as Seq + 1,
                entry_hash: hash_of(1),
                recorded_at: Timestamp(it.at),
                event: it.event.as_ref(),
            },
            &mut effects,
        );
    }
    assert!(effects.changes.is_empty(), "nothing per entry");
    p.flush(&mut effects);
    assert_eq!(effects.changes.len(), 1);
    let mut again = Effects::default();
    p.flush(&mut again);
    assert!(again.is_empty(), "nothing changed since");
}

fn check_record(ok: bool, as_of: i64) -> Record {
    Record::RetentionCheck(RetentionCheck {
        ok,
        head: Some(1),
        as_of,
        entries: 2,
        findings: if ok {
            vec![]
        } else {
            vec!["coverage_gap".into()]
        },
        violations: u64::from(!ok),
    })
}

fn purge_record(from: Seq, to: Seq) -> Record {
    Record::PurgeAuthorization(PurgeAuthorization {
        to,
        from,
        count: to - from + 1,
        holds: vec![1],
        rules: vec![PurgedRule {
            rule: "default".into(),
            count: to - from + 1,
            years: 6,
            newest: T0 - 7 * 365 * 24 * HOUR_US,
        }],
        ranges: vec![(from, to)],
        archive: "ab".repeat(32),
        archive_size: to + 1,
        authorized_by: "privacy officer, ticket 7".into(),
    })
}

#[test]
fn checks_and_purges_are_listed_and_are_otherwise_ordinary_entries() {
    let items = [
        with_record(T0, check_record(true, T0 - 5)),
        item(T0 + 1, "ehr"),
        with_record(T0 + 2, purge_record(1, 2)),
        with_record(T0 + 3, check_record(false, T0 + 3)),
    ];
    for cuts in [vec![], vec![1], vec![3], vec![1, 2, 3]] {
        let (rows, state) = run(&CoverageConfig::default(), &items, &cuts);
        assert!(table::<Hold>(&rows, HOLDS).is_empty());
        let sources: Vec<(String, i64, SourceRow)> = table(&rows, SOURCES);
        assert_eq!(sources[0].0, "auditledger");

        let checks: Vec<(String, i64, CheckRow)> = table(&rows, CHECKS);
        let keys: Vec<(&str, i64)> = checks.iter().map(|(k, o, _)| (k.as_str(), *o)).collect();
        assert_eq!(keys, [("1", 0), ("4", 0)], "{cuts:?}");
        assert_eq!(
            checks[0].2,
            CheckRow {
                seq: 1,
                recorded_at: Timestamp(T0),
                ok: true,
                head: Some(1),
                as_of: Timestamp(T0 - 5),
                entries: 2,
                findings: vec![],
                violations: 0,
            }
        );
        assert_eq!(
            (
                checks[1].2.ok,
                checks[1].2.violations,
                &checks[1].2.findings[..]
            ),
            (false, 1, &["coverage_gap".to_owned()][..])
        );
        assert_eq!(rows[&(CHECKS.into(), "4".into(), 0)].0, Timestamp(T0 + 3));

        let purges: Vec<(String, i64, PurgeRow)> = table(&rows, PURGES);
        assert_eq!(purges.len(), 1);
        let p = &purges[0].2;
        assert_eq!(purges[0].0, "3");
        assert_eq!((p.seq, p.recorded_at), (3, Timestamp(T0 + 2)));
        assert_eq!((p.from, p.to, p.count), (1, 2, 2));
        assert_eq!(p.authorized_by, "privacy officer, ticket 7");
        assert_eq!((p.archive.len(), p.archive_size), (64, 3));
        assert_eq!(p.holds, [1]);
        assert_eq!(p.rules[0].rule, "default");
        assert_eq!(rows[&(PURGES.into(), "3".into(), 0)].0, Timestamp(T0 + 2));

        // Neither is in the saved state.
        let (_, without) = run(
            &CoverageConfig::default(),
            &[
                item(T0, "auditledger"),
                item(T0 + 1, "ehr"),
                item(T0 + 2, "auditledger"),
                item(T0 + 3, "auditledger"),
            ],
            &[],
        );
        assert_eq!(state, without);
    }
}

#[test]
fn a_state_of_another_version_or_shape_is_refused() {
    let mut p = RetentionProjection::new(CoverageConfig::default());
    let mut other = Vec::new();
    ciborium::into_writer(
        &(
            STATE_VERSION + 1,
            &State {
                holds: vec![],
                sources: vec![],
            },
        ),
        &mut other,
    )
    .unwrap();
    let err = p.restore(&other).unwrap_err();
    assert!(err.contains("version"), "{err}");
    assert!(p.restore(b"\xff").is_err());
    let mut bad = Vec::new();
    ciborium::into_writer(&(STATE_VERSION, "not a state"), &mut bad).unwrap();
    assert!(p.restore(&bad).is_err());
    let mut trailing = RetentionProjection::new(CoverageConfig::default()).snapshot();
    trailing.push(0);
    assert!(p.restore(&trailing).unwrap_err().contains("stray"));
}

/// A generated entry: a gap after the one before (minutes), a source, and what it is.
fn items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((0..200i64, 0..4u8, 0..14u8), 1..120).prop_map(|spec| {
        let mut at = T0;
        spec.into_iter()
            .enumerate()
            .map(|(i, (minutes, source, kind))| {
                // Mostly short steps, now and then hours.
                at += if minutes > 190 {
                    minutes * 20
                } else {
                    minutes / 4
                } * 60_000_000;
                let source = ["ehr", "lab", "pharmacy", "fax"][source as usize];
                match kind {
                    0 => Item { at, event: None },
                    1 => with_record(at, hold_record(HoldScope::Stream, None)),
                    2 => with_record(at, release_record((i as Seq).saturating_sub(3))),
                    3 => with_record(at, check_record(minutes % 2 == 0, at - minutes)),
                    4 => with_record(at, purge_record(1, (i as Seq).max(1))),
                    _ => item(at, source),
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Saving and restoring anywhere gives the rows and state of one run.
    #[test]
    fn restoring_anywhere_gives_the_rows_of_one_run(
        items in items(),
        cuts in prop::collection::vec(0..120usize, 0..6),
        regular_hours in 1..4u32,
        max_silence_minutes in 5..90u32,
    ) {
        let config = CoverageConfig { regular_hours, max_silence_minutes, window_days: 30 };
        let (once, state) = run(&config, &items, &[]);
        let (cut, cut_state) = run(&config, &items, &cuts);
        prop_assert_eq!(&cut, &once);
        prop_assert_eq!(&cut_state, &state);
        let every: Vec<usize> = (1..items.len()).collect();
        let (each, _) = run(&config, &items, &every);
        prop_assert_eq!(&each, &once);
    }
}
