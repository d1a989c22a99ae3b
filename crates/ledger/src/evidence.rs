//! Evidence for reports: whether the entries a report rests on verify, without a pass over the
//! whole ledger.
//!
//! Reports such as the HIPAA accounting of disclosures (45 CFR 164.528) or a monthly
//! compliance report are legal statements. A report that says its evidence is "verified" must
//! have recomputed that claim from the stored bytes when it was produced, not repeated a flag
//! the store keeps: anyone who can alter the entries can alter such a flag. A full
//! [`verify`](crate::verify) recomputes everything, but over tens of millions of entries it is
//! too slow to run for every report, so this module recomputes only what the report needs:
//!
//! - [`verify_segment`] checks a range of entries as [`verify`](crate::verify) would check
//!   them (payload digests, entry hashes, stored columns, `seq` continuity and links), linked
//!   at both ends to the entries around it;
//! - [`anchor_entries`] shows that given entries are in the ledger a signed checkpoint
//!   describes: by RFC 9162 inclusion proofs (O(log n) reads each) for entries the checkpoint
//!   covers, and by the hash chain from the checkpoint's signed head for newer entries.
//!
//! Damage is reported in the report values (`ok: false`, the first bad `seq`, the kind of
//! damage, one sentence for people), never as an `Err`: an `Err` means the store could not be
//! read, and the report must then say nothing at all about its evidence.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::entry::{Entry, EntryKind};
use crate::hash::HashAlg;
use crate::proof::{prove_inclusion, ProveError};
use crate::store::{Store, StoreError};
use crate::types::{Digest, Seq, StreamId};
use crate::verify::{check_entry, check_genesis, check_stored_entry, genesis_alg, Problem};

/// The outcome of [`verify_segment`]. Serializes to JSON with digests as hex, so a report can
/// carry it as the record of what was recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentReport {
    /// The whole range verified, linked to the entries before and after it.
    pub ok: bool,
    pub from: Seq,
    /// Inclusive.
    pub to: Seq,
    /// Entries of the range checked and found sound before the first problem.
    pub entries: u64,
    /// The entry found damaged (it can be `from - 1` or `to + 1`: the entries the range is
    /// linked to).
    pub first_bad_seq: Option<Seq>,
    pub problem: Option<Problem>,
    /// One sentence on the damage, for people.
    pub detail: Option<String>,
    /// The hash of the last entry found sound (entry `to` when `ok`).
    pub last_entry_hash: Option<Digest>,
}

/// Verifies entries `from..=to` of `stream` as [`verify`](crate::verify) would verify them,
/// reading only them and three more entries: the genesis entry (which fixes the hash
/// algorithm), entry `from - 1` and entry `to + 1`.
///
/// Each entry is checked on its own, in parallel (payload digest, entry hash, stored columns;
/// an entry whose payload was purged is accepted when its hash still matches its fields, as
/// the projection runner accepts it), then in order: `seq` continuity, no genesis entry after
/// entry 0, and each `prev_hash` equal to the hash of the entry before. Entry `from - 1` is
/// checked on its own and anchors the first link. Entry `to + 1`, when the ledger has it, is
/// checked on its own and must commit to entry `to`'s hash: without it, entry `to` could be
/// rewritten with its hash recomputed and the range would still look sound.
///
/// What a sound segment does not show: that the ledger before `from` is intact, or that the
/// segment and everything after it were not rewritten as a whole with every hash recomputed.
/// Only a signed checkpoint shows that ([`anchor_entries`]).
///
/// A range beyond the head is reported as not `ok` with [`Problem::Truncated`] (after checking
/// the part of the range the ledger has). The first problem stops the check. `progress` gets
/// the running count of checked entries after each chunk.
pub async fn verify_segment(
    store: &dyn Store,
    stream: &StreamId,
    from: Seq,
    to: Seq,
    mut progress: impl FnMut(u64) + Send,
) -> Result<SegmentReport, StoreError> {
    Ok(check_segment(store, stream, from, to, &[], &mut progress)
        .await?
        .report)
}

/// A segment check, and what [`anchor_entries`] needs of it besides the report.
struct Segment {
    report: SegmentReport,
    /// The hash of entry `from - 1`, once it was checked on its own.
    anchor: Option<Digest>,
    /// The hashes of the wanted entries found sound.
    found: HashMap<Seq, Digest>,
}

/// The entry before, in the ordered pass.
#[derive(Clone, Copy)]
struct Prev {
    seq: Seq,
    entry_hash: Digest,
    /// The hash this entry links to, for diagnosing an inserted entry.
    before: Digest,
}

type Failure = (Seq, Problem, String);

