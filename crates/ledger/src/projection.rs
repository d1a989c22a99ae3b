//! The projection runner: feeds a projection the verified stream from its own saved position,
//! appends what the projection records in the ledger (its own entries, e.g. detections), and
//! saves the new position, the projection's state and its read-model changes in one store
//! transaction.
//!
//! Exactly-once follows from three rules:
//! - the position, the state and the read-model changes are committed together, guarded by the
//!   position they started from (a second runner of the same projection gets a conflict and
//!   reloads, instead of applying the same entries twice);
//! - a projection is a deterministic function of the entries it is fed, so entries re-fed after
//!   a crash (between its own appends and the commit) produce the same effects;
//! - its own entries carry an idempotency digest derived from what they record, so a re-fed
//!   entry's detection returns the first receipt instead of appending a duplicate.
//!
//! Every entry is verified before it is applied: payload digest, entry hash, stored columns,
//! `seq` continuity and the link to the entry before, starting from the saved position's hash.
//! A projection never rests on an entry the chain does not vouch for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::entry::{Entry, PreparedEntry, Receipt};
use crate::hash::HashAlg;
use crate::payload::{Payload, StoredEvent};
use crate::readmodel::{ReadModelRow, RowChange, SavedProjection};
use crate::store::{Store, StoreError};
use crate::types::{Digest, Seq, StreamId, Timestamp};
use crate::verify::{check_stored_entry, Problem};
use crate::writer::{AppendError, GroupCommitWriter};

/// The domain of digests of the ledger's own entries, apart from clients' idempotency keys (a
/// client can't choose a key that collides with, and so suppresses, a future detection).
const OWN_ENTRY_CONTEXT: &str = "auditledger 2026-11 projection entry";

/// The idempotency digest of an entry a projection appends: a digest of the projection's name
/// and of `parts`, which must identify what the entry records (e.g. rule, subjects and the
/// `seq` range of the evidence).
pub fn own_entry_digest(projection: &str, parts: &[&[u8]]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(OWN_ENTRY_CONTEXT);
    for part in std::iter::once(projection.as_bytes()).chain(parts.iter().copied()) {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Digest(*h.finalize().as_bytes())
}

/// One verified entry as a projection sees it.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedEntry<'a> {
    pub seq: Seq,
    pub entry_hash: Digest,
    pub recorded_at: Timestamp,
    /// `None` for the genesis entry and for an entry whose payload was purged.
    pub event: Option<&'a StoredEvent>,
}

/// An entry a projection asks to append, with the read-model row that records it. The runner
/// adds `ledger_seq` and `ledger_entry_hash` (the receipt) to the row's JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnEntry {
    /// Must carry an idempotency digest from [`own_entry_digest`].
    pub event: StoredEvent,
    pub row: Option<ReadModelRow>,
}

/// What applying entries produced, in order.
#[derive(Debug, Default)]
pub struct Effects {
    pub changes: Vec<RowChange>,
    pub own: Vec<OwnEntry>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.own.is_empty()
    }
}

/// A read model derived from the stream.
pub trait Projection: Send {
    /// Its name in the store (`security`, `phi-access`, ...).
    fn name(&self) -> &'static str;

    /// Replaces the in-memory state with one saved by [`snapshot`](Self::snapshot).
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;

    /// The in-memory state to save with the position (deterministic for a given stream).
    fn snapshot(&self) -> Vec<u8>;

