//! The projection runner with the security projection, on a real store: detections are
//! recorded once in the ledger and once in the read model however often the runner is stopped,
//! fails or is rebuilt; a lifted block is recorded and leaves the block list; damage stops the
//! projection before the damaged entry.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ledger::payload::Payload;
use ledger::projection::{ProjectionError, Runner};
use ledger::{
    AppendBatch, Digest, Entry, EntryChunks, Head, Ingest, MerkleNode, Problem, ReadModelRow,
    RowChange, RowQuery, SavedProjection, Seq, Store, StoreError, StoredCheckpoint, StreamId,
};
use security::projection::{BLOCKS, EVENTS, LIFTS, NAME, SECURITY_EVENT};
use security::{RulesConfig, SecurityProjection};
use serde_json::{json, Value};

use crate::{start_writer, test_pseudonymizer, Tamper};

/// A quiet Monday in New York working hours, in UTC.
const DAY: &str = "2026-11-23T15";

fn at(minute: usize, second: usize) -> String {
    format!("{DAY}:{:02}:{:02}.000Z", minute % 60, second % 60)
}

/// Ordinary traffic around five attacks: a brute-force burst from one IP (blocked), a hijacked
/// session, a bulk export, a role change and refused PHI requests.
pub fn security_stream() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..120 {
        events.push(json!({"occurred_at": at(i / 4, i * 7), "action": "read", "outcome": "success",
            "actor": {"user_id": format!("u-{}", i % 5), "role": "nurse", "ip": format!("10.0.0.{}", i % 5),
                      "session_id": format!("s-{}", i % 5), "user_agent": "Mozilla/5.0"},
            "resource": {"type": "Patient", "id": format!("p-{}", i % 9)},
            "patient_id": format!("p-{}", i % 9), "phi": true, "source": "ehr-web"}));
        match i {
            30..=35 => events.push(json!({"occurred_at": at(8, i), "action": "login", "outcome": "failure",
                "actor": {"user_id": format!("u-{}", 50 + i), "ip": "203.0.113.9"}, "source": "ehr-web"})),
            60 => events.push(json!({"occurred_at": at(16, 0), "action": "read", "outcome": "success",
                "actor": {"user_id": "u-1", "role": "nurse", "ip": "198.51.100.7", "session_id": "s-1", "user_agent": "Mozilla/5.0"},
                "resource": {"type": "Patient", "id": "p-1"}, "patient_id": "p-1", "phi": true, "source": "ehr-web"})),
            70 => events.push(json!({"occurred_at": at(18, 0), "action": "export", "outcome": "success",
                "actor": {"user_id": "u-2", "role": "analyst"}, "resource": {"type": "Report"},
                "source": "ehr-web", "detail": "exported 5000 records"})),
            80 => events.push(json!({"occurred_at": at(20, 0), "action": "role_change", "outcome": "success",
                "actor": {"user_id": "u-0", "role": "admin"}, "source": "ehr-admin"})),
            90..=92 => events.push(json!({"occurred_at": at(23, i), "action": "read", "outcome": "denied",
                "actor": {"user_id": "u-3", "role": "clerk"}, "resource": {"type": "Patient", "id": "p-4"},
                "patient_id": "p-4", "phi": true, "source": "ehr-web"})),
            _ => {}
        }
    }
    events
}

/// The raw IP the stream's brute force comes from.
pub const ATTACKER_IP: &str = "203.0.113.9";

async fn append(store: &Arc<dyn Store>, s: &StreamId, events: &[Value]) {
    let (w, task) = start_writer(store, s).await;
    let ingest = Ingest::new(test_pseudonymizer());
    for chunk in events.chunks(25) {
        let prepared = ingest.prepare_batch(chunk, None, 0).unwrap();
        w.append(prepared).await.unwrap();
    }
    drop(w);
    task.await.unwrap();
}

