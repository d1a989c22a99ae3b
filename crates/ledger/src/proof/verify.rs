//! Checking RFC 9162 proofs: the code an auditor reads to trust a proof, and nothing else.
//!
//! It depends only on the two hash functions of [`crate::merkle`] (`SHA-256(0x00 || leaf)` and
//! `SHA-256(0x01 || left || right)`) and follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency) step by step. Hashes are typed 32-byte [`Digest`]s, so a hash of another length
//! cannot even be expressed; every other malformation is one [`ProofError`] variant.

use crate::merkle::{largest_power_of_two_below, leaf_hash, node_hash};
use crate::types::Digest;

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof for a leaf that is not in a tree of that size.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("the old tree size {old} is larger than the new tree size {new}")]
    SizesReversed { old: u64, new: u64 },
    /// RFC 9162 defines no consistency proof from the empty tree (every tree is consistent
    /// with it, so such a "proof" would prove nothing).
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyOldTree,
    /// The proof has more or fewer hashes than a proof for these sizes has.
    #[error("the proof has {got} hashes; a proof for these sizes has {want}")]
    WrongLength { got: usize, want: usize },
    /// The proof is well-formed but leads to another root than the one claimed.
    #[error("the proof leads to root {computed}, not to the claimed root {claimed}")]
    RootMismatch { computed: Digest, claimed: Digest },
    /// For a consistency proof: the proof rebuilds another old root than the one claimed.
    #[error("the proof leads to old root {computed}, not to the claimed old root {claimed}")]
    OldRootMismatch { computed: Digest, claimed: Digest },
    /// The proof is for another tree size than the checkpoint it is checked against.
    #[error("the proof is for tree size {proof}, the checkpoint for tree size {checkpoint}")]
    TreeSizeMismatch { proof: u64, checkpoint: u64 },
    /// Equal sizes must have equal roots (and an empty proof).
    #[error("equal tree sizes with different roots: the log forked")]
    EqualSizesDifferentRoots,
}

/// The number of hashes in `PATH(index, D[size])`: one per level the leaf climbs.
fn inclusion_len(index: u64, size: u64) -> usize {
    // Levels below the point where the paths of `index` and `size - 1` meet are full levels;
    // above it, only the levels where `index` is a left child with a right sibling count.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// RFC 9162 §2.1.3.2: the root that a valid inclusion proof of the leaf with hash `leaf`
/// (already `SHA-256(0x00 || entry_hash)`) at `index` in a tree of `size` leads to. Compare it
/// with a trusted root, or use [`verify_inclusion`], which starts from the entry hash.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Digest,
    path: &[Digest],
) -> Result<Digest, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if path.len() != want {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                got: path.len(),
                want,
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            // A left sibling means `r` was a right child; climb past levels where it has none.
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // The length check above guarantees snode reached 0; kept as the RFC states it.
    if snode != 0 {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    Ok(r)
}

/// Checks that the entry with `entry_hash` is leaf `index` of the tree of `size` with `root`
/// (the leaf hash is `SHA-256(0x00 || entry_hash)`).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    entry_hash: &Digest,
    path: &[Digest],
    root: &Digest,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(index, size, &leaf_hash(entry_hash), path)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            claimed: *root,
        });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `old_size` with `old_root` is a prefix of the
/// tree of `new_size` with `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    path: &[Digest],
    old_root: &Digest,
    new_root: &Digest,
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesReversed {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if old_size == new_size {
        if !path.is_empty() {
            return Err(ProofError::WrongLength {
                got: path.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(ProofError::EqualSizesDifferentRoots);
        }
        return Ok(());
    }
    // The expected length, counted along the recursion of §2.1.4.1: garbage before or after
    // a valid proof is rejected here rather than silently ignored.
    let want = consistency_len(old_size, new_size);
    if path.len() != want {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    // Step 2: when the old tree is a perfect subtree of the new one, the proof leaves out its
    // root (the verifier has it); put it back so the walk below is uniform.
    let mut proof: Vec<Digest> = Vec::with_capacity(path.len() + 1);
    if old_size.is_power_of_two() {
        proof.push(*old_root);
    }
    proof.extend_from_slice(path);
    // Steps 3 to 7, as written in the RFC.
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = proof[0];
    let mut sr = proof[0];
    for c in &proof[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                got: path.len(),
                want,
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: fr,
            claimed: *old_root,
        });
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            claimed: *new_root,
        });
    }
    Ok(())
}

/// The number of hashes in `PROOF(old, D[new])` (0 < old < new), counted along the recursion
/// of RFC 9162 §2.1.4.1 without computing anything.
fn consistency_len(old: u64, new: u64) -> usize {
    let (mut m, mut n, mut complete) = (old, new, true);
    let mut len = 0;
    while m != n {
        // n > m >= 1, so n >= 2.
        let k = largest_power_of_two_below(n);
        len += 1;
        if m <= k {
            n = k;
        } else {
            m -= k;
            n -= k;
            complete = false;
        }
    }
    len + usize::from(!complete)
}