    /// Applies one verified entry. Entries come in `seq` order, each exactly once per state.
    fn apply(&mut self, entry: &VerifiedEntry<'_>, effects: &mut Effects);

    /// Called before each commit, after the last `apply` it covers. A projection that keeps
    /// running aggregates in memory (per-day counts, ...) writes the rows that changed since
    /// the last flush here, once per commit instead of once per entry.
    fn flush(&mut self, _effects: &mut Effects) {}

    /// Entries applied between commits during a catch-up (see [`COMMIT_EVERY`]): a projection
    /// whose rows land on random B-tree pages gains from larger commits; one whose effects
    /// should reach the ledger soon (detections) keeps the default.
    fn commit_every(&self) -> usize {
        COMMIT_EVERY
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The stream failed verification: the projection stops before the damaged entry.
    #[error("entry {seq} failed verification ({}): {detail}", problem.as_str())]
    Damaged {
        seq: Seq,
        problem: Problem,
        detail: String,
    },
    /// The saved state cannot be resumed: another format version, or saved under another
    /// configuration of the rows.
    #[error("the saved state of projection {name} cannot be resumed: {detail} (rebuild it: `auditledger project {name} --rebuild`)")]
    BadState { name: String, detail: String },
    /// Another runner of the same projection committed first; reopen to continue from there.
    #[error("another runner of projection {0} moved its position; reopen to continue")]
    Moved(String),
    #[error("cannot append the projection's own entries: {0}")]
    Append(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters for progress, lag and benchmarks.
#[derive(Debug, Default)]
pub struct RunnerStats {
    /// Entries applied since the runner opened.
    pub applied: AtomicU64,
    /// The `seq` of the last committed entry, +1 (0 before any).
    pub position: AtomicU64,
    /// The head's `seq` + 1 when last looked at.
    pub head: AtomicU64,
    pub commits: AtomicU64,
    pub own_entries: AtomicU64,
    /// Read-model row changes committed (after each commit's reduction to the last change per
    /// row). Per entry applied, it is what a projection costs the store.
    pub row_writes: AtomicU64,
    /// Where the runner's time went, in microseconds, so a projection that lags says why:
    /// waiting for the store to read entries; checking, decoding and applying them; and
    /// waiting for the store to finish a commit before the next one may start. Commits run
    /// while the next entries are read and applied, so only the wait is counted. A projection
    /// bound by its store's writes shows most of its time in `commit_wait_micros`.
    pub read_micros: AtomicU64,
    pub apply_micros: AtomicU64,
    pub commit_wait_micros: AtomicU64,
}

impl RunnerStats {
    /// Entries behind the head, as of the last look.
    pub fn lag(&self) -> u64 {
        self.head
            .load(Ordering::Relaxed)
            .saturating_sub(self.position.load(Ordering::Relaxed))
    }

    /// Where the runner's time went so far.
    pub fn phases(&self) -> PhaseSeconds {
        let seconds = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e6;
        PhaseSeconds {
            read: seconds(&self.read_micros),
            apply: seconds(&self.apply_micros),
            commit_wait: seconds(&self.commit_wait_micros),
        }
    }
}

/// Seconds a runner spent in each phase ([`RunnerStats::phases`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PhaseSeconds {
    /// Waiting for the store to read entries.
    pub read: f64,
    /// Checking, decoding and applying entries.
    pub apply: f64,
    /// Waiting for the store to finish a commit (beyond the time it overlapped the others).
    pub commit_wait: f64,
}

impl std::fmt::Display for PhaseSeconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reading {:.1} s, applying {:.1} s, waiting for commits {:.1} s",
            self.read, self.apply, self.commit_wait
        )
    }
}

/// Whether a catch-up commits what it applied when it reaches the head.
#[derive(Clone, Copy)]
enum CommitAtEnd {
    Always,
    /// Only once the commit interval ([`COMMIT_INTERVAL`] unless set) has passed since the last
    /// commit.
    WhenDue,
}

/// A commit handed to the store ([`Runner::start_commit`]).
enum PendingCommit {
    /// Nothing was there to commit.
    Done,
    /// The store is committing the position `seq` and the changes up to it.
    Running {
        seq: Seq,
        /// Read-model row changes in the commit.
        rows: u64,
        task: tokio::task::JoinHandle<Result<(), ProjectionError>>,
    },
}

/// Adds the time since `since` to a counter of microseconds.
fn add_micros(counter: &AtomicU64, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    counter.fetch_add(micros, Ordering::Relaxed);
}

