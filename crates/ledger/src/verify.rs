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

use rayon::prelude::*;
use serde::Serialize;

use crate::entry::{Columns, Entry, EntryKind};
use crate::hash::{HashAlg, FORMAT_VERSION};
use crate::payload::Payload;
use crate::store::{Store, StoreError};
use crate::types::{Digest, Seq, StreamId};

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
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {}

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
    failure: Option<(Seq, Problem, String)>,
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
        }
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
        let findings: Vec<Option<Finding>> = chunk
            .par_iter()
            .map(|e| check_entry(e, stream, alg).err())
            .collect();
        for (entry, finding) in chunk.iter().zip(findings) {
            if let Err((seq, problem, detail)) = self.sequential(entry, finding) {
                self.failure = Some((seq, problem, detail));
                return false;
            }
            self.entries += 1;
        }
        true
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

    pub fn finish(self) -> VerifyReport {
        let (ok, first_bad_seq, problem, detail) = match self.failure {
            None => (true, None, None, None),
            Some((seq, p, d)) => (false, Some(seq), Some(p), Some(d)),
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
        }
    }
}

fn check_genesis(e: &Entry, stream: &StreamId) -> Result<(), (Seq, Problem, String)> {
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
        // A payload that fails to decode or digest is reported by the per-entry check.
        Some(Err(_)) | None => Ok(()),
        Some(Ok(_)) => bad("entry 0 is not a genesis entry".into()),
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
    let decoded = Payload::decode(payload)
        .map_err(|err| (Problem::MalformedPayload, format!("entry {}: {err}", e.seq)))?;
    if let Some(column) = e.columns.first_difference(&Columns::of(&decoded)) {
        return Err((
            Problem::ColumnMismatch,
            format!("entry {}'s {column} column differs from its payload", e.seq),
        ));
    }
    Ok(())
}

/// Verifies `stream` in `store`, calling `progress` with the running count after each chunk.
pub async fn verify_store(
    store: &dyn Store,
    stream: &StreamId,
    _opts: &VerifyOptions,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<VerifyReport, StoreError> {
    let chunks = store.scan(stream, 0);
    let stream = stream.clone();
    tokio::task::spawn_blocking(move || verify_chunks(stream, chunks, progress))
        .await
        .map_err(|e| StoreError::Backend(format!("verifier task failed: {e}")))?
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
    use crate::event::{AuditEvent, ParseOptions};
    use crate::pseudonym::{PseudonymKey, Pseudonymizer};
    use crate::types::Timestamp;

    fn chain(n: u64) -> Vec<Entry> {
        let stream = StreamId::default();
        let alg = HashAlg::Sha256;
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([1; 32]));
        let event = AuditEvent::from_value(
            &crate::event::tests_support::sample(),
            ParseOptions::default(),
        )
        .unwrap();
        let mut out = vec![PreparedEntry::genesis(&stream, alg, Timestamp(0)).chain(
            &stream,
            0,
            Timestamp(0),
            Digest::ZERO,
            alg,
        )];
        for seq in 1..n {
            let prev = out.last().unwrap().entry_hash;
            out.push(PreparedEntry::event(&event, &p, None, alg).chain(
                &stream,
                seq,
                Timestamp(seq as i64),
                prev,
                alg,
            ));
        }
        out
    }

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
