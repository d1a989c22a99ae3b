//! The values the read model keeps and the reports are built from. Every one of them is a
//! deterministic function of verified entries (and the configuration), so a rebuild gives the
//! same rows, and a report can re-derive an [`Access`] from the entry it cites and compare.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike, Weekday};
use ledger::{Digest, Seq, StoredEvent, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::AnalyticsConfig;

/// One PHI access, as projected from a verified entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub seq: Seq,
    /// Hex of the entry hash: the evidence a report line cites.
    pub entry_hash: String,
    /// RFC 3339, UTC, microseconds.
    pub occurred_at: String,
    /// Actor's user pseudonym.
    pub user: Option<String>,
    pub role: Option<String>,
    pub action: String,
    pub outcome: String,
    pub source: String,
    pub resource_type: Option<String>,
    /// Patient pseudonym: keyed (`<key id>:<hex>`) or legacy (`sha256:<hex>`).
    pub patient: Option<String>,
}

impl Access {
    /// The access `event` records, or `None` when it is not a PHI access: an event with
    /// `phi: true`, or whose resource type is one of the configured clinical types.
    pub fn from_event(
        seq: Seq,
        entry_hash: &Digest,
        event: &StoredEvent,
        config: &AnalyticsConfig,
    ) -> Option<Access> {
        is_phi_access(event, config).then(|| Access::of_event(seq, entry_hash, event))
    }

    /// What `event` says as an access, whether or not it is a PHI access (the caller knows it
    /// is: e.g. a `user_access` row listed it).
    pub fn of_event(seq: Seq, entry_hash: &Digest, event: &StoredEvent) -> Access {
        Access {
            seq,
            entry_hash: entry_hash.to_hex(),
            occurred_at: Timestamp(event.occurred_at).to_rfc3339(),
            user: event.actor.user_id.clone(),
            role: event.actor.role.clone(),
            action: event.action.clone(),
            outcome: event.outcome.clone(),
            source: event.source.clone(),
            resource_type: event.resource.as_ref().map(|r| r.kind.clone()),
            patient: patient_of(event).map(str::to_owned),
        }
    }
}

/// Hex digits of the entry hash a `patient` row keeps ([`PatientAccess`]): 64 bits.
pub const ENTRY_HASH_PREFIX_HEX: usize = 16;

/// The value of a `patient` row: the patient's pseudonym and the first
/// [`ENTRY_HASH_PREFIX_HEX`] hex digits of the entry hash of the access it indexes, nothing
/// else. The row's key is the month and the patient's bucket
/// ([`crate::projection::Month::patient_key`]), its `ord` the entry's seq and its `at` the
/// time; everything else an access report shows is read from the cited entry in the ledger,
/// which every report re-reads and re-verifies anyway.
///
/// **Why so little.** These rows are one per PHI access, most of the read model. Holding the
/// access's fields (actor, role, action, outcome, source, type and the full hash, 264 bytes of
/// JSON on the benchmark's traffic) made the read model larger than the ledger itself, and its
/// writes are what bound the projection (docs/PERFORMANCE.md, session 11). The prefix still lets
/// a report tell that the entry it reads is not the one the projection verified (a chain
/// rewritten after projection, with hashes recomputed): [`PatientAccess::mismatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientAccess {
    /// The patient's pseudonym: keyed (`<key id>:<hex>`) or legacy (`sha256:<hex>`).
    #[serde(rename = "p")]
    pub patient: String,
    /// The entry hash's first hex digits.
    #[serde(rename = "h")]
    pub entry_hash_prefix: String,
}

impl PatientAccess {
    /// The row of an access to `patient` recorded in the entry with `entry_hash`.
    pub fn of(patient: &str, entry_hash: &Digest) -> PatientAccess {
        let mut hex = entry_hash.to_hex();
        hex.truncate(ENTRY_HASH_PREFIX_HEX);
        PatientAccess {
            patient: patient.to_owned(),
            entry_hash_prefix: hex,
        }
    }

    /// Why the row (this value, with the row's `at`) does not describe `access`, or `None` when
    /// it does: the same patient, time and hash prefix.
    pub fn mismatch(&self, at: Timestamp, access: &Access) -> Option<String> {
        if access.patient.as_deref() != Some(self.patient.as_str()) {
            Some("the entry is not an access to the row's patient".to_owned())
        } else if access.occurred_at != at.to_rfc3339() {
            Some("the entry's time is not the row's".to_owned())
        } else if self.entry_hash_prefix.len() != ENTRY_HASH_PREFIX_HEX
            || !access.entry_hash.starts_with(&self.entry_hash_prefix)
        {
            Some("the entry's hash is not the one the row was made from".to_owned())
        } else {
            None
        }
    }
}

