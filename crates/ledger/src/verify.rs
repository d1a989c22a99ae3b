//! Verification: recompute everything, trust nothing the store says.
//!
//! For every entry, in parallel: the payload digest is recomputed from the payload bytes, the
//! payload is decoded and the extracted columns are recomputed and compared, and the entry
//! hash is recomputed from its fixed preimage. Then, in `seq` order: `seq` must be contiguous
//! from 0, entry 0 must be the genesis, and each `prev_hash` must be the previous entry's hash.
//! The first problem stops the run and is named with its `seq` and kind.
//!
//! Entries arrive in chunks from a reader running beside the verifier, so memory stays constant
//! and reading overlaps hashing.
//!
//! Rollback and truncation: a chain that was cut short, or rewritten from some entry on with
//! every hash and link recomputed, is consistent in itself. Only a statement kept elsewhere can
//! show it: the verifier keeps the RFC 9162 [`Frontier`] of the entry hashes it has seen (one
//! or two SHA-256 per entry, constant memory) and, when the count reaches a checkpoint's size,
//! compares the root and head hash the checkpoint signed. A ledger that ends before a
//! checkpoint's size is `truncated`; a different root is `rewritten`. The same pass checks the
//! store's own checkpoints and its stored Merkle nodes against the recomputed tree, since proofs
//! and checkpoints are built from those nodes.

use rayon::prelude::*;
use serde::Serialize;

use std::collections::{HashMap, VecDeque};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::entry::{Columns, Entry, EntryKind};
use crate::hash::{HashAlg, FORMAT_VERSION};
use crate::merkle::{empty_root, Frontier, MerkleNode, STORED_MIN_LEVEL};
use crate::payload::{ColumnsRef, Payload, StoredEvent};
use crate::record::{PurgeAuthorization, Record, PURGE_ACTION};
use crate::store::{Store, StoreError};
use crate::types::{Digest, Seq, StreamId, Timestamp};

/// The kind of damage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The payload bytes do not hash to the stored payload digest.
    PayloadModified,
    /// The stored entry hash is not the hash of the entry's fields.
    HashMismatch,
    /// An entry was rewritten with recomputed hashes: the next entry committed to another hash.
    LinkBroken,
    /// A `seq` is missing.
    Gap,
    /// An entry sits at a `seq` other than the one it was written at.
    Reordered,
    /// An entry was inserted that was never written by the ledger.
    ForgedEntry,
    /// A column stored beside the payload differs from the payload.
    ColumnMismatch,
    /// Entry 0 is not a valid genesis entry, or a later entry claims to be one.
    BadGenesis,
    /// The payload digest matches but the payload is not a valid entry payload.
    MalformedPayload,
    /// The payload is missing (purged without authorization).
    PayloadMissing,
    /// The ledger ends before a checkpoint's size: its newest entries were deleted (or a stored
    /// Merkle node covers entries that no longer exist).
    Truncated,
    /// At a checkpoint's size the ledger has another Merkle root or head hash than the
    /// checkpoint signed: it was rewritten, with hashes and links recomputed, after the
    /// checkpoint was taken.
    Rewritten,
    /// A stored Merkle node is missing or differs from the tree recomputed from the entries.
    TreeMismatch,
    /// A checkpoint stored in the ledger is malformed or its signature does not verify.
    BadCheckpoint,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::PayloadModified => "payload_modified",
            Problem::HashMismatch => "hash_mismatch",
            Problem::LinkBroken => "link_broken",
            Problem::Gap => "gap",
            Problem::Reordered => "reordered",
            Problem::ForgedEntry => "forged_entry",
            Problem::ColumnMismatch => "column_mismatch",
            Problem::BadGenesis => "bad_genesis",
            Problem::MalformedPayload => "malformed_payload",
            Problem::PayloadMissing => "payload_missing",
            Problem::Truncated => "truncated",
            Problem::Rewritten => "rewritten",
            Problem::TreeMismatch => "tree_mismatch",
            Problem::BadCheckpoint => "bad_checkpoint",
        }
    }
}

/// The outcome of a verification: the JSON printed by `verify --json` and served by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub stream: StreamId,
    /// Entries checked.
    pub entries: u64,
    pub head_seq: Option<Seq>,
    pub head_hash: Option<Digest>,
    pub first_bad_seq: Option<Seq>,
    pub problem: Option<Problem>,
    /// One sentence on the damage, for people.
    pub detail: Option<String>,
    /// The tree size of the checkpoint the ledger failed to extend (`truncated`, `rewritten`).
    pub checkpoint_size: Option<u64>,
    /// How many checkpoints (given and stored) the ledger was shown to extend.
    pub checkpoints_verified: u64,
    /// Entries whose payload was purged under an authorization (their hashes verified).
    pub payloads_purged: u64,
    /// Each purge authorization in the ledger and what was purged under it.
    pub purges: Vec<PurgeTally>,
}

