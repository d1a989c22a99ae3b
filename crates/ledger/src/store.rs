//! The `Store` trait: what the ledger needs from a backend. The embedded SQLite store and the
//! PostgreSQL store implement it, and both pass the same conformance and tamper suites.
//!
//! A store holds bytes and enforces append-only-ness and uniqueness; it decides nothing about
//! integrity. Every rule about hashes and links lives in this crate.

use async_trait::async_trait;

use crate::entry::Entry;
use crate::merkle::MerkleNode;
use crate::readmodel::{ReadModelRow, RowChange, RowQuery, SavedProjection};
use crate::types::{Digest, Seq, StreamId, Timestamp};

/// What one append transaction writes: consecutive entries and the Merkle nodes they complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendBatch {
    pub entries: Vec<Entry>,
    pub nodes: Vec<MerkleNode>,
}

/// A signed checkpoint as stored: its tree size and its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
}

/// The newest entry of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: Seq,
    pub entry_hash: Digest,
    pub recorded_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer got there first: a `(stream, seq)` or idempotency digest already exists.
    /// The caller re-reads the head and retries; nothing of the batch was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store holds something this version cannot read (schema too new, bad column).
    #[error("store content is not readable: {0}")]
    Corrupt(String),
    /// The store's own rules refuse the change (a purge inside the six-year floor, without a
    /// purge authorization entry after it, or touching more than a payload). Nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    /// I/O or database failure. Nothing of the failed call was written, unless the failure
    /// hit the commit itself, in which case the writer re-reads the head to find out.
    #[error("{0}")]
    Backend(String),
}

/// Chunks of consecutive entries in `seq` order, produced by a reader running beside the
/// consumer (bounded, so memory stays constant however long the stream).
pub type EntryChunks = tokio::sync::mpsc::Receiver<Result<Vec<Entry>, StoreError>>;

/// How many entries a scan sends at a time.
pub const SCAN_CHUNK: usize = 4096;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable location, e.g. `sqlite:/data/ledger.db` (never a password).
    fn describe(&self) -> String;

    /// The newest entry of `stream`, or `None` when the stream has no genesis entry yet.
    async fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError>;

    /// Writes the batch's entries (consecutive, in one stream, continuing the head) and Merkle
    /// nodes in one transaction: all or nothing, durable when this returns `Ok`. Fails with
    /// `Conflict` when an entry's `(stream, seq)` or idempotency digest exists already, or an
    /// entry does not continue the chain.
    async fn append(&self, batch: AppendBatch) -> Result<(), StoreError>;

    /// Removes the payloads of the entries of `stream` with `seq` in `from..=to` that still
    /// have one, in one transaction, and returns how many it removed. Only the payload goes
    /// (with the columns extracted from it, which nothing could check any more): `seq`,
    /// `recorded_at`, the digests and the hashes stay, so the chain still verifies.
    ///
    /// The store enforces, by itself and for every caller (SQL triggers; in PostgreSQL through
    /// one narrowly privileged function, the writer role still cannot UPDATE): the entry
    /// `authorization` is a purge authorization ([`crate::record::PURGE_ACTION`]) after `to`,
    /// and every purged entry was recorded at least [`crate::record::MIN_RETENTION_MICROS`]
    /// before it. Otherwise it fails with `Refused` and changes nothing. Which entries the
    /// authorization really covers (its range, holds, the policy's longer horizons) is decided
    /// by the caller and checked by `verify`.
    async fn purge_payloads(
        &self,
        stream: &StreamId,
        authorization: Seq,
        from: Seq,
        to: Seq,
    ) -> Result<u64, StoreError>;

    /// Entries of `stream` whose idempotency digest is one of `idem`.
    async fn find_idempotent(
        &self,
        stream: &StreamId,
        idem: &[Digest],
    ) -> Result<Vec<Entry>, StoreError>;

    /// One entry.
    async fn get(&self, stream: &StreamId, seq: Seq) -> Result<Option<Entry>, StoreError>;

    /// The entries numbered `from` to `from + limit - 1` (so at most `limit`), in `seq`
    /// order: all of them unless the ledger lost some, a gap its readers detect by the `seq`s.
    /// A range, not "the next `limit` from `from`", so that every store answers it by one
    /// range read of its primary key (see the PostgreSQL store's `read`).
    async fn read(
        &self,
        stream: &StreamId,
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Every entry from `from` on, in `seq` order, as a consistent snapshot, in chunks.
    fn scan(&self, stream: &StreamId, from: Seq) -> EntryChunks;

    /// The streams that have entries.
    async fn streams(&self) -> Result<Vec<StreamId>, StoreError>;

    /// The stored Merkle nodes among `wanted` `(level, index)` pairs (absent ones are left out).
    async fn merkle_nodes(
        &self,
        stream: &StreamId,
        wanted: &[(u8, u64)],
    ) -> Result<Vec<MerkleNode>, StoreError>;

    /// Every stored Merkle node of `stream` with `level`, ascending index, from `from_index`
    /// on (for verification of the stored tree).
    async fn merkle_level(
        &self,
        stream: &StreamId,
        level: u8,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<MerkleNode>, StoreError>;

    /// The entry hashes of `seq` in `from..to`, in order (the tree's leaves).
    async fn entry_hashes(
        &self,
        stream: &StreamId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Digest>, StoreError>;

    /// Stores a signed checkpoint (append-only; storing one for an existing size is a no-op).
    async fn put_checkpoint(
        &self,
        stream: &StreamId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError>;

    /// Stored checkpoints of `stream`, ascending size.
    async fn checkpoints(&self, stream: &StreamId) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The saved position and state of projection `name` over `stream`, `None` before its
    /// first commit (or after a reset).
    async fn projection(
        &self,
        name: &str,
        stream: &StreamId,
    ) -> Result<Option<SavedProjection>, StoreError>;

    /// Applies `changes` to the projection's read model and saves `saved` as its position, in
    /// one transaction. Fails with `Conflict` (and changes nothing) unless the saved position
    /// is still `expected` (`None`: no saved position), so two runners of one projection can
    /// never both apply the same entries.
    async fn commit_projection(
        &self,
        name: &str,
        stream: &StreamId,
        expected: Option<Seq>,
        saved: &SavedProjection,
        changes: &[RowChange],
    ) -> Result<(), StoreError>;

    /// Forgets the projection's position and read model (for a rebuild from the first entry).
    async fn reset_projection(&self, name: &str, stream: &StreamId) -> Result<(), StoreError>;

    /// A range read of the projection's read model.
    async fn read_model_rows(
        &self,
        name: &str,
        stream: &StreamId,
        query: &RowQuery,
    ) -> Result<Vec<ReadModelRow>, StoreError>;
}
