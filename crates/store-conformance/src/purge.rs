//! Purging payloads (retention, issue 9): `Store::purge_payloads` removes old payloads under a
//! purge authorization and nothing else, and the database itself refuses every other change to
//! an entry, whoever makes it.
//!
//! Every case runs on [`purge_ledger`]: entries recorded in 2018, entries right on and just
//! inside the six-year floor, recent ones, and a purge authorization recorded on 2026-03-01.
//! Nothing here asks `verify` (what it accepts after a purge is its own suite's business).

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;

use chrono::TimeZone;
use ledger::payload::{StoredActor, StoredEvent};
use ledger::record::{PurgeAuthorization, PurgedRule, Record, MIN_RETENTION_MICROS, PURGE_ACTION};
use ledger::{
    Columns, Entry, GroupCommitWriter, HashAlg, ManualClock, Payload, PreparedEntry, Seq, Store,
    StoreError, StreamId, Timestamp, WriterConfig,
};

use crate::{prepared, test_pseudonymizer, DirectSql};

/// Events recorded in 2018, eight years before the authorization (seqs 1-5 carry an
/// idempotency digest).
pub const OLD: RangeInclusive<Seq> = 1..=20;
/// Recorded exactly [`MIN_RETENTION_MICROS`] before the authorization: old enough.
pub const ON_FLOOR: Seq = 21;
/// Recorded one microsecond later: too young.
pub const INSIDE_FLOOR: Seq = 22;
/// Recorded in 2025.
pub const RECENT: RangeInclusive<Seq> = 23..=25;
/// An ordinary event, the day before the authorization.
pub const NOT_PURGE: Seq = 26;
/// The purge authorization, recorded on 2026-03-01.
pub const AUTHORIZATION: Seq = 27;
/// Events after the authorization.
pub const AFTER: RangeInclusive<Seq> = 28..=30;
/// The last entry of [`purge_ledger`].
pub const HEAD: Seq = 30;

/// `UPDATE ... SET` of exactly what a purge changes.
pub const PURGED_COLUMNS: &str = "payload = NULL, occurred_at = NULL, action = NULL, outcome = NULL, actor = NULL, patient = NULL, phi = false, idem = NULL";

fn utc(y: i32, m: u32, d: u32) -> Timestamp {
    Timestamp(
        chrono::Utc
            .with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .expect("a valid date")
            .timestamp_micros(),
    )
}

/// When [`AUTHORIZATION`] is recorded.
pub fn authorized_at() -> Timestamp {
    utc(2026, 3, 1)
}

/// A purge authorization event for `from..=to`, as the ledger's retention command writes one.
pub fn authorization(from: Seq, to: Seq, count: u64, at: Timestamp, alg: HashAlg) -> PreparedEntry {
    let record = Record::PurgeAuthorization(PurgeAuthorization {
        to,
        from,
        count,
        holds: Vec::new(),
        rules: vec![PurgedRule {
            rule: "default".into(),
            count,
            years: 6,
            newest: utc(2018, 1, 2).micros(),
        }],
        ranges: vec![(from, to)],
        archive: "ab".repeat(32),
        archive_size: to + 1,
        authorized_by: "privacy officer, ticket PRIV-9".into(),
    });
    PreparedEntry::new(
        &Payload::Event(StoredEvent {
            phi: false,
            idem: None,
            actor: StoredActor {
                role: Some("privacy_officer".into()),
                user_id: Some(test_pseudonymizer().pseudonymize("po-1").to_string()),
                ..StoredActor::default()
            },
            action: PURGE_ACTION.into(),
            detail: Some("payloads past their six-year horizon, archived first".into()),
            record: Some(record),
            source: "auditledger".into(),
            outcome: "success".into(),
            request: None,
            resource: None,
            patient_id: None,
            occurred_at: at.micros(),
        }),
        alg,
    )
}

/// Appends `items` at `at` and checks where they landed.
async fn append_at(
    w: &GroupCommitWriter,
    clock: &ManualClock,
    at: Timestamp,
    items: Vec<PreparedEntry>,
    first: Seq,
) {
    clock.set(at);
    let receipts = w.append(items).await.expect("append succeeds");
    assert_eq!(receipts[0].seq, first);
    assert!(receipts.iter().all(|r| r.recorded_at == at));
}