/// A purge authorization found in the ledger, and the purged payloads it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeTally {
    /// The authorization's entry.
    pub seq: Seq,
    pub recorded_at: Timestamp,
    pub authorization: PurgeAuthorization,
    /// Payloads purged in its runs (`authorization.ranges`).
    pub purged: u64,
    /// `recorded_at` of the newest and oldest entries purged under it.
    pub newest_purged: Option<Timestamp>,
    pub oldest_purged: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Checkpoints the ledger must extend, already opened with a trusted key (a checkpoint
    /// whose signature was not verified proves nothing: see [`Checkpoint::open`]).
    pub checkpoints: Vec<Checkpoint>,
    /// The key that signs this stream's checkpoints: the store's own checkpoints are checked
    /// with it. Without it they are compared with the tree unsigned.
    pub checkpoint_key: Option<NoteVerifier>,
}

/// A checkpoint to compare with the recomputed tree, and where it came from (for messages).
#[derive(Debug, Clone)]
struct Claim {
    checkpoint: Checkpoint,
    stored: bool,
}

impl Claim {
    fn label(&self) -> String {
        let whose = if self.stored { "stored " } else { "" };
        format!("the {whose}checkpoint of size {}", self.checkpoint.size)
    }
}

/// A failure with its seq (if one entry can be named), kind, detail and checkpoint size.
type Failure = (Option<Seq>, Problem, String, Option<u64>);

/// A failure found in one entry by itself.
type Finding = (Problem, String);

/// What the sequential pass remembers of the entry before.
#[derive(Clone, Copy)]
struct Prev {
    seq: Seq,
    entry_hash: Digest,
    /// The hash of the entry before that, for diagnosing an inserted entry.
    before: Option<Digest>,
}

/// Incremental verifier: feed chunks in `seq` order, then `finish`.
pub struct Verifier {
    stream: StreamId,
    alg: HashAlg,
    next_seq: Seq,
    prev: Option<Prev>,
    entries: u64,
    failure: Option<Failure>,
    /// The tree of the entry hashes seen so far.
    frontier: Frontier,
    /// Checkpoints not reached yet, ascending size.
    claims: VecDeque<Claim>,
    checkpoints_verified: u64,
    /// Stored-level nodes completed since the last `take_tree_nodes` (kept only on request).
    completed: Vec<MerkleNode>,
    collect_nodes: bool,
    /// Damage found in what the store keeps beside the entries (Merkle nodes, checkpoints):
    /// reported only when the chain and the checkpoints are sound, since the entries decide.
    store_failure: Option<Failure>,
    /// Runs of consecutive entries whose payload was purged, matched with the purge
    /// authorizations (which come after them) when the pass ends. O(runs) memory.
    purged: Vec<PurgedRun>,
    /// The purge authorizations seen, in seq order.
    authorizations: Vec<(Seq, Timestamp, PurgeAuthorization)>,
    /// An export may hold entries purged before it was written, whose authorization lies
    /// past its end: those are counted, not failed.
    purges_authorized_elsewhere: bool,
}

/// Consecutive purged entries `from..=to` and the span of their `recorded_at`.
#[derive(Debug, Clone, Copy)]
struct PurgedRun {
    from: Seq,
    to: Seq,
    oldest: Timestamp,
    newest: Timestamp,
}

impl Verifier {
    /// Verifies a stream from its genesis entry.
    pub fn new(stream: StreamId) -> Verifier {
        Verifier {
            stream,
            alg: HashAlg::default(),
            next_seq: 0,
            prev: None,
            entries: 0,
            failure: None,
            frontier: Frontier::empty(),
            claims: VecDeque::new(),
            checkpoints_verified: 0,
            completed: Vec::new(),
            collect_nodes: false,
            store_failure: None,
            purged: Vec::new(),
            authorizations: Vec::new(),
            purges_authorized_elsewhere: false,
        }
    }

    /// For an export or archive: an entry purged before the file was written carries no
    /// payload, and the authorization that covers it may lie past the file's end. Such
    /// entries are counted in `payloads_purged` (their hashes are still verified) instead of
    /// failing as `payload_missing`.
    pub fn accept_purges_authorized_elsewhere(&mut self) {
        self.purges_authorized_elsewhere = true;
    }

    /// Adds checkpoints (already opened with a trusted key) the ledger must extend.
    pub fn expect_checkpoints(&mut self, checkpoints: impl IntoIterator<Item = Checkpoint>) {
        self.add_claims(checkpoints.into_iter().map(|checkpoint| Claim {
            checkpoint,
            stored: false,
        }));
    }

