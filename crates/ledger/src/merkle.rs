//! The RFC 9162 (RFC 6962) Merkle tree over a stream's entries: leaf `i` is entry `seq = i`,
//! its leaf hash is `SHA-256(0x00 || entry_hash)`, an interior node is
//! `SHA-256(0x01 || left || right)`.
//!
//! Storage: a tree of size `n` is the set of *perfect subtrees* (aligned, power-of-two sized).
//! Subtree `(level, index)` covers leaves `[index << level, (index + 1) << level)`. The writer
//! keeps the right edge of the tree (the [`Frontier`]: at most one perfect subtree per level)
//! in memory; each append completes some perfect subtrees, and those of level
//! [`STORED_MIN_LEVEL`] and up are written as [`MerkleNode`] rows in the same transaction as
//! the entries (level 5 and up: about one row per 16 entries in all). Lower levels are recomputed from at most 32
//! entry hashes read in one range. So any root or proof for any size needs O(log n) reads, and
//! the append path pays one extra row per 16 entries (measured: level 4 and up, one row per 8,
//! cost the append path ~7.6% on the embedded store; level 5 halves that).

use sha2::Digest as _;

use crate::types::Digest;

/// Lowest level whose perfect-subtree hashes are stored.
pub const STORED_MIN_LEVEL: u8 = 5;

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Digest {
    Digest(sha2::Sha256::digest([]).into())
}

/// RFC 9162 leaf hash of an entry hash.
pub fn leaf_hash(entry_hash: &Digest) -> Digest {
    let mut h = sha2::Sha256::new();
    h.update([0x00]);
    h.update(entry_hash.0);
    Digest(h.finalize().into())
}

/// RFC 9162 interior node hash.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = sha2::Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Digest(h.finalize().into())
}

/// A stored perfect-subtree hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MerkleNode {
    pub level: u8,
    pub index: u64,
    pub hash: Digest,
}

/// The perfect subtrees a tree of `size` leaves decomposes into, left to right (one per set
/// bit of `size`, largest first).
pub fn decompose(size: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            out.push((level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

/// The right edge of the tree: the perfect subtrees of its size's decomposition, with hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    edge: Vec<(u8, Digest)>,
}

impl Frontier {
    pub fn empty() -> Frontier {
        Frontier::default()
    }

    /// From the hashes of `decompose(size)`, in that order.
    pub fn from_parts(size: u64, hashes: Vec<Digest>) -> Option<Frontier> {
        let parts = decompose(size);
        if parts.len() != hashes.len() {
            return None;
        }
        Some(Frontier {
            size,
            edge: parts.iter().map(|(l, _)| *l).zip(hashes).collect(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf (an entry hash) and returns the stored-level nodes it completed.
    pub fn push(&mut self, entry_hash: &Digest, completed: &mut Vec<MerkleNode>) {
        let mut level = 0u8;
        let mut hash = leaf_hash(entry_hash);
        let mut index = self.size;
        while let Some(&(l, left)) = self.edge.last() {
            if l != level {
                break;
            }
            self.edge.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            if level >= STORED_MIN_LEVEL {
                completed.push(MerkleNode { level, index, hash });
            }
        }
        self.edge.push((level, hash));
        self.size += 1;
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Digest {
        let mut iter = self.edge.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some((_, last)) => iter.fold(*last, |acc, (_, left)| node_hash(left, &acc)),
        }
    }
}

/// The root of a list of leaves (entry hashes), computed directly; the reference the
/// incremental structures are tested against.
pub fn root_of(entry_hashes: &[Digest]) -> Digest {
    fn mth(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }
    mth(entry_hashes)
}

/// The largest power of two strictly below `n` (n >= 2).
pub fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest(sha2::Sha256::digest((i as u64).to_be_bytes()).into()))
            .collect()
    }

    #[test]
    fn frontier_root_matches_direct_root_at_every_size() {
        let l = leaves(300);
        let mut f = Frontier::empty();
        let mut nodes = Vec::new();
        assert_eq!(f.root(), empty_root());
        for (i, h) in l.iter().enumerate() {
            f.push(h, &mut nodes);
            assert_eq!(f.root(), root_of(&l[..=i]), "size {}", i + 1);
        }
        // Every stored node is the root of the leaves it covers.
        for n in &nodes {
            let start = (n.index << n.level) as usize;
            let end = start + (1usize << n.level);
            assert_eq!(n.hash, root_of(&l[start..end]), "{n:?}");
            assert!(n.level >= STORED_MIN_LEVEL);
        }
        let expected: usize = (STORED_MIN_LEVEL..9).map(|level| 300 >> level).sum();
        assert_eq!(nodes.len(), expected);
    }

    #[test]
    fn frontier_rebuilds_from_parts() {
        let l = leaves(77);
        let mut f = Frontier::empty();
        let mut nodes = Vec::new();
        for h in &l {
            f.push(h, &mut nodes);
        }
        let parts: Vec<Digest> = decompose(77)
            .iter()
            .map(|&(level, index)| {
                let start = (index << level) as usize;
                root_of(&l[start..start + (1usize << level)])
            })
            .collect();
        assert_eq!(Frontier::from_parts(77, parts), Some(f));
    }

    #[test]
    fn decomposition() {
        assert_eq!(decompose(0), vec![]);
        assert_eq!(decompose(1), vec![(0, 0)]);
        assert_eq!(decompose(6), vec![(2, 0), (1, 2)]);
        assert_eq!(decompose(7), vec![(2, 0), (1, 2), (0, 6)]);
        assert_eq!(largest_power_of_two_below(5), 4);
        assert_eq!(largest_power_of_two_below(8), 4);
        assert_eq!(largest_power_of_two_below(2), 1);
    }
}
