//! Questions asked of the security read model: is this IP blocked, which blocks are in force,
//! which security events happened. Through the `Store` trait, so on either store.

use ledger::{ReadModelRow, RowQuery, Store, StoreError, StreamId, Timestamp};

use crate::detector::Severity;
use crate::projection::{BLOCKS, EVENTS, LIFTS, NAME};

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// `LOW`, `MEDIUM`, `HIGH`, `CRITICAL`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Any case.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
    }
}

fn value(row: &ReadModelRow) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&row.value).map_err(|e| {
        StoreError::Corrupt(format!(
            "security read model row {}/{} is not JSON: {e}",
            row.table, row.key
        ))
    })
}

/// The block in force on `ip` (a pseudonym) at `now`, if any.
pub async fn block_of(
    store: &dyn Store,
    stream: &StreamId,
    ip: &str,
    now: Timestamp,
) -> Result<Option<serde_json::Value>, StoreError> {
    let rows = store
        .read_model_rows(NAME, stream, &RowQuery::key(BLOCKS, ip, 1))
        .await?;
    match rows.first() {
        Some(row) if row.at > now => Ok(Some(value(row)?)),
        _ => Ok(None),
    }
}

/// Blocks in force at `now` (or every block ever recorded and not lifted, with `all`),
/// soonest expiry first.
pub async fn blocks(
    store: &dyn Store,
    stream: &StreamId,
    now: Timestamp,
    all: bool,
    limit: usize,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let query = RowQuery {
        from: (!all).then_some(Timestamp(now.0.saturating_add(1))),
        ..RowQuery::table(BLOCKS, limit)
    };
    let rows = store.read_model_rows(NAME, stream, &query).await?;
    rows.iter().map(value).collect()
}

/// Lifted blocks from `since` on, oldest first.
pub async fn lifts(
    store: &dyn Store,
    stream: &StreamId,
    since: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let query = RowQuery {
        from: since,
        ..RowQuery::table(LIFTS, limit)
    };
    let rows = store.read_model_rows(NAME, stream, &query).await?;
    rows.iter().map(value).collect()
}

/// Security events whose window ended in `[since, until)`, of `min_severity` or worse, newest
/// first, at most `limit`.
pub async fn events(
    store: &dyn Store,
    stream: &StreamId,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    min_severity: Severity,
    limit: usize,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut out = Vec::new();
    // Keeps `row` if severe enough; true once `limit` rows are kept.
    let take = |out: &mut Vec<serde_json::Value>, row: &ReadModelRow| -> Result<bool, StoreError> {
        let v = value(row)?;
        let severity = v
            .get("severity")
            .and_then(|s| s.as_str())
            .and_then(Severity::parse)
            .unwrap_or(Severity::Low);
        if severity >= min_severity {
            out.push(v);
        }
        Ok(out.len() >= limit)
    };
    let mut to = until;
    // Filtering by severity happens here, so read in pages until `limit` rows pass. Rows
    // sharing the oldest `at` of a full page may straddle pages: they are read with the next.
    let page = limit.clamp(1, 10_000);
    loop {
        let query = RowQuery {
            from: since,
            to,
            newest_first: true,
            ..RowQuery::table(EVENTS, page)
        };
        let rows = store.read_model_rows(NAME, stream, &query).await?;
        let Some(oldest) = rows.last().map(|r| r.at).filter(|_| rows.len() == page) else {
            // The last page.
            for row in &rows {
                if take(&mut out, row)? {
                    break;
                }
            }
            return Ok(out);
        };
        if rows.iter().all(|r| r.at == oldest) {
            // A page of one instant: take that instant whole, then go on before it.
            let instant = RowQuery {
                from: Some(oldest),
                to: Some(Timestamp(oldest.0 + 1)),
                ..RowQuery::table(EVENTS, i64::MAX as usize)
            };
            for row in store
                .read_model_rows(NAME, stream, &instant)
                .await?
                .iter()
                .rev()
            {
                if take(&mut out, row)? {
                    return Ok(out);
                }
            }
            to = Some(oldest);
        } else {
            for row in rows.iter().take_while(|r| r.at != oldest) {
                if take(&mut out, row)? {
                    return Ok(out);
                }
            }
            to = Some(Timestamp(oldest.0 + 1));
        }
    }
}