    /// Adds a checkpoint read from the store itself.
    pub fn expect_stored_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.add_claims([Claim {
            checkpoint,
            stored: true,
        }]);
    }

    fn add_claims(&mut self, claims: impl IntoIterator<Item = Claim>) {
        for claim in claims {
            if claim.checkpoint.size < self.entries.max(1) {
                // Size 0 (the empty tree) is all that can be already behind us before the
                // first entry; it states only the empty root.
                if claim.checkpoint.size == 0 && claim.checkpoint.root == empty_root() {
                    self.checkpoints_verified += 1;
                } else if self.failure.is_none() {
                    self.failure = Some((
                        None,
                        Problem::Rewritten,
                        format!("{} states a root the ledger never had", claim.label()),
                        Some(claim.checkpoint.size),
                    ));
                }
                continue;
            }
            self.claims.push_back(claim);
        }
        self.claims
            .make_contiguous()
            .sort_by_key(|c| c.checkpoint.size);
    }

    /// Keeps the stored-level Merkle nodes the recomputed tree completes, for comparison with
    /// the store's (drain them with [`take_tree_nodes`](Self::take_tree_nodes) after each
    /// chunk, so memory stays bounded).
    pub fn collect_tree_nodes(&mut self) {
        self.collect_nodes = true;
    }

    pub fn take_tree_nodes(&mut self) -> Vec<MerkleNode> {
        std::mem::take(&mut self.completed)
    }

    /// Records damage found in the store's Merkle nodes or checkpoints (the first one wins).
    pub fn report_store_damage(&mut self, seq: Option<Seq>, problem: Problem, detail: String) {
        if self.store_failure.is_none() {
            self.store_failure = Some((seq, problem, detail, None));
        }
    }

    pub fn store_damaged(&self) -> bool {
        self.store_failure.is_some()
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Checks one chunk; returns `false` once a problem has been found (stop feeding).
    pub fn push(&mut self, chunk: &[Entry]) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let alg = self.alg;
        let stream = &self.stream;
        let findings: Vec<(Option<Finding>, Option<PurgeAuthorization>)> = chunk
            .par_iter()
            .map(|e| match check_entry_or_purged(e, stream, alg) {
                Ok(()) => match purge_authorization(e) {
                    Ok(auth) => (None, auth),
                    Err(finding) => (Some(finding), None),
                },
                Err(finding) => (Some(finding), None),
            })
            .collect();
        for (entry, (finding, authorization)) in chunk.iter().zip(findings) {
            if let Err((seq, problem, detail)) = self.sequential(entry, finding) {
                self.failure = Some((Some(seq), problem, detail, None));
                return false;
            }
            if entry.payload.is_none() {
                self.note_purged(entry);
            }
            if let Some(a) = authorization {
                self.authorizations.push((entry.seq, entry.recorded_at, a));
            }
            self.entries += 1;
            self.frontier.push(&entry.entry_hash, &mut self.completed);
            if !self.collect_nodes {
                self.completed.clear();
            }
            if let Err(failure) = self.check_claims(entry) {
                self.failure = Some(failure);
                return false;
            }
        }
        true
    }

    /// Compares the checkpoints of the size just reached with the recomputed root and head.
    fn check_claims(&mut self, head: &Entry) -> Result<(), Failure> {
        while let Some(claim) = self
            .claims
            .front()
            .filter(|c| c.checkpoint.size == self.entries)
        {
            let cp = &claim.checkpoint;
            let root = self.frontier.root();
            if cp.head != head.entry_hash || cp.root != root {
                let what = if cp.head != head.entry_hash {
                    format!(
                        "entry {} has hash {}, {} signed head hash {}",
                        head.seq,
                        head.entry_hash,
                        claim.label(),
                        cp.head
                    )
                } else {
                    format!(
                        "the Merkle root of the first {} entries is {root}, {} signed {}",
                        cp.size,
                        claim.label(),
                        cp.root
                    )
                };
                return Err((
                    None,
                    Problem::Rewritten,
                    format!("the ledger was rewritten after the checkpoint was taken: {what}"),
                    Some(cp.size),
                ));
            }
            self.checkpoints_verified += 1;
            self.claims.pop_front();
        }
        Ok(())
    }

    fn sequential(
        &mut self,
        e: &Entry,
        finding: Option<Finding>,
    ) -> Result<(), (Seq, Problem, String)> {
        if e.seq != self.next_seq {
            return Err(if e.seq > self.next_seq {
                let missing = if e.seq - self.next_seq == 1 {
                    format!("entry {} is missing", self.next_seq)
                } else {
                    format!("entries {} to {} are missing", self.next_seq, e.seq - 1)
                };
                (self.next_seq, Problem::Gap, missing)
            } else {
                (
                    e.seq,
                    Problem::Reordered,
                    format!(
                        "entry {} appears again after entry {}",
                        e.seq,
                        self.next_seq - 1
                    ),
                )
            });
        }
        if e.seq == 0 {
            check_genesis(e, &self.stream)?;
        } else if e.columns.kind == EntryKind::Genesis {
            return Err((
                e.seq,
                Problem::BadGenesis,
                format!("entry {} claims to be a genesis entry", e.seq),
            ));
        }
        if let Some((problem, detail)) = finding {
            // An entry written one position earlier, linked to the entry two back: the entry
            // in between was inserted.
            if problem == Problem::Reordered
                && self.prev.is_some_and(|p| p.before == Some(e.prev_hash))
            {
                let forged = e.seq - 1;
                return Err((
                    forged,
                    Problem::ForgedEntry,
                    format!("entry {forged} was inserted: entry {} was written as {forged} and links to entry {}", e.seq, forged.wrapping_sub(1)),
                ));
            }
            return Err((e.seq, problem, detail));
        }
        if let Some(prev) = self.prev {
            if e.prev_hash != prev.entry_hash {
                // Entry e is consistent in itself, so it still commits to the hash the previous
                // entry had when e was written: the previous entry was rewritten.
                return Err((
                    prev.seq,
                    Problem::LinkBroken,
                    format!(
                        "entry {} does not have the hash that entry {} committed to: it was rewritten (or entry {} was forged)",
                        prev.seq, e.seq, e.seq
                    ),
                ));
            }
        }
        self.prev = Some(Prev {
            seq: e.seq,
            entry_hash: e.entry_hash,
            before: self.prev.map(|p| p.entry_hash),
        });
        self.next_seq = e.seq + 1;
        Ok(())
    }

    fn note_purged(&mut self, e: &Entry) {
        match self.purged.last_mut() {
            Some(run) if run.to + 1 == e.seq => {
                run.to = e.seq;
                run.oldest = run.oldest.min(e.recorded_at);
                run.newest = run.newest.max(e.recorded_at);
            }
            _ => self.purged.push(PurgedRun {
                from: e.seq,
                to: e.seq,
                oldest: e.recorded_at,
                newest: e.recorded_at,
            }),
        }
    }

    /// Counts each purged entry under the authorization whose runs hold it. Returns the
    /// tallies, how many purged entries there are, and the first one no authorization covers.
    fn tally_purges(&self) -> (Vec<PurgeTally>, u64, Option<Seq>) {
        let mut tallies: Vec<PurgeTally> = self
            .authorizations
            .iter()
            .map(|(seq, at, a)| PurgeTally {
                seq: *seq,
                recorded_at: *at,
                authorization: a.clone(),
                purged: 0,
                newest_purged: None,
                oldest_purged: None,
            })
            .collect();
        // Every authorized run, with its tally, by first seq.
        let mut runs: Vec<(Seq, Seq, usize)> = tallies
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.authorization.ranges.iter().map(move |&(f, l)| (f, l, i)))
            .collect();
        runs.sort_unstable();
        // The furthest any run up to each index reaches: monotone even if authorizations
        // overlap (which only forged ones do), so a binary search finds where to start.
        let reach: Vec<Seq> = runs
            .iter()
            .scan(0, |max, &(_, last, _)| {
                *max = last.max(*max);
                Some(*max)
            })
            .collect();
        let (mut total, mut uncovered) = (0u64, None::<Seq>);
        for run in &self.purged {
            total += run.to - run.from + 1;
            // The first authorized run that may reach this purged run.
            let start = reach.partition_point(|&last| last < run.from);
            let mut cursor = run.from; // everything before it is accounted for
            for &(first, last, i) in runs[start..].iter().take_while(|r| r.0 <= run.to) {
                if last < run.from {
                    continue;
                }
                if first > cursor && uncovered.is_none() {
                    uncovered = Some(cursor);
                }
                let (a, b) = (first.max(run.from), last.min(run.to));
                let t = &mut tallies[i];
                t.purged += b - a + 1;
                // Run-level times: conservative (the newest can only be earlier).
                t.newest_purged = Some(t.newest_purged.map_or(run.newest, |n| n.max(run.newest)));
                t.oldest_purged = Some(t.oldest_purged.map_or(run.oldest, |o| o.min(run.oldest)));
                cursor = cursor.max(b + 1);
            }
            if cursor <= run.to && uncovered.is_none() {
                uncovered = Some(cursor);
            }
        }
        (tallies, total, uncovered)
    }

    pub fn finish(self) -> VerifyReport {
        let (purges, payloads_purged, uncovered) = self.tally_purges();
        // Only a complete pass has seen every authorization that could cover a purge.
        let unauthorized = uncovered
            .filter(|_| self.failure.is_none() && !self.purges_authorized_elsewhere)
            .map(|seq| {
                (
                    Some(seq),
                    Problem::PayloadMissing,
                    format!("entry {seq} has no payload, and no purge authorization after it covers it: it was purged without authorization"),
                    None,
                )
            });
        let truncated = self.claims.front().map(|claim| {
            (
                Some(self.entries),
                Problem::Truncated,
                format!(
                    "the ledger ends after {} entries, but {} was signed: entries {} to {} were deleted",
                    self.entries,
                    claim.label(),
                    self.entries,
                    claim.checkpoint.size - 1
                ),
                Some(claim.checkpoint.size),
            )
        });
        let failure = self
            .failure
            .or(unauthorized)
            .or(truncated)
            .or(self.store_failure);
        let (ok, first_bad_seq, problem, detail, checkpoint_size) = match failure {
            None => (true, None, None, None, None),
            Some((seq, p, d, size)) => (false, seq, Some(p), Some(d), size),
        };
        VerifyReport {
            ok,
            stream: self.stream,
            entries: self.entries,
            head_seq: self.prev.map(|p| p.seq),
            head_hash: self.prev.map(|p| p.entry_hash),
            first_bad_seq,
            problem,
            detail,
            checkpoint_size,
            checkpoints_verified: self.checkpoints_verified,
            payloads_purged,
            purges,
        }
    }
}