/// [`verify_segment`], keeping the hashes of the entries in `wanted` (sorted).
async fn check_segment(
    store: &dyn Store,
    stream: &StreamId,
    from: Seq,
    to: Seq,
    wanted: &[Seq],
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Segment, StoreError> {
    let mut seg = Segment {
        report: SegmentReport {
            ok: false,
            from,
            to,
            entries: 0,
            first_bad_seq: None,
            problem: None,
            detail: None,
            last_entry_hash: None,
        },
        anchor: None,
        found: HashMap::new(),
    };
    let outcome = segment_pass(store, stream, from, to, wanted, progress, &mut seg).await?;
    match outcome {
        Ok(()) => seg.report.ok = true,
        Err(Some((seq, problem, detail))) => {
            seg.report.first_bad_seq = Some(seq);
            seg.report.problem = Some(problem);
            seg.report.detail = Some(detail);
        }
        Err(None) => {}
    }
    Ok(seg)
}

/// The checks of [`check_segment`]: `Err(Some(_))` is damage, `Err(None)` a range that names
/// no entry (the detail is already in the report).
async fn segment_pass(
    store: &dyn Store,
    stream: &StreamId,
    from: Seq,
    to: Seq,
    wanted: &[Seq],
    progress: &mut (dyn FnMut(u64) + Send),
    seg: &mut Segment,
) -> Result<Result<(), Option<Failure>>, StoreError> {
    if from > to {
        seg.report.detail = Some(format!(
            "the range {from} to {to} is empty: nothing was verified"
        ));
        return Ok(Err(None));
    }
    let Some(head) = store.head(stream).await? else {
        return Ok(Err(Some((
            0,
            Problem::Truncated,
            format!("stream {stream} has no entries: entries {from} to {to} are not in it"),
        ))));
    };
    // The part of the range the ledger has; the rest is reported once that part is checked.
    let last = to.min(head.seq);
    let beyond_head = (
        head.seq + 1,
        Problem::Truncated,
        format!(
            "the ledger ends at entry {}, but entries up to {to} were asked for: entries {} to {to} are not in it (deleted, or never written)",
            head.seq,
            (head.seq + 1).max(from),
        ),
    );
    if from > head.seq {
        return Ok(Err(Some(beyond_head)));
    }

    // The genesis entry fixes the hash algorithm everything else is checked with.
    let Some(genesis) = store.get(stream, 0).await? else {
        return Ok(Err(Some((
            0,
            Problem::Gap,
            "entry 0 (the genesis entry, which fixes the hash algorithm) is missing".into(),
        ))));
    };
    if let Err(failure) = check_genesis(&genesis, stream) {
        return Ok(Err(Some(failure)));
    }
    let alg = match genesis_alg(stream, &genesis) {
        Ok(alg) => alg,
        Err(why) => return Ok(Err(Some((0, Problem::BadGenesis, why)))),
    };
    if let Err((problem, detail)) = check_entry(&genesis, stream, alg) {
        return Ok(Err(Some((0, problem, detail))));
    }

    // Entry from - 1 anchors the first link: it is checked on its own, and its hash is what
    // entry `from` must commit to.
    let mut prev = None;
    if from > 0 {
        let seq = from - 1;
        let Some(e) = store.get(stream, seq).await? else {
            return Ok(Err(Some((
                seq,
                Problem::Gap,
                format!("entry {seq}, which entry {from} links to, is missing"),
            ))));
        };
        if let Err(failure) = check_alone(&e, stream, alg) {
            return Ok(Err(Some(failure)));
        }
        seg.anchor = Some(e.entry_hash);
        prev = Some(Prev {
            seq,
            entry_hash: e.entry_hash,
            before: e.prev_hash,
        });
    }

    let mut next = from;
    let mut chunks = store.scan(stream, from);
    while next <= last {
        let Some(chunk) = chunks.recv().await else {
            break;
        };
        let mut chunk = chunk?;
        // Keep the first entry past the range too: if it comes where an entry of the range
        // was expected, the range has a gap.
        if let Some(i) = chunk.iter().position(|e| e.seq > last) {
            chunk.truncate(i + 1);
        }
        // Hashing is CPU work: off the async threads, on every core.
        let owned_stream = stream.clone();
        let (chunk, findings) = tokio::task::spawn_blocking(move || {
            let findings: Vec<Option<(Problem, String)>> = chunk
                .par_iter()
                .map(|e| check_stored_entry(e, &owned_stream, alg).err())
                .collect();
            (chunk, findings)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("segment check task failed: {e}")))?;
        for (e, finding) in chunk.iter().zip(findings) {
            if next > last {
                break;
            }
            if let Err(failure) = in_order(e, finding, next, prev, last, stream) {
                progress(seg.report.entries);
                return Ok(Err(Some(failure)));
            }
            seg.report.entries += 1;
            seg.report.last_entry_hash = Some(e.entry_hash);
            if wanted.binary_search(&e.seq).is_ok() {
                seg.found.insert(e.seq, e.entry_hash);
            }
            prev = Some(Prev {
                seq: e.seq,
                entry_hash: e.entry_hash,
                before: e.prev_hash,
            });
            next = e.seq + 1;
        }
        progress(seg.report.entries);
    }
    // Stop the store's reader.
    drop(chunks);
    if next <= last {
        let missing = if next == last {
            format!("entry {next} is missing")
        } else {
            format!("entries {next} to {last} are missing")
        };
        return Ok(Err(Some((
            next,
            Problem::Gap,
            format!(
                "{missing}: the ledger's head is entry {}, but its entries end before",
                head.seq
            ),
        ))));
    }
    if to > head.seq {
        return Ok(Err(Some(beyond_head)));
    }

    // Entry to + 1 vouches for entry `to`: it committed to the hash `to` had when it was
    // written.
    if to < head.seq {
        let seq = to + 1;
        let Some(e) = store.get(stream, seq).await? else {
            return Ok(Err(Some((
                seq,
                Problem::Gap,
                format!("entry {seq}, which must commit to entry {to}'s hash, is missing"),
            ))));
        };
        if let Err(failure) = check_alone(&e, stream, alg) {
            return Ok(Err(Some(failure)));
        }
        if Some(e.prev_hash) != seg.report.last_entry_hash {
            return Ok(Err(Some((
                to,
                Problem::LinkBroken,
                format!(
                    "entry {to} does not have the hash that entry {seq} committed to: it was rewritten (or entry {seq} was forged)"
                ),
            ))));
        }
    }
    Ok(Ok(()))
}

/// An entry outside the range, checked on its own because the range is linked to it.
fn check_alone(e: &Entry, stream: &StreamId, alg: HashAlg) -> Result<(), Failure> {
    if e.seq > 0 && e.columns.kind == EntryKind::Genesis {
        return Err((
            e.seq,
            Problem::BadGenesis,
            format!("entry {} claims to be a genesis entry", e.seq),
        ));
    }
    check_stored_entry(e, stream, alg).map_err(|(problem, detail)| (e.seq, problem, detail))
}

/// The ordered checks of one entry of the range, in the order [`crate::verify::Verifier`]
/// makes them: `seq`, genesis rules, the entry's own findings, the link.
fn in_order(
    e: &Entry,
    finding: Option<(Problem, String)>,
    next: Seq,
    prev: Option<Prev>,
    last: Seq,
    stream: &StreamId,
) -> Result<(), Failure> {
    if e.seq != next {
        return Err(if e.seq > next {
            let end = (e.seq - 1).min(last);
            let missing = if end == next {
                format!("entry {next} is missing")
            } else {
                format!("entries {next} to {end} are missing")
            };
            (next, Problem::Gap, missing)
        } else {
            (
                e.seq,
                Problem::Reordered,
                format!("entry {} appears again after entry {}", e.seq, next - 1),
            )
        });
    }
    if e.seq == 0 {
        check_genesis(e, stream)?;
    } else if e.columns.kind == EntryKind::Genesis {
        return Err((
            e.seq,
            Problem::BadGenesis,
            format!("entry {} claims to be a genesis entry", e.seq),
        ));
    }
    if let Some((problem, detail)) = finding {
        // An entry written one position earlier, linked to the entry two back: the entry in
        // between was inserted.
        if problem == Problem::Reordered && prev.is_some_and(|p| p.before == e.prev_hash) {
            let forged = e.seq - 1;
            return Err((
                forged,
                Problem::ForgedEntry,
                format!(
                    "entry {forged} was inserted: entry {} was written as {forged} and links to entry {}",
                    e.seq,
                    forged.wrapping_sub(1)
                ),
            ));
        }
        return Err((e.seq, problem, detail));
    }
    if let Some(p) = prev {
        if e.prev_hash != p.entry_hash {
            // Entry e is consistent in itself, so it still commits to the hash the previous
            // entry had when e was written: the previous entry was rewritten.
            return Err((
                p.seq,
                Problem::LinkBroken,
                format!(
                    "entry {} does not have the hash that entry {} committed to: it was rewritten (or entry {} was forged)",
                    p.seq, e.seq, e.seq
                ),
            ));
        }
    }
    Ok(())
}

/// The signed checkpoint entries were anchored to, as the report states it. `note` is the
/// whole signed note, so that anyone holding the verifier key can check the report's anchor
/// without the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorCheckpoint {
    /// Entries in the checkpoint's tree (entries `0..size`).
    pub size: u64,
    /// The RFC 9162 Merkle root it signs.
    pub root: Digest,
    /// The entry hash of entry `size - 1` it signs.
    pub head: Digest,
    /// The name of the key whose signature was verified.
    pub signer: String,
    /// The signed note (C2SP signed-note text, signatures included).
    pub note: String,
}