/// Catches up, reopening after each failure (as `serve` does), until at the head, reading
/// `read_every` entries at a time and committing every `commit_every`; returns the failures
/// seen.
async fn project(
    store: &Arc<dyn Store>,
    s: &StreamId,
    commit_every: usize,
    read_every: usize,
) -> usize {
    let (w, task) = start_writer(store, s).await;
    let mut failures = 0;
    loop {
        let mut runner = match Runner::open(
            store.clone(),
            w.clone(),
            SecurityProjection::new(RulesConfig::default()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        runner.set_commit_every(commit_every);
        runner.set_read_every(read_every);
        match runner.catch_up(|_, _| {}).await {
            // Its own entries land after the snapshot it read: go once more to pass them.
            Ok(0) => break,
            Ok(_) => {}
            Err(ProjectionError::Store(_)) => failures += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(failures < 1000, "no progress");
    }
    drop(w);
    task.await.unwrap();
    failures
}

async fn rows(store: &dyn Store, s: &StreamId, table: &str) -> Vec<(String, i64, Value)> {
    let mut rows: Vec<(String, i64, Value)> = store
        .read_model_rows(NAME, s, &RowQuery::table(table, 100_000))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.ord, serde_json::from_str(&r.value).unwrap()))
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

/// The `seq`s of the ledger's `security_event` entries.
async fn recorded(store: &dyn Store, s: &StreamId) -> Vec<Seq> {
    let mut out = Vec::new();
    let mut chunks = store.scan(s, 0);
    while let Some(chunk) = chunks.recv().await {
        for e in chunk.unwrap() {
            if let Some(Ok(Payload::Event(ev))) = e.decode_payload() {
                if ev.action == SECURITY_EVENT {
                    out.push(e.seq);
                }
            }
        }
    }
    out
}

/// The security projection's runner on a writer of its own on `s`, and the writer's task.
async fn security_runner(
    store: &Arc<dyn Store>,
    s: &StreamId,
) -> (Runner<SecurityProjection>, tokio::task::JoinHandle<()>) {
    let (w, task) = start_writer(store, s).await;
    let runner = Runner::open(
        store.clone(),
        w,
        SecurityProjection::new(RulesConfig::default()),
    )
    .await
    .unwrap();
    (runner, task)
}

async fn head(store: &dyn Store, s: &StreamId) -> Seq {
    store.head(s).await.unwrap().unwrap().seq
}

/// Runs every case. `fresh` makes an empty store and its tamperer.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn Tamper>)>,
{
    let s = StreamId::default();
    let stream = security_stream();
    let half = stream.len() / 2;

    // Reference: the traffic in two parts, the projection run after each, no failures.
    let (reference, _) = fresh().await;
    append(&reference, &s, &stream[..half]).await;
    project(&reference, &s, 10_000, 10_000).await;
    append(&reference, &s, &stream[half..]).await;
    project(&reference, &s, 10_000, 10_000).await;
    let events = rows(reference.as_ref(), &s, EVENTS).await;
    let blocks = rows(reference.as_ref(), &s, BLOCKS).await;
    let rules: Vec<&str> = events
        .iter()
        .map(|(_, _, v)| v["rule"].as_str().unwrap())
        .collect();
    for rule in [
        "brute_force",
        "session_hijack",
        "bulk_export",
        "configuration_change",
        "unauthorized_access",
    ] {
        assert!(rules.contains(&rule), "{rule} detected: {rules:?}");
    }
    assert_eq!(blocks.len(), 1, "the brute-force IP is blocked: {blocks:?}");
    let attacker = test_pseudonymizer().pseudonymize(ATTACKER_IP).to_string();
    assert_eq!(blocks[0].0, attacker);
    let ledger_seqs = recorded(reference.as_ref(), &s).await;
    assert_eq!(ledger_seqs.len(), events.len(), "one entry per detection");
    let mut row_seqs: Vec<Seq> = events
        .iter()
        .map(|(_, _, v)| v["ledger_seq"].as_u64().unwrap())
        .collect();
    row_seqs.sort();
    assert_eq!(row_seqs, ledger_seqs, "each row names its entry");

    // Rebuilding from zero gives the same read model and appends nothing; the runner counts
    // the row changes the store committed, and the time it spent reading.
    let before = head(reference.as_ref(), &s).await;
    let (w, task) = start_writer(&reference, &s).await;
    let counted = Arc::new(Wrapped::new(reference.clone()));
    let mut runner = Runner::rebuild(
        counted.clone(),
        w,
        SecurityProjection::new(RulesConfig::default()),
    )
    .await
    .unwrap();
    runner.set_commit_every(7);
    runner.catch_up(|_, _| {}).await.unwrap();
    let stats = runner.stats();
    let committed = counted.committed_rows.load(Ordering::Relaxed);
    assert!(committed > 0);
    assert_eq!(
        stats.row_writes.load(Ordering::Relaxed),
        committed as u64,
        "row writes counted as committed"
    );
    assert!(stats.commits.load(Ordering::Relaxed) > 1);
    assert!(stats.read_micros.load(Ordering::Relaxed) > 0);
    drop(runner);
    task.await.unwrap();
    assert_eq!(head(reference.as_ref(), &s).await, before, "no duplicates");
    assert_eq!(rows(reference.as_ref(), &s, EVENTS).await, events);
    assert_eq!(rows(reference.as_ref(), &s, BLOCKS).await, blocks);

    keep_up_commits_when_due_or_idle(&fresh().await.0, &stream, &events, &blocks).await;
    far_behind_commits_in_full_batches(fresh().await.0, &stream).await;

    // The same traffic read one entry at a time and committed every 2 (one commit spans two
    // reads), with one commit in three failing (before or after it reached the database), each
    // failure followed by a reopen.
    let (real, _) = fresh().await;
    let flaky: Arc<dyn Store> = Arc::new(Wrapped {
        fail_commits: true,
        ..Wrapped::new(real.clone())
    });
    append(&real, &s, &stream[..half]).await;
    let failed = project(&flaky, &s, 2, 1).await;
    append(&real, &s, &stream[half..]).await;
    let failed = failed + project(&flaky, &s, 2, 1).await;
    assert!(failed > 10, "failures were injected: {failed}");
    // Entry hashes differ between the two ledgers (their recorded_at do); all else is equal.
    let without_hashes = |rows: Vec<(String, i64, Value)>| {
        rows.into_iter()
            .map(|(k, o, mut v)| {
                v.as_object_mut().unwrap().remove("ledger_entry_hash");
                (k, o, v)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_hashes(rows(real.as_ref(), &s, EVENTS).await),
        without_hashes(events.clone())
    );
    assert_eq!(rows(real.as_ref(), &s, BLOCKS).await, blocks);
    assert_eq!(recorded(real.as_ref(), &s).await, ledger_seqs);
    assert_eq!(head(real.as_ref(), &s).await, before);

    // Lifting the block: recorded in the ledger, gone from the block list, kept as a lift.
    let lift = json!({"occurred_at": at(59, 0), "action": "block_lifted", "outcome": "success",
        "actor": {"user_id": "admin-1", "role": "admin"}, "resource": {"type": "BlockedIp", "id": ATTACKER_IP},
        "source": "auditledger", "detail": "customer's NAT gateway, verified by phone"});
    append(&real, &s, &[lift]).await;
    project(&real, &s, 10_000, 10_000).await;
    assert!(rows(real.as_ref(), &s, BLOCKS).await.is_empty());
    let lifts = rows(real.as_ref(), &s, LIFTS).await;
    assert_eq!(lifts.len(), 1);
    assert_eq!(lifts[0].0, attacker);
    assert_eq!(
        lifts[0].2["reason"],
        "customer's NAT gateway, verified by phone"
    );

    // Damage: the projection applies what verifies and stops before the damaged entry.
    let (store, tamper) = fresh().await;
    append(&store, &s, &stream).await;
    let target = 77;
    let mut e = store.get(&s, target).await.unwrap().unwrap();
    e.payload.as_mut().unwrap()[25] ^= 0x01;
    tamper.overwrite(&s, target, &e).await;
    let (mut runner, task) = security_runner(&store, &s).await;
    match runner.catch_up(|_, _| {}).await {
        Err(ProjectionError::Damaged { seq, problem, .. }) => {
            assert_eq!((seq, problem), (target, Problem::PayloadModified))
        }
        other => panic!("damage must stop the projection: {other:?}"),
    }
    drop(runner);
    task.await.unwrap();
    let saved = store.projection(NAME, &s).await.unwrap().unwrap();
    assert_eq!(
        saved.seq,
        target - 1,
        "applied up to the damage, not past it"
    );
}

/// Following the head when appenders have moved it on by a catch-up commit's worth: the
/// runner does not commit at the commit interval but in full batches, and commits on its own
/// interval again once it is close to the head.
async fn far_behind_commits_in_full_batches(real: Arc<dyn Store>, stream: &[Value]) {
    let s = StreamId::default();
    // Ordinary reads: nothing is detected, so nothing but these is appended.
    let reads: Vec<Value> = stream
        .iter()
        .filter(|e| e["action"] == "read" && e["outcome"] == "success")
        .take(30)
        .cloned()
        .collect();
    append(&real, &s, &reads[..10]).await;
    let wrapped = Arc::new(Wrapped::new(real.clone()));
    let store: Arc<dyn Store> = wrapped.clone();
    let (w, task) = start_writer(&real, &s).await;
    let mut runner = Runner::open(store, w, SecurityProjection::new(RulesConfig::default()))
        .await
        .unwrap();
    runner.set_commit_every(15);
    runner.set_commit_interval(std::time::Duration::ZERO);
    // keep_up's first look at the head finds the genesis entry and 10 events; its second, once
    // they are applied, finds 20 more: behind by more than a commit's worth.
    *wrapped.appends_on_head.lock().unwrap() = Some((1, reads[10..].to_vec()));
    assert_eq!(runner.keep_up().await.unwrap(), 11);
    assert_eq!(
        runner.uncommitted(),
        11,
        "held although the interval passed"
    );
    assert_eq!(runner.stats().commits.load(Ordering::Relaxed), 0);
    assert_eq!(real.projection(NAME, &s).await.unwrap(), None);
    // The next step commits the full batch, then the rest at the head (close to it again).
    assert_eq!(runner.keep_up().await.unwrap(), 20);
    assert_eq!(runner.uncommitted(), 0);
    assert_eq!(runner.stats().commits.load(Ordering::Relaxed), 2);
    assert_eq!(
        real.projection(NAME, &s).await.unwrap().map(|p| p.seq),
        Some(30)
    );
    drop(runner);
    task.await.unwrap();
    assert_eq!(
        head(real.as_ref(), &s).await,
        30,
        "nothing detected, nothing appended"
    );
}

/// Following the head ([`Runner::keep_up`]): applied entries are held, not committed, until
/// the commit interval has passed or nothing new arrives; `commit_pending` commits them; the
/// read model and the detections recorded come out as with catching up.
async fn keep_up_commits_when_due_or_idle(
    store: &Arc<dyn Store>,
    stream: &[Value],
    events: &[(String, i64, Value)],
    blocks: &[(String, i64, Value)],
) {
    let s = StreamId::default();
    let (mut runner, task) = security_runner(store, &s).await;
    let saved = |store: Arc<dyn Store>, s: StreamId| async move {
        store.projection(NAME, &s).await.unwrap().map(|p| p.seq)
    };
    let third = stream.len() / 3;
    runner.set_commit_interval(std::time::Duration::from_secs(3600));

    // Not due: applied and held.
    append(store, &s, &stream[..third]).await;
    let applied = runner.keep_up().await.unwrap();
    assert!(applied > 0);
    assert_eq!(runner.uncommitted(), applied as usize);
    assert_eq!(
        saved(store.clone(), s.clone()).await,
        None,
        "nothing committed yet"
    );
    append(store, &s, &stream[third..2 * third]).await;
    let more = runner.keep_up().await.unwrap();
    assert!(more > 0);
    assert_eq!(runner.uncommitted(), (applied + more) as usize);
    assert_eq!(saved(store.clone(), s.clone()).await, None);
    assert_eq!(runner.stats().commits.load(Ordering::Relaxed), 0);

    // Nothing new: what is held is committed at once (with the detections it recorded, which
    // land after it).
    let applied_to = head(store.as_ref(), &s).await;
    assert_eq!(runner.keep_up().await.unwrap(), 0);
    assert_eq!(runner.uncommitted(), 0);
    assert_eq!(saved(store.clone(), s.clone()).await, Some(applied_to));
    assert!(
        head(store.as_ref(), &s).await > applied_to,
        "detections recorded"
    );
    assert_eq!(runner.stats().commits.load(Ordering::Relaxed), 1);

    // Due: committed at the end of the step (its own detections went to the ledger with it).
    runner.set_commit_interval(std::time::Duration::ZERO);
    append(store, &s, &stream[2 * third..]).await;
    assert!(runner.keep_up().await.unwrap() > 0);
    assert_eq!(runner.uncommitted(), 0);
    assert_eq!(runner.stats().commits.load(Ordering::Relaxed), 2);

    // Held again (the detections just recorded), then committed on request.
    runner.set_commit_interval(std::time::Duration::from_secs(3600));
    let own = runner.keep_up().await.unwrap();
    assert_eq!(runner.uncommitted(), own as usize);
    let applied_to = runner.next_seq() - 1;
    runner.commit_pending().await.unwrap();
    assert_eq!(runner.uncommitted(), 0);
    assert_eq!(saved(store.clone(), s.clone()).await, Some(applied_to));
    // Whatever that recorded is applied and committed like the rest.
    runner.set_commit_interval(std::time::Duration::ZERO);
    while runner.keep_up().await.unwrap() > 0 {}
    assert_eq!(runner.uncommitted(), 0);
    assert_eq!(
        saved(store.clone(), s.clone()).await,
        Some(head(store.as_ref(), &s).await)
    );
    drop(runner);
    task.await.unwrap();

    // The detections are those of catching up (their seqs differ: the ledger interleaves the
    // traffic and the recorded detections differently).
    let what = |rows: Vec<(String, i64, Value)>| {
        let mut what: Vec<String> = rows
            .iter()
            .map(|(_, _, v)| format!("{} {} {}", v["rule"], v["summary"], v["subjects"]))
            .collect();
        what.sort();
        what
    };
    assert_eq!(
        what(rows(store.as_ref(), &s, EVENTS).await),
        what(events.to_vec())
    );
    let keys = |rows: Vec<(String, i64, Value)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        keys(rows(store.as_ref(), &s, BLOCKS).await),
        keys(blocks.to_vec())
    );
    assert_eq!(recorded(store.as_ref(), &s).await.len(), events.len());
}

/// A store around a real one, with faults and traffic injected: with `fail_commits`, every
/// third `commit_projection` fails, alternately before it reaches the database and after it
/// committed (the runner can't tell the two apart); with `appends_on_head`, the `head` call
/// after the given number of calls first appends those events (appenders moving the head on
/// while a runner works).
struct Wrapped {
    inner: Arc<dyn Store>,
    calls: AtomicUsize,
    /// Row changes in the commits that succeeded.
    committed_rows: AtomicUsize,
    fail_commits: bool,
    appends_on_head: std::sync::Mutex<Option<(usize, Vec<Value>)>>,
}

impl Wrapped {
    fn new(inner: Arc<dyn Store>) -> Wrapped {
        Wrapped {
            inner,
            calls: AtomicUsize::new(0),
            committed_rows: AtomicUsize::new(0),
            fail_commits: false,
            appends_on_head: std::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl Store for Wrapped {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn head(&self, s: &StreamId) -> Result<Option<Head>, StoreError> {
        let due = {
            let mut pending = self.appends_on_head.lock().unwrap();
            match pending.as_mut() {
                Some((0, _)) => pending.take().map(|(_, events)| events),
                Some((after, _)) => {
                    *after -= 1;
                    None
                }
                None => None,
            }
        };
        if let Some(events) = due {
            append(&self.inner, s, &events).await;
        }
        self.inner.head(s).await
    }
    async fn append(&self, batch: AppendBatch) -> Result<(), StoreError> {
        self.inner.append(batch).await
    }
    async fn purge_payloads(
        &self,
        s: &StreamId,
        authorization: Seq,
        from: Seq,
        to: Seq,
    ) -> Result<u64, StoreError> {
        self.inner.purge_payloads(s, authorization, from, to).await
    }
    async fn find_idempotent(
        &self,
        s: &StreamId,
        idem: &[Digest],
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.find_idempotent(s, idem).await
    }
    async fn get(&self, s: &StreamId, seq: Seq) -> Result<Option<Entry>, StoreError> {
        self.inner.get(s, seq).await
    }
    async fn read(&self, s: &StreamId, from: Seq, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.read(s, from, limit).await
    }
    fn scan(&self, s: &StreamId, from: Seq) -> EntryChunks {
        self.inner.scan(s, from)
    }
    async fn streams(&self) -> Result<Vec<StreamId>, StoreError> {
        self.inner.streams().await
    }
    async fn merkle_nodes(
        &self,
        s: &StreamId,
        wanted: &[(u8, u64)],
    ) -> Result<Vec<MerkleNode>, StoreError> {
        self.inner.merkle_nodes(s, wanted).await
    }
    async fn merkle_level(
        &self,
        s: &StreamId,
        level: u8,
        from: u64,
        limit: usize,
    ) -> Result<Vec<MerkleNode>, StoreError> {
        self.inner.merkle_level(s, level, from, limit).await
    }
    async fn entry_hashes(
        &self,
        s: &StreamId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Digest>, StoreError> {
        self.inner.entry_hashes(s, from, to).await
    }
    async fn put_checkpoint(&self, s: &StreamId, c: &StoredCheckpoint) -> Result<(), StoreError> {
        self.inner.put_checkpoint(s, c).await
    }
    async fn checkpoints(&self, s: &StreamId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.inner.checkpoints(s).await
    }
    async fn projection(
        &self,
        name: &str,
        s: &StreamId,
    ) -> Result<Option<SavedProjection>, StoreError> {
        self.inner.projection(name, s).await
    }
    async fn commit_projection(
        &self,
        name: &str,
        s: &StreamId,
        expected: Option<Seq>,
        saved: &SavedProjection,
        changes: &[RowChange],
    ) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let injected = || StoreError::Backend("injected failure".into());
        match if self.fail_commits { n % 6 } else { 0 } {
            2 => Err(injected()),
            5 => {
                self.inner
                    .commit_projection(name, s, expected, saved, changes)
                    .await?;
                Err(injected())
            }
            _ => {
                self.inner
                    .commit_projection(name, s, expected, saved, changes)
                    .await?;
                self.committed_rows
                    .fetch_add(changes.len(), Ordering::Relaxed);
                Ok(())
            }
        }
    }
    async fn reset_projection(&self, name: &str, s: &StreamId) -> Result<(), StoreError> {
        self.inner.reset_projection(name, s).await
    }
    async fn read_model_rows(
        &self,
        name: &str,
        s: &StreamId,
        q: &RowQuery,
    ) -> Result<Vec<ReadModelRow>, StoreError> {
        self.inner.read_model_rows(name, s, q).await
    }
}
