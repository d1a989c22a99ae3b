//! The append path: one writer task per stream orders entries and group-commits them.
//!
//! Callers (any number, any task) prepare their entries (validate, pseudonymize, encode, digest:
//! the expensive, parallel part) and send them over a bounded channel. The writer task owns the
//! head of the chain. It takes the first waiting request, drains whatever else is already
//! waiting (up to `max_batch` entries), chains the lot in memory, hands it to the store as one
//! transaction, and only after the store reports the commit does it answer each caller with
//! its receipts. So:
//!
//! - **an acknowledged entry is durable**: no receipt leaves before the commit returns;
//! - **a request is all or nothing**: a request is never split across transactions, and a
//!   failed transaction fails every request in it;
//! - **the chain cannot fork**: the store refuses a second entry at a `(stream, seq)`; a writer
//!   that loses that race (another process appended) re-reads the head and chains again;
//! - **memory is bounded**: the channel holds at most `queue_depth` requests; `append` waits
//!   for room and `try_append` reports `Busy` so a server can push back.
//!
//! The shape follows tokio-postgres's `Connection`: one task owns the ordered resource, cheap
//! cloneable handles talk to it over a channel. When every handle is dropped the task finishes
//! the batch in hand and ends, which is how a server shuts down gracefully.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::entry::{Entry, PreparedEntry, Receipt};
use crate::hash::HashAlg;
use crate::merkle::Frontier;
use crate::store::{AppendBatch, Head, Store, StoreError};
use crate::tree::load_frontier;
use crate::types::{Digest, StreamId};
use crate::verify::genesis_alg;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most entries chained into one transaction (a single larger request is never split).
    pub max_batch: usize,
    /// Most requests waiting for the writer before callers are pushed back.
    pub queue_depth: usize,
    /// How often a batch is re-chained after losing a race to another writer.
    pub max_retries: u32,
    /// Under load, how long the writer may wait for callers to come back before committing
    /// (see `WriterTask::gather`). Zero disables waiting.
    pub gather_window: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch: 4096,
            queue_depth: 4096,
            max_retries: 32,
            gather_window: std::time::Duration::from_millis(1),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    #[error("the ledger writer has stopped")]
    Closed,
    #[error("the ledger writer is behind; retry later")]
    Busy,
    #[error("this idempotency key was used before for different events")]
    IdempotencyMismatch,
    #[error("the store failed; nothing of this request was written: {0}")]
    Store(String),
    #[error(
        "kept losing the race for the head to other writers; nothing of this request was written"
    )]
    Contended,
    #[error("a request must hold at least one entry")]
    Empty,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub entries: AtomicU64,
    pub requests: AtomicU64,
    pub conflicts: AtomicU64,
    pub failed_batches: AtomicU64,
}

struct Request {
    items: Vec<PreparedEntry>,
    reply: oneshot::Sender<Result<Vec<Receipt>, AppendError>>,
}

/// A handle to the writer task of one stream. Clone it freely.
#[derive(Clone)]
pub struct GroupCommitWriter {
    tx: mpsc::Sender<Request>,
    stream: StreamId,
    alg: HashAlg,
    stats: Arc<WriterStats>,
}

