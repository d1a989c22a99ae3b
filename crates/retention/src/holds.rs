//! Legal holds: what each covers, and the set of holds a plan or a check applies.
//!
//! A hold is an entry in the ledger ([`ledger::record::LegalHold`], appended by `auditledger
//! retention hold add`) and stays in force until a later entry releases it
//! ([`ledger::record::HoldRelease`]). While in force it keeps the entries it covers past any
//! horizon:
//!
//! - `stream`: every entry;
//! - `patient`: entries whose `patient_id` is the subject (a patient pseudonym);
//! - `user`: entries whose actor's `user_id` is the subject (a user pseudonym);
//! - `time`: entries whose event occurred in `from..to` (`from` inclusive, `to` exclusive; an
//!   absent bound is open).
//!
//! A hold that cannot say what it covers (a patient or user hold without a subject) covers
//! everything: when in doubt, keep.

use std::collections::{BTreeMap, HashMap};

use ledger::record::{HoldScope, LegalHold};
use ledger::{Seq, StoredEvent, Timestamp};
use serde::{Deserialize, Serialize};

/// A legal hold, as recorded in the ledger, and its release if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The hold's entry: its identity (`hold release <seq>`).
    pub seq: Seq,
    /// `recorded_at` of the hold's entry.
    pub added_at: Timestamp,
    pub scope: HoldScope,
    /// The patient's or user's pseudonym, for those scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The held `occurred_at` range of a `time` hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Release>,
}

/// The release of a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The release's entry.
    pub seq: Seq,
    /// `recorded_at` of the release's entry.
    pub at: Timestamp,
    pub reason: String,
}

impl Hold {
    /// The hold recorded at entry `seq`.
    pub fn from_record(seq: Seq, recorded_at: Timestamp, record: &LegalHold) -> Hold {
        Hold {
            seq,
            added_at: recorded_at,
            scope: record.scope,
            subject: record.subject.clone(),
            from: record.from.map(Timestamp),
            to: record.to.map(Timestamp),
            reason: record.reason.clone(),
            released: None,
        }
    }

    /// Whether the hold covers every entry of the stream (a `stream` hold, a `time` hold with
    /// no bounds, or a subject hold without a subject).
    pub fn covers_everything(&self) -> bool {
        match self.scope {
            HoldScope::Stream => true,
            HoldScope::Patient | HoldScope::User => self.subject.is_none(),
            HoldScope::Time => self.from.is_none() && self.to.is_none(),
        }
    }

    /// Whether a `time` hold's range `[from, to)` meets the closed span `[first, last]`
    /// (open bounds reach the ends of time).
    pub fn meets_span(&self, first: Timestamp, last: Timestamp) -> bool {
        self.from.is_none_or(|from| from <= last) && self.to.is_none_or(|to| first < to)
    }

    /// Whether the hold covers `event`, released or not.
    pub fn covers(&self, event: &StoredEvent) -> bool {
        if self.covers_everything() {
            return true;
        }
        match self.scope {
            HoldScope::Stream => true,
            HoldScope::Patient => event.patient_id.is_some() && event.patient_id == self.subject,
            HoldScope::User => event.actor.user_id.is_some() && event.actor.user_id == self.subject,
            HoldScope::Time => in_range(self.from, self.to, event.occurred_at),
        }
    }

    /// Whether the hold was in force at entry `seq`: added before it, not released before it.
    pub fn active_at(&self, seq: Seq) -> bool {
        self.seq < seq && self.released.as_ref().is_none_or(|r| r.seq > seq)
    }

    pub fn is_released(&self) -> bool {
        self.released.is_some()
    }

    /// One line for people: `entry 12 (patient 0fd7...:ab12, since ...): reason`.
    pub fn describe(&self) -> String {
        let what = match self.scope {
            HoldScope::Stream => "the whole stream".to_owned(),
            HoldScope::Patient | HoldScope::User => format!(
                "{} {}",
                self.scope.as_str(),
                self.subject
                    .as_deref()
                    .unwrap_or("(no subject: everything)")
            ),
            HoldScope::Time => {
                let bound = |t: Option<Timestamp>| t.map_or("open".to_owned(), |t| t.to_string());
                format!("events from {} to {}", bound(self.from), bound(self.to))
            }
        };
        let state = match &self.released {
            None => format!("since {}", self.added_at),
            Some(r) => format!("{} to {}, released by entry {}", self.added_at, r.at, r.seq),
        };
        format!("hold {} on {what} ({state}): {}", self.seq, self.reason)
    }
}