/// A given entry that could not be anchored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorFailure {
    pub seq: Seq,
    pub detail: String,
}

/// The outcome of [`anchor_entries`]. Serializes to JSON with digests as hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorReport {
    /// The newest stored checkpoint whose signature verifies under the given key; `None`
    /// when no stored checkpoint does (then nothing is anchored and `ok` is false).
    pub checkpoint: Option<AnchorCheckpoint>,
    /// Distinct given entries proven, by an inclusion proof checked against the signed root,
    /// to be in the checkpoint's tree with the given hash.
    pub proven: u64,
    /// Distinct given entries after the checkpoint, with the given hash, linked by a sound
    /// hash chain to the checkpoint's signed head. Weaker than `proven`: no signature covers
    /// them yet, so a rewrite of the whole tail after the checkpoint (hashes and links
    /// recomputed) is not excluded until a later checkpoint covers them.
    pub linked_after: u64,
    pub failures: Vec<AnchorFailure>,
    /// A checkpoint was found and every given entry is proven or linked.
    pub ok: bool,
    /// What a reader of the report must know beyond the counts (no usable checkpoint; entries
    /// that only the hash chain covers; newer checkpoints that did not verify).
    pub note: Option<String>,
}

/// Shows that `entries` (`(seq, entry_hash)` pairs, in any order, duplicates allowed) are
/// entries of `stream` as described by its newest stored checkpoint signed by `key`.
///
/// A signature is what makes a report's claim independent of the database: whoever can write
/// to the store can rewrite entries and recompute every hash and link, but cannot sign. So the
/// entries are tied to a checkpoint whose signature is verified here, with the key the caller
/// trusts (never one read from the store):
///
/// - an entry inside the checkpoint (`seq < size`) gets an RFC 9162 inclusion proof, built from
///   the stored tree in O(log n) reads and checked against the signed root: the entry's hash is
///   leaf `seq` of the signed tree;
/// - entries after it are covered by [`verify_segment`] from `size` to the newest of them,
///   whose anchor, entry `size - 1`, must have the signed head hash.
///
/// The hashes given must be recomputed by the caller from the entries the report uses (e.g.
/// with [`HashAlg::entry_hash`](crate::hash::HashAlg::entry_hash) after
/// [`check_entry`](crate::verify::check_entry)): a hash copied from the store's column proves
/// nothing about the payload next to it.
///
/// Failures (a wrong hash, a proof that does not verify, a stored tree that can't produce a
/// proof, a broken chain) are lines of the report, not errors; only a store that cannot be
/// read is an `Err`.
pub async fn anchor_entries(
    store: &dyn Store,
    stream: &StreamId,
    entries: &[(Seq, Digest)],
    key: &NoteVerifier,
) -> Result<AnchorReport, StoreError> {
    let mut given = entries.to_vec();
    given.sort_unstable();
    given.dedup();

    let stored = store.checkpoints(stream).await?;
    let mut refused: Vec<String> = Vec::new();
    let mut chosen = None;
    for s in stored.iter().rev() {
        match Checkpoint::open(&s.note, key) {
            Ok(cp) if cp.size == s.size && cp.size > 0 => {
                chosen = Some((cp, s.note.clone()));
                break;
            }
            Ok(cp) if cp.size != s.size => refused.push(format!(
                "the checkpoint filed under size {} states size {}",
                s.size, cp.size
            )),
            Ok(_) => refused.push("the checkpoint of size 0 states no entry".into()),
            Err(e) => refused.push(format!("the checkpoint of size {}: {e}", s.size)),
        }
    }
    let Some((cp, note)) = chosen else {
        let why = match refused.first() {
            None => format!("stream {stream} has no stored checkpoint"),
            Some(newest) => format!(
                "none of the {} stored checkpoints of stream {stream} verifies under key {} ({newest})",
                stored.len(),
                key.name()
            ),
        };
        return Ok(AnchorReport {
            checkpoint: None,
            proven: 0,
            linked_after: 0,
            failures: Vec::new(),
            ok: false,
            note: Some(format!(
                "{why}: no entry could be tied to a signed statement. Sign one with `auditledger checkpoint` and produce the report again"
            )),
        });
    };

    let mut failures = Vec::new();
    let mut proven = 0u64;
    // Sorted: the entries inside the checkpoint come first.
    let (inside, after) = given.split_at(given.partition_point(|(seq, _)| *seq < cp.size));

    // Inside the checkpoint: one proof per distinct seq.
    for same in inside.chunk_by(|a, b| a.0 == b.0) {
        let seq = same[0].0;
        let proof = match prove_inclusion(store, stream, seq, cp.size).await {
            Ok(proof) => proof.verify(cp.size, &cp.root).map(|()| proof).map_err(|e| {
                format!(
                    "the inclusion proof of entry {seq} does not verify against the root signed at size {}: {e} (the stored tree or entry hash was altered)",
                    cp.size
                )
            }),
            Err(ProveError::Store(StoreError::Backend(e))) => {
                return Err(StoreError::Backend(e))
            }
            Err(ProveError::Store(StoreError::Conflict(e))) => {
                return Err(StoreError::Conflict(e))
            }
            Err(e) => Err(format!(
                "no inclusion proof of entry {seq} in the tree of the checkpoint of size {} could be built: {e}",
                cp.size
            )),
        };
        for (seq, hash) in same {
            match &proof {
                Ok(p) if p.entry_hash == *hash => proven += 1,
                Ok(p) => failures.push(AnchorFailure {
                    seq: *seq,
                    detail: format!(
                        "entry {seq} of the signed tree has hash {}, not the {hash} given",
                        p.entry_hash
                    ),
                }),
                Err(detail) => failures.push(AnchorFailure {
                    seq: *seq,
                    detail: detail.clone(),
                }),
            }
        }
    }

    // After the checkpoint: the chain from its signed head.
    let mut linked_after = 0u64;
    if let Some(&(newest, _)) = after.last() {
        let mut wanted: Vec<Seq> = after.iter().map(|(seq, _)| *seq).collect();
        wanted.dedup();
        let seg = check_segment(store, stream, cp.size, newest, &wanted, &mut |_| {}).await?;
        let anchor_seq = cp.size - 1;
        // Entries before this one are linked to the signed head (none, if the head differs).
        let mut sound_until = seg
            .report
            .first_bad_seq
            .filter(|_| !seg.report.ok)
            .unwrap_or(Seq::MAX);
        if let Some(anchor) = seg.anchor.filter(|a| *a != cp.head) {
            failures.push(AnchorFailure {
                seq: anchor_seq,
                detail: format!(
                    "entry {anchor_seq} has hash {anchor}, but the checkpoint of size {} signed head hash {}: the ledger was rewritten after the checkpoint was signed",
                    cp.size, cp.head
                ),
            });
            sound_until = 0;
        }
        if let (false, Some(problem), Some(detail)) = (
            seg.report.ok,
            seg.report.problem,
            seg.report.detail.as_ref(),
        ) {
            failures.push(AnchorFailure {
                seq: seg.report.first_bad_seq.unwrap_or(cp.size),
                detail: format!(
                    "the chain after the checkpoint of size {} is damaged ({}): {detail}",
                    cp.size,
                    problem.as_str()
                ),
            });
        }
        for (seq, hash) in after {
            let found = seg.found.get(seq).filter(|_| *seq < sound_until);
            match found {
                Some(h) if h == hash => linked_after += 1,
                Some(h) => failures.push(AnchorFailure {
                    seq: *seq,
                    detail: format!("entry {seq} has hash {h} in the ledger, not the {hash} given"),
                }),
                None => failures.push(AnchorFailure {
                    seq: *seq,
                    detail: format!(
                        "entry {seq} is not linked to the head signed at size {}: the chain breaks before it (see above)",
                        cp.size
                    ),
                }),
            }
        }
    }

    let mut notes = Vec::new();
    if linked_after > 0 {
        notes.push(format!(
            "{linked_after} of the entries come after the newest signed checkpoint (size {}): the hash chain links them to its signed head, but no signature covers them yet, so only a later checkpoint excludes a rewrite of the whole tail",
            cp.size
        ));
    }
    if !refused.is_empty() {
        notes.push(format!(
            "{} newer stored checkpoint(s) did not verify under key {} and were passed over (the newest: {})",
            refused.len(),
            key.name(),
            refused[0]
        ));
    }
    Ok(AnchorReport {
        ok: failures.is_empty(),
        checkpoint: Some(AnchorCheckpoint {
            size: cp.size,
            root: cp.root,
            head: cp.head,
            signer: key.name().to_owned(),
            note,
        }),
        proven,
        linked_after,
        failures,
        note: (!notes.is_empty()).then(|| notes.join(". ")),
    })
}