/// Writes the ledger the module doc describes into `s` (which must be empty).
pub async fn purge_ledger(store: Arc<dyn Store>, s: &StreamId) {
    let clock = Arc::new(ManualClock::new(utc(2018, 1, 1)));
    let (w, task) =
        GroupCommitWriter::start(store, s.clone(), clock.clone(), WriterConfig::default())
            .await
            .expect("writer starts");
    let ingest = ledger::Ingest::new(test_pseudonymizer());
    let keyed: Vec<_> = (0..5).map(crate::event).collect();
    let keyed = ingest
        .prepare_batch(&keyed, Some("import-2018"), 0)
        .expect("test events are valid");
    append_at(&w, &clock, utc(2018, 1, 2), keyed, 1).await;
    for (i, day) in [(5, 3), (10, 4), (15, 5)] {
        append_at(&w, &clock, utc(2018, 1, day), prepared(i, 5), i as Seq + 1).await;
    }
    let floor = authorized_at().micros() - MIN_RETENTION_MICROS;
    append_at(&w, &clock, Timestamp(floor), prepared(20, 1), ON_FLOOR).await;
    append_at(
        &w,
        &clock,
        Timestamp(floor + 1),
        prepared(21, 1),
        INSIDE_FLOOR,
    )
    .await;
    append_at(
        &w,
        &clock,
        utc(2025, 6, 1),
        prepared(22, 3),
        *RECENT.start(),
    )
    .await;
    append_at(&w, &clock, utc(2026, 2, 28), prepared(25, 1), NOT_PURGE).await;
    let alg = w.hash_alg();
    append_at(
        &w,
        &clock,
        authorized_at(),
        vec![authorization(
            *OLD.start(),
            ON_FLOOR,
            ON_FLOOR,
            authorized_at(),
            alg,
        )],
        AUTHORIZATION,
    )
    .await;
    append_at(&w, &clock, utc(2026, 3, 2), prepared(26, 3), *AFTER.start()).await;
    drop(w);
    task.await.expect("writer task ends cleanly");
}

/// Every entry of `s`, as stored.
pub async fn snapshot(store: &dyn Store, s: &StreamId) -> Vec<Entry> {
    store.read(s, 0, 100_000).await.expect("read")
}

/// `before` as it must read once its payload is purged: no payload, the columns of an
/// undecodable entry, every other field (hashes, digests, `recorded_at`) as it was.
pub fn purged(before: &Entry) -> Entry {
    Entry {
        payload: None,
        columns: Columns::undecodable(),
        ..before.clone()
    }
}

/// `purge_payloads` fails with `Refused` and changes nothing.
pub async fn assert_refused(
    store: &dyn Store,
    s: &StreamId,
    (authorization, from, to): (Seq, Seq, Seq),
    why: &str,
) {
    let before = snapshot(store, s).await;
    match store.purge_payloads(s, authorization, from, to).await {
        Err(StoreError::Refused(m)) => assert!(!m.is_empty(), "{why}"),
        other => panic!("{why}: expected Refused, got {other:?}"),
    }
    assert_eq!(snapshot(store, s).await, before, "{why}: nothing changed");
}

/// Runs every case. `fresh` makes an empty store and a direct connection to its database
/// (a new schema, database or file per call).
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn DirectSql>)>,
{
    purge_removes_only_payloads(fresh().await.0).await;
    refused_purges_change_nothing(fresh().await.0).await;
    let (store, sql) = fresh().await;
    the_database_enforces_the_rule(store, sql.as_ref()).await;
    a_thousand_payloads_in_one_call(fresh().await.0).await;
}