/// The rules of entry 0: zero `prev_hash`, a genesis payload naming this stream, a known
/// format version and hash algorithm.
pub(crate) fn check_genesis(e: &Entry, stream: &StreamId) -> Result<(), (Seq, Problem, String)> {
    let bad = |why: String| Err((0, Problem::BadGenesis, why));
    if e.prev_hash != Digest::ZERO {
        return bad("the genesis entry's prev_hash is not 32 zero bytes".into());
    }
    match e.decode_payload() {
        Some(Ok(Payload::Genesis(g))) => {
            if g.stream != stream.as_str() {
                return bad(format!("the genesis entry names stream {:?}", g.stream));
            }
            if g.format != FORMAT_VERSION {
                return bad(format!("unknown format version {}", g.format));
            }
            if HashAlg::from_name(&g.hash).is_none() {
                return bad(format!("unknown hash algorithm {:?}", g.hash));
            }
            Ok(())
        }
        None => bad("the genesis entry has no payload".into()),
        // A payload that fails to decode or digest is reported by the per-entry check.
        Some(Err(_)) => Ok(()),
        Some(Ok(_)) => bad("entry 0 is not a genesis entry".into()),
    }
}

/// The hash algorithm the genesis entry fixes for its stream, read the same way by the writer
/// (which chains with it) and by [`crate::evidence`] (which verifies a segment with it). `Err`
/// says why entry 0 fixes none.
pub fn genesis_alg(stream: &StreamId, genesis: &Entry) -> Result<HashAlg, String> {
    match genesis.decode_payload() {
        Some(Ok(Payload::Genesis(g))) => HashAlg::from_name(&g.hash)
            .ok_or_else(|| format!("stream {stream} uses unknown hash algorithm {:?}", g.hash)),
        _ => Err(format!("entry 0 of stream {stream} is not a genesis entry")),
    }
}