/// A minimal in-memory [`Store`] for this crate's tests (the real stores have their own
/// conformance suites). One `Vec` of entries per stream, in `seq` order as appended; tests
/// alter it directly to play an attacker with database access.
#[cfg(test)]
pub(crate) mod memstore {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use crate::entry::Entry;
    use crate::merkle::MerkleNode;
    use crate::readmodel::{ReadModelRow, RowChange, RowQuery, SavedProjection};
    use crate::store::{AppendBatch, EntryChunks, Head, Store, StoreError, StoredCheckpoint};
    use crate::types::{Digest, Seq, StreamId};

    /// Small, so that tests cross chunk boundaries.
    const CHUNK: usize = 7;

    #[derive(Default)]
    pub(crate) struct Stream {
        pub(crate) entries: Vec<Entry>,
        pub(crate) nodes: BTreeMap<(u8, u64), Digest>,
        pub(crate) checkpoints: BTreeMap<u64, String>,
    }

    #[derive(Default)]
    pub(crate) struct MemStore {
        streams: Mutex<HashMap<StreamId, Stream>>,
    }

    impl MemStore {
        /// Direct access to a stream's rows, as an attacker with database access has.
        pub(crate) fn with<R>(&self, stream: &StreamId, f: impl FnOnce(&mut Stream) -> R) -> R {
            f(self
                .streams
                .lock()
                .unwrap()
                .entry(stream.clone())
                .or_default())
        }
    }

