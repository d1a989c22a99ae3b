//! Reads of the `retention` read model through the `Store` trait (so on either store): the
//! holds, the releases that released nothing, the coverage gaps since a date, the sources,
//! the retention checks recorded and the purge authorizations.
//!
//! Reads go in pages of [`PAGE`] rows, so no single query returns an unbounded result. A row
//! whose value does not parse is [`StoreError::Corrupt`], naming the row: the read model is
//! derived data, and the remedy is a rebuild (`auditledger project retention --rebuild`).

use std::collections::HashSet;

use ledger::{ReadModelRow, RowQuery, Seq, Store, StoreError, StreamId, Timestamp};
use serde::de::DeserializeOwned;

use crate::holds::{Hold, HoldSet};
use crate::projection::{
    CheckRow, Gap, OrphanRelease, PurgeRow, SourceRow, CHECKS, GAPS, HOLDS, NAME, ORPHAN_RELEASES,
    PURGES, SOURCES,
};

/// Rows per query.
pub const PAGE: usize = 10_000;

/// The projection's saved position: the `seq` of the last entry it applied (`None` before its
/// first commit). Rows reflect exactly the entries up to it.
pub async fn position(store: &dyn Store, stream: &StreamId) -> Result<Option<Seq>, StoreError> {
    Ok(store.projection(NAME, stream).await?.map(|s| s.seq))
}

/// Every legal hold, released or not, by seq.
pub async fn holds(store: &dyn Store, stream: &StreamId) -> Result<Vec<Hold>, StoreError> {
    let mut out: Vec<Hold> = parsed(store, stream, HOLDS, None, None, "legal hold").await?;
    out.sort_by_key(|h| h.seq);
    Ok(out)
}

/// Every legal hold, as a [`HoldSet`].
pub async fn hold_set(store: &dyn Store, stream: &StreamId) -> Result<HoldSet, StoreError> {
    Ok(HoldSet::new(holds(store, stream).await?))
}

/// Releases that released nothing (naming no hold, or one already released), by seq.
pub async fn orphan_releases(
    store: &dyn Store,
    stream: &StreamId,
) -> Result<Vec<OrphanRelease>, StoreError> {
    let mut out: Vec<OrphanRelease> =
        parsed(store, stream, ORPHAN_RELEASES, None, None, "release").await?;
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

/// The coverage gaps that ended at or after `since`, by end, then source.
pub async fn gaps(
    store: &dyn Store,
    stream: &StreamId,
    since: Timestamp,
) -> Result<Vec<Gap>, StoreError> {
    let mut out: Vec<Gap> = parsed(store, stream, GAPS, Some(since), None, "coverage gap").await?;
    out.sort_by(|a, b| (a.to, &a.source, a.resumed_seq).cmp(&(b.to, &b.source, b.resumed_seq)));
    Ok(out)
}

/// Every source that wrote, as last seen, by name.
pub async fn sources(store: &dyn Store, stream: &StreamId) -> Result<Vec<SourceRow>, StoreError> {
    let mut out: Vec<SourceRow> = parsed(store, stream, SOURCES, None, None, "source").await?;
    out.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(out)
}

/// The retention checks recorded (by their entry's `recorded_at`) within `[from, to)` (an
/// absent bound is open), by seq.
pub async fn checks(
    store: &dyn Store,
    stream: &StreamId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<CheckRow>, StoreError> {
    let mut out: Vec<CheckRow> = parsed(store, stream, CHECKS, from, to, "retention check").await?;
    out.sort_by_key(|c| c.seq);
    Ok(out)
}

/// The last retention check recorded before `before` (`None`: the newest of all), if any.
pub async fn latest_check(
    store: &dyn Store,
    stream: &StreamId,
    before: Option<Timestamp>,
) -> Result<Option<CheckRow>, StoreError> {
    // Newest first: the first row is the latest check (one instant holds at most a few, and
    // the seq decides between them).
    let query = RowQuery {
        table: CHECKS.to_owned(),
        key: None,
        from: None,
        to: before,
        limit: 1,
        newest_first: true,
    };
    let Some(newest) = store.read_model_rows(NAME, stream, &query).await?.pop() else {
        return Ok(None);
    };
    let at = newest.at;
    let same_instant = Some(Timestamp(at.0.saturating_add(1)));
    let rows: Vec<CheckRow> = parsed(
        store,
        stream,
        CHECKS,
        Some(at),
        same_instant,
        "retention check",
    )
    .await?;
    Ok(rows.into_iter().max_by_key(|c| c.seq))
}

/// Every purge authorization, by seq.
pub async fn purges(store: &dyn Store, stream: &StreamId) -> Result<Vec<PurgeRow>, StoreError> {
    let mut out: Vec<PurgeRow> =
        parsed(store, stream, PURGES, None, None, "purge authorization").await?;
    out.sort_by_key(|p| p.seq);
    Ok(out)
}

/// Every row of `table` with `from <= at < to`, parsed.
async fn parsed<T: DeserializeOwned>(
    store: &dyn Store,
    stream: &StreamId,
    table: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    paged(&StoreRows { store, stream }, table, from, to, PAGE)
        .await?
        .iter()
        .map(|row| parse(row, what))
        .collect()
}

/// Where pages of rows come from: the store, or (in tests) rows in memory.
trait RowSource {
    async fn rows(&self, query: &RowQuery) -> Result<Vec<ReadModelRow>, StoreError>;
}

struct StoreRows<'a> {
    store: &'a dyn Store,
    stream: &'a StreamId,
}

impl RowSource for StoreRows<'_> {
    async fn rows(&self, query: &RowQuery) -> Result<Vec<ReadModelRow>, StoreError> {
        self.store.read_model_rows(NAME, self.stream, query).await
    }
}

