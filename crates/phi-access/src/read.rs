//! Questions asked of the `phi-access` read model, through the `Store` trait (so on either
//! store): one patient's accesses over years, one user's accesses, the per-day and per-user-day
//! aggregates of a period (with late rows merged in), the system changes of a period.
//!
//! Every read is an index range read (see [`crate::projection`] for the layout), done in pages
//! of [`PAGE`] rows so that no single query returns an unbounded result. A row whose value does
//! not parse is [`StoreError::Corrupt`], naming the row: the read model is derived data, and
//! the remedy is a rebuild.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use ledger::readmodel::{paged, RowRange as Range, StoreRows};
use ledger::{Payload, ReadModelRow, RowQuery, Seq, Store, StoreError, StreamId, Timestamp};
use serde::de::DeserializeOwned;

use crate::model::{Access, Change, DayTotals, PatientAccess, SiteCalendar, UserAccesses, UserDay};
use crate::projection::{
    Month, CHANGES, DAYS, DAYS_LATE, NAME, PATIENTS, USER_ACCESSES, USER_DAYS, USER_DAYS_LATE,
};

/// Rows per query.
pub const PAGE: usize = 10_000;

/// The projection's saved position: the `seq` of the last entry it applied (`None` before its
/// first commit). Rows reflect exactly the entries up to it.
pub async fn position(store: &dyn Store, stream: &StreamId) -> Result<Option<Seq>, StoreError> {
    Ok(store.projection(NAME, stream).await?.map(|s| s.seq))
}

/// One `patient` row: entry `seq` recorded a PHI access to `value.patient` (a pseudonym) at
/// `at`, and its entry hash began with `value.entry_hash_prefix` when the projection verified
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRow {
    pub seq: Seq,
    pub at: Timestamp,
    pub value: PatientAccess,
}

impl PatientRow {
    /// Why this row does not describe `access` (read from its entry), if it does not.
    pub fn mismatch(&self, access: &Access) -> Option<String> {
        if access.seq != self.seq {
            return Some(format!("the entry is {}, not {}", access.seq, self.seq));
        }
        self.value.mismatch(self.at, access)
    }
}