    #[async_trait]
    impl Store for MemStore {
        fn describe(&self) -> String {
            "memory".into()
        }

        async fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
            Ok(self.with(stream, |s| {
                s.entries.last().map(|e| Head {
                    seq: e.seq,
                    entry_hash: e.entry_hash,
                    recorded_at: e.recorded_at,
                })
            }))
        }

        async fn append(&self, batch: AppendBatch) -> Result<(), StoreError> {
            let Some(first) = batch.entries.first() else {
                return Ok(());
            };
            let stream = first.stream.clone();
            self.with(&stream, |s| {
                let mut prev = s.entries.last().map(|e| (e.seq, e.entry_hash));
                for e in &batch.entries {
                    let expected = prev.map_or((0, Digest::ZERO), |(seq, h)| (seq + 1, h));
                    if e.stream != stream || (e.seq, e.prev_hash) != expected {
                        return Err(StoreError::Conflict(format!(
                            "entry {} does not continue the chain",
                            e.seq
                        )));
                    }
                    prev = Some((e.seq, e.entry_hash));
                }
                s.entries.extend(batch.entries);
                for n in batch.nodes {
                    s.nodes.insert((n.level, n.index), n.hash);
                }
                Ok(())
            })
        }

        async fn purge_payloads(
            &self,
            _stream: &StreamId,
            _authorization: Seq,
            _from: Seq,
            _to: Seq,
        ) -> Result<u64, StoreError> {
            Err(StoreError::Refused(
                "the evidence tests' in-memory store keeps every payload".into(),
            ))
        }

        async fn find_idempotent(
            &self,
            stream: &StreamId,
            idem: &[Digest],
        ) -> Result<Vec<Entry>, StoreError> {
            Ok(self.with(stream, |s| {
                s.entries
                    .iter()
                    .filter(|e| e.columns.idem.is_some_and(|d| idem.contains(&d)))
                    .cloned()
                    .collect()
            }))
        }

        async fn get(&self, stream: &StreamId, seq: Seq) -> Result<Option<Entry>, StoreError> {
            Ok(self.with(stream, |s| s.entries.iter().find(|e| e.seq == seq).cloned()))
        }

        async fn read(
            &self,
            stream: &StreamId,
            from: Seq,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            Ok(self.with(stream, |s| {
                s.entries
                    .iter()
                    .filter(|e| e.seq >= from)
                    .take(limit)
                    .cloned()
                    .collect()
            }))
        }

        fn scan(&self, stream: &StreamId, from: Seq) -> EntryChunks {
            let snapshot: Vec<Entry> = self.with(stream, |s| {
                s.entries
                    .iter()
                    .filter(|e| e.seq >= from)
                    .cloned()
                    .collect()
            });
            let chunks: Vec<Vec<Entry>> = snapshot.chunks(CHUNK).map(<[Entry]>::to_vec).collect();
            let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
            for chunk in chunks {
                tx.try_send(Ok(chunk))
                    .expect("the channel holds every chunk");
            }
            rx
        }

        async fn streams(&self) -> Result<Vec<StreamId>, StoreError> {
            Ok(self.streams.lock().unwrap().keys().cloned().collect())
        }

