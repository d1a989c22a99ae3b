//! The retention crate end to end on the embedded store, with a controllable clock: a source
//! writing in 2019 and another in November 2026, a legal hold, the `retention` projection on
//! the ledger's runner (restarting often), its readers, a plan under a six-year policy, a purge
//! of exactly what the plan lists under an authorization entry, and the check before and after
//! (compliant), then with a source gone silent (a violation). The projection is rebuilt over
//! the purged ledger: purged entries are skipped, the holds come back the same.

use std::sync::Arc;

use ledger::payload::{StoredActor, StoredResource};
use ledger::projection::Runner;
use ledger::record::{HoldScope, LegalHold, PurgeAuthorization, Record, HOLD_ACTION, PURGE_ACTION};
use ledger::verify::verify_store;
use ledger::{
    GroupCommitWriter, ManualClock, Payload, PreparedEntry, Seq, Store, StoredEvent, StreamId,
    Timestamp, VerifyOptions, VerifyReport, WriterConfig,
};
use retention::projection::NAME;
use retention::{
    evaluate, read, CheckInput, CheckReport, HoldSet, Planner, RetentionConfig,
    RetentionProjection, ViolationKind,
};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("a valid RFC 3339 time")
}

fn event(source: &str, patient: Option<&str>, at: Timestamp) -> StoredEvent {
    StoredEvent {
        phi: patient.is_some(),
        idem: None,
        actor: StoredActor {
            role: Some("nurse".into()),
            user_id: Some("k1:user".into()),
            ..StoredActor::default()
        },
        action: "read".into(),
        detail: None,
        record: None,
        source: source.to_owned(),
        outcome: "success".into(),
        request: None,
        resource: patient.map(|p| StoredResource {
            id: Some(p.to_owned()),
            kind: "Patient".into(),
        }),
        patient_id: patient.map(str::to_owned),
        occurred_at: at.0,
    }
}

fn own(action: &str, record: Record, at: Timestamp) -> StoredEvent {
    StoredEvent {
        action: action.to_owned(),
        record: Some(record),
        detail: Some("by the privacy officer".into()),
        ..event("auditledger", None, at)
    }
}

struct Ledger {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    writer: GroupCommitWriter,
    stream: StreamId,
}