/// Every row of `table` with `from <= at < to` (an absent bound is open), in the store's
/// `(at, key, ord)` order, read in pages of `page` rows (the paging of `phi_access::read`).
/// Each page after the first starts at the last `at` of the one before, skipping the rows of
/// that instant already read (`(key, ord)` identifies a row); an instant with more rows than a
/// page is read whole.
async fn paged(
    source: &impl RowSource,
    table: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    page: usize,
) -> Result<Vec<ReadModelRow>, StoreError> {
    let page = page.max(1);
    let query = |from: Option<Timestamp>, to: Option<Timestamp>, limit: usize| RowQuery {
        table: table.to_owned(),
        key: None,
        from,
        to,
        limit,
        newest_first: false,
    };
    let mut out: Vec<ReadModelRow> = Vec::new();
    let mut from = from;
    // The rows already read at `from` (the instant the next page starts at).
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    loop {
        let rows = source.rows(&query(from, to, page)).await?;
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
        seen = next_seen;
        from = Some(last);
    }
    Ok(out)
}

fn parse<T: DeserializeOwned>(row: &ReadModelRow, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(&row.value).map_err(|e| {
        StoreError::Corrupt(format!(
            "{NAME} read model row {}/{}/{} is not a valid {what}: {e}",
            row.table, row.key, row.ord
        ))
    })
}

#[cfg(test)]
mod tests {
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
    fn the_readers_futures_are_send() {
        fn send<T: Send>(_: T) {}
        let store: Option<&dyn Store> = None;
        if let Some(store) = store {
            let s = StreamId::default();
            send(holds(store, &s));
            send(hold_set(store, &s));
            send(orphan_releases(store, &s));
            send(gaps(store, &s, Timestamp(0)));
            send(sources(store, &s));
            send(checks(store, &s, None, None));
            send(latest_check(store, &s, None));
            send(purges(store, &s));
            send(position(store, &s));
        }
    }

    #[test]
    fn a_bad_row_is_corrupt_naming_it() {
        let bad = row(GAPS, "ehr-web", 7, 1);
        let err = parse::<Gap>(&bad, "coverage gap").unwrap_err();
        assert!(err.to_string().contains("gap/ehr-web/7"), "{err}");
    }

    proptest! {
        #[test]
        fn pages_give_every_row_once_in_order(
            spec in prop::collection::vec((0..6i64, 0..3u8, 0..4i64), 0..40),
            page in 1..8usize,
            from in prop::option::of(0..6i64),
            to in prop::option::of(0..7i64),
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
            let all = RowQuery {
                from: from.map(Timestamp),
                to: to.map(Timestamp),
                ..RowQuery::table("t", usize::MAX)
            };
            let expected = ids(&ready(source.rows(&all)).unwrap());
            let got = ready(paged(&source, "t", from.map(Timestamp), to.map(Timestamp), page))
                .unwrap();
            prop_assert_eq!(ids(&got), expected);
        }
    }
}