        async fn merkle_nodes(
            &self,
            stream: &StreamId,
            wanted: &[(u8, u64)],
        ) -> Result<Vec<MerkleNode>, StoreError> {
            Ok(self.with(stream, |s| {
                wanted
                    .iter()
                    .filter_map(|&(level, index)| {
                        s.nodes
                            .get(&(level, index))
                            .map(|&hash| MerkleNode { level, index, hash })
                    })
                    .collect()
            }))
        }

        async fn merkle_level(
            &self,
            stream: &StreamId,
            level: u8,
            from_index: u64,
            limit: usize,
        ) -> Result<Vec<MerkleNode>, StoreError> {
            Ok(self.with(stream, |s| {
                s.nodes
                    .range((level, from_index)..=(level, u64::MAX))
                    .take(limit)
                    .map(|(&(level, index), &hash)| MerkleNode { level, index, hash })
                    .collect()
            }))
        }

        async fn entry_hashes(
            &self,
            stream: &StreamId,
            from: Seq,
            to: Seq,
        ) -> Result<Vec<Digest>, StoreError> {
            Ok(self.with(stream, |s| {
                s.entries
                    .iter()
                    .filter(|e| (from..to).contains(&e.seq))
                    .map(|e| e.entry_hash)
                    .collect()
            }))
        }

        async fn put_checkpoint(
            &self,
            stream: &StreamId,
            checkpoint: &StoredCheckpoint,
        ) -> Result<(), StoreError> {
            self.with(stream, |s| {
                s.checkpoints
                    .entry(checkpoint.size)
                    .or_insert_with(|| checkpoint.note.clone());
            });
            Ok(())
        }

        async fn checkpoints(
            &self,
            stream: &StreamId,
        ) -> Result<Vec<StoredCheckpoint>, StoreError> {
            Ok(self.with(stream, |s| {
                s.checkpoints
                    .iter()
                    .map(|(&size, note)| StoredCheckpoint {
                        size,
                        note: note.clone(),
                    })
                    .collect()
            }))
        }

        async fn projection(
            &self,
            _name: &str,
            _stream: &StreamId,
        ) -> Result<Option<SavedProjection>, StoreError> {
            Ok(None)
        }

        async fn commit_projection(
            &self,
            _name: &str,
            _stream: &StreamId,
            _expected: Option<Seq>,
            _saved: &SavedProjection,
            _changes: &[RowChange],
        ) -> Result<(), StoreError> {
            Err(StoreError::Backend(
                "the test store keeps no projections".into(),
            ))
        }

        async fn reset_projection(
            &self,
            _name: &str,
            _stream: &StreamId,
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn read_model_rows(
            &self,
            _name: &str,
            _stream: &StreamId,
            _query: &RowQuery,
        ) -> Result<Vec<ReadModelRow>, StoreError> {
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memstore::MemStore;
    use super::*;
    use crate::checkpoint::{at_head, NoteSigner};
    use crate::entry::PreparedEntry;
    use crate::merkle::Frontier;
    use crate::payload::Payload;
    use crate::store::{AppendBatch, StoredCheckpoint};

    /// Entries in the ledger; the checkpoint is signed at `SIGNED`.
    const ENTRIES: u64 = 100;
    const SIGNED: u64 = 70;

    fn stream() -> StreamId {
        StreamId::default()
    }

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::new("test", &[seed; 32]).unwrap()
    }

    use crate::event::tests_support::chain;

    /// Appends entries with the Merkle nodes they complete, as the writer does.
    async fn append(store: &MemStore, entries: &[Entry], frontier: &mut Frontier) {
        let mut nodes = Vec::new();
        for e in entries {
            frontier.push(&e.entry_hash, &mut nodes);
        }
        store
            .append(AppendBatch {
                entries: entries.to_vec(),
                nodes,
            })
            .await
            .unwrap();
    }

    /// A ledger of `ENTRIES` entries with a checkpoint signed by `seed` at `SIGNED` entries.
    async fn ledger(seed: u8) -> (MemStore, Vec<Entry>) {
        let store = MemStore::default();
        let c = chain(ENTRIES);
        let mut frontier = Frontier::empty();
        append(&store, &c[..SIGNED as usize], &mut frontier).await;
        let cp = at_head(&store, &stream(), "test").await.unwrap().unwrap();
        assert_eq!(cp.size, SIGNED);
        store
            .put_checkpoint(
                &stream(),
                &StoredCheckpoint {
                    size: cp.size,
                    note: cp.sign(&signer(seed)),
                },
            )
            .await
            .unwrap();
        append(&store, &c[SIGNED as usize..], &mut frontier).await;
        (store, c)
    }

    async fn segment(store: &MemStore, from: Seq, to: Seq) -> SegmentReport {
        verify_segment(store, &stream(), from, to, |_| {})
            .await
            .unwrap()
    }

    fn bad(r: &SegmentReport) -> (bool, Option<Seq>, Option<Problem>) {
        (r.ok, r.first_bad_seq, r.problem)
    }

    /// Rewrites entry `seq`'s payload with its digest and hash recomputed: consistent in
    /// itself, only the next entry's link shows it.
    fn rewrite(e: &mut Entry) {
        let mut payload = Payload::decode(e.payload.as_ref().unwrap()).unwrap();
        if let Payload::Event(ev) = &mut payload {
            ev.action = "update".into();
        }
        let prepared = PreparedEntry::new(&payload, HashAlg::Sha256);
        e.payload = Some(prepared.payload);
        e.payload_digest = prepared.payload_digest;
        e.columns = prepared.columns;
        e.entry_hash = HashAlg::Sha256.entry_hash(
            &e.stream,
            e.seq,
            e.recorded_at,
            &e.prev_hash,
            &e.payload_digest,
        );
    }

    fn tamper(store: &MemStore, seq: Seq, f: impl FnOnce(&mut Entry)) {
        store.with(&stream(), |s| f(&mut s.entries[seq as usize]));
    }

    #[tokio::test]
    async fn evidence_intact_segment_verifies() {
        let (store, c) = ledger(7).await;
        let mut seen = Vec::new();
        let r = verify_segment(&store, &stream(), 0, ENTRIES - 1, |n| seen.push(n))
            .await
            .unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.entries, ENTRIES);
        assert_eq!(r.last_entry_hash, Some(c[ENTRIES as usize - 1].entry_hash));
        assert_eq!(seen.last(), Some(&ENTRIES));
        assert!(seen.len() > 1, "progress after each chunk: {seen:?}");
    }

