//! Retention end to end on a real store, with a controllable clock: a ledger recorded from 2019
//! to November 2026 under a six-year policy. A clean ledger is compliant; archive and purge of
//! what is past the horizon pass the check and verify; a legal hold keeps what it covers; a
//! purge with nothing past its horizon is refused and recorded; and a missing entry, a payload
//! removed inside the horizon, a rolled-back tail, a coverage gap and a silent source are each
//! named by the check.

use std::future::Future;
use std::sync::Arc;

use ledger::checkpoint::{self, Checkpoint, NoteSigner};
use ledger::event::ParseOptions;
use ledger::verify::{verify_store, VerifyOptions};
use ledger::{
    Columns, GroupCommitWriter, Ingest, ManualClock, PhiPolicy, Seq, Store, StreamId, Timestamp,
    WriterConfig,
};
use retention::ops::{self, HoldTarget, OpsError, Session};
use retention::{RetentionConfig, ViolationKind};
use serde_json::json;

use crate::{test_pseudonymizer, Tamper};

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).expect("a valid time")
}

/// When the checks run.
fn as_of() -> Timestamp {
    at("2026-11-21T12:00:00Z")
}

fn signer() -> NoteSigner {
    NoteSigner::new(&checkpoint::default_origin(&StreamId::default()), &[7; 32])
        .expect("a valid name")
}

/// A session acting as the privacy officer, on a manual clock.
async fn session(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Session {
    let (writer, _task) = GroupCommitWriter::start(
        store.clone(),
        StreamId::default(),
        clock.clone(),
        WriterConfig::default(),
    )
    .await
    .expect("writer starts");
    let mut ingest = Ingest::new(test_pseudonymizer());
    ingest.parse = ParseOptions {
        phi_policy: PhiPolicy::Redact,
        ..ParseOptions::default()
    };
    ingest.alg = writer.hash_alg();
    Session {
        store,
        stream: StreamId::default(),
        writer,
        ingest,
        clock,
        actor: json!({"user_id": "officer-1", "role": "privacy_officer"}),
    }
}

/// How the source `ehr-web` writes in the last days before as-of.
#[derive(Clone, Copy)]
enum Recent {
    /// Every hour up to as-of.
    Steady,
    /// Every hour, but nothing for five hours on November 15.
    Outage,
    /// Every hour until November 19, then nothing.
    Stops,
}

/// A ledger of weekly PHI reads from 2019-01-01 to 2026-11-10 (patients p-0..p-6 in turn),
/// then `ehr-web` writing hourly from 2026-11-11. Returns the clock, left at as-of.
async fn generate(store: &Arc<dyn Store>, recent: Recent) -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::new(at("2019-01-01T00:00:00Z")));
    let s = session(store.clone(), clock.clone()).await;
    let mut t = at("2019-01-01T09:00:00Z");
    let mut i = 0usize;
    let week = 7 * 86_400 * 1_000_000;
    let hour = 3_600 * 1_000_000;
    while t < at("2026-11-10T00:00:00Z") {
        append(&s, &clock, t, i, "records-batch").await;
        t = Timestamp(t.micros() + week);
        i += 1;
    }
    let mut t = at("2026-11-11T00:00:00Z");
    let outage = (at("2026-11-15T06:00:00Z"), at("2026-11-15T11:00:00Z"));
    while t < as_of() {
        let silent = match recent {
            Recent::Steady => false,
            Recent::Outage => t >= outage.0 && t <= outage.1,
            Recent::Stops => t >= at("2026-11-19T00:00:00Z"),
        };
        if !silent {
            append(&s, &clock, t, i, "ehr-web").await;
        }
        t = Timestamp(t.micros() + hour);
        i += 1;
    }
    clock.set(as_of());
    clock
}

async fn append(s: &Session, clock: &ManualClock, t: Timestamp, i: usize, source: &str) {
    clock.set(t);
    let patient = format!("p-{}", i % 7);
    let body = json!({"occurred_at": t.to_rfc3339(), "action": "read", "outcome": "success",
        "actor": {"user_id": format!("u-{}", i % 5), "role": "nurse"},
        "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
        "source": source});
    let prepared = s.ingest.prepare(&body, None).expect("a valid event");
    s.writer.append(vec![prepared]).await.expect("append");
}