/// The value of a `user_access` row: the `seq`s of PHI accesses by one user in one UTC month,
/// ascending, as one commit of the projection found them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAccesses {
    pub seqs: Vec<Seq>,
}

/// `phi: true`, or a clinical resource type.
pub fn is_phi_access(event: &StoredEvent, config: &AnalyticsConfig) -> bool {
    event.phi
        || event.resource.as_ref().is_some_and(|r| {
            config
                .clinical_resource_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&r.kind))
        })
}

/// The patient an event concerns: its `patient_id`, else the id of a `Patient` resource.
pub fn patient_of(event: &StoredEvent) -> Option<&str> {
    event.patient_id.as_deref().or_else(|| {
        event
            .resource
            .as_ref()
            .filter(|r| r.kind.eq_ignore_ascii_case("Patient"))
            .and_then(|r| r.id.as_deref())
    })
}

/// A failed login: a `login` that did not succeed, or `login_failed`.
pub fn is_failed_login(event: &StoredEvent) -> bool {
    event.action == "login_failed" || (event.action == "login" && event.outcome != "success")
}

/// Counts of one site-local day. Every field is a sum, so two partial rows of one day (the
/// open day's row and a late row) add up with [`DayTotals::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    /// `YYYY-MM-DD`, site time.
    pub day: String,
    /// The `seq` range the day's events came from (for the integrity section).
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub events: u64,
    pub logins: u64,
    pub failed_logins: u64,
    pub phi_accesses: u64,
    pub after_hours_phi: u64,
    pub exports: u64,
    pub phi_by_role: BTreeMap<String, u64>,
    pub phi_by_action: BTreeMap<String, u64>,
    pub phi_by_resource_type: BTreeMap<String, u64>,
    pub phi_by_outcome: BTreeMap<String, u64>,
    pub events_by_source: BTreeMap<String, u64>,
    pub logins_by_source: BTreeMap<String, u64>,
    pub failed_logins_by_source: BTreeMap<String, u64>,
    /// Configured change actions (role, rule, configuration, token changes) by action.
    pub changes: BTreeMap<String, u64>,
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// The `seq` span of two partial rows, each `(events, first_seq, last_seq)`; a row without
/// events has no span.
fn merge_span(a: (u64, Seq, Seq), b: (u64, Seq, Seq)) -> (Seq, Seq) {
    match (a.0, b.0) {
        (0, _) => (b.1, b.2),
        (_, 0) => (a.1, a.2),
        _ => (a.1.min(b.1), a.2.max(b.2)),
    }
}

impl DayTotals {
    pub fn merge(&mut self, other: &DayTotals) {
        (self.first_seq, self.last_seq) = merge_span(
            (self.events, self.first_seq, self.last_seq),
            (other.events, other.first_seq, other.last_seq),
        );
        if self.day.is_empty() {
            self.day = other.day.clone();
        }
        self.events += other.events;
        self.logins += other.logins;
        self.failed_logins += other.failed_logins;
        self.phi_accesses += other.phi_accesses;
        self.after_hours_phi += other.after_hours_phi;
        self.exports += other.exports;
        add_map(&mut self.phi_by_role, &other.phi_by_role);
        add_map(&mut self.phi_by_action, &other.phi_by_action);
        add_map(&mut self.phi_by_resource_type, &other.phi_by_resource_type);
        add_map(&mut self.phi_by_outcome, &other.phi_by_outcome);
        add_map(&mut self.events_by_source, &other.events_by_source);
        add_map(&mut self.logins_by_source, &other.logins_by_source);
        add_map(
            &mut self.failed_logins_by_source,
            &other.failed_logins_by_source,
        );
        add_map(&mut self.changes, &other.changes);
    }
}

/// One user's activity on one site-local day: the figures the unusual-pattern statistics use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDay {
    /// User pseudonym. Left out of `user_day` rows, whose key it is ([`UserDay::row`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `YYYY-MM-DD`, site time. Left out of `user_day` rows, whose `at` is its start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub day: String,
    /// The role of the user's latest event that day.
    pub role: Option<String>,
    pub events: u64,
    pub logins: u64,
    pub failed_logins: u64,
    pub phi_accesses: u64,
    /// PHI accesses of the read class (read, record_view, search, export, ...).
    pub phi_reads: u64,
    /// Distinct patients whose PHI the user accessed that day. Exact for events that arrive
    /// while the day is open (`late_days`); a late row counts its patients on its own, so a
    /// merged figure is an upper bound only when events arrived that late.
    pub distinct_patients: u64,
    pub exports: u64,
    /// Events with an outcome other than `success`.
    pub failures: u64,
    pub after_hours_phi: u64,
    pub first_seq: Seq,
    pub last_seq: Seq,
}

