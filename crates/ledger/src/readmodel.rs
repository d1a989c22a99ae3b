//! What a store keeps for projections: each projection's saved position (the last entry it
//! applied, and its own state at that point) and the rows of its read model.
//!
//! Read models are derived data: any of them can be dropped and rebuilt from the ledger, so
//! unlike entries they may be updated and deleted. Their rows are generic (a table name, a key,
//! an ordinal, a time and a JSON value) so that every projection runs on every store without
//! store code per projection; the stores' primary key (table, key, ordinal) and an index by time
//! make "one patient's six years" or "security events since Monday" an index range read.

use std::collections::HashSet;

use crate::store::{Store, StoreError};
use crate::types::{Digest, Seq, StreamId, Timestamp};

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

/// A time range of one table of a read model (an absent bound is open), optionally of one key.
#[derive(Debug, Clone, Copy)]
pub struct RowRange<'a> {
    pub table: &'a str,
    pub key: Option<&'a str>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl<'a> RowRange<'a> {
    /// Every row of `table` with `from <= at < to`.
    pub fn table(table: &'a str, from: Option<Timestamp>, to: Option<Timestamp>) -> Self {
        RowRange {
            table,
            key: None,
            from,
            to,
        }
    }
}

/// Where pages of rows come from: a store ([`StoreRows`]), or rows in memory in tests.
#[allow(async_fn_in_trait)]
pub trait RowSource {
    async fn rows(&self, query: &RowQuery) -> Result<Vec<ReadModelRow>, StoreError>;
}

/// The read model of one projection over one stream of a store.
pub struct StoreRows<'a> {
    pub store: &'a dyn Store,
    pub projection: &'a str,
    pub stream: &'a StreamId,
}

impl RowSource for StoreRows<'_> {
    async fn rows(&self, query: &RowQuery) -> Result<Vec<ReadModelRow>, StoreError> {
        self.store
            .read_model_rows(self.projection, self.stream, query)
            .await
    }
}

