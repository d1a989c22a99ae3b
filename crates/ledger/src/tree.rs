//! Reading the Merkle tree of a stream from its store: the hash of any perfect subtree, the
//! writer's frontier, and roots for any size, each in O(log n) reads (stored nodes for levels
//! >= `STORED_MIN_LEVEL`, one range of at most 32 entry hashes below that).

use std::collections::HashMap;

use crate::merkle::{decompose, root_of, Frontier, STORED_MIN_LEVEL};
use crate::store::{Store, StoreError};
use crate::types::{Digest, StreamId};

/// Hashes of the perfect subtrees `wanted`, keyed by `(level, index)`.
pub async fn subtree_hashes(
    store: &dyn Store,
    stream: &StreamId,
    wanted: &[(u8, u64)],
) -> Result<HashMap<(u8, u64), Digest>, StoreError> {
    let mut out = HashMap::with_capacity(wanted.len());
    let stored: Vec<(u8, u64)> = wanted
        .iter()
        .copied()
        .filter(|(l, _)| *l >= STORED_MIN_LEVEL)
        .collect();
    if !stored.is_empty() {
        for n in store.merkle_nodes(stream, &stored).await? {
            out.insert((n.level, n.index), n.hash);
        }
        if let Some(missing) = stored.iter().find(|k| !out.contains_key(k)) {
            return Err(StoreError::Corrupt(format!(
                "stream {stream}: Merkle node (level {}, index {}) is missing",
                missing.0, missing.1
            )));
        }
    }
    for &(level, index) in wanted.iter().filter(|(l, _)| *l < STORED_MIN_LEVEL) {
        let from = index << level;
        let to = from + (1u64 << level);
        let leaves = store.entry_hashes(stream, from, to).await?;
        if leaves.len() as u64 != to - from {
            return Err(StoreError::Corrupt(format!(
                "stream {stream}: entries {from}..{to} are incomplete"
            )));
        }
        out.insert((level, index), root_of(&leaves));
    }
    Ok(out)
}

/// The frontier of the tree of the first `size` entries.
pub async fn load_frontier(
    store: &dyn Store,
    stream: &StreamId,
    size: u64,
) -> Result<Frontier, StoreError> {
    let parts = decompose(size);
    let hashes = subtree_hashes(store, stream, &parts).await?;
    let ordered = parts.iter().map(|k| hashes[k]).collect();
    Frontier::from_parts(size, ordered)
        .ok_or_else(|| StoreError::Corrupt("frontier does not match its size".into()))
}

/// The root of the tree of the first `size` entries.
pub async fn root_at(
    store: &dyn Store,
    stream: &StreamId,
    size: u64,
) -> Result<Digest, StoreError> {
    Ok(load_frontier(store, stream, size).await?.root())
}