/// `from <= t < to`, an absent bound open.
fn in_range(from: Option<Timestamp>, to: Option<Timestamp>, t: i64) -> bool {
    from.is_none_or(|f| f.0 <= t) && to.is_none_or(|e| t < e.0)
}

/// A set of holds, indexed so that finding the holds covering an entry costs a few lookups
/// however many patients and users are held.
#[derive(Debug, Clone, Default)]
pub struct HoldSet {
    holds: BTreeMap<Seq, Hold>,
    /// The active holds (not released), by what they cover; each maps to the lowest hold seq.
    everything: Option<Seq>,
    patients: HashMap<String, Seq>,
    users: HashMap<String, Seq>,
    /// Active time holds: `(from, to, seq)`.
    times: Vec<(Option<i64>, Option<i64>, Seq)>,
}

impl HoldSet {
    pub fn new(holds: impl IntoIterator<Item = Hold>) -> HoldSet {
        let mut set = HoldSet::default();
        for hold in holds {
            set.holds.insert(hold.seq, hold);
        }
        // Holds are visited in seq order: the first one in each slot is the lowest.
        for hold in set.holds.values().filter(|h| !h.is_released()) {
            if hold.covers_everything() {
                set.everything.get_or_insert(hold.seq);
                continue;
            }
            match (hold.scope, hold.subject.as_ref()) {
                (HoldScope::Patient, Some(s)) => {
                    set.patients.entry(s.clone()).or_insert(hold.seq);
                }
                (HoldScope::User, Some(s)) => {
                    set.users.entry(s.clone()).or_insert(hold.seq);
                }
                _ => set
                    .times
                    .push((hold.from.map(|t| t.0), hold.to.map(|t| t.0), hold.seq)),
            }
        }
        set
    }

    /// The lowest-numbered hold in force (not released) that covers `event`.
    pub fn covering(&self, event: &StoredEvent) -> Option<Seq> {
        let mut found = self.everything;
        let mut take = |seq: Option<Seq>| {
            if let Some(s) = seq {
                found = Some(found.map_or(s, |f| f.min(s)));
            }
        };
        if let Some(p) = &event.patient_id {
            take(self.patients.get(p).copied());
        }
        if let Some(u) = &event.actor.user_id {
            take(self.users.get(u).copied());
        }
        for &(from, to, seq) in &self.times {
            if in_range(from.map(Timestamp), to.map(Timestamp), event.occurred_at) {
                take(Some(seq));
            }
        }
        found
    }

    /// The holds in force at entry `seq` (added before it, not released before it), in seq
    /// order: those a purge authorized at `seq` had to consider.
    pub fn active_at(&self, seq: Seq) -> impl Iterator<Item = &Hold> {
        self.holds.values().filter(move |h| h.active_at(seq))
    }

    /// The holds not released, in seq order.
    pub fn active(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values().filter(|h| !h.is_released())
    }

