//! RFC 9162 Merkle proofs over a stream's entries: producing them from a store in O(log n)
//! reads, their JSON form, and (in [`verify`]) checking them with nothing but hashes.
//!
//! Every hash a proof carries is the Merkle tree hash `MTH(D[a:b])` of a range of leaves, and
//! every such range in RFC 9162's recursions starts at a multiple of a power of two at least as
//! large as the range, so it decomposes into aligned perfect subtrees (`(level, index)`, as in
//! [`crate::merkle`]). A proof is therefore produced in three steps: plan the ranges
//! ([`inclusion_ranges`], [`consistency_ranges`]), fetch the hashes of all their perfect subtrees
//! in one [`tree::subtree_hashes`] call, and fold each range's subtrees into its hash. At most
//! one range of a proof is not itself a perfect subtree, so a proof needs O(log n) subtree
//! hashes.

pub mod verify;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::merkle::{decompose, largest_power_of_two_below, node_hash};
use crate::store::{Store, StoreError};
use crate::tree;
use crate::types::{Digest, Seq, StreamId};

pub use verify::{root_from_inclusion, verify_consistency, verify_inclusion, ProofError};

/// Version of the proof JSON documents (`docs/CHECKPOINTS.md`).
pub const PROOF_FORMAT: u32 = 1;

/// A range of leaves `[start, start + len)` whose Merkle tree hash is one element of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRange {
    pub start: u64,
    pub len: u64,
}

impl LeafRange {
    /// The aligned perfect subtrees covering the range, left to right. Valid because proof
    /// ranges start at a multiple of a power of two that is at least their length.
    pub fn subtrees(self) -> Vec<(u8, u64)> {
        decompose(self.len)
            .into_iter()
            .map(|(level, index)| (level, (self.start >> level) + index))
            .collect()
    }

    /// `MTH` of the range from its subtrees' hashes (the same right-to-left fold as a root).
    fn hash(self, subtrees: &HashMap<(u8, u64), Digest>) -> Result<Digest, StoreError> {
        let mut hashes = self.subtrees().into_iter().rev().map(|k| {
            subtrees.get(&k).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("subtree (level {}, index {}) missing", k.0, k.1))
            })
        });
        let mut acc = match hashes.next() {
            Some(h) => h?,
            None => return Err(StoreError::Corrupt("empty proof range".into())),
        };
        for left in hashes {
            acc = node_hash(&left?, &acc);
        }
        Ok(acc)
    }
}

/// The ranges whose hashes make up `PATH(index, D[size])` (RFC 9162 §2.1.3.1), bottom-up.
/// Requires `index < size`.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<LeafRange> {
    // Walk down from the whole tree; each step keeps the half holding the leaf and records the
    // other half. The RFC's recursion emits the deepest sibling first, hence the reverse.
    let mut out = Vec::new();
    let (mut start, mut n, mut m) = (0u64, size, index);
    while n > 1 {
        let k = largest_power_of_two_below(n);
        if m < k {
            out.push(LeafRange {
                start: start + k,
                len: n - k,
            });
            n = k;
        } else {
            out.push(LeafRange { start, len: k });
            start += k;
            m -= k;
            n -= k;
        }
    }
    out.reverse();
    out
}

/// The ranges whose hashes make up `PROOF(old, D[new])` (RFC 9162 §2.1.4.1). Requires
/// `0 < old <= new`; equal sizes give the empty proof.
pub fn consistency_ranges(old: u64, new: u64) -> Vec<LeafRange> {
    let mut out = Vec::new();
    let (mut start, mut n, mut m, mut complete) = (0u64, new, old, true);
    while m != n {
        let k = largest_power_of_two_below(n);
        if m <= k {
            out.push(LeafRange {
                start: start + k,
                len: n - k,
            });
            n = k;
        } else {
            out.push(LeafRange { start, len: k });
            start += k;
            m -= k;
            n -= k;
            complete = false;
        }
    }
    // SUBPROOF(m, D[m], false) = MTH(D[m]): the old tree is not a subtree the verifier knows.
    if !complete {
        out.push(LeafRange { start, len: n });
    }
    out.reverse();
    out
}

/// The hashes of `ranges` from the hashes of their perfect subtrees (however those were got:
/// from a store, or computed from leaves in memory).
pub fn hashes_of_ranges(
    ranges: &[LeafRange],
    subtrees: &HashMap<(u8, u64), Digest>,
) -> Result<Vec<Digest>, StoreError> {
    ranges.iter().map(|r| r.hash(subtrees)).collect()
}

