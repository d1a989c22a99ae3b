//! A sliding window over event time for one key (an IP, a user, a session), tolerant of events
//! that arrive out of time order: entries are kept sorted by time, and the question asked is
//! "is there a window of length `len` that contains this event and enough evidence?".

use std::collections::{HashMap, VecDeque};

use ledger::{Seq, Timestamp};
use serde::{Deserialize, Serialize};

/// Saved as the array `[at, seq, value]`: windows are most of a saved detector state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Timestamp, Seq, String)", into = "(Timestamp, Seq, String)")]
struct Item {
    at: Timestamp,
    seq: Seq,
    /// What distinct-counting rules count (a user, a patient, an IP); empty when unused or
    /// unknown, and then not counted as a distinct value.
    value: String,
}

impl From<(Timestamp, Seq, String)> for Item {
    fn from((at, seq, value): (Timestamp, Seq, String)) -> Item {
        Item { at, seq, value }
    }
}

impl From<Item> for (Timestamp, Seq, String) {
    fn from(i: Item) -> Self {
        (i.at, i.seq, i.value)
    }
}

/// Evidence found by [`Window::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub from: Timestamp,
    pub to: Timestamp,
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub events: usize,
    pub distinct: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Window {
    items: VecDeque<Item>,
}

impl Window {
    /// Adds an event at its place in time order.
    pub fn insert(&mut self, at: Timestamp, seq: Seq, value: &str) {
        let pos = self.items.partition_point(|i| (i.at, i.seq) <= (at, seq));
        self.items.insert(
            pos,
            Item {
                at,
                seq,
                value: value.to_owned(),
            },
        );
    }

    /// Forgets events before `t`.
    pub fn evict_before(&mut self, t: Timestamp) {
        while self.items.front().is_some_and(|i| i.at < t) {
            self.items.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first window `[start, start + len]` that contains the event `(at, seq)` and holds at
    /// least `min_events` events and `min_distinct` distinct non-empty values. Two pointers over
    /// the events within `len` of `at`: O(events in 2 * len).
    pub fn find(
        &self,
        at: Timestamp,
        seq: Seq,
        len_micros: i64,
        min_events: usize,
        min_distinct: usize,
    ) -> Option<Evidence> {
        let lo = self
            .items
            .partition_point(|i| i.at.0 < at.0.saturating_sub(len_micros));
        let hi = self
            .items
            .partition_point(|i| i.at.0 <= at.0.saturating_add(len_micros));
        let span: Vec<&Item> = self.items.range(lo..hi).collect();
        let me = span.iter().position(|i| i.at == at && i.seq == seq)?;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut end = 0; // exclusive
        for start in 0..=me {
            while end < span.len() && span[end].at.0.saturating_sub(span[start].at.0) <= len_micros
            {
                let v = span[end].value.as_str();
                if !v.is_empty() {
                    *counts.entry(v).or_default() += 1;
                }
                end += 1;
            }
            if end > me && end - start >= min_events && counts.len() >= min_distinct {
                let window = &span[start..end];
                return Some(Evidence {
                    from: window[0].at,
                    to: window[window.len() - 1].at,
                    first_seq: window.iter().map(|i| i.seq).min().unwrap_or(seq),
                    last_seq: window.iter().map(|i| i.seq).max().unwrap_or(seq),
                    events: window.len(),
                    distinct: counts.len(),
                });
            }
            let v = span[start].value.as_str();
            if let Some(c) = counts.get_mut(v) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(v);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn counts_events_within_the_window_in_any_arrival_order() {
        let mut w = Window::default();
        for (i, t) in [0, 60, 120, 180].iter().enumerate() {
            w.insert(Timestamp(t * S), i as u64, "");
        }
        assert_eq!(w.find(Timestamp(180 * S), 3, 300 * S, 5, 0), None, "4 < 5");
        // The fifth arrives late (time 30 s) but within the window.
        w.insert(Timestamp(30 * S), 4, "");
        let e = w.find(Timestamp(30 * S), 4, 300 * S, 5, 0).unwrap();
        assert_eq!(
            (e.events, e.from, e.to),
            (5, Timestamp(0), Timestamp(180 * S))
        );
        assert_eq!((e.first_seq, e.last_seq), (0, 4));
    }

    #[test]
    fn events_too_far_apart_do_not_add_up() {
        let mut w = Window::default();
        for i in 0..5 {
            w.insert(Timestamp(i * 100 * S), i as u64, "");
        }
        assert_eq!(
            w.find(Timestamp(400 * S), 4, 300 * S, 5, 0),
            None,
            "5 events span 400 s"
        );
        assert!(w.find(Timestamp(400 * S), 4, 400 * S, 5, 0).is_some());
    }

    #[test]
    fn distinct_values() {
        let mut w = Window::default();
        for i in 0..10 {
            w.insert(
                Timestamp(i * S),
                i as u64,
                if i % 2 == 0 { "a" } else { "b" },
            );
        }
        assert_eq!(w.find(Timestamp(9 * S), 9, 60 * S, 10, 3), None);
        assert_eq!(
            w.find(Timestamp(9 * S), 9, 60 * S, 10, 2).unwrap().distinct,
            2
        );
        w.evict_before(Timestamp(5 * S));
        assert_eq!(w.find(Timestamp(9 * S), 9, 60 * S, 6, 1), None, "evicted");
    }

    #[test]
    fn empty_values_are_not_distinct() {
        let mut w = Window::default();
        for (i, v) in ["a", "", "b", ""].iter().enumerate() {
            w.insert(Timestamp(i as i64 * S), i as u64, v);
        }
        assert_eq!(w.find(Timestamp(3 * S), 3, 60 * S, 4, 3), None);
        let e = w.find(Timestamp(3 * S), 3, 60 * S, 4, 2).unwrap();
        assert_eq!((e.events, e.distinct), (4, 2));
        assert!(w.find(Timestamp(3 * S), 3, 60 * S, 4, 0).is_some());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut w = Window::default();
        w.insert(Timestamp(i64::MIN), 0, "a");
        w.insert(Timestamp(i64::MAX), 1, "b");
        assert!(w.find(Timestamp(i64::MIN), 0, i64::MAX, 2, 0).is_none());
        assert!(w.find(Timestamp(i64::MAX), 1, 60 * S, 1, 1).is_some());
        w.evict_before(Timestamp(i64::MAX));
        assert!(!w.is_empty());
    }
}