/// Runs one projection over one stream.
pub struct Runner<P: Projection> {
    store: Arc<dyn Store>,
    writer: GroupCommitWriter,
    stream: StreamId,
    projection: P,
    /// The last applied entry (`None`: nothing applied, the next entry is the genesis entry).
    position: Option<(Seq, Digest)>,
    /// The position in the store: what the next commit must start from.
    saved: Option<Seq>,
    alg: HashAlg,
    stats: Arc<RunnerStats>,
    commit_every: usize,
    read_every: usize,
    /// Applied entries' changes not committed yet, and how many entries they cover: carried
    /// from one [`Runner::keep_up`] to the next until a commit is due.
    effects: Effects,
    uncommitted: usize,
    /// When the last commit was handed to the store.
    committed_at: Instant,
    commit_interval: Duration,
}

/// A projection's saved state as CBOR `[version, state]`: what [`Projection::save`] returns
/// for a state that serde can write.
pub fn encode_state<T: serde::Serialize>(version: u32, state: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&(version, state), &mut out)
        .expect("CBOR encoding into memory does not fail");
    out
}

/// Reads a state written by [`encode_state`], refusing another version, stray bytes or another
/// shape with a message naming the projection (`name`).
pub fn decode_state<T: serde::de::DeserializeOwned>(
    name: &str,
    version: u32,
    bytes: &[u8],
) -> Result<T, String> {
    let mut rest = bytes;
    let (found, value): (u32, ciborium::Value) = ciborium::from_reader(&mut rest)
        .map_err(|e| format!("saved {name} state is not valid CBOR: {e}"))?;
    if found != version {
        return Err(format!(
            "saved {name} state has format version {found}; this build reads {version}"
        ));
    }
    if !rest.is_empty() {
        return Err(format!(
            "saved {name} state is followed by {} stray bytes",
            rest.len()
        ));
    }
    value
        .deserialized()
        .map_err(|e| format!("saved {name} state has an unexpected shape: {e}"))
}

/// How many verified entries are applied between commits during catch-up, unless the
/// projection asks for another figure ([`Projection::commit_every`]).
pub const COMMIT_EVERY: usize = 16_384;

/// How many entries one read of a catch-up takes (one short read snapshot each).
pub const READ_EVERY: usize = 16_384;

/// While following the head ([`Runner::keep_up`]), the longest a runner holds applied entries
/// before committing them (unless it runs out of new entries first, which commits at once).
///
/// Every commit writes the projection's whole saved state (for `phi-access`, every open
/// user-day's patients: 2.7 MB after a busy day in `scripts/bench-phi`) and takes the store's
/// one writer connection (the embedded store) away from the appends for that long. Catching up
/// commits at its end, and following the head under load is a catch-up every few hundred
/// entries: dozens of such commits a second. The price of holding is freshness: under load the
/// read model trails the head by up to this interval.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

impl<P: Projection> Runner<P> {
    /// Loads the projection's saved position and state. `writer` must write to `stream` of
    /// `store`.
    pub async fn open(
        store: Arc<dyn Store>,
        writer: GroupCommitWriter,
        mut projection: P,
    ) -> Result<Runner<P>, ProjectionError> {
        let stream = writer.stream().clone();
        let saved = store.projection(projection.name(), &stream).await?;
        let position = match &saved {
            Some(s) => {
                projection
                    .restore(&s.state)
                    .map_err(|detail| ProjectionError::BadState {
                        name: projection.name().to_owned(),
                        detail,
                    })?;
                Some((s.seq, s.entry_hash))
            }
            None => None,
        };
        let stats = Arc::new(RunnerStats::default());
        stats
            .position
            .store(position.map_or(0, |(s, _)| s + 1), Ordering::Relaxed);
        Ok(Runner {
            alg: writer.hash_alg(),
            store,
            writer,
            stream,
            commit_every: projection.commit_every().max(1),
            read_every: READ_EVERY,
            projection,
            saved: position.map(|(s, _)| s),
            position,
            stats,
            effects: Effects::default(),
            uncommitted: 0,
            committed_at: Instant::now(),
            commit_interval: COMMIT_INTERVAL,
        })
    }