async fn check(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> retention::CheckReport {
    check_with(store, clock, VerifyOptions::default()).await
}

async fn check_with(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
    opts: VerifyOptions,
) -> retention::CheckReport {
    let s = session(store.clone(), clock.clone()).await;
    let (report, receipt) = ops::check(&s, &RetentionConfig::default(), as_of(), &opts, |_| {})
        .await
        .expect("the check runs");
    // The check's own entry is in the ledger.
    let e = store
        .get(&StreamId::default(), receipt.seq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        e.columns.action.as_deref(),
        Some(ledger::record::RETENTION_CHECK_ACTION)
    );
    report
}

fn kinds(r: &retention::CheckReport) -> Vec<ViolationKind> {
    r.violations.iter().map(|v| v.kind).collect()
}

async fn verify(store: &Arc<dyn Store>) -> ledger::VerifyReport {
    verify_store(
        store.as_ref(),
        &StreamId::default(),
        &VerifyOptions::default(),
        |_| {},
    )
    .await
    .expect("verify runs")
}

fn temp_path(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}

/// Runs every retention scenario, each on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn Tamper>)>,
{
    a_clean_ledger_is_compliant(fresh().await.0).await;
    archive_and_purge_past_the_horizon(fresh().await.0).await;
    a_purge_with_nothing_past_its_horizon_is_refused_and_recorded(fresh().await.0).await;
    let (store, tamper) = fresh().await;
    a_missing_entry_inside_the_horizon_is_a_violation(store, tamper).await;
    let (store, tamper) = fresh().await;
    a_payload_removed_inside_the_horizon_is_a_violation(store, tamper).await;
    let (store, tamper) = fresh().await;
    a_rolled_back_tail_is_a_violation(store, tamper).await;
    coverage_gaps_and_silent_sources_are_violations(fresh().await.0, fresh().await.0).await;
}

pub async fn a_clean_ledger_is_compliant(store: Arc<dyn Store>) {
    let clock = generate(&store, Recent::Steady).await;
    let r = check(&store, &clock).await;
    assert!(r.ok, "{r:?}");
    assert!(r.violations.is_empty());
    assert!(r.text().starts_with("COMPLIANT"), "{}", r.text());
    // The plan: entries recorded before 2020-11-21 are past six years, none is purged yet.
    let s = session(store.clone(), clock.clone()).await;
    let plan = ops::plan(&s, &RetentionConfig::default(), as_of(), |_| {})
        .await
        .unwrap();
    let weeks_past = plan.eligible;
    assert!(weeks_past > 90 && weeks_past < 100, "{plan:?}");
    assert_eq!(plan.already_purged, 0);
}

pub async fn archive_and_purge_past_the_horizon(store: Arc<dyn Store>) {
    let clock = generate(&store, Recent::Steady).await;
    let s = session(store.clone(), clock.clone()).await;
    let config = RetentionConfig::default();
    // Litigation over patient p-3: everything naming them is kept.
    let held = ops::add_hold(&s, &HoldTarget::Patient("p-3".into()), "matter 2026-17")
        .await
        .unwrap();
    assert_eq!(held.len(), 2, "keyed and legacy pseudonyms");
    let (_dir, path) = temp_path("archive.cbor");
    let summary = retention::archive::write_archive(
        store.clone(),
        &StreamId::default(),
        at("2021-06-01T00:00:00Z"),
        &path,
        &signer(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(summary.entries() > 100);
    let outcome = ops::purge(
        &s,
        &config,
        &path,
        &signer().verifier(),
        "privacy officer, ticket 88",
        |_, _, _| {},
    )
    .await
    .unwrap();
    // Past six years at as-of: recorded before 2020-11-21; the archive reaches 2021-06.
    assert!(outcome.purged > 80, "{outcome:?}");
    assert_eq!(outcome.purged, outcome.record.count);
    assert!(outcome.plan.inside_horizon > 0);
    assert!(outcome.plan.held.iter().map(|h| h.count).sum::<u64>() > 10);

    // Every purged entry is past its horizon; every held one keeps its payload.
    let p3 = test_pseudonymizer().pseudonymize("p-3").to_string();
    let (mut purged, mut kept_held) = (0u64, 0u64);
    for seq in 1..summary.entries() {
        let e = store.get(&StreamId::default(), seq).await.unwrap().unwrap();
        match e.payload {
            None => {
                purged += 1;
                assert!(e.recorded_at < at("2020-11-21T12:00:00Z"), "entry {seq}");
                assert_eq!(e.columns, Columns::undecodable());
            }
            Some(_) if e.columns.patient.as_deref() == Some(p3.as_str()) => kept_held += 1,
            Some(_) => {}
        }
    }
    assert_eq!(purged, outcome.purged);
    assert!(kept_held > 10);

    // verify passes and names the authorization; so does the check.
    let v = verify(&store).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.payloads_purged, purged);
    assert_eq!(v.purges.len(), 1);
    assert_eq!(v.purges[0].purged, purged);
    assert_eq!(v.purges[0].seq, outcome.authorization.seq);
    let r = check(&store, &clock).await;
    assert!(r.ok, "{}", r.text());
    assert_eq!(r.payloads_purged, purged);

    // Again with the same archive: nothing is left to purge; refused and recorded.
    let again = ops::purge(
        &s,
        &config,
        &path,
        &signer().verifier(),
        "again",
        |_, _, _| {},
    )
    .await;
    let Err(OpsError::Refused(why)) = again else {
        panic!("a second purge was not refused: {again:?}")
    };
    assert!(why.contains("recorded at entry"), "{why}");

    // A forged archive (one byte changed) is refused before anything is purged.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    let (_dir2, forged) = temp_path("forged.cbor");
    std::fs::write(&forged, bytes).unwrap();
    let refused = ops::purge(
        &s,
        &config,
        &forged,
        &signer().verifier(),
        "x",
        |_, _, _| {},
    )
    .await;
    assert!(matches!(refused, Err(OpsError::Refused(_))), "{refused:?}");

    // Releasing the hold lets a later purge take the held entries.
    for r in &held {
        ops::release_hold(&s, &config, r.seq, "matter settled")
            .await
            .unwrap();
    }
    let (_dir3, second) = temp_path("second.cbor");
    retention::archive::write_archive(
        store.clone(),
        &StreamId::default(),
        at("2021-06-01T00:00:00Z"),
        &second,
        &signer(),
        |_, _| {},
    )
    .await
    .unwrap();
    let after = ops::purge(
        &s,
        &config,
        &second,
        &signer().verifier(),
        "ticket 89",
        |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(after.purged > 10 && after.purged <= kept_held, "{after:?}");
    let v = verify(&store).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.purges.len(), 2);
    assert_eq!(v.payloads_purged, purged + after.purged);
    // The two authorizations' spans overlap; each payload counts under the one whose runs
    // hold it.
    assert_eq!(
        (v.purges[0].purged, v.purges[1].purged),
        (purged, after.purged)
    );
    let r = check(&store, &clock).await;
    assert!(r.ok, "{}", r.text());
}

pub async fn a_purge_with_nothing_past_its_horizon_is_refused_and_recorded(store: Arc<dyn Store>) {
    let clock = generate(&store, Recent::Steady).await;
    let s = session(store.clone(), clock.clone()).await;
    let (_dir, path) = temp_path("archive.cbor");
    retention::archive::write_archive(
        store.clone(),
        &StreamId::default(),
        at("2021-01-01T00:00:00Z"),
        &path,
        &signer(),
        |_, _| {},
    )
    .await
    .unwrap();
    // A ten-year policy: nothing of 2019 may go yet.
    let config = RetentionConfig::from_toml("[policy]\ndefault_years = 10\n").unwrap();
    let head_before = store.head(&StreamId::default()).await.unwrap().unwrap().seq;
    let refused = ops::purge(&s, &config, &path, &signer().verifier(), "x", |_, _, _| {}).await;
    let Err(OpsError::Refused(why)) = refused else {
        panic!("not refused: {refused:?}")
    };
    assert!(why.contains("inside their horizon"), "{why}");
    // Recorded: one entry (the refusal), no authorization, no payload gone.
    let head = store.head(&StreamId::default()).await.unwrap().unwrap().seq;
    assert_eq!(head, head_before + 1);
    let refusal = store
        .get(&StreamId::default(), head)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        refusal.columns.action.as_deref(),
        Some(ops::PURGE_REFUSED_ACTION)
    );
    let v = verify(&store).await;
    assert!(v.ok && v.payloads_purged == 0, "{v:?}");

    // (That the store itself refuses a payload younger than six years, whoever asks, is the
    // purge suite's: the stores here are attackable, their triggers off.)
}

pub async fn a_missing_entry_inside_the_horizon_is_a_violation(
    store: Arc<dyn Store>,
    tamper: Arc<dyn Tamper>,
) {
    let clock = generate(&store, Recent::Steady).await;
    let victim = retention::archive::entries_before(
        store.as_ref(),
        &StreamId::default(),
        at("2024-03-01T00:00:00Z"),
    )
    .await
    .unwrap();
    tamper.delete(&StreamId::default(), victim).await;
    let r = check(&store, &clock).await;
    assert!(!r.ok);
    assert_eq!(kinds(&r), [ViolationKind::EntryMissing], "{}", r.text());
    assert_eq!(r.violations[0].seq, Some(victim));
    assert!(r.text().starts_with("VIOLATION"), "{}", r.text());
}

pub async fn a_payload_removed_inside_the_horizon_is_a_violation(
    store: Arc<dyn Store>,
    tamper: Arc<dyn Tamper>,
) {
    let clock = generate(&store, Recent::Steady).await;
    let victim: Seq = retention::archive::entries_before(
        store.as_ref(),
        &StreamId::default(),
        at("2025-03-01T00:00:00Z"),
    )
    .await
    .unwrap();
    // As a purge would leave it (payload and columns gone), but with no authorization.
    let mut e = store
        .get(&StreamId::default(), victim)
        .await
        .unwrap()
        .unwrap();
    e.payload = None;
    e.columns = Columns::undecodable();
    tamper.overwrite(&StreamId::default(), victim, &e).await;
    let r = check(&store, &clock).await;
    assert_eq!(kinds(&r), [ViolationKind::PayloadMissing], "{}", r.text());
    assert_eq!(r.violations[0].seq, Some(victim));
}

pub async fn a_rolled_back_tail_is_a_violation(store: Arc<dyn Store>, tamper: Arc<dyn Tamper>) {
    let clock = generate(&store, Recent::Steady).await;
    let head = store.head(&StreamId::default()).await.unwrap().unwrap();
    let signer = signer();
    let kept: Checkpoint = checkpoint::at_head(store.as_ref(), &StreamId::default(), signer.name())
        .await
        .unwrap()
        .unwrap();
    // The newest three entries deleted (below the first stored Merkle node's reach).
    for seq in head.seq - 2..=head.seq {
        tamper.delete(&StreamId::default(), seq).await;
    }
    let opts = VerifyOptions {
        checkpoints: vec![kept],
        checkpoint_key: Some(signer.verifier()),
    };
    let r = check_with(&store, &clock, opts).await;
    assert!(kinds(&r).contains(&ViolationKind::Rollback), "{}", r.text());
}

pub async fn coverage_gaps_and_silent_sources_are_violations(
    outage: Arc<dyn Store>,
    stops: Arc<dyn Store>,
) {
    let clock = generate(&outage, Recent::Outage).await;
    let r = check(&outage, &clock).await;
    assert_eq!(kinds(&r), [ViolationKind::CoverageGap], "{}", r.text());
    assert_eq!(r.coverage_gaps.len(), 1, "{r:?}");
    let clock = generate(&stops, Recent::Stops).await;
    let r = check(&stops, &clock).await;
    assert_eq!(kinds(&r), [ViolationKind::SourceSilent], "{}", r.text());
}