/// A purge removes the payloads of its range that are still there, and touches nothing else.
pub async fn purge_removes_only_payloads(store: Arc<dyn Store>) {
    let s = StreamId::default();
    purge_ledger(store.clone(), &s).await;
    let before = snapshot(store.as_ref(), &s).await;
    assert_eq!(before.len() as Seq, HEAD + 1);
    assert!(before[1].columns.idem.is_some(), "a keyed entry is purged");

    let n = store
        .purge_payloads(&s, AUTHORIZATION, 1, 10)
        .await
        .expect("an eligible range is purged");
    assert_eq!(n, 10);
    let after = snapshot(store.as_ref(), &s).await;
    for (b, a) in before.iter().zip(&after) {
        if (1..=10).contains(&b.seq) {
            assert_eq!(a, &purged(b), "entry {} purged", b.seq);
        } else {
            assert_eq!(a, b, "entry {} untouched", b.seq);
        }
    }
    for seq in 1..=10 {
        let e = store.get(&s, seq).await.unwrap().unwrap();
        assert_eq!(e.payload, None);
        assert_eq!(e.columns, Columns::undecodable());
    }

    // Again: nothing left to remove. Overlapping: only what still has a payload.
    assert_eq!(
        store
            .purge_payloads(&s, AUTHORIZATION, 1, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_payloads(&s, AUTHORIZATION, 5, 15)
            .await
            .unwrap(),
        5
    );
    // Up to the entry recorded exactly six years of 365 days before the authorization.
    assert_eq!(
        store
            .purge_payloads(&s, AUTHORIZATION, 16, ON_FLOOR)
            .await
            .unwrap(),
        6
    );
    let after = snapshot(store.as_ref(), &s).await;
    for (b, a) in before.iter().zip(&after) {
        if (1..=ON_FLOOR).contains(&b.seq) {
            assert_eq!(a, &purged(b), "entry {} purged", b.seq);
        } else {
            assert_eq!(a, b, "entry {} untouched", b.seq);
        }
    }
    // An empty range removes nothing.
    assert_eq!(
        store.purge_payloads(&s, AUTHORIZATION, 9, 3).await.unwrap(),
        0
    );
    // The stream goes on.
    let head = store.head(&s).await.unwrap().unwrap();
    assert_eq!(head.seq, HEAD);
}

/// Each reason a purge is refused; each refusal leaves every entry as it was.
pub async fn refused_purges_change_nothing(store: Arc<dyn Store>) {
    let s = StreamId::default();
    purge_ledger(store.clone(), &s).await;
    let st = store.as_ref();
    assert_refused(
        st,
        &s,
        (NOT_PURGE, 1, 5),
        "an ordinary event as authorization",
    )
    .await;
    assert_refused(
        st,
        &s,
        (HEAD + 10, 1, 5),
        "an authorization that does not exist",
    )
    .await;
    assert_refused(st, &s, (0, 0, 0), "the genesis entry as authorization").await;
    assert_refused(
        st,
        &s,
        (AUTHORIZATION, 1, AUTHORIZATION),
        "a range up to the authorization itself",
    )
    .await;
    assert_refused(
        st,
        &s,
        (AUTHORIZATION, 1, HEAD),
        "a range past the authorization",
    )
    .await;
    assert_refused(
        st,
        &s,
        (AUTHORIZATION, INSIDE_FLOOR, INSIDE_FLOOR),
        "an entry recorded one microsecond inside the six-year floor",
    )
    .await;
    assert_refused(
        st,
        &s,
        (AUTHORIZATION, 1, *RECENT.end()),
        "a range whose last entries are inside the floor (all or nothing)",
    )
    .await;
    assert_refused(
        st,
        &s,
        (AUTHORIZATION, 0, 5),
        "a range with the genesis entry",
    )
    .await;
    let other = StreamId::new("other").unwrap();
    assert_refused(
        st,
        &other,
        (AUTHORIZATION, 1, 5),
        "another stream's authorization",
    )
    .await;
}

async fn expect_refusal(sql: &dyn DirectSql, statement: &str, words: &str) {
    match sql.execute(statement).await {
        Err(m) => assert!(m.contains(words), "{statement}: {m}"),
        Ok(n) => panic!("{statement}: the database let it through ({n} rows)"),
    }
}

/// Straight to the database, protections on: only a purge-shaped UPDATE of an entry that an
/// authorization recorded six years later follows gets through; DELETE never does.
pub async fn the_database_enforces_the_rule(store: Arc<dyn Store>, sql: &dyn DirectSql) {
    let s = StreamId::default();
    purge_ledger(store.clone(), &s).await;
    // A second stream, all of it old, with no authorization of its own.
    let other = StreamId::new("other").unwrap();
    let clock = Arc::new(ManualClock::new(utc(2018, 1, 1)));
    let (w, task) =
        GroupCommitWriter::start(store.clone(), other.clone(), clock, WriterConfig::default())
            .await
            .unwrap();
    w.append(prepared(0, 3)).await.unwrap();
    drop(w);
    task.await.unwrap();

    let before = snapshot(store.as_ref(), &s).await;
    let before_other = snapshot(store.as_ref(), &other).await;
    let refused = "purge refused";
    let purge_of = |seq: Seq| {
        format!("UPDATE entries SET {PURGED_COLUMNS} WHERE stream = 'default' AND seq = {seq}")
    };
    for statement in [
        "UPDATE entries SET action = 'x' WHERE seq = 1".to_owned(),
        // Forging an authorization by relabelling an entry.
        format!("UPDATE entries SET action = '{PURGE_ACTION}' WHERE stream = 'default' AND seq = {HEAD}"),
        // Eligible entries, but more than the payload changes, or not all of its columns go.
        "UPDATE entries SET payload = NULL WHERE stream = 'default' AND seq = 2".to_owned(),
        format!("UPDATE entries SET {PURGED_COLUMNS}, recorded_at = recorded_at + 1 WHERE stream = 'default' AND seq = 2"),
        format!("UPDATE entries SET {PURGED_COLUMNS}, kind = 'genesis' WHERE stream = 'default' AND seq = 2"),
        format!("UPDATE entries SET {PURGED_COLUMNS}, entry_hash = prev_hash WHERE stream = 'default' AND seq = 2"),
        "UPDATE entries SET payload = NULL, occurred_at = NULL, action = NULL, outcome = NULL, actor = NULL, patient = NULL, phi = false WHERE stream = 'default' AND seq = 3".to_owned(),
        // The genesis entry.
        purge_of(0),
        // Inside the floor, after the authorization, the authorization itself.
        purge_of(INSIDE_FLOOR),
        purge_of(*RECENT.start()),
        purge_of(NOT_PURGE),
        purge_of(AUTHORIZATION),
        purge_of(*AFTER.end()),
        // One ineligible row refuses the whole statement.
        format!("UPDATE entries SET {PURGED_COLUMNS} WHERE stream = 'default' AND seq BETWEEN 1 AND {INSIDE_FLOOR}"),
        // Old enough, but no authorization in its own stream.
        format!("UPDATE entries SET {PURGED_COLUMNS} WHERE stream = 'other' AND seq = 1"),
    ] {
        expect_refusal(sql, &statement, refused).await;
    }
    for statement in [
        "DELETE FROM entries WHERE stream = 'default' AND seq = 5",
        "DELETE FROM entries",
    ] {
        expect_refusal(sql, statement, "append-only").await;
    }
    assert_eq!(snapshot(store.as_ref(), &s).await, before);
    assert_eq!(snapshot(store.as_ref(), &other).await, before_other);

    // The rule, not the store's code, is what lets a purge through: done by hand it works too.
    assert_eq!(sql.execute(&purge_of(4)).await, Ok(1));
    let after = snapshot(store.as_ref(), &s).await;
    assert_eq!(after[4], purged(&before[4]));
    assert_eq!(after[..4], before[..4]);
    assert_eq!(after[5..], before[5..]);
    // A purged entry stays purged: no second UPDATE, no payload put back.
    expect_refusal(sql, &purge_of(4), refused).await;
    expect_refusal(
        sql,
        "UPDATE entries SET payload = payload_digest WHERE stream = 'default' AND seq = 4",
        refused,
    )
    .await;
    assert_eq!(snapshot(store.as_ref(), &s).await, after);
}

/// One call purges a thousand payloads (the per-row authorization check is an index probe).
pub async fn a_thousand_payloads_in_one_call(store: Arc<dyn Store>) {
    const N: usize = 1000;
    let s = StreamId::default();
    let clock = Arc::new(ManualClock::new(utc(2018, 1, 1)));
    let (w, task) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        clock.clone(),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let alg = w.hash_alg();
    append_at(&w, &clock, utc(2018, 6, 1), prepared(0, N), 1).await;
    let auth = N as Seq + 1;
    append_at(
        &w,
        &clock,
        authorized_at(),
        vec![authorization(1, N as Seq, N as u64, authorized_at(), alg)],
        auth,
    )
    .await;
    drop(w);
    task.await.unwrap();
    let before = snapshot(store.as_ref(), &s).await;

    let n = store
        .purge_payloads(&s, auth, 1, N as Seq)
        .await
        .expect("a thousand eligible entries are purged");
    assert_eq!(n, N as u64);
    let after = snapshot(store.as_ref(), &s).await;
    assert_eq!(after[0], before[0], "the genesis entry stays");
    assert_eq!(after[N + 1], before[N + 1], "the authorization stays");
    for (b, a) in before[1..=N].iter().zip(&after[1..=N]) {
        assert_eq!(a, &purged(b), "entry {}", b.seq);
    }
}