/// The `patient` rows of any of `patients` (pseudonyms: one patient may be known under a keyed
/// and a legacy pseudonym) with `at` in `[from, to)`, each entry once, by `(at, seq)`: index
/// reads only, one key read per bucket of the pseudonyms and month of the range (an open bound
/// is the table's oldest or newest row), keeping the rows that name one of `patients`. The
/// accesses themselves are in the entries they cite ([`accesses_of_patients`]).
pub async fn patient_rows(
    store: &dyn Store,
    stream: &StreamId,
    patients: &[String],
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<PatientRow>, StoreError> {
    let mut by_seq: BTreeMap<Seq, PatientRow> = BTreeMap::new();
    for month in months(store, stream, PATIENTS, from, to).await? {
        let keys: BTreeSet<String> = patients.iter().map(|p| month.patient_key(p)).collect();
        for key in &keys {
            let range = Range {
                table: PATIENTS,
                key: Some(key),
                from,
                to,
            };
            for row in rows(store, stream, &range, usize::MAX).await? {
                let value: PatientAccess = parse(&row, "patient access")?;
                if !patients.contains(&value.patient) {
                    continue;
                }
                let seq = row.ord as Seq;
                by_seq.entry(seq).or_insert(PatientRow {
                    seq,
                    at: row.at,
                    value,
                });
            }
        }
    }
    let mut out: Vec<PatientRow> = by_seq.into_values().collect();
    out.sort_by_key(|r| (r.at, r.seq));
    Ok(out)
}

/// Every PHI access to any of `patients` with `occurred_at` in `[from, to)`, each once, by
/// `(occurred_at, seq)`: the [`patient_rows`], each access read from the ledger entry its row
/// cites by `seq` and decoded. An entry that is missing, holds no event, or is not the access
/// its row describes ([`PatientRow::mismatch`]) makes the row corrupt; one whose payload was
/// purged (retention) is left out, as a rebuild would leave it out. (The entries are read, not
/// verified: the accounting of disclosures re-verifies each one it cites.)
pub async fn accesses_of_patients(
    store: &dyn Store,
    stream: &StreamId,
    patients: &[String],
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<Access>, StoreError> {
    let mut out = Vec::new();
    for row in patient_rows(store, stream, patients, from, to).await? {
        let corrupt = |why: String| {
            StoreError::Corrupt(format!(
                "{NAME} read model row {PATIENTS}/{}/{} is not a valid patient access: {why}",
                Month::of(row.at).patient_key(&row.value.patient),
                row.seq
            ))
        };
        let entry = store.get(stream, row.seq).await?.ok_or_else(|| {
            corrupt(format!(
                "it cites entry {}, which the ledger lacks",
                row.seq
            ))
        })?;
        let event = match entry.decode_payload() {
            None => continue,
            Some(Ok(Payload::Event(event))) => event,
            Some(_) => {
                return Err(corrupt(format!(
                    "it cites entry {}, which holds no event",
                    row.seq
                )))
            }
        };
        let access = Access::of_event(row.seq, &entry.entry_hash, &event);
        if let Some(why) = row.mismatch(&access) {
            return Err(corrupt(format!("entry {}: {why}", row.seq)));
        }
        out.push(access);
    }
    Ok(out)
}

/// The first `limit` PHI accesses by `user` (a pseudonym) with `occurred_at` in `[from, to)`,
/// by `(occurred_at, seq)`: per month of the range, oldest first, until `limit`, one key read
/// of `user_access` and the entries it lists, read from the ledger by `seq` and decoded (all of
/// the month's: their order by time is only known once read). A listed entry that is missing,
/// is not an event, or is not by `user` makes the row corrupt; one whose payload was purged
/// (retention) is left out, as a rebuild would leave it out of every row.
pub async fn accesses_of_user(
    store: &dyn Store,
    stream: &StreamId,
    user: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<Access>, StoreError> {
    let mut out = Vec::new();
    for month in months(store, stream, USER_ACCESSES, from, to).await? {
        if out.len() >= limit {
            break;
        }
        // A month's rows all have `at` = the month's start: read the key whole, and bound the
        // accesses by their own times.
        let key = month.key(user);
        let range = Range {
            table: USER_ACCESSES,
            key: Some(&key),
            from: None,
            to: None,
        };
        let mut of_month: Vec<(Timestamp, Access)> = Vec::new();
        for row in rows(store, stream, &range, usize::MAX).await? {
            let value: UserAccesses = parse(&row, "user's accesses")?;
            for seq in value.seqs {
                let Some((at, access)) = listed_access(store, stream, &row, seq, user).await?
                else {
                    continue;
                };
                if from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t) {
                    of_month.push((at, access));
                }
            }
        }
        of_month.sort_by_key(|(at, a)| (*at, a.seq));
        of_month.dedup_by_key(|(_, a)| a.seq);
        let room = limit - out.len();
        out.extend(of_month.into_iter().take(room).map(|(_, a)| a));
    }
    Ok(out)
}

/// The access of entry `seq`, which `row` (of `user_access`) lists as one by `user`, with its
/// time; `None` when the entry's payload was purged.
async fn listed_access(
    store: &dyn Store,
    stream: &StreamId,
    row: &ReadModelRow,
    seq: Seq,
    user: &str,
) -> Result<Option<(Timestamp, Access)>, StoreError> {
    let what = "user's accesses";
    let entry = store.get(stream, seq).await?.ok_or_else(|| {
        corrupt(
            row,
            what,
            format!("it lists entry {seq}, which the ledger lacks"),
        )
    })?;
    let event = match entry.decode_payload() {
        None => return Ok(None),
        Some(Ok(Payload::Event(event))) => event,
        Some(_) => {
            return Err(corrupt(
                row,
                what,
                format!("it lists entry {seq}, which holds no event"),
            ))
        }
    };
    if event.actor.user_id.as_deref() != Some(user) {
        return Err(corrupt(
            row,
            what,
            format!("it lists entry {seq}, which is not by its key's user"),
        ));
    }
    Ok(Some((
        Timestamp(event.occurred_at),
        Access::of_event(seq, &entry.entry_hash, &event),
    )))
}

/// The months whose `table` rows (`patient` or `user_access`, keyed by month) may hold an
/// access in `[from, to)`: the range cut to the table's own oldest and newest row, so an open or a
/// generous bound costs no key reads of months without data.
async fn months(
    store: &dyn Store,
    stream: &StreamId,
    table: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<Month>, StoreError> {
    let edge = |newest_first: bool| RowQuery {
        newest_first,
        ..RowQuery::table(table, 1)
    };
    let oldest = store.read_model_rows(NAME, stream, &edge(false)).await?;
    let newest = store.read_model_rows(NAME, stream, &edge(true)).await?;
    let (Some(oldest), Some(newest)) = (oldest.first(), newest.first()) else {
        return Ok(Vec::new());
    };
    let from = from.map_or(oldest.at, |f| f.max(oldest.at));
    let past_newest = Timestamp(newest.at.0.saturating_add(1));
    let to = to.map_or(past_newest, |t| t.min(past_newest));
    Ok(Month::span(from, to))
}

/// The totals of each site-local day in `[from, to)` that had events, ascending, with the
/// late rows of each day merged in.
pub async fn day_totals(
    store: &dyn Store,
    stream: &StreamId,
    cal: &SiteCalendar,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayTotals>, StoreError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let (start, end) = (Some(cal.start_of(from)), Some(cal.start_of(to)));
    // `YYYY-MM-DD` keys sort as the days do.
    let mut days: BTreeMap<String, DayTotals> = BTreeMap::new();
    // The day's own row first, then its late rows in `seq` order.
    for table in [DAYS, DAYS_LATE] {
        let range = Range {
            table,
            key: None,
            from: start,
            to: end,
        };
        let mut found = rows(store, stream, &range, usize::MAX).await?;
        found.sort_by(|a, b| (&a.key, a.ord).cmp(&(&b.key, b.ord)));
        for row in &found {
            let totals: DayTotals = parse(row, "day totals")?;
            days.entry(row.key.clone()).or_default().merge(&totals);
        }
    }
    Ok(days.into_values().collect())
}

/// Each user's figures of each site-local day in `[from, to)`, with the late rows merged in,
/// by `(day, user)`.
pub async fn user_days(
    store: &dyn Store,
    stream: &StreamId,
    cal: &SiteCalendar,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<UserDay>, StoreError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let (start, end) = (Some(cal.start_of(from)), Some(cal.start_of(to)));
    let mut merged: BTreeMap<(String, String), UserDay> = BTreeMap::new();
    for table in [USER_DAYS, USER_DAYS_LATE] {
        let range = Range {
            table,
            key: None,
            from: start,
            to: end,
        };
        let mut found = rows(store, stream, &range, usize::MAX).await?;
        found.sort_by(|a, b| (a.at, &a.key, a.ord).cmp(&(b.at, &b.key, b.ord)));
        for row in &found {
            let mut day: UserDay = parse(row, "user-day")?;
            // The row's key and `at` hold the user and the day (`UserDay::row`).
            if day.user.is_empty() {
                day.user = row.key.clone();
            } else if day.user != row.key {
                return Err(corrupt(row, "user-day", "its user is not its key"));
            }
            if day.day.is_empty() {
                day.day = cal.date(row.at).to_string();
            }
            merged
                .entry((day.day.clone(), day.user.clone()))
                .or_default()
                .merge(&day);
        }
    }
    Ok(merged.into_values().collect())
}

/// The system changes (configured change actions) with `occurred_at` in `[from, to)`, by
/// `(occurred_at, seq)`.
pub async fn changes(
    store: &dyn Store,
    stream: &StreamId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Change>, StoreError> {
    let range = Range {
        table: CHANGES,
        key: None,
        from: Some(from),
        to: Some(to),
    };
    let mut found = rows(store, stream, &range, usize::MAX).await?;
    // The store orders by (at, key, ord); the key is the action.
    found.sort_by_key(|r| (r.at, r.ord));
    found.iter().map(|row| parse(row, "change")).collect()
}

/// The first `max` rows of `range` in the store's `(at, key, ord)` order.
async fn rows(
    store: &dyn Store,
    stream: &StreamId,
    range: &Range<'_>,
    max: usize,
) -> Result<Vec<ReadModelRow>, StoreError> {
    let source = StoreRows {
        store,
        projection: NAME,
        stream,
    };
    paged(&source, range, max, PAGE).await
}

fn corrupt(row: &ReadModelRow, what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "{NAME} read model row {}/{}/{} is not a valid {what}: {why}",
        row.table, row.key, row.ord
    ))
}

fn parse<T: DeserializeOwned>(row: &ReadModelRow, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(&row.value).map_err(|e| corrupt(row, what, e))
}

#[cfg(test)]
mod tests;
