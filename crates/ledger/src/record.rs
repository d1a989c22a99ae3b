//! Structured records the ledger writes about itself: purge authorizations, legal holds and
//! retention checks. A record rides in the `record` field of an event payload (the event says
//! who did it, when, from where; the record says exactly what, machine-readably), so it is
//! covered by the payload digest and the chain like any event. Clients never send one: the
//! event contract has no `record` field, and only the ledger's own commands build them.
//!
//! Field order is canonical order (shorter key first, then bytewise; see [`crate::payload`]).
//! Times are microseconds since the Unix epoch, digests lower-case hex text.

use serde::{Deserialize, Serialize};

use crate::types::Seq;

/// The action of the event that carries a [`PurgeAuthorization`]. Stores look for it (in the
/// verified `action` column) before they let a payload go.
pub const PURGE_ACTION: &str = "retention_purge";
/// The action of the event that carries a [`LegalHold`].
pub const HOLD_ACTION: &str = "legal_hold_add";
/// The action of the event that carries a [`HoldRelease`].
pub const HOLD_RELEASE_ACTION: &str = "legal_hold_release";
/// The action of the event that carries a [`RetentionCheck`].
pub const RETENTION_CHECK_ACTION: &str = "retention_check";

/// Actions only the ledger's own commands may write: a client's event with one is refused.
pub const RESERVED_ACTIONS: [&str; 4] = [
    PURGE_ACTION,
    HOLD_ACTION,
    HOLD_RELEASE_ACTION,
    RETENTION_CHECK_ACTION,
];

/// The floor below which no store lets a payload go, whatever the policy says: six years of
/// 365 days (HIPAA, 45 CFR 164.316(b)(2) and 164.530(j)). Six calendar years are always at
/// least one day longer, so a policy of six years is never refused by it. The SQL of both
/// stores has the same constant (`migrations/*/V3__purge.sql`).
pub const MIN_RETENTION_MICROS: i64 = 2190 * 86_400 * 1_000_000;

/// What a ledger-written event records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    PurgeAuthorization(PurgeAuthorization),
    LegalHold(LegalHold),
    HoldRelease(HoldRelease),
    RetentionCheck(RetentionCheck),
}

/// The authorization to remove the payloads of the entries in `ranges` (within `from..=to`):
/// entries of the named archive past their horizon and under no hold. It is appended before any payload goes, so
/// a purged payload without one covering it is damage (`verify`: `payload_missing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAuthorization {
    /// Last seq of the range (inclusive).
    pub to: Seq,
    /// First seq of the range.
    pub from: Seq,
    /// How many payloads the purge removes (entries in the range under a hold or inside their
    /// horizon are not among them).
    pub count: u64,
    /// The holds in force when the purge was decided (seq of each hold's entry).
    pub holds: Vec<Seq>,
    /// What was purged under each policy rule.
    pub rules: Vec<PurgedRule>,
    /// Exactly which entries: inclusive `[first, last]` seq runs, ascending and disjoint,
    /// within `from..=to` (entries kept by a hold or a longer horizon are the holes). `verify`
    /// counts each purged payload under the authorization whose runs hold it, so a payload
    /// purged outside them is `payload_missing` even inside `from..=to`.
    pub ranges: Vec<(Seq, Seq)>,
    /// SHA-256 of the archive file, lower-case hex.
    pub archive: String,
    /// The size of the signed checkpoint the archive carries (it covers `0..archive_size`).
    pub archive_size: u64,
    /// Who authorized it, as given (a name, a role, a ticket).
    pub authorized_by: String,
}

/// The payloads a purge removes under one policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedRule {
    pub rule: String,
    pub count: u64,
    /// The rule's horizon.
    pub years: u32,
    /// `recorded_at` of the newest entry purged under the rule.
    pub newest: i64,
}