    /// Every hold, released or not, in seq order.
    pub fn iter(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    pub fn get(&self, seq: Seq) -> Option<&Hold> {
        self.holds.get(&seq)
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ledger::payload::StoredActor;

    use super::*;

    fn event(occurred_at: i64, user: Option<&str>, patient: Option<&str>) -> StoredEvent {
        StoredEvent {
            phi: patient.is_some(),
            idem: None,
            actor: StoredActor {
                user_id: user.map(str::to_owned),
                ..StoredActor::default()
            },
            action: "read".into(),
            detail: None,
            record: None,
            source: "ehr-web".into(),
            outcome: "success".into(),
            request: None,
            resource: None,
            patient_id: patient.map(str::to_owned),
            occurred_at,
        }
    }

    fn hold(seq: Seq, scope: HoldScope, subject: Option<&str>) -> Hold {
        Hold {
            seq,
            added_at: Timestamp(seq as i64),
            scope,
            subject: subject.map(str::to_owned),
            from: None,
            to: None,
            reason: "litigation".into(),
            released: None,
        }
    }

    fn time_hold(seq: Seq, from: Option<i64>, to: Option<i64>) -> Hold {
        Hold {
            from: from.map(Timestamp),
            to: to.map(Timestamp),
            ..hold(seq, HoldScope::Time, None)
        }
    }

    fn released(mut h: Hold, seq: Seq) -> Hold {
        h.released = Some(Release {
            seq,
            at: Timestamp(seq as i64),
            reason: "settled".into(),
        });
        h
    }

    #[test]
    fn each_scope_covers_what_it_names() {
        let plain = event(100, Some("u1"), Some("p1"));
        let other = event(100, Some("u2"), Some("p2"));
        let nobody = event(100, None, None);

        let stream = hold(5, HoldScope::Stream, None);
        assert!(stream.covers(&plain) && stream.covers(&nobody));

        let patient = hold(5, HoldScope::Patient, Some("p1"));
        assert!(patient.covers(&plain));
        assert!(!patient.covers(&other));
        assert!(
            !patient.covers(&nobody),
            "no patient is not the held patient"
        );

        let user = hold(5, HoldScope::User, Some("u1"));
        assert!(user.covers(&plain));
        assert!(!user.covers(&other) && !user.covers(&nobody));
        assert!(
            !user.covers(&event(100, None, Some("u1"))),
            "a user hold matches the actor, not the patient"
        );

        let time = time_hold(5, Some(100), Some(200));
        assert!(time.covers(&event(100, None, None)), "from is inclusive");
        assert!(time.covers(&event(199, None, None)));
        assert!(!time.covers(&event(200, None, None)), "to is exclusive");
        assert!(!time.covers(&event(99, None, None)));
        assert!(time_hold(5, None, Some(200)).covers(&event(i64::MIN, None, None)));
        assert!(time_hold(5, Some(100), None).covers(&event(i64::MAX, None, None)));
        assert!(time_hold(5, None, None).covers_everything());

        // A subject hold without its subject keeps everything.
        let vague = hold(5, HoldScope::Patient, None);
        assert!(vague.covers_everything() && vague.covers(&nobody));
    }

    #[test]
    fn the_set_finds_the_lowest_active_covering_hold() {
        let set = HoldSet::new([
            hold(30, HoldScope::Patient, Some("p1")),
            hold(10, HoldScope::Patient, Some("p1")),
            released(hold(5, HoldScope::User, Some("u1")), 8),
            hold(20, HoldScope::User, Some("u1")),
            time_hold(40, Some(0), Some(50)),
            released(hold(2, HoldScope::Stream, None), 3),
        ]);
        assert_eq!(set.len(), 6);
        assert_eq!(set.covering(&event(100, None, Some("p1"))), Some(10));
        assert_eq!(set.covering(&event(100, Some("u1"), Some("p1"))), Some(10));
        assert_eq!(
            set.covering(&event(100, Some("u1"), None)),
            Some(20),
            "the released user hold 5 no longer counts"
        );
        assert_eq!(set.covering(&event(10, None, None)), Some(40));
        assert_eq!(set.covering(&event(60, Some("u9"), Some("p9"))), None);

        let with_stream = HoldSet::new([
            hold(30, HoldScope::Patient, Some("p1")),
            hold(50, HoldScope::Stream, None),
        ]);
        assert_eq!(with_stream.covering(&event(1, None, None)), Some(50));
        assert_eq!(with_stream.covering(&event(1, None, Some("p1"))), Some(30));
        assert_eq!(
            with_stream.active().map(|h| h.seq).collect::<Vec<_>>(),
            [30, 50]
        );
    }

    #[test]
    fn holds_in_force_at_a_seq() {
        let set = HoldSet::new([
            hold(10, HoldScope::Stream, None),
            released(hold(20, HoldScope::Patient, Some("p")), 40),
            hold(60, HoldScope::User, Some("u")),
        ]);
        let at = |seq| set.active_at(seq).map(|h| h.seq).collect::<Vec<_>>();
        assert_eq!(
            at(10),
            Vec::<Seq>::new(),
            "a hold is not in force at itself"
        );
        assert_eq!(at(11), [10]);
        assert_eq!(at(30), [10, 20]);
        assert_eq!(at(40), [10], "released at 40");
        assert_eq!(at(70), [10, 60]);
        assert_eq!(
            set.active().map(|h| h.seq).collect::<Vec<_>>(),
            [10, 60],
            "released holds are not active now"
        );
        assert!(set
            .get(20)
            .unwrap()
            .describe()
            .contains("released by entry 40"));
    }
}