/// The first `max` rows of `range` in the store's `(at, key, ord)` order, read in pages of
/// `page` rows, so no single read holds a whole table. Each page after the first starts at
/// the last `at` of the one before, skipping the rows of that instant already read (`(key,
/// ord)` identifies a row); an instant with more rows than a page is read whole.
pub async fn paged(
    source: &impl RowSource,
    range: &RowRange<'_>,
    max: usize,
    page: usize,
) -> Result<Vec<ReadModelRow>, StoreError> {
    let page = page.max(1);
    let query = |from: Option<Timestamp>, to: Option<Timestamp>, limit: usize| RowQuery {
        table: range.table.to_owned(),
        key: range.key.map(str::to_owned),
        from,
        to,
        limit,
        newest_first: false,
    };
    let mut out: Vec<ReadModelRow> = Vec::new();
    let mut from = range.from;
    // The rows already read at `from` (the instant the next page starts at).
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    while out.len() < max {
        let rows = source.rows(&query(from, range.to, page)).await?;
        let full = rows.len() >= page;
        let (Some(first), Some(last)) = (rows.first().map(|r| r.at), rows.last().map(|r| r.at))
        else {
            break;
        };
        if full && first == last {
            // One instant fills the page: read that instant whole, then go on after it.
            let after = Timestamp(last.0.saturating_add(1));
            let instant = source
                .rows(&query(Some(last), Some(after), usize::MAX))
                .await?;
            out.extend(
                instant
                    .into_iter()
                    .filter(|r| !seen.contains(&(r.key.clone(), r.ord))),
            );
            seen.clear();
            if last.0 == i64::MAX {
                break;
            }
            from = Some(after);
            continue;
        }
        let boundary = from;
        let mut next_seen = HashSet::new();
        for row in rows {
            if Some(row.at) == boundary && seen.contains(&(row.key.clone(), row.ord)) {
                continue;
            }
            if full && row.at == last {
                next_seen.insert((row.key.clone(), row.ord));
            }
            out.push(row);
        }
        if !full {
            break;
        }
        // `last` is after the page's first instant, so the rows of `last` read so far are
        // exactly those of this page.
        seen = next_seen;
        from = Some(last);
    }
    out.truncate(max);
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Paging over rows in memory: every row once, in order, whatever the page size and
    //! however many rows share an instant. (The readers on real stores are in the store
    //! conformance suite.)

    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::*;

    /// Rows in memory, read with the stores' semantics.
    struct Memory(Vec<ReadModelRow>);

    impl RowSource for Memory {
        async fn rows(&self, q: &RowQuery) -> Result<Vec<ReadModelRow>, StoreError> {
            let mut rows: Vec<ReadModelRow> = self
                .0
                .iter()
                .filter(|r| {
                    r.table == q.table
                        && q.key.as_ref().is_none_or(|k| *k == r.key)
                        && q.from.is_none_or(|f| r.at >= f)
                        && q.to.is_none_or(|t| r.at < t)
                })
                .cloned()
                .collect();
            rows.sort_by(|a, b| (a.at, &a.key, a.ord).cmp(&(b.at, &b.key, b.ord)));
            rows.truncate(q.limit);
            Ok(rows)
        }
    }

    /// Runs a future that never waits (the memory source never does).
    fn ready<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the memory source never waits"),
        }
    }

    fn row(table: &str, key: &str, ord: i64, at: i64) -> ReadModelRow {
        ReadModelRow {
            table: table.into(),
            key: key.into(),
            ord,
            at: Timestamp(at),
            value: "{}".into(),
        }
    }

    fn ids(rows: &[ReadModelRow]) -> Vec<(i64, String, i64)> {
        rows.iter()
            .map(|r| (r.at.0, r.key.clone(), r.ord))
            .collect()
    }

    #[test]
    fn an_instant_with_more_rows_than_a_page_is_read_whole() {
        let mut rows: Vec<ReadModelRow> = (0..7).map(|i| row("t", "k", i, 5)).collect();
        rows.push(row("t", "a", 0, 4));
        rows.push(row("t", "z", 0, 6));
        rows.push(row("other", "k", 0, 5));
        let source = Memory(rows);
        let expected = ids(&ready(source.rows(&RowQuery::table("t", usize::MAX))).unwrap());
        assert_eq!(expected.len(), 9);
        let all = RowRange::table("t", None, None);
        for page in 1..=10 {
            let got = ready(paged(&source, &all, usize::MAX, page)).unwrap();
            assert_eq!(ids(&got), expected, "page {page}");
            let first = ready(paged(&source, &all, 4, page)).unwrap();
            assert_eq!(ids(&first), expected[..4], "page {page}, max 4");
        }
    }

    proptest! {
        #[test]
        fn pages_give_every_row_once_in_order(
            spec in prop::collection::vec((0..6i64, 0..3u8, 0..4i64), 0..40),
            page in 1..8usize,
            max in 0..50usize,
            from in prop::option::of(0..6i64),
            to in prop::option::of(0..7i64),
            key in prop::option::of(0..3u8),
        ) {
            let mut rows: Vec<ReadModelRow> = Vec::new();
            for (at, k, ord) in spec {
                let k = format!("k{k}");
                if !rows.iter().any(|r| r.key == k && r.ord == ord) {
                    rows.push(row("t", &k, ord, at));
                }
            }
            rows.push(row("other", "k0", 0, 3));
            let source = Memory(rows);
            let key = key.map(|k| format!("k{k}"));
            let range = RowRange {
                table: "t",
                key: key.as_deref(),
                from: from.map(Timestamp),
                to: to.map(Timestamp),
            };
            let everything = RowQuery {
                table: "t".into(),
                key: key.clone(),
                from: range.from,
                to: range.to,
                limit: max,
                newest_first: false,
            };
            let expected = ids(&ready(source.rows(&everything)).unwrap());
            let got = ready(paged(&source, &range, max, page)).unwrap();
            prop_assert_eq!(ids(&got), expected);
        }
    }
}