/// [`check_entry`] for readers that accept purged payloads (the projection runner,
/// [`crate::evidence`]): an entry whose payload was purged (`payload: None`) still has its
/// digest in its hash, and that hash must still match its fields.
pub(crate) fn check_stored_entry(
    e: &Entry,
    stream: &StreamId,
    alg: HashAlg,
) -> Result<(), Finding> {
    match &e.payload {
        Some(_) => check_entry(e, stream, alg),
        None => {
            let recomputed = alg.entry_hash(
                stream,
                e.seq,
                e.recorded_at,
                &e.prev_hash,
                &e.payload_digest,
            );
            if recomputed == e.entry_hash {
                Ok(())
            } else {
                Err((
                    Problem::HashMismatch,
                    format!("entry {}'s hash does not match its fields", e.seq),
                ))
            }
        }
    }
}

/// [`check_entry`] for a full verification, where a purged payload is allowed if an
/// authorization covers it (matched when the pass ends): a purged entry's hash must still
/// match its fields, and it may keep no column extracted from the payload it lost.
fn check_entry_or_purged(e: &Entry, stream: &StreamId, alg: HashAlg) -> Result<(), Finding> {
    if e.payload.is_some() {
        return check_entry(e, stream, alg);
    }
    check_stored_entry(e, stream, alg)?;
    if e.columns != Columns::undecodable() {
        // A purge clears the columns with the payload; a payload deleted by other means
        // leaves them behind.
        return Err((
            Problem::PayloadMissing,
            format!(
                "entry {}'s payload was removed but its columns remain: not by a purge",
                e.seq
            ),
        ));
    }
    Ok(())
}

/// The purge authorization an entry carries, if its (verified) action says it is one. An
/// entry that claims the action but carries no authorization record is malformed: an
/// authorization must say what it authorizes.
fn purge_authorization(e: &Entry) -> Result<Option<PurgeAuthorization>, Finding> {
    if e.columns.action.as_deref() != Some(PURGE_ACTION) {
        return Ok(None);
    }
    match e.decode_payload() {
        Some(Ok(Payload::Event(StoredEvent {
            record: Some(Record::PurgeAuthorization(a)),
            ..
        }))) if a.is_well_formed(e.seq) => Ok(Some(a)),
        _ => Err((
            Problem::MalformedPayload,
            format!(
                "entry {} is a {PURGE_ACTION} event without a well-formed purge authorization (runs before it, within its span, adding up to its count)",
                e.seq
            ),
        )),
    }
}

/// Everything that can be checked about one entry on its own.
pub fn check_entry(e: &Entry, stream: &StreamId, alg: HashAlg) -> Result<(), Finding> {
    let Some(payload) = e.payload.as_deref() else {
        return Err((
            Problem::PayloadMissing,
            format!("entry {} has no payload", e.seq),
        ));
    };
    if alg.payload_digest(payload) != e.payload_digest {
        return Err((
            Problem::PayloadModified,
            format!(
                "entry {}'s payload does not match its payload digest",
                e.seq
            ),
        ));
    }
    let recomputed = alg.entry_hash(
        stream,
        e.seq,
        e.recorded_at,
        &e.prev_hash,
        &e.payload_digest,
    );
    if recomputed != e.entry_hash {
        // Diagnose a moved entry: does the hash fit a neighbouring position?
        for (other, label) in [
            (e.seq.wrapping_add(1), "later"),
            (e.seq.wrapping_sub(1), "earlier"),
        ] {
            if alg.entry_hash(
                stream,
                other,
                e.recorded_at,
                &e.prev_hash,
                &e.payload_digest,
            ) == e.entry_hash
            {
                return Err((
                    Problem::Reordered,
                    format!(
                        "entry {} was written as entry {other} (moved from a {label} position)",
                        e.seq
                    ),
                ));
            }
        }
        return Err((Problem::HashMismatch, format!("entry {}'s hash does not match its fields (seq, recorded_at, prev_hash or digest changed)", e.seq)));
    }
    let recomputed = ColumnsRef::read(payload)
        .map_err(|err| (Problem::MalformedPayload, format!("entry {}: {err}", e.seq)))?;
    if let Some(column) = e.columns.first_difference_from(&recomputed) {
        return Err((
            Problem::ColumnMismatch,
            format!("entry {}'s {column} column differs from its payload", e.seq),
        ));
    }
    Ok(())
}