    /// Forgets the saved position and read model, then opens from the first entry.
    pub async fn rebuild(
        store: Arc<dyn Store>,
        writer: GroupCommitWriter,
        projection: P,
    ) -> Result<Runner<P>, ProjectionError> {
        store
            .reset_projection(projection.name(), writer.stream())
            .await?;
        Runner::open(store, writer, projection).await
    }

    /// Commits after this many entries during catch-up instead of the projection's figure
    /// ([`Projection::commit_every`]; tests use small values to restart often).
    pub fn set_commit_every(&mut self, entries: usize) {
        self.commit_every = entries.max(1);
    }

    /// Reads this many entries at a time during catch-up instead of [`READ_EVERY`] (tests use
    /// small values so that one commit spans several reads).
    pub fn set_read_every(&mut self, entries: usize) {
        self.read_every = entries.max(1);
    }

    /// Holds applied entries for at most this long in [`Runner::keep_up`] instead of
    /// [`COMMIT_INTERVAL`].
    pub fn set_commit_interval(&mut self, interval: Duration) {
        self.commit_interval = interval;
    }

    pub fn stats(&self) -> Arc<RunnerStats> {
        self.stats.clone()
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The next `seq` to apply.
    pub fn next_seq(&self) -> Seq {
        self.position.map_or(0, |(s, _)| s + 1)
    }

    /// Applies every entry up to the head as of now, committing every `commit_every` entries
    /// (the projection's [`Projection::commit_every`] unless set) and at the end; calls
    /// `progress(position, head)` after each read. Returns the number of entries applied.
    ///
    /// Entries are read [`READ_EVERY`] at a time, each read its own short snapshot: a scan held
    /// open across a long catch-up would keep the embedded store from checkpointing its
    /// write-ahead log, which then grows by every read-model page written meanwhile (tens of
    /// gigabytes over ten million entries).
    ///
    /// A commit in the middle of a catch-up runs while the next entries are read, checked and
    /// applied (the store writes on its own connection); it is awaited before the next commit
    /// starts and before this returns, success or error, so commits stay in order and nothing
    /// is left running. Applying is one thread and the store's write another: overlapped, a
    /// catch-up takes about the longer of the two instead of their sum.
    pub async fn catch_up(
        &mut self,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<u64, ProjectionError> {
        self.run(progress, CommitAtEnd::Always).await
    }

    /// One step of following the head (what [`Runner::follow`] and the server repeat): applies
    /// every entry up to the head as of now like [`Runner::catch_up`], but commits at the end
    /// only when [`COMMIT_INTERVAL`] has passed since the last commit, or when there was
    /// nothing new (the load paused: everything applied is committed at once). Under a steady
    /// load that is one commit per interval instead of one per step; while the head runs ahead
    /// by more than a commit's worth, one per full batch (`far_behind`). Call
    /// [`Runner::commit_pending`] before dropping a runner that should keep its work.
    pub async fn keep_up(&mut self) -> Result<u64, ProjectionError> {
        self.run(|_, _| {}, CommitAtEnd::WhenDue).await
    }

    /// Commits what [`Runner::keep_up`] applied and still holds (nothing to do otherwise).
    pub async fn commit_pending(&mut self) -> Result<(), ProjectionError> {
        if self.uncommitted == 0 {
            return Ok(());
        }
        let mut effects = std::mem::take(&mut self.effects);
        self.uncommitted = 0;
        let pending = self.start_commit(&mut effects).await?;
        self.finish_commit(pending).await
    }

    /// Entries applied and not committed yet (held by [`Runner::keep_up`]).
    pub fn uncommitted(&self) -> usize {
        self.uncommitted
    }

    async fn run(
        &mut self,
        progress: impl FnMut(u64, u64) + Send,
        at_end: CommitAtEnd,
    ) -> Result<u64, ProjectionError> {
        let mut pending = None;
        let result = self
            .catch_up_overlapped(&mut pending, progress, at_end)
            .await;
        // Whatever happened meanwhile, the commit in flight is answered before returning (its
        // own error first: the position saved is what a reopened runner resumes from).
        let finished = match pending.take() {
            Some(p) => self.finish_commit(p).await,
            None => Ok(()),
        };
        finished.and(result)
    }

    async fn catch_up_overlapped(
        &mut self,
        pending: &mut Option<PendingCommit>,
        mut progress: impl FnMut(u64, u64) + Send,
        at_end: CommitAtEnd,
    ) -> Result<u64, ProjectionError> {
        let head = match self.store.head(&self.stream).await? {
            Some(h) => h.seq + 1,
            None => 0,
        };
        self.stats.head.store(head, Ordering::Relaxed);
        let mut applied = 0u64;
        // What an earlier keep_up held. On an error it is dropped with the runner's position
        // past the saved one: a runner that failed is reopened from its saved position.
        let mut uncommitted = std::mem::take(&mut self.uncommitted);
        let mut effects = std::mem::take(&mut self.effects);
        if uncommitted > 0 && self.next_seq() >= head {
            // Nothing new: the load paused, so what is held is committed now.
            let p = self.start_commit(&mut effects).await?;
            *pending = Some(p);
            return Ok(0);
        }
        while self.next_seq() < head {
            let next = self.next_seq();
            let want = (head - next).min(self.read_every.min(self.commit_every) as u64) as usize;
            let reading = Instant::now();
            let chunk = self.store.read(&self.stream, next, want).await?;
            add_micros(&self.stats.read_micros, reading);
            if chunk.is_empty() {
                // What was applied verified: keep it before reporting the hole.
                if let Some(p) = pending.take() {
                    self.finish_commit(p).await?;
                }
                if uncommitted > 0 {
                    let p = self.start_commit(&mut effects).await?;
                    self.finish_commit(p).await?;
                }
                return Err(ProjectionError::Damaged {
                    seq: next,
                    problem: Problem::Gap,
                    detail: format!(
                        "the ledger's head is entry {}, but entry {next} cannot be read",
                        head - 1
                    ),
                });
            }
            let applying = Instant::now();
            let checked = self.check(&chunk);
            let good = match &checked {
                Ok(()) => chunk.len(),
                Err((at, _)) => *at,
            };
            self.apply_chunk(&chunk[..good], &mut effects);
            add_micros(&self.stats.apply_micros, applying);
            applied += good as u64;
            uncommitted += good;
            // Keep what verified, then stop before any damage.
            let at_head = self.next_seq() >= head
                && match at_end {
                    CommitAtEnd::Always => true,
                    CommitAtEnd::WhenDue => {
                        self.committed_at.elapsed() >= self.commit_interval
                            && !self.far_behind().await?
                    }
                };
            if uncommitted >= self.commit_every || at_head || checked.is_err() {
                if let Some(p) = pending.take() {
                    self.finish_commit(p).await?;
                }
                let p = self.start_commit(&mut effects).await?;
                *pending = Some(p);
                uncommitted = 0;
            }
            progress(self.next_seq(), head.max(self.next_seq()));
            if let Err((at, (problem, detail))) = checked {
                return Err(ProjectionError::Damaged {
                    seq: chunk[at].seq,
                    problem,
                    detail,
                });
            }
        }
        self.uncommitted = uncommitted;
        self.effects = effects;
        Ok(applied)
    }

    /// Whether the head has moved on by at least a catch-up commit's worth of entries
    /// ([`Projection::commit_every`]) past what is applied. While it has, following the head
    /// commits in full catch-up batches rather than once per [`COMMIT_INTERVAL`]: the read
    /// model is that far behind anyway, and a commit writes each B-tree page it touches once,
    /// so the more rows per commit, the more share a page. Measured with `scripts/bench-phi
    /// --events 1000000 --live-seconds 30` (embedded store, 64 appenders while `phi-access`
    /// follows, 2 cores, 2026-12-03): the projection applied 14 400 entries/s under that load
    /// before, 19 600/s after (one run each on a noisy shared machine).
    async fn far_behind(&self) -> Result<bool, ProjectionError> {
        let head = self
            .store
            .head(&self.stream)
            .await?
            .map_or(0, |h| h.seq + 1);
        self.stats.head.store(head, Ordering::Relaxed);
        Ok(head.saturating_sub(self.next_seq()) >= self.commit_every as u64)
    }

    /// Follows the head until `stop` turns true: catches up, then looks again every `poll`.
    /// Errors end the loop (the caller decides whether to reopen and retry).
    pub async fn follow(
        &mut self,
        poll: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        loop {
            if *stop.borrow() {
                return self.commit_pending().await;
            }
            let applied = self.keep_up().await?;
            if applied == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Checks a chunk: each entry on its own (in parallel), then `seq` continuity and links
    /// from the position. On failure, the index of the first bad entry and what is wrong.
    fn check(&self, chunk: &[Entry]) -> Result<(), (usize, (Problem, String))> {
        let stream = &self.stream;
        let alg = self.alg;
        let findings: Vec<Option<(Problem, String)>> = chunk
            .par_iter()
            // A purged payload is accepted: its digest stays in the hash, which must still match.
            .map(|e| check_stored_entry(e, stream, alg).err())
            .collect();
        let mut prev = self.position;
        for (i, (e, finding)) in chunk.iter().zip(findings).enumerate() {
            let expected_seq = prev.map_or(0, |(s, _)| s + 1);
            if e.seq != expected_seq {
                return Err((
                    i,
                    (
                        Problem::Gap,
                        format!("expected entry {expected_seq}, found entry {}", e.seq),
                    ),
                ));
            }
            if let Some(f) = finding {
                return Err((i, f));
            }
            if let Some((_, hash)) = prev {
                if e.prev_hash != hash {
                    return Err((
                        i,
                        (
                            Problem::LinkBroken,
                            format!("entry {} does not link to entry {}", e.seq, e.seq - 1),
                        ),
                    ));
                }
            }
            prev = Some((e.seq, e.entry_hash));
        }
        Ok(())
    }

    fn apply_chunk(&mut self, chunk: &[Entry], effects: &mut Effects) {
        // Decoding is the costly part: do it on every core, then apply in order.
        let decoded: Vec<Option<StoredEvent>> = chunk
            .par_iter()
            .map(|e| match e.decode_payload() {
                Some(Ok(Payload::Event(ev))) => Some(ev),
                _ => None,
            })
            .collect();
        for (e, event) in chunk.iter().zip(&decoded) {
            self.projection.apply(
                &VerifiedEntry {
                    seq: e.seq,
                    entry_hash: e.entry_hash,
                    recorded_at: e.recorded_at,
                    event: event.as_ref(),
                },
                effects,
            );
            self.position = Some((e.seq, e.entry_hash));
        }
    }

    /// Appends the own entries, then hands the changes, state and position to the store to
    /// commit together; [`Runner::finish_commit`] takes the answer. Nothing to commit (nothing
    /// applied yet) is an already answered commit.
    async fn start_commit(
        &mut self,
        effects: &mut Effects,
    ) -> Result<PendingCommit, ProjectionError> {
        let Some((seq, entry_hash)) = self.position else {
            return Ok(PendingCommit::Done);
        };
        self.committed_at = Instant::now();
        self.projection.flush(effects);
        let mut own = std::mem::take(&mut effects.own);
        // The same record twice is one entry (an idempotency digest appears once per request).
        let mut seen = std::collections::HashSet::new();
        own.retain(|o| o.event.idem.is_none_or(|d| seen.insert(d)));
        let mut changes = std::mem::take(&mut effects.changes);
        if !own.is_empty() {
            let receipts = self.append_own(&own).await?;
            self.stats
                .own_entries
                .fetch_add(own.len() as u64, Ordering::Relaxed);
            for (entry, receipt) in own.into_iter().zip(receipts) {
                if let Some(row) = entry.row {
                    changes.push(RowChange::Put(with_receipt(row, &receipt)));
                }
            }
        }
        let saved = SavedProjection {
            seq,
            entry_hash,
            state: self.projection.snapshot(),
        };
        let changes_len = changes.len() as u64;
        let (store, name, stream, expected) = (
            self.store.clone(),
            self.projection.name(),
            self.stream.clone(),
            self.saved,
        );
        let task = tokio::spawn(async move {
            match store
                .commit_projection(name, &stream, expected, &saved, &changes)
                .await
            {
                Ok(()) => Ok(()),
                Err(StoreError::Conflict(_)) => Err(ProjectionError::Moved(name.to_owned())),
                Err(e) => Err(e.into()),
            }
        });
        Ok(PendingCommit::Running {
            seq,
            rows: changes_len,
            task,
        })
    }

    /// Waits for a commit started by [`Runner::start_commit`] and moves the saved position.
    async fn finish_commit(&mut self, pending: PendingCommit) -> Result<(), ProjectionError> {
        let PendingCommit::Running { seq, rows, task } = pending else {
            return Ok(());
        };
        let waiting = Instant::now();
        let answer = task.await;
        add_micros(&self.stats.commit_wait_micros, waiting);
        answer.map_err(|e| {
            ProjectionError::Store(StoreError::Backend(format!(
                "the commit of projection {} did not finish: {e}",
                self.projection.name()
            )))
        })??;
        self.saved = Some(seq);
        self.stats.row_writes.fetch_add(rows, Ordering::Relaxed);
        let applied = (seq + 1).saturating_sub(self.stats.position.load(Ordering::Relaxed));
        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
        self.stats.position.store(seq + 1, Ordering::Relaxed);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One request for all, in order (so the ledger's order of own entries is the order they
    /// were produced in): entries recorded before return their first receipts. If one was
    /// recorded before with other wording (a changed configuration), the request is refused
    /// whole; then each entry goes on its own, and that one keeps its first receipt.
    async fn append_own(&self, own: &[OwnEntry]) -> Result<Vec<Receipt>, ProjectionError> {
        let prepared: Vec<PreparedEntry> = own
            .iter()
            .map(|o| PreparedEntry::new(&Payload::Event(o.event.clone()), self.alg))
            .collect();
        match self.writer.append(prepared.clone()).await {
            Err(AppendError::IdempotencyMismatch) => {}
            other => return Ok(other?),
        }
        let mut receipts = Vec::with_capacity(own.len());
        for (o, p) in own.iter().zip(prepared) {
            match self.writer.append(vec![p]).await {
                Ok(mut r) => receipts.push(r.remove(0)),
                Err(AppendError::IdempotencyMismatch) => {
                    let idem = o.event.idem.ok_or(AppendError::IdempotencyMismatch)?;
                    let found = self.store.find_idempotent(&self.stream, &[idem]).await?;
                    let first = found
                        .first()
                        .ok_or(AppendError::IdempotencyMismatch)?
                        .receipt();
                    receipts.push(first);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(receipts)
    }
}

/// Adds the receipt of the entry a row records to the row's JSON object.
fn with_receipt(mut row: ReadModelRow, receipt: &Receipt) -> ReadModelRow {
    let mut value: serde_json::Value =
        serde_json::from_str(&row.value).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = value.as_object_mut() {
        obj.insert("ledger_seq".into(), receipt.seq.into());
        obj.insert(
            "ledger_entry_hash".into(),
            receipt.entry_hash.to_hex().into(),
        );
    }
    row.value = value.to_string();
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_entry_digests_are_apart_from_each_other() {
        let a = own_entry_digest("security", &[b"brute_force", b"ip", b"1-5"]);
        assert_eq!(
            a,
            own_entry_digest("security", &[b"brute_force", b"ip", b"1-5"])
        );
        assert_ne!(a, own_entry_digest("security", &[b"brute_force", b"ip1-5"]));
        assert_ne!(
            a,
            own_entry_digest("retention", &[b"brute_force", b"ip", b"1-5"])
        );
    }
}