    #[tokio::test]
    async fn evidence_segment_from_the_middle_verifies() {
        let (store, c) = ledger(7).await;
        let r = segment(&store, 40, 60).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.from, r.to, r.entries), (40, 60, 21));
        assert_eq!(r.last_entry_hash, Some(c[60].entry_hash));
        for (from, to) in [(0, 0), (1, 1), (99, 99), (13, 14)] {
            let r = segment(&store, from, to).await;
            assert!(r.ok, "{from}..={to}: {r:?}");
            assert_eq!(r.entries, to - from + 1);
        }
    }

    #[tokio::test]
    async fn evidence_tampered_payload_is_named_at_its_seq() {
        let (store, _) = ledger(7).await;
        tamper(&store, 50, |e| e.payload.as_mut().unwrap()[5] ^= 1);
        let r = segment(&store, 40, 60).await;
        assert_eq!(bad(&r), (false, Some(50), Some(Problem::PayloadModified)));
        assert_eq!(r.entries, 10);
        assert!(r.detail.unwrap().contains("entry 50"));
        // The entries the range links to are checked too.
        assert_eq!(
            bad(&segment(&store, 51, 60).await).2,
            Some(Problem::PayloadModified)
        );
        assert_eq!(bad(&segment(&store, 40, 49).await).1, Some(50));
        // A range that neither holds nor touches it reads nothing of it.
        assert!(segment(&store, 10, 20).await.ok);
    }

    #[tokio::test]
    async fn evidence_broken_link_names_the_rewritten_entry() {
        let (store, _) = ledger(7).await;
        tamper(&store, 55, rewrite);
        let r = segment(&store, 40, 60).await;
        assert_eq!(
            bad(&r),
            (false, Some(55), Some(Problem::LinkBroken)),
            "{r:?}"
        );
        // At the end of the range, the entry after it shows the rewrite.
        let r = segment(&store, 40, 55).await;
        assert_eq!(
            bad(&r),
            (false, Some(55), Some(Problem::LinkBroken)),
            "{r:?}"
        );
        // Entry 56 alone is consistent; entry 55 is its anchor, which commits to nothing.
        let r = segment(&store, 56, 60).await;
        assert_eq!(
            bad(&r),
            (false, Some(55), Some(Problem::LinkBroken)),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn evidence_gaps_and_purged_payloads() {
        let (store, _) = ledger(7).await;
        store.with(&stream(), |s| s.entries.remove(50));
        let r = segment(&store, 40, 60).await;
        assert_eq!(bad(&r), (false, Some(50), Some(Problem::Gap)), "{r:?}");

        let (store, _) = ledger(7).await;
        tamper(&store, 45, |e| e.payload = None);
        assert!(segment(&store, 40, 60).await.ok);
        tamper(&store, 46, |e| {
            e.payload = None;
            e.payload_digest = Digest([1; 32]);
        });
        assert_eq!(
            bad(&segment(&store, 40, 60).await),
            (false, Some(46), Some(Problem::HashMismatch))
        );
    }

    #[tokio::test]
    async fn evidence_range_beyond_the_head_is_truncated() {
        let (store, _) = ledger(7).await;
        let r = segment(&store, 90, 120).await;
        assert_eq!(
            bad(&r),
            (false, Some(ENTRIES), Some(Problem::Truncated)),
            "{r:?}"
        );
        assert_eq!(r.entries, 10, "the part the ledger has is checked");
        assert!(r.detail.unwrap().contains("ends at entry 99"));
        let r = segment(&store, 150, 160).await;
        assert_eq!(bad(&r), (false, Some(ENTRIES), Some(Problem::Truncated)));
        assert_eq!(r.entries, 0);

        let r = segment(&store, 60, 40).await;
        assert!(!r.ok && r.problem.is_none() && r.detail.is_some(), "{r:?}");
        let r = segment(&MemStore::default(), 0, 3).await;
        assert_eq!(bad(&r), (false, Some(0), Some(Problem::Truncated)));
    }

    fn given(c: &[Entry], seqs: &[Seq]) -> Vec<(Seq, Digest)> {
        seqs.iter()
            .map(|&s| (s, c[s as usize].entry_hash))
            .collect()
    }

    async fn anchor(store: &MemStore, entries: &[(Seq, Digest)]) -> AnchorReport {
        anchor_entries(store, &stream(), entries, &signer(7).verifier())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn evidence_anchor_before_and_after_the_checkpoint() {
        let (store, c) = ledger(7).await;
        let r = anchor(&store, &given(&c, &[69, 3, 80, 0, 3, 99, 10, 70])).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.proven, r.linked_after), (4, 3));
        assert!(r.failures.is_empty());
        let cp = r.checkpoint.as_ref().unwrap();
        assert_eq!(
            (cp.size, cp.head),
            (SIGNED, c[SIGNED as usize - 1].entry_hash)
        );
        assert_eq!(cp.signer, "test");
        assert_eq!(
            Checkpoint::open(&cp.note, &signer(7).verifier())
                .unwrap()
                .root,
            cp.root
        );
        assert!(r
            .note
            .as_ref()
            .unwrap()
            .contains("after the newest signed checkpoint"));

        // Only entries inside: nothing to say about the tail.
        let r = anchor(&store, &given(&c, &[5, 6])).await;
        assert!(r.ok && r.note.is_none(), "{r:?}");
        assert_eq!((r.proven, r.linked_after), (2, 0));

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checkpoint"]["head"], c[69].entry_hash.to_hex());
        assert_eq!(json["ok"], true);
    }

    #[tokio::test]
    async fn evidence_anchor_refuses_a_wrong_hash() {
        let (store, c) = ledger(7).await;
        let mut entries = given(&c, &[10, 20, 90]);
        entries[0].1 = c[11].entry_hash;
        entries[2].1 = Digest([9; 32]);
        let r = anchor(&store, &entries).await;
        assert!(!r.ok);
        assert_eq!((r.proven, r.linked_after), (1, 0));
        let seqs: Vec<Seq> = r.failures.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [10, 90], "{r:?}");
        assert!(r.failures[0].detail.contains("not the"));
    }

    #[tokio::test]
    async fn evidence_anchor_catches_damage_after_the_checkpoint() {
        let (store, c) = ledger(7).await;
        tamper(&store, 85, |e| e.payload.as_mut().unwrap()[7] ^= 1);
        let r = anchor(&store, &given(&c, &[5, 80, 85, 99])).await;
        assert!(!r.ok);
        assert_eq!((r.proven, r.linked_after), (1, 1), "{r:?}");
        let seqs: Vec<Seq> = r.failures.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [85, 85, 99], "{r:?}");
        assert!(r.failures[0].detail.contains("payload_modified"));

        // The tail rewritten from the signed head on, every hash and link recomputed: the
        // chain is consistent, the signed head is not there any more.
        let (store, c) = ledger(7).await;
        store.with(&stream(), |s| {
            rewrite(&mut s.entries[69]);
            for i in 70..ENTRIES as usize {
                s.entries[i].prev_hash = s.entries[i - 1].entry_hash;
                rewrite(&mut s.entries[i]);
            }
        });
        let forged: Vec<(Seq, Digest)> = store.with(&stream(), |s| {
            [80, 99]
                .iter()
                .map(|&i| (i, s.entries[i as usize].entry_hash))
                .collect()
        });
        let r = anchor(&store, &forged).await;
        assert!(!r.ok && r.linked_after == 0, "{r:?}");
        assert_eq!(r.failures[0].seq, SIGNED - 1);
        assert!(r.failures[0]
            .detail
            .contains("rewritten after the checkpoint"));
        // Entry 69 is inside: its proof uses the stored leaf, which no longer fits the root.
        let r = anchor(&store, &given(&c, &[69])).await;
        assert!(!r.ok && r.proven == 0, "{r:?}");
    }

    #[tokio::test]
    async fn evidence_anchor_catches_an_altered_tree() {
        let (store, c) = ledger(7).await;
        store.with(&stream(), |s| {
            s.nodes.insert((5, 1), Digest([3; 32]));
        });
        let r = anchor(&store, &given(&c, &[3, 40])).await;
        assert!(!r.ok);
        assert_eq!(r.proven, 1, "{r:?}");
        assert_eq!(r.failures[0].seq, 3);
        assert!(r.failures[0].detail.contains("does not verify"), "{r:?}");
        // A missing node: no proof can be built; a line of the report, not an error.
        store.with(&stream(), |s| s.nodes.remove(&(5, 1)));
        let r = anchor(&store, &given(&c, &[3])).await;
        assert!(
            !r.ok && r.failures[0].detail.contains("could be built"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn evidence_checkpoint_signed_by_another_key_anchors_nothing() {
        let (store, c) = ledger(8).await;
        let r = anchor(&store, &given(&c, &[3, 80])).await;
        assert!(!r.ok);
        assert!(r.checkpoint.is_none());
        assert_eq!((r.proven, r.linked_after), (0, 0));
        assert!(
            r.note.as_ref().unwrap().contains("auditledger checkpoint"),
            "{r:?}"
        );

        let empty = MemStore::default();
        let r = anchor(&empty, &[]).await;
        assert!(!r.ok && r.checkpoint.is_none());
        assert!(r.note.unwrap().contains("no stored checkpoint"));
    }

    #[tokio::test]
    async fn evidence_newest_verifiable_checkpoint_is_used() {
        let (store, c) = ledger(7).await;
        // A newer checkpoint by another key is passed over (and said so).
        let cp = at_head(&store, &stream(), "test").await.unwrap().unwrap();
        store
            .put_checkpoint(
                &stream(),
                &StoredCheckpoint {
                    size: cp.size,
                    note: cp.sign(&signer(8)),
                },
            )
            .await
            .unwrap();
        let r = anchor(&store, &given(&c, &[80])).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.checkpoint.unwrap().size, SIGNED);
        assert!(r.note.unwrap().contains("did not verify"));
    }
}
