//! What a store keeps for projections: each projection's saved position (the last entry it
//! applied, and its own state at that point) and the rows of its read model.
//!
//! Read models are derived data: any of them can be dropped and rebuilt from the ledger, so
//! unlike entries they may be updated and deleted. Their rows are generic (a table name, a key,
//! an ordinal, a time and a JSON value) so that every projection runs on every store without
//! store code per projection; the two indexes (by key and time, by time) make "one patient's six
//! years" or "security events since Monday" an index range read.

use crate::types::{Digest, Seq, Timestamp};

/// A projection's position and state, saved in the same transaction as its read-model changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedProjection {
    /// The last entry applied.
    pub seq: Seq,
    /// Its entry hash: the next entry must link to it, so the projection resumes on a verified
    /// chain.
    pub entry_hash: Digest,
    /// The projection's own state at `seq` (e.g. the detector's sliding windows), opaque to the
    /// store.
    pub state: Vec<u8>,
}

/// One row of a read model. `(table, key, ord)` identifies it within a projection and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadModelRow {
    pub table: String,
    pub key: String,
    /// Distinguishes rows with one key (e.g. the `seq` of each access to one patient); 0 when a
    /// key has one row.
    pub ord: i64,
    /// The time queries range over.
    pub at: Timestamp,
    /// A JSON object.
    pub value: String,
}

/// One change to a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// Inserts the row, or replaces the row with its `(table, key, ord)`.
    Put(ReadModelRow),
    /// Removes a row (absent is fine).
    Delete {
        table: String,
        key: String,
        ord: i64,
    },
}

/// A range read of one table: all keys or one key, `at` within `[from, to)`, in `at` order
/// (then key, then ord), at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowQuery {
    pub table: String,
    pub key: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub limit: usize,
    pub newest_first: bool,
}

impl RowQuery {
    /// Every row of `table`, oldest first (bounded by `limit`).
    pub fn table(table: &str, limit: usize) -> RowQuery {
        RowQuery {
            table: table.to_owned(),
            key: None,
            from: None,
            to: None,
            limit,
            newest_first: false,
        }
    }

    /// The rows of `table` with `key`.
    pub fn key(table: &str, key: &str, limit: usize) -> RowQuery {
        RowQuery {
            key: Some(key.to_owned()),
            ..RowQuery::table(table, limit)
        }
    }
}