impl Ledger {
    async fn new(start: Timestamp) -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(store_sqlite::SqliteStore::open(dir.path()).unwrap());
        let clock = Arc::new(ManualClock::new(start));
        let stream = StreamId::default();
        let (writer, _task) = GroupCommitWriter::start(
            store.clone(),
            stream.clone(),
            clock.clone(),
            WriterConfig::default(),
        )
        .await
        .unwrap();
        Ledger {
            _dir: dir,
            store,
            clock,
            writer,
            stream,
        }
    }

    /// Appends `event` at the ledger time `at`; returns its seq.
    async fn append(&self, at: Timestamp, event: StoredEvent) -> Seq {
        self.clock.set(at);
        let prepared = PreparedEntry::new(&Payload::Event(event), self.writer.hash_alg());
        self.writer.append(vec![prepared]).await.unwrap()[0].seq
    }

    async fn project(&self, rebuild: bool) -> u64 {
        let projection = RetentionProjection::new(Default::default());
        let mut runner = if rebuild {
            Runner::rebuild(self.store.clone(), self.writer.clone(), projection).await
        } else {
            Runner::open(self.store.clone(), self.writer.clone(), projection).await
        }
        .unwrap();
        runner.set_commit_every(37);
        runner.catch_up(|_, _| {}).await.unwrap()
    }

    async fn verify(&self) -> VerifyReport {
        verify_store(
            self.store.as_ref(),
            &self.stream,
            &VerifyOptions::default(),
            |_| {},
        )
        .await
        .unwrap()
    }

    async fn check(&self, config: &RetentionConfig, as_of: Timestamp) -> CheckReport {
        let verify = self.verify().await;
        let holds = read::hold_set(self.store.as_ref(), &self.stream)
            .await
            .unwrap();
        let since = Timestamp(as_of.0 - config.coverage.window());
        let gaps = read::gaps(self.store.as_ref(), &self.stream, since)
            .await
            .unwrap();
        let sources = read::sources(self.store.as_ref(), &self.stream)
            .await
            .unwrap();
        evaluate(&CheckInput {
            as_of,
            config,
            verify: &verify,
            holds: &holds,
            gaps: &gaps,
            sources: &sources,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_purge_and_check_on_the_embedded_store() {
    let config = RetentionConfig::default();
    let l = Ledger::new(ts("2019-01-01T00:00:00Z")).await;

    // 2019: "legacy-ehr" writes every 30 minutes for two days, one patient of every seven
    // entries is the one later held; then a silence of five hours, then it writes on.
    let start = ts("2019-01-01T00:10:00Z");
    let mut t = start;
    let mut held_patient_entries = 0;
    for i in 0..96 {
        let patient = if i % 7 == 3 {
            held_patient_entries += 1;
            "k1:held"
        } else {
            "k1:other"
        };
        l.append(t, event("legacy-ehr", Some(patient), t)).await;
        t = Timestamp(t.0 + 30 * MINUTE);
    }
    let silence_from = Timestamp(t.0 - 30 * MINUTE);
    t = Timestamp(silence_from.0 + 5 * HOUR);
    let resumed = l.append(t, event("legacy-ehr", Some("k1:other"), t)).await;
    let last_2019 = l
        .append(Timestamp(t.0 + MINUTE), event("legacy-ehr", None, t))
        .await;

    // 2025: a legal hold on the patient.
    let hold_at = ts("2025-06-01T12:00:00Z");
    let hold = l
        .append(
            hold_at,
            own(
                HOLD_ACTION,
                Record::LegalHold(LegalHold {
                    to: None,
                    from: None,
                    scope: HoldScope::Patient,
                    reason: "litigation 2025-104".into(),
                    subject: Some("k1:held".into()),
                }),
                hold_at,
            ),
        )
        .await;

    // November 2026: "ehr" writes every 20 minutes for two days, up to 10 minutes before as-of.
    let as_of = ts("2026-11-29T00:00:00Z");
    let mut t = Timestamp(as_of.0 - 48 * HOUR);
    while t.0 < as_of.0 - 10 * MINUTE {
        l.append(t, event("ehr", Some("k1:other"), t)).await;
        t = Timestamp(t.0 + 20 * MINUTE);
    }
    let head = l.store.head(&l.stream).await.unwrap().unwrap().seq;

    // The projection, restarting every 37 entries.
    assert_eq!(l.project(false).await, head + 1);
    assert_eq!(
        read::position(l.store.as_ref(), &l.stream).await.unwrap(),
        Some(head)
    );
    let holds = read::holds(l.store.as_ref(), &l.stream).await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!((holds[0].seq, holds[0].added_at), (hold, hold_at));
    let gaps = read::gaps(l.store.as_ref(), &l.stream, Timestamp(0))
        .await
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (
            gaps[0].source.as_str(),
            gaps[0].from,
            gaps[0].resumed_seq,
            gaps[0].minutes
        ),
        ("legacy-ehr", silence_from, resumed, 300)
    );
    assert!(
        read::gaps(l.store.as_ref(), &l.stream, ts("2020-01-01T00:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    let sources = read::sources(l.store.as_ref(), &l.stream).await.unwrap();
    let names: Vec<&str> = sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(names, ["auditledger", "ehr", "legacy-ehr"]);
    assert!(sources[1].regular);
    assert_eq!(sources[2].last_seq, last_2019);

    // Before any purge: compliant (no checkpoint, so a warning).
    let before = l.check(&config, as_of).await;
    assert!(before.ok, "{}", before.text());
    assert_eq!(before.holds_active, [hold]);
    assert_eq!(before.warnings.len(), 1);

    // The plan: every 2019 entry but the held patient's.
    let hold_set = HoldSet::new(holds.clone());
    let mut planner = Planner::new(&config.policy, &hold_set, as_of);
    let stop = planner.stop_at();
    let mut chunks = l.store.scan(&l.stream, 0);
    'read: while let Some(chunk) = chunks.recv().await {
        for e in chunk.unwrap() {
            if e.recorded_at >= stop {
                break 'read;
            }
            planner.push(&e);
        }
    }
    drop(chunks);
    let plan = planner.finish();
    let in_2019 = 96 + 2;
    assert_eq!(plan.eligible, in_2019 - held_patient_entries);
    assert_eq!(plan.held.len(), 1);
    assert_eq!(
        (plan.held[0].hold, plan.held[0].count),
        (hold, held_patient_entries)
    );
    assert_eq!(
        plan.never_eligible, 1,
        "the genesis (reading stopped before the hold)"
    );
    assert_eq!(plan.entries, in_2019 + 1);
    assert_eq!(
        plan.eligible_ranges().len(),
        held_patient_entries as usize + 1
    );

    // Authorize, then purge exactly the plan's ranges.
    let ranges = plan.eligible_ranges().to_vec();
    let authorization = PurgeAuthorization {
        to: ranges.last().unwrap().1,
        from: ranges[0].0,
        count: plan.eligible,
        holds: vec![hold],
        rules: plan.purged_rules(),
        ranges: ranges.clone(),
        archive: "ab".repeat(32),
        archive_size: head + 1,
        authorized_by: "privacy officer, ticket 7".into(),
    };
    let auth_at = Timestamp(as_of.0 + MINUTE);
    let auth = l
        .append(
            auth_at,
            own(
                PURGE_ACTION,
                Record::PurgeAuthorization(authorization),
                auth_at,
            ),
        )
        .await;
    let mut purged = 0;
    for (from, to) in &ranges {
        purged += l
            .store
            .purge_payloads(&l.stream, auth, *from, *to)
            .await
            .unwrap();
    }
    assert_eq!(purged, plan.eligible);

    // Verify still passes end to end and counts them; the check is compliant.
    let verify = l.verify().await;
    assert!(verify.ok, "{verify:?}");
    assert_eq!(verify.payloads_purged, plan.eligible);
    l.project(false).await;
    let after = l.check(&config, Timestamp(auth_at.0 + MINUTE)).await;
    assert!(after.ok, "{}", after.text());
    assert_eq!(after.payloads_purged, plan.eligible);
    assert_eq!(after.purges.len(), 1);
    assert_eq!(after.purges[0].purged, plan.eligible);
    assert!(after.text().starts_with("COMPLIANT"));

    // A what-if under a ten-year policy: the purge was inside that horizon.
    let mut longer = config.clone();
    longer.policy.default_years = 10;
    let what_if = l.check(&longer, Timestamp(auth_at.0 + MINUTE)).await;
    assert!(what_if
        .violations
        .iter()
        .any(|v| v.kind == ViolationKind::PurgedInsideHorizon && v.seq == Some(auth)));

    // Three hours later with nothing written: "ehr" has been silent too long.
    let silent = l.check(&config, Timestamp(as_of.0 + 3 * HOUR)).await;
    assert_eq!(
        silent.violations.iter().map(|v| v.kind).collect::<Vec<_>>(),
        [ViolationKind::SourceSilent]
    );
    assert!(silent.text().starts_with("VIOLATION"));
    assert_eq!(silent.record().findings, ["source_silent"]);

    // A rebuild over the purged ledger skips the purged entries and finds the same hold.
    let rebuilt = l.project(true).await;
    assert_eq!(rebuilt, auth + 1);
    assert_eq!(
        read::holds(l.store.as_ref(), &l.stream).await.unwrap(),
        holds
    );
    let sources_after = read::sources(l.store.as_ref(), &l.stream).await.unwrap();
    let ehr = sources_after.iter().find(|s| s.source == "ehr").unwrap();
    assert_eq!(ehr, &sources[1], "the 2026 source is untouched");
    assert!(l.store.projection(NAME, &l.stream).await.unwrap().is_some());
}