/// Verifies `stream` in `store`, calling `progress` with the running count after each chunk:
/// the chain, the given checkpoints, the store's own checkpoints and its stored Merkle nodes.
pub async fn verify_store(
    store: &dyn Store,
    stream: &StreamId,
    opts: &VerifyOptions,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> Result<VerifyReport, StoreError> {
    let mut v = Verifier::new(stream.clone());
    v.expect_checkpoints(opts.checkpoints.iter().cloned());
    v.collect_tree_nodes();
    for stored in store.checkpoints(stream).await? {
        let opened = match &opts.checkpoint_key {
            Some(key) => Checkpoint::open(&stored.note, key),
            None => Checkpoint::parse_unverified(&stored.note),
        };
        match opened {
            Ok(cp) if cp.size == stored.size => v.expect_stored_checkpoint(cp),
            Ok(cp) => v.report_store_damage(
                None,
                Problem::BadCheckpoint,
                format!(
                    "a stored checkpoint is filed under size {} but states size {}",
                    stored.size, cp.size
                ),
            ),
            Err(e) => v.report_store_damage(
                None,
                Problem::BadCheckpoint,
                format!(
                    "the stored checkpoint of size {} is refused: {e}",
                    stored.size
                ),
            ),
        }
    }
    let mut chunks = store.scan(stream, 0);
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        // Hashing a chunk is CPU work: off the async threads, one hop per chunk.
        let (back, go_on) = tokio::task::spawn_blocking(move || {
            let go_on = v.push(&chunk);
            (v, go_on)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("verifier task failed: {e}")))?;
        v = back;
        progress(v.entries());
        let nodes = v.take_tree_nodes();
        if !nodes.is_empty() && !v.store_damaged() {
            compare_stored_nodes(store, stream, &mut v, &nodes).await?;
        }
        if !go_on {
            break;
        }
    }
    if !v.failed() && !v.store_damaged() {
        find_nodes_beyond_head(store, stream, &mut v).await?;
    }
    Ok(v.finish())
}

/// Compares the nodes the recomputed tree completed with the stored ones (one read per chunk).
async fn compare_stored_nodes(
    store: &dyn Store,
    stream: &StreamId,
    v: &mut Verifier,
    nodes: &[MerkleNode],
) -> Result<(), StoreError> {
    let wanted: Vec<(u8, u64)> = nodes.iter().map(|n| (n.level, n.index)).collect();
    let stored: HashMap<(u8, u64), Digest> = store
        .merkle_nodes(stream, &wanted)
        .await?
        .into_iter()
        .map(|n| ((n.level, n.index), n.hash))
        .collect();
    let bad = nodes
        .iter()
        .filter(|n| stored.get(&(n.level, n.index)) != Some(&n.hash))
        // The narrowest bad node that ends first: a changed entry makes all its ancestors
        // differ, and the lowest one bounds it best.
        .min_by_key(|n| ((n.index + 1) << n.level, n.level));
    if let Some(n) = bad {
        let first = n.index << n.level;
        let last = first + (1u64 << n.level) - 1;
        let what = if stored.contains_key(&(n.level, n.index)) {
            "differs from the tree recomputed from the entries"
        } else {
            "is missing"
        };
        v.report_store_damage(
            Some(first),
            Problem::TreeMismatch,
            format!(
                "the stored Merkle node (level {}, index {}) over entries {first} to {last} {what}: proofs and checkpoints built from it would be wrong",
                n.level, n.index
            ),
        );
    }
    Ok(())
}

/// Stored Merkle nodes that cover entries the ledger does not have are left over from deleted
/// entries. Appends may run while a verification reads its snapshot, and a node committed
/// after the snapshot is not damage: a node is written in the transaction of its entries, so
/// the head read *after* finding the node includes them unless they were deleted.
async fn find_nodes_beyond_head(
    store: &dyn Store,
    stream: &StreamId,
    v: &mut Verifier,
) -> Result<(), StoreError> {
    let size = v.entries();
    for level in STORED_MIN_LEVEL..64 {
        let Some(n) = store
            .merkle_level(stream, level, size >> level, 1)
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        let first = n.index << n.level;
        let last = first + (1u64 << level) - 1;
        let now = store.head(stream).await?.map_or(0, |h| h.seq + 1);
        if last < now {
            continue; // appended after the snapshot this verification read
        }
        v.report_store_damage(
            Some(size),
            Problem::Truncated,
            format!(
                "the stored Merkle node (level {level}, index {}) covers entries {first} to {last}, but the ledger ends after {now} entries: entries were deleted",
                n.index
            ),
        );
        break;
    }
    Ok(())
}