async fn fetch(
    store: &dyn Store,
    stream: &StreamId,
    ranges: &[LeafRange],
) -> Result<Vec<Digest>, StoreError> {
    let mut wanted: Vec<(u8, u64)> = ranges.iter().flat_map(|r| r.subtrees()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let subtrees = tree::subtree_hashes(store, stream, &wanted).await?;
    hashes_of_ranges(ranges, &subtrees)
}

/// Why a proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("entry {seq} is not inside a tree of size {size}")]
    SeqOutOfRange { seq: Seq, size: u64 },
    #[error("bad tree sizes for a consistency proof: old {old}, new {new} (need 0 < old <= new)")]
    BadSizes { old: u64, new: u64 },
    #[error("the ledger has {have} entries, fewer than the tree size {size} asked for")]
    BeyondHead { have: u64, size: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// That entry `seq` (with `entry_hash`) is leaf `seq` of the tree of `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub format: u32,
    /// Always `"inclusion"`, so a proof file says what it is.
    pub kind: String,
    pub stream: StreamId,
    pub seq: Seq,
    pub tree_size: u64,
    pub entry_hash: Digest,
    /// RFC 9162 `PATH(seq, D[tree_size])`, bottom-up, hex.
    pub path: Vec<Digest>,
}

impl InclusionProof {
    /// Checks the proof against a tree of `size` with `root` (from a verified checkpoint).
    pub fn verify(&self, size: u64, root: &Digest) -> Result<(), ProofError> {
        if self.tree_size != size {
            return Err(ProofError::TreeSizeMismatch {
                proof: self.tree_size,
                checkpoint: size,
            });
        }
        verify_inclusion(self.seq, size, &self.entry_hash, &self.path, root)
    }
}

/// That the tree of `old_size` entries is a prefix of the tree of `new_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub format: u32,
    /// Always `"consistency"`.
    pub kind: String,
    pub stream: StreamId,
    pub old_size: u64,
    pub new_size: u64,
    /// RFC 9162 `PROOF(old_size, D[new_size])`, hex.
    pub path: Vec<Digest>,
}

impl ConsistencyProof {
    /// Checks the proof against two trees (from two verified checkpoints).
    pub fn verify(&self, old: (u64, &Digest), new: (u64, &Digest)) -> Result<(), ProofError> {
        for (proof, checkpoint) in [(self.old_size, old.0), (self.new_size, new.0)] {
            if proof != checkpoint {
                return Err(ProofError::TreeSizeMismatch { proof, checkpoint });
            }
        }
        verify_consistency(old.0, new.0, &self.path, old.1, new.1)
    }
}

/// Proves that entry `seq` is in the tree of the first `size` entries, in O(log size) reads.
pub async fn prove_inclusion(
    store: &dyn Store,
    stream: &StreamId,
    seq: Seq,
    size: u64,
) -> Result<InclusionProof, ProveError> {
    if seq >= size {
        return Err(ProveError::SeqOutOfRange { seq, size });
    }
    check_size(store, stream, size).await?;
    let ranges = inclusion_ranges(seq, size);
    let path = fetch(store, stream, &ranges).await?;
    let entry_hash = store
        .entry_hashes(stream, seq, seq + 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(format!("entry {seq} is missing")))?;
    Ok(InclusionProof {
        format: PROOF_FORMAT,
        kind: "inclusion".into(),
        stream: stream.clone(),
        seq,
        tree_size: size,
        entry_hash,
        path,
    })
}

