//! Paging over rows in memory: every row once, in order, whatever the page size and however
//! many rows share an instant. (The readers on real stores are in the store conformance suite.)

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

fn all(table: &str) -> Range<'_> {
    Range {
        table,
        key: None,
        from: None,
        to: None,
    }
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
    for page in 1..=10 {
        let got = ready(paged(&source, &all("t"), usize::MAX, page)).unwrap();
        assert_eq!(ids(&got), expected, "page {page}");
        let first = ready(paged(&source, &all("t"), 4, page)).unwrap();
        assert_eq!(ids(&first), expected[..4], "page {page}, max 4");
    }
}

#[test]
fn the_readers_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let store: Option<&dyn Store> = None;
    if let Some(store) = store {
        let s = StreamId::default();
        send(accesses_of_patients(store, &s, &[], None, None));
        send(accesses_of_user(store, &s, "u", None, None, 1));
        send(changes(store, &s, Timestamp(0), Timestamp(1)));
        send(position(store, &s));
        let cal = SiteCalendar::new(&crate::AnalyticsConfig::default());
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        send(day_totals(store, &s, &cal, day, day));
        send(user_days(store, &s, &cal, day, day));
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
        let source = Memory(rows);
        let key = key.map(|k| format!("k{k}"));
        let range = Range {
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