/// Blocking driver over a chunk receiver.
pub fn verify_chunks(
    stream: StreamId,
    mut chunks: crate::store::EntryChunks,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let mut v = Verifier::new(stream);
    while let Some(chunk) = chunks.blocking_recv() {
        if !v.push(&chunk?) {
            break;
        }
        progress(v.entries());
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::PreparedEntry;

    use crate::event::tests_support::chain;
    use crate::types::Timestamp;

    fn run(entries: &[Entry]) -> VerifyReport {
        let mut v = Verifier::new(StreamId::default());
        for chunk in entries.chunks(3) {
            if !v.push(chunk) {
                break;
            }
        }
        v.finish()
    }

    fn rehash(e: &mut Entry) {
        e.entry_hash = HashAlg::Sha256.entry_hash(
            &e.stream,
            e.seq,
            e.recorded_at,
            &e.prev_hash,
            &e.payload_digest,
        );
    }

    /// `chain(n)` with a purge authorization for `from..=to` appended, and the payloads of
    /// `purge` removed the way a store removes them.
    fn purged_chain(n: u64, from: Seq, to: Seq, purge: &[Seq]) -> Vec<Entry> {
        use crate::pseudonym::{PseudonymKey, Pseudonymizer};
        use crate::record::PurgedRule;
        let mut c = chain(n);
        let ingest = crate::Ingest::new(Pseudonymizer::new(PseudonymKey::from_bytes([1; 32])));
        let body = serde_json::json!({"occurred_at": "2026-11-22T14:03:11Z",
            "action": PURGE_ACTION, "outcome": "success", "actor": {"role": "admin"},
            "source": "auditledger"});
        let auth = PurgeAuthorization {
            to,
            from,
            count: (to - from + 1),
            holds: vec![],
            rules: vec![PurgedRule {
                rule: "default".into(),
                count: purge.len() as u64,
                years: 6,
                newest: to as i64,
            }],
            ranges: vec![(from, to)],
            archive: "00".repeat(32),
            archive_size: n,
            authorized_by: "test".into(),
        };
        let prepared = ingest
            .prepare_record(&body, Record::PurgeAuthorization(auth))
            .unwrap();
        let prev = c.last().unwrap().entry_hash;
        c.push(prepared.chain(
            &StreamId::default(),
            n,
            Timestamp(n as i64),
            prev,
            HashAlg::Sha256,
        ));
        for &seq in purge {
            c[seq as usize].payload = None;
            c[seq as usize].columns = Columns::undecodable();
        }
        c
    }

    #[test]
    fn authorized_purges_verify_and_are_counted() {
        let r = run(&purged_chain(10, 1, 6, &[1, 2, 3, 5, 6]));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.payloads_purged, 5);
        assert_eq!(r.purges.len(), 1);
        let t = &r.purges[0];
        assert_eq!((t.seq, t.purged), (10, 5));
        assert_eq!(
            (t.oldest_purged, t.newest_purged),
            (Some(Timestamp(1)), Some(Timestamp(6)))
        );
    }

    #[test]
    fn a_purge_without_authorization_is_payload_missing() {
        // Outside the authorized range.
        let r = run(&purged_chain(10, 1, 3, &[2, 7]));
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(7), Some(Problem::PayloadMissing))
        );
        // No authorization at all.
        let mut c = chain(10);
        c[4].payload = None;
        c[4].columns = Columns::undecodable();
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(4), Some(Problem::PayloadMissing))
        );
        // ... unless the file is an archive whose authorizations lie past its end.
        let mut v = Verifier::new(StreamId::default());
        v.accept_purges_authorized_elsewhere();
        v.push(&c);
        let r = v.finish();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.payloads_purged, r.purges.len()), (1, 0));
    }

    #[test]
    fn a_purged_entry_keeps_no_column_and_its_hash() {
        let mut c = purged_chain(10, 1, 6, &[3]);
        c[3].columns.action = Some("read".into());
        assert_eq!(run(&c).problem, Some(Problem::PayloadMissing));
        let mut c = purged_chain(10, 1, 6, &[3]);
        c[3].recorded_at = Timestamp(1);
        assert_eq!(run(&c).problem, Some(Problem::HashMismatch));
        let mut c = purged_chain(10, 0, 6, &[0]);
        c[0].columns.kind = EntryKind::Genesis;
        c[0].columns = Columns::undecodable();
        assert_eq!(run(&c).problem, Some(Problem::BadGenesis));
    }

    #[test]
    fn a_purge_action_without_an_authorization_record_is_malformed() {
        let mut c = chain(10);
        let mut forged = purged_chain(10, 1, 2, &[])[10].clone();
        let Some(Ok(Payload::Event(mut e))) = forged.decode_payload() else {
            unreachable!()
        };
        e.record = None;
        let prepared = PreparedEntry::new(&Payload::Event(e), HashAlg::Sha256);
        forged = prepared.chain(
            &StreamId::default(),
            10,
            Timestamp(10),
            c[9].entry_hash,
            HashAlg::Sha256,
        );
        c.push(forged);
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(10), Some(Problem::MalformedPayload))
        );
    }

    #[test]
    fn intact_chain_verifies() {
        let r = run(&chain(10));
        assert!(r.ok, "{r:?}");
        assert_eq!((r.entries, r.head_seq), (10, Some(9)));
    }

    #[test]
    fn each_damage_is_named_at_its_seq() {
        let mut c = chain(10);
        c[4].payload.as_mut().unwrap()[5] ^= 1;
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(4), Some(Problem::PayloadModified))
        );

        let mut c = chain(10);
        c[4].recorded_at = Timestamp(99);
        assert_eq!(run(&c).problem, Some(Problem::HashMismatch));

        let mut c = chain(10);
        c.remove(4);
        let r = run(&c);
        assert_eq!((r.first_bad_seq, r.problem), (Some(4), Some(Problem::Gap)));

        let mut c = chain(10);
        c[6].columns.action = Some("delete".into());
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(6), Some(Problem::ColumnMismatch))
        );

        // Rewritten with recomputed digest and hash: the next entry's link names it.
        let mut c = chain(10);
        let e = &mut c[5];
        let mut payload = Payload::decode(e.payload.as_ref().unwrap()).unwrap();
        if let Payload::Event(ev) = &mut payload {
            ev.action = "update".into();
        }
        let prepared = PreparedEntry::new(&payload, HashAlg::Sha256);
        e.payload = Some(prepared.payload);
        e.payload_digest = prepared.payload_digest;
        e.columns = prepared.columns;
        rehash(e);
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(5), Some(Problem::LinkBroken))
        );
    }

    #[test]
    fn swapped_and_inserted_entries() {
        let mut c = chain(10);
        c.swap(3, 4);
        c[3].seq = 3;
        c[4].seq = 4;
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(3), Some(Problem::Reordered))
        );

        // Insert a well-formed entry at 4, shifting the rest up.
        let mut c = chain(10);
        let mut forged = c[4].clone();
        forged.prev_hash = c[3].entry_hash;
        forged.recorded_at = Timestamp(1234);
        rehash(&mut forged);
        c.insert(4, forged);
        for (i, e) in c.iter_mut().enumerate() {
            e.seq = i as u64;
        }
        let r = run(&c);
        assert_eq!(
            (r.first_bad_seq, r.problem),
            (Some(4), Some(Problem::ForgedEntry)),
            "{r:?}"
        );
    }

    fn checkpoint_of(c: &[Entry]) -> Checkpoint {
        let hashes: Vec<Digest> = c.iter().map(|e| e.entry_hash).collect();
        Checkpoint {
            origin: "auditledger/default".into(),
            size: c.len() as u64,
            root: crate::merkle::root_of(&hashes),
            head: hashes[hashes.len() - 1],
        }
    }

    fn run_with(entries: &[Entry], checkpoints: Vec<Checkpoint>) -> VerifyReport {
        let mut v = Verifier::new(StreamId::default());
        v.expect_checkpoints(checkpoints);
        for chunk in entries.chunks(3) {
            if !v.push(chunk) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn checkpoints_catch_truncation_and_rewrites() {
        let c = chain(20);
        let at12 = checkpoint_of(&c[..12]);
        let at20 = checkpoint_of(&c);
        let r = run_with(&c, vec![at20.clone(), at12.clone()]);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.checkpoints_verified, 2);

        let r = run_with(&c[..15], vec![at12.clone(), at20.clone()]);
        assert_eq!(
            (r.ok, r.problem, r.first_bad_seq, r.checkpoint_size),
            (false, Some(Problem::Truncated), Some(15), Some(20)),
            "{r:?}"
        );
        assert_eq!(r.checkpoints_verified, 1);

        // The tail from 10 on rewritten with every hash and link recomputed: the chain is
        // consistent, only the checkpoint shows it.
        let mut forged = c.clone();
        for i in 10..20 {
            forged[i].recorded_at = Timestamp(forged[i].recorded_at.0 + 7);
            forged[i].prev_hash = forged[i - 1].entry_hash;
            rehash(&mut forged[i]);
        }
        assert!(run(&forged).ok);
        let r = run_with(&forged, vec![at12]);
        assert_eq!(
            (r.problem, r.checkpoint_size),
            (Some(Problem::Rewritten), Some(12)),
            "{r:?}"
        );
        // A checkpoint whose head matches but root does not (a forged checkpoint, or a broken
        // hash function) is still refused.
        let mut odd = at20;
        odd.root = Digest([1; 32]);
        assert_eq!(run_with(&c, vec![odd]).problem, Some(Problem::Rewritten));
    }

    #[test]
    fn genesis_rules() {
        let mut c = chain(3);
        c.remove(0);
        assert_eq!(run(&c).problem, Some(Problem::Gap));
        let mut c = chain(3);
        c[2] = c[0].clone();
        c[2].seq = 2;
        assert_eq!(run(&c).first_bad_seq, Some(2));
    }
}