impl GroupCommitWriter {
    /// Opens `stream` (writing its genesis entry if it has none) and starts its writer task.
    /// The task ends when every handle is dropped; await the returned handle to know the last
    /// batch is committed and acknowledged.
    pub async fn start(
        store: Arc<dyn Store>,
        stream: StreamId,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
    ) -> Result<(GroupCommitWriter, JoinHandle<()>), StoreError> {
        let (head, alg) = open_stream(store.as_ref(), &stream, clock.as_ref()).await?;
        let frontier = load_frontier(store.as_ref(), &stream, head.seq + 1).await?;
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(WriterStats::default());
        let task = WriterTask {
            store,
            stream: stream.clone(),
            alg,
            clock,
            config,
            head: Some((head, frontier)),
            rx,
            stats: stats.clone(),
            last_batch_requests: 0,
        };
        let handle = tokio::spawn(task.run());
        Ok((
            GroupCommitWriter {
                tx,
                stream,
                alg,
                stats,
            },
            handle,
        ))
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The stream's hash algorithm (callers digest their payloads with it).
    pub fn hash_alg(&self) -> HashAlg {
        self.alg
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Appends `items` atomically; waits for room in the queue, then for the commit.
    pub async fn append(&self, items: Vec<PreparedEntry>) -> Result<Vec<Receipt>, AppendError> {
        if items.is_empty() {
            return Err(AppendError::Empty);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { items, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Like [`append`](Self::append), but fails with `Busy` instead of waiting when the queue
    /// is full.
    pub async fn try_append(&self, items: Vec<PreparedEntry>) -> Result<Vec<Receipt>, AppendError> {
        if items.is_empty() {
            return Err(AppendError::Empty);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request { items, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::Busy,
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?;
        rx.await.map_err(|_| AppendError::Closed)?
    }
}

/// Reads the head of `stream`, creating the genesis entry when the stream is new, and returns
/// the hash algorithm the genesis fixes.
pub async fn open_stream(
    store: &dyn Store,
    stream: &StreamId,
    clock: &dyn Clock,
) -> Result<(Head, HashAlg), StoreError> {
    loop {
        if let Some(head) = store.head(stream).await? {
            let genesis = store.get(stream, 0).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("stream {stream} has entries but no genesis entry"))
            })?;
            let alg = genesis_alg(stream, &genesis).map_err(StoreError::Corrupt)?;
            return Ok((head, alg));
        }
        let alg = HashAlg::default();
        let now = clock.now();
        let genesis =
            PreparedEntry::genesis(stream, alg, now).chain(stream, 0, now, Digest::ZERO, alg);
        let genesis_hash = genesis.entry_hash;
        // The tree of size 1 completes no stored node.
        let batch = AppendBatch {
            entries: vec![genesis],
            nodes: Vec::new(),
        };
        match store.append(batch).await {
            Ok(()) => {
                tracing::info!(stream = %stream, "created stream with its genesis entry");
                return Ok((
                    Head {
                        seq: 0,
                        entry_hash: genesis_hash,
                        recorded_at: now,
                    },
                    alg,
                ));
            }
            // Another process created it at the same moment: read theirs.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

struct WriterTask {
    store: Arc<dyn Store>,
    stream: StreamId,
    alg: HashAlg,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
    /// The head as last committed or read, and the Merkle frontier of the tree up to it;
    /// `None` after a failure or a lost race left them unknown.
    head: Option<(Head, Frontier)>,
    rx: mpsc::Receiver<Request>,
    stats: Arc<WriterStats>,
    /// Requests in the last committed batch: under steady load, about that many callers
    /// will be back with their next request right after their acknowledgement.
    last_batch_requests: usize,
}

/// Where one item of a request ends up.
enum Slot {
    /// Chained in this batch at this index of the new entries.
    New(usize),
    /// Already stored by an earlier request with the same idempotency key.
    Stored(Receipt),
}

impl WriterTask {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let batch = self.gather(first).await;
            self.last_batch_requests = batch.len();
            self.commit(batch).await;
        }
        tracing::debug!(stream = %self.stream, "writer stopped: every handle dropped and the queue drained");
    }

    /// Collects the batch that starts with `first`: everything already waiting, and, under
    /// load, the callers about to come back.
    ///
    /// Why wait at all: a commit costs one fsync (about 2 ms on the machines measured), so
    /// throughput is batch size times commits per second. Right after a batch is acknowledged
    /// its callers resubmit within microseconds, but the first of them would otherwise find the
    /// writer idle and be committed nearly alone, while the rest queue behind that commit:
    /// batches alternate small and large. So when the last batch held several requests, the
    /// writer waits, at most `gather_window` and woken by each arrival, until as many requests
    /// as last time are in hand (PostgreSQL's `commit_delay` is the same idea). A lone caller
    /// never waits: the last batch held one request.
    async fn gather(&mut self, first: Request) -> Vec<Request> {
        let mut entries = first.items.len();
        let mut batch = vec![first];
        let drain = |rx: &mut mpsc::Receiver<Request>,
                     batch: &mut Vec<Request>,
                     entries: &mut usize,
                     max: usize| {
            while *entries < max {
                match rx.try_recv() {
                    Ok(next) => {
                        *entries += next.items.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
        };
        drain(
            &mut self.rx,
            &mut batch,
            &mut entries,
            self.config.max_batch,
        );
        let expected = self.last_batch_requests;
        if expected > 1 && !self.config.gather_window.is_zero() {
            let deadline = tokio::time::Instant::now() + self.config.gather_window;
            while batch.len() < expected && entries < self.config.max_batch {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(next)) => {
                        entries += next.items.len();
                        batch.push(next);
                        drain(
                            &mut self.rx,
                            &mut batch,
                            &mut entries,
                            self.config.max_batch,
                        );
                    }
                    // Timed out, or every handle dropped: commit what is in hand.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        batch
    }

    async fn commit(&mut self, batch: Vec<Request>) {
        let n_requests = batch.len() as u64;
        let mut pending = batch;
        for _attempt in 0..=self.config.max_retries {
            match self.try_commit(&mut pending).await {
                Ok(()) => {
                    self.stats.requests.fetch_add(n_requests, Ordering::Relaxed);
                    return;
                }
                Err(CommitFailure::Conflict) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    self.head = None;
                    continue;
                }
                Err(CommitFailure::Failed(msg)) => {
                    self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stream = %self.stream, error = %msg, requests = pending.len(), "batch failed; callers get an error");
                    for r in pending {
                        let _ = r.reply.send(Err(AppendError::Store(msg.clone())));
                    }
                    return;
                }
            }
        }
        for r in pending {
            let _ = r.reply.send(Err(AppendError::Contended));
        }
    }

    /// One attempt: plan, chain, write, and on success answer every request (draining
    /// `pending`). On failure `pending` is left for the next attempt or the error reply.
    async fn try_commit(&mut self, pending: &mut Vec<Request>) -> Result<(), CommitFailure> {
        let (head, frontier) = match self.head.take() {
            Some(known) => known,
            None => {
                let h = self
                    .store
                    .head(&self.stream)
                    .await
                    .map_err(CommitFailure::from_read)?;
                let h = h.ok_or_else(|| {
                    CommitFailure::Failed(format!("stream {} lost its genesis entry", self.stream))
                })?;
                let f = load_frontier(self.store.as_ref(), &self.stream, h.seq + 1)
                    .await
                    .map_err(CommitFailure::from_read)?;
                (h, f)
            }
        };
        // Kept for the paths below that leave the head where it is; replaced on commit.
        self.head = Some((head, frontier.clone()));

        // Idempotency: which digests are stored already?
        let idems: Vec<Digest> = pending
            .iter()
            .flat_map(|r| r.items.iter().filter_map(|i| i.columns.idem))
            .collect();
        let stored: HashMap<Digest, Entry> = if idems.is_empty() {
            HashMap::new()
        } else {
            self.store
                .find_idempotent(&self.stream, &idems)
                .await
                .map_err(CommitFailure::from_read)?
                .into_iter()
                .filter_map(|e| e.columns.idem.map(|d| (d, e)))
                .collect()
        };

        // Plan each request; a request whose key was reused for different content is refused
        // on its own, without touching the others.
        let recorded_at = self.clock.now().max(head.recorded_at);
        let mut new_entries: Vec<Entry> = Vec::new();
        let mut in_batch: HashMap<Digest, usize> = HashMap::new();
        let mut plans: Vec<Result<Vec<Slot>, AppendError>> = Vec::with_capacity(pending.len());
        let mut prev = head.entry_hash;
        let mut seq = head.seq;
        for request in pending.iter() {
            let mut slots = Vec::with_capacity(request.items.len());
            let mut refused = false;
            let mut in_request = std::collections::HashSet::new();
            for item in &request.items {
                let slot = match item.columns.idem {
                    // One key twice in one request is a client error, not a retry.
                    Some(d) if !in_request.insert(d) => {
                        refused = true;
                        break;
                    }
                    Some(d) => match (stored.get(&d), in_batch.get(&d)) {
                        (Some(e), _) if e.payload_digest == item.payload_digest => {
                            Slot::Stored(e.receipt())
                        }
                        (None, Some(&k))
                            if new_entries[k].payload_digest == item.payload_digest =>
                        {
                            Slot::New(k)
                        }
                        (None, None) => Slot::New(usize::MAX),
                        _ => {
                            refused = true;
                            break;
                        }
                    },
                    None => Slot::New(usize::MAX),
                };
                slots.push(slot);
            }
            if refused {
                plans.push(Err(AppendError::IdempotencyMismatch));
                continue;
            }
            // Chain the items that are new (marked usize::MAX above).
            for (slot, item) in slots.iter_mut().zip(&request.items) {
                if let Slot::New(k) = slot {
                    if *k == usize::MAX {
                        seq += 1;
                        let entry =
                            item.clone()
                                .chain(&self.stream, seq, recorded_at, prev, self.alg);
                        prev = entry.entry_hash;
                        *k = new_entries.len();
                        if let Some(d) = item.columns.idem {
                            in_batch.insert(d, *k);
                        }
                        new_entries.push(entry);
                    }
                }
            }
            plans.push(Ok(slots));
        }

        let receipts: Vec<Receipt> = new_entries.iter().map(Entry::receipt).collect();
        if let Some(last) = receipts.last().cloned() {
            let count = new_entries.len();
            let mut next_frontier = frontier;
            let mut nodes = Vec::new();
            for e in &new_entries {
                next_frontier.push(&e.entry_hash, &mut nodes);
            }
            match self
                .store
                .append(AppendBatch {
                    entries: new_entries,
                    nodes,
                })
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(stream = %self.stream, why = %why, "lost the race for the head; re-reading it");
                    return Err(CommitFailure::Conflict);
                }
                Err(e) => {
                    // The failure may have hit the commit itself: ask the store where its head
                    // is. Only if our last entry is there did the batch commit.
                    match self.store.head(&self.stream).await {
                        Ok(Some(h)) if (h.seq, h.entry_hash) == (last.seq, last.entry_hash) => {
                            tracing::warn!(stream = %self.stream, error = %e, "store reported an error but the batch is committed");
                        }
                        Ok(_) => {
                            // Not committed; the head may still have moved (another writer):
                            // re-read it before the next batch.
                            self.head = None;
                            return Err(CommitFailure::Failed(e.to_string()));
                        }
                        Err(_) => {
                            self.head = None;
                            return Err(CommitFailure::Failed(e.to_string()));
                        }
                    }
                }
            }
            self.head = Some((
                Head {
                    seq: last.seq,
                    entry_hash: last.entry_hash,
                    recorded_at,
                },
                next_frontier,
            ));
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .entries
                .fetch_add(count as u64, Ordering::Relaxed);
            tracing::trace!(stream = %self.stream, entries = count, requests = pending.len(), head = last.seq, "batch committed");
        }

        for (request, plan) in pending.drain(..).zip(plans) {
            let answer = plan.map(|slots| {
                slots
                    .into_iter()
                    .map(|s| match s {
                        Slot::New(k) => receipts[k].clone(),
                        Slot::Stored(r) => r,
                    })
                    .collect()
            });
            // A caller that gave up waiting is no reason to stop: its entries are committed.
            let _ = request.reply.send(answer);
        }
        Ok(())
    }
}

enum CommitFailure {
    Conflict,
    Failed(String),
}

impl CommitFailure {
    fn from_read(e: StoreError) -> CommitFailure {
        CommitFailure::Failed(e.to_string())
    }
}
