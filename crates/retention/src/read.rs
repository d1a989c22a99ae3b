//! Reads of the `retention` read model through the `Store` trait (so on either store): the
//! holds, the releases that released nothing, the coverage gaps since a date, the sources,
//! the retention checks recorded and the purge authorizations.
//!
//! Reads go in pages of [`PAGE`] rows, so no single query returns an unbounded result. A row
//! whose value does not parse is [`StoreError::Corrupt`], naming the row: the read model is
//! derived data, and the remedy is a rebuild (`auditledger project retention --rebuild`).

use ledger::readmodel::{paged, RowRange, StoreRows};
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
    let source = StoreRows {
        store,
        projection: NAME,
        stream,
    };
    paged(&source, &RowRange::table(table, from, to), usize::MAX, PAGE)
        .await?
        .iter()
        .map(|row| parse(row, what))
        .collect()
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
    use super::*;

    fn row(table: &str, key: &str, ord: i64, at: i64) -> ReadModelRow {
        ReadModelRow {
            table: table.into(),
            key: key.into(),
            ord,
            at: Timestamp(at),
            value: "{}".into(),
        }
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
}