/// Proves that the tree of `old` entries is a prefix of the tree of `new`, in O(log new) reads.
pub async fn prove_consistency(
    store: &dyn Store,
    stream: &StreamId,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof, ProveError> {
    if old == 0 || old > new {
        return Err(ProveError::BadSizes { old, new });
    }
    check_size(store, stream, new).await?;
    let path = fetch(store, stream, &consistency_ranges(old, new)).await?;
    Ok(ConsistencyProof {
        format: PROOF_FORMAT,
        kind: "consistency".into(),
        stream: stream.clone(),
        old_size: old,
        new_size: new,
        path,
    })
}

async fn check_size(store: &dyn Store, stream: &StreamId, size: u64) -> Result<(), ProveError> {
    let have = store.head(stream).await?.map_or(0, |h| h.seq + 1);
    if size > have {
        return Err(ProveError::BeyondHead { have, size });
    }
    Ok(())
}

/// Proof paths over leaves held in memory (for tests and for tools that hold a whole tree).
pub mod in_memory {
    use super::*;
    use crate::merkle::root_of;

    fn subtrees_of(leaves: &[Digest], ranges: &[LeafRange]) -> HashMap<(u8, u64), Digest> {
        ranges
            .iter()
            .flat_map(|r| r.subtrees())
            .map(|(level, index)| {
                let start = (index << level) as usize;
                let end = start + (1usize << level);
                ((level, index), root_of(&leaves[start..end]))
            })
            .collect()
    }

    /// `PATH(index, D[leaves.len()])`. Requires `index < leaves.len()`.
    pub fn inclusion_path(leaves: &[Digest], index: u64) -> Vec<Digest> {
        let ranges = inclusion_ranges(index, leaves.len() as u64);
        hashes_of_ranges(&ranges, &subtrees_of(leaves, &ranges))
            .expect("every subtree of the plan was computed above")
    }

    /// `PROOF(old, D[leaves.len()])`. Requires `0 < old <= leaves.len()`.
    pub fn consistency_path(leaves: &[Digest], old: u64) -> Vec<Digest> {
        let ranges = consistency_ranges(old, leaves.len() as u64);
        hashes_of_ranges(&ranges, &subtrees_of(leaves, &ranges))
            .expect("every subtree of the plan was computed above")
    }
}

#[cfg(test)]
mod tests {
    use super::in_memory::{consistency_path, inclusion_path};
    use super::*;
    use crate::merkle::root_of;
    use proptest::prelude::*;
    use sha2::Digest as _;

    fn leaves(n: u64, salt: u8) -> Vec<Digest> {
        (0..n)
            .map(|i| {
                let mut h = sha2::Sha256::new();
                h.update([salt]);
                h.update(i.to_be_bytes());
                Digest(h.finalize().into())
            })
            .collect()
    }

    #[test]
    fn ranges_decompose_into_few_subtrees() {
        // One ragged range at most: a proof needs O(log n) subtree hashes.
        for size in [1u64, 2, 3, 7, 8, 9, 1000, 10_000_000, (1 << 40) + 12345] {
            for index in [0, size / 3, size / 2, size - 1] {
                let parts: usize = inclusion_ranges(index, size)
                    .iter()
                    .map(|r| r.subtrees().len())
                    .sum();
                assert!(parts <= 2 * 64, "{index}/{size}: {parts}");
            }
        }
    }

    #[test]
    fn every_proof_of_small_trees_verifies() {
        for n in 1..=40u64 {
            let l = leaves(n, 1);
            let root = root_of(&l);
            for i in 0..n {
                let p = inclusion_path(&l, i);
                verify_inclusion(i, n, &l[i as usize], &p, &root).unwrap();
            }
            for m in 1..=n {
                let p = consistency_path(&l, m);
                verify_consistency(m, n, &p, &root_of(&l[..m as usize]), &root).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn inclusion_proofs_verify_and_catch_changes(
            n in 1u64..600, i in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()
        ) {
            let l = leaves(n, 2);
            let i = i.index(n as usize) as u64;
            let root = root_of(&l);
            let path = inclusion_path(&l, i);
            prop_assert_eq!(verify_inclusion(i, n, &l[i as usize], &path, &root), Ok(()));

            // A changed leaf fails.
            let mut other = l[i as usize];
            other.0[0] ^= 1;
            prop_assert!(verify_inclusion(i, n, &other, &path, &root).is_err());
            // So does any changed proof hash.
            if !path.is_empty() {
                let mut bad = path.clone();
                let j = flip.index(bad.len());
                bad[j].0[31] ^= 0x80;
                prop_assert!(verify_inclusion(i, n, &l[i as usize], &bad, &root).is_err());
            }
            // A wrong root, a wrong index, or the proof held against the next tree fail. (A
            // size alone is not authenticated by a path: PATH(0, D[3]) and PATH(0, D[4]) fold
            // the same way, which is why the size comes from the signed checkpoint.)
            let mut wrong_root = root;
            wrong_root.0[5] ^= 4;
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &path, &wrong_root).is_err());
            let next = leaves(n + 1, 2);
            prop_assert!(verify_inclusion(i, n + 1, &l[i as usize], &path, &root_of(&next)).is_err());
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert!(verify_inclusion(j, n, &l[i as usize], &path, &root).is_err());
            }
        }

        #[test]
        fn consistency_proofs_verify_and_catch_changes(
            n in 1u64..600, m in any::<prop::sample::Index>(), k in any::<prop::sample::Index>()
        ) {
            let l = leaves(n, 3);
            let m = m.index(n as usize) as u64 + 1;
            let old_root = root_of(&l[..m as usize]);
            let root = root_of(&l);
            let path = consistency_path(&l, m);
            prop_assert_eq!(verify_consistency(m, n, &path, &old_root, &root), Ok(()));

            // A rewritten leaf inside the old tree: the new tree does not extend the old one.
            let mut forked = l.clone();
            let k = k.index(m as usize);
            forked[k].0[0] ^= 1;
            let forked_root = root_of(&forked);
            let forked_path = consistency_path(&forked, m);
            prop_assert!(verify_consistency(m, n, &forked_path, &old_root, &forked_root).is_err());
            prop_assert!(verify_consistency(m, n, &path, &old_root, &forked_root).is_err());
            // A wrong old root or wrong sizes fail.
            let mut wrong = old_root;
            wrong.0[9] ^= 2;
            prop_assert!(verify_consistency(m, n, &path, &wrong, &root).is_err());
            let next = leaves(n + 1, 3);
            prop_assert!(verify_consistency(m, n + 1, &path, &old_root, &root_of(&next)).is_err());
            if m > 1 {
                prop_assert!(verify_consistency(m - 1, n, &path, &old_root, &root).is_err());
            }
        }
    }
}