impl UserDay {
    /// The value of its `user_day` or `user_day_late` row: the figures without the user and
    /// the day, which the row's key and `at` hold (they were a third of its bytes, and these
    /// rows are rewritten at every commit while their day is open). Readers put them back.
    pub fn row(&self) -> UserDay {
        UserDay {
            user: String::new(),
            day: String::new(),
            ..self.clone()
        }
    }

    pub fn merge(&mut self, other: &UserDay) {
        (self.first_seq, self.last_seq) = merge_span(
            (self.events, self.first_seq, self.last_seq),
            (other.events, other.first_seq, other.last_seq),
        );
        if self.user.is_empty() {
            self.user = other.user.clone();
        }
        if self.day.is_empty() {
            self.day = other.day.clone();
        }
        if other.role.is_some() {
            self.role = other.role.clone();
        }
        self.events += other.events;
        self.logins += other.logins;
        self.failed_logins += other.failed_logins;
        self.phi_accesses += other.phi_accesses;
        self.phi_reads += other.phi_reads;
        self.distinct_patients += other.distinct_patients;
        self.exports += other.exports;
        self.failures += other.failures;
        self.after_hours_phi += other.after_hours_phi;
    }

    /// Share of the day's PHI accesses made outside working hours (0 with no PHI access).
    pub fn after_hours_share(&self) -> f64 {
        if self.phi_accesses == 0 {
            0.0
        } else {
            self.after_hours_phi as f64 / self.phi_accesses as f64
        }
    }
}

/// One system change (role, rule, configuration or token change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: Seq,
    pub entry_hash: String,
    pub occurred_at: String,
    pub action: String,
    pub user: Option<String>,
    pub role: Option<String>,
    pub outcome: String,
    pub source: String,
    pub resource_type: Option<String>,
    /// Free text, screened for PHI on ingest.
    pub detail: Option<String>,
}

/// The site's calendar: which local day an instant falls on, and whether it is within working
/// hours. Pure, so the projection and the reports agree.
#[derive(Debug, Clone)]
pub struct SiteCalendar {
    tz: chrono_tz::Tz,
    start_hour: u32,
    end_hour: u32,
    weekdays_only: bool,
}

impl SiteCalendar {
    pub fn new(config: &AnalyticsConfig) -> SiteCalendar {
        SiteCalendar {
            tz: config.tz(),
            start_hour: config.site.start_hour,
            end_hour: config.site.end_hour,
            weekdays_only: config.site.weekdays_only,
        }
    }

    /// The site-local date of `at`.
    pub fn date(&self, at: Timestamp) -> NaiveDate {
        at.to_datetime().with_timezone(&self.tz).date_naive()
    }

    /// Days since 1970-01-01 of the site-local date of `at` (the read model's `ord` for days).
    pub fn day_number(&self, at: Timestamp) -> i64 {
        day_number(self.date(at))
    }

    /// The instant the site-local `date` begins (the read model's `at` for day rows). On a
    /// day that begins in a DST gap, the earliest valid instant.
    pub fn start_of(&self, date: NaiveDate) -> Timestamp {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        let local = self
            .tz
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                self.tz
                    .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                    .earliest()
            })
            .expect("a day has a first instant");
        Timestamp(local.with_timezone(&chrono::Utc).timestamp_micros())
    }

    /// Outside working hours, site time (weekends too when `weekdays_only`).
    pub fn is_after_hours(&self, at: Timestamp) -> bool {
        let local = at.to_datetime().with_timezone(&self.tz);
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        (self.weekdays_only && weekend)
            || local.hour() < self.start_hour
            || local.hour() >= self.end_hour
    }
}

/// Days since 1970-01-01.
pub fn day_number(date: NaiveDate) -> i64 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
}

/// The date `n` days after 1970-01-01.
pub fn date_of_day_number(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_working_hours_follow_the_site_time_zone() {
        let cal = SiteCalendar::new(&AnalyticsConfig::default()); // America/New_York
                                                                  // 2026-11-23T03:00Z is 22:00 on the 22nd in New York (a Sunday).
        let t = Timestamp::parse_rfc3339("2026-11-23T03:00:00Z").unwrap();
        assert_eq!(cal.date(t).to_string(), "2026-11-22");
        assert!(cal.is_after_hours(t));
        // Monday 2026-11-23 10:00 in New York.
        let t = Timestamp::parse_rfc3339("2026-11-23T15:00:00Z").unwrap();
        assert!(!cal.is_after_hours(t));
        assert_eq!(date_of_day_number(cal.day_number(t)), cal.date(t));
        let start = cal.start_of(cal.date(t));
        assert_eq!(start.to_rfc3339(), "2026-11-23T05:00:00.000000Z");
    }
}