/// A legal hold: entries it covers are kept past any horizon until it is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    /// End of the held time range (exclusive, `occurred_at`), for a `time` hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Start of the held time range (inclusive), for a `time` hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    pub scope: HoldScope,
    pub reason: String,
    /// The held patient's or user's pseudonym (text form), for those scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// What a hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    /// Every entry of the stream.
    Stream,
    /// Entries naming the patient.
    Patient,
    /// Entries whose actor is the user.
    User,
    /// Entries whose event occurred in `from..to`.
    Time,
}

impl PurgeAuthorization {
    /// The rules of a well-formed authorization recorded at `seq`: a non-empty span before
    /// it, runs ascending, disjoint and within the span, and as many as `count`.
    pub fn is_well_formed(&self, seq: Seq) -> bool {
        let mut next = self.from;
        let mut total = 0u64;
        for &(first, last) in &self.ranges {
            if first < next || last < first || last > self.to {
                return false;
            }
            total += last - first + 1;
            next = last + 1;
        }
        self.from <= self.to && self.to < seq && total == self.count
    }
}

impl HoldScope {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldScope::Stream => "stream",
            HoldScope::Patient => "patient",
            HoldScope::User => "user",
            HoldScope::Time => "time",
        }
    }
}

/// The release of the hold recorded at entry `hold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRelease {
    pub hold: Seq,
    pub reason: String,
}

/// The outcome of a retention check, appended so the job's own history is evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCheck {
    pub ok: bool,
    /// Head seq the check verified up to (`None` for an empty stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Seq>,
    /// The date the policy was evaluated at.
    pub as_of: i64,
    /// Entries verified.
    pub entries: u64,
    /// The kinds of violation found (`gap`, `payload_purged_inside_horizon`, ...), each once.
    pub findings: Vec<String>,
    pub violations: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{check_canonical, Payload, StoredActor, StoredEvent};

    fn event_with(record: Record) -> Payload {
        Payload::Event(StoredEvent {
            phi: false,
            idem: None,
            actor: StoredActor::default(),
            action: PURGE_ACTION.into(),
            detail: Some("d".into()),
            record: Some(record),
            source: "auditledger".into(),
            outcome: "success".into(),
            request: None,
            resource: None,
            patient_id: None,
            occurred_at: 1,
        })
    }

    #[test]
    fn records_encode_canonically_and_round_trip() {
        let records = [
            Record::PurgeAuthorization(PurgeAuthorization {
                to: 70_000,
                from: 1,
                count: 69_990,
                holds: vec![5, 900_000],
                rules: vec![PurgedRule {
                    rule: "default".into(),
                    count: 69_990,
                    years: 6,
                    newest: -5,
                }],
                ranges: vec![(1, 5), (7, 70_000)],
                archive: "ab".repeat(32),
                archive_size: 70_001,
                authorized_by: "privacy officer".into(),
            }),
            Record::LegalHold(LegalHold {
                to: Some(2),
                from: Some(1),
                scope: HoldScope::Time,
                reason: "litigation".into(),
                subject: None,
            }),
            Record::LegalHold(LegalHold {
                to: None,
                from: None,
                scope: HoldScope::Patient,
                reason: "r".into(),
                subject: Some("k1:abcd".into()),
            }),
            Record::HoldRelease(HoldRelease {
                hold: 9,
                reason: "settled".into(),
            }),
            Record::RetentionCheck(RetentionCheck {
                ok: false,
                head: Some(3),
                as_of: 10,
                entries: 4,
                findings: vec!["gap".into()],
                violations: 1,
            }),
        ];
        for record in records {
            let payload = event_with(record);
            let bytes = payload.encode();
            check_canonical(&bytes).unwrap();
            assert_eq!(Payload::decode(&bytes).unwrap(), payload);
        }
    }

    #[test]
    fn an_event_without_a_record_keeps_its_old_bytes() {
        // The field is omitted when absent: events written before records existed, and every
        // client event, encode exactly as before.
        let Payload::Event(mut e) = event_with(Record::HoldRelease(HoldRelease {
            hold: 1,
            reason: "r".into(),
        })) else {
            unreachable!()
        };
        e.record = None;
        let bytes = Payload::Event(e).encode();
        assert!(!bytes.windows(6).any(|w| w == b"record"));
    }
}
