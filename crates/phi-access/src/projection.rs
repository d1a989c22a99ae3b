//! The `phi-access` projection: turns the verified stream into the read model that the
//! accounting of disclosures, the per-user questions and the compliance report are read from.
//! It appends no entries of its own; everything it writes is derived data that a rebuild
//! reproduces row for row.
//!
//! Read model (projection `phi-access`), chosen so that every question the reports ask is an
//! index range read (the stores index rows by `(table, key, at)` and by `(table, at)`):
//!
//! | table           | key            | ord        | at           | value                   |
//! |-----------------|----------------|------------|--------------|-------------------------|
//! | `patient`       | month/bucket   | entry seq  | occurred_at  | [`PatientAccess`]       |
//! | `user_access`   | month/user     | first seq  | month's start | [`UserAccesses`]       |
//! | `day`           | `YYYY-MM-DD`   | 0          | day's start  | [`DayTotals`]           |
//! | `user_day`      | user pseud.    | day number | day's start  | [`UserDay`]             |
//! | `day_late`      | `YYYY-MM-DD`   | entry seq  | day's start  | one event's [`DayTotals`] |
//! | `user_day_late` | user pseud.    | entry seq  | day's start  | one event's [`UserDay`] |
//! | `change`        | action         | entry seq  | occurred_at  | [`Change`]              |
//!
//! ("day's start": the instant the site-local day begins, [`SiteCalendar::start_of`];
//! "month/bucket": [`Month::patient_key`], the UTC month of `occurred_at` and the patient's
//! bucket, one of [`PATIENT_BUCKETS`] picked by a digest of the pseudonym, e.g. `2026-11/9f2`;
//! "month/user": [`access_key`], the UTC month and the pseudonym, e.g. `2026-11/k1:9f2c…`.)
//!
//! - One patient's six years (the accounting of disclosures) is `patient` by key and time,
//!   one key read per month: a PHI access writes one row under its month and its patient's
//!   bucket, keyed (`<key id>:<hex>`) or legacy (`sha256:<hex>`) pseudonyms alike, and the
//!   reader keeps the rows of the bucket that name the patient. A patient known under both
//!   pseudonyms is two key reads per month (one when both fall in one bucket). The row holds
//!   the access's seq (`ord`), time (`at`), patient and a prefix of its entry hash, no more:
//!   the access is read from the ledger by `seq`, as a report re-reads and re-verifies every
//!   entry it cites anyway.
//! - One user's month is `user_access` by key (one key read per month), then the listed
//!   entries from the ledger by `seq` (primary-key reads), each decoded into its [`Access`].
//! - A period's aggregates are `day` and `user_day` by time (`at` is the instant the site-local
//!   day begins; `ord` of `user_day` is the day number, days since 1970-01-01, so a user's
//!   days are also one key read).
//! - The system changes of a period are `change` by time.
//!
//! **Why the month leads the key.** Pseudonyms are random, so rows keyed by the pseudonym
//! alone land on random pages of the stores' by-key indexes, and a commit rewrites a page for
//! nearly every row it inserts, anywhere in an index that grows with the ledger: the
//! projection slows as the ledger grows. With the month first, a commit's inserts fall in the
//! regions of the few months its entries span, which stay small and cached; measured with
//! `scripts/bench-phi --events 2000000` (2 cores, embedded store, 2026-12-02, the projection
//! from zero on a fresh ledger): 14 600 entries/s with the pseudonym alone, 22 800/s with the
//! month first (and 23 900/s at 10 million entries with the runner's overlapped commits, where
//! the pseudonym-keyed rows had fallen to 7 600/s on the machine of the earlier figures). The
//! price is one key read per month of a patient's range (73 for six years), bounded by the
//! table's own time span ([`crate::read`]).
//!
//! **Why `patient` rows are keyed by bucket, not by pseudonym.** Within a month, rows keyed by
//! the pseudonym still land at random places of the month's region of the by-key index, and
//! that region grows with the month: while following a busy head, each commit rewrote about
//! one index page per row, and the pages rewritten went to the write-ahead log and again to
//! the file at the checkpoint (most of the projection's time, in a profile of 64 live
//! appenders on the embedded store). Keyed by (month, bucket) with the seq as `ord`, a row is
//! appended at the end of its bucket: a commit writes the tail page of each bucket that got a
//! row, at most [`PATIENT_BUCKETS`], however large the month, and rows fill pages in order.
//! The price is on the reading side: a key read returns the bucket's rows of the month, about
//! 1/4096 of its accesses, and the reader drops those of other patients (about 2 500 rows for
//! six years of ten million accesses). Measured in docs/PERFORMANCE.md (session 13).
//!
//! Days and working hours are the site's ([`SiteCalendar`]). Every entry with an event counts
//! in the aggregates, the ledger's own entries (e.g. `security_event`, by source
//! `auditledger-security`) included; the genesis entry and purged payloads count nowhere. The
//! rows depend on the configuration (clinical types, export and change actions, site calendar,
//! `late_days`): the state carries its fingerprint, and a runner opened under another is
//! refused with a message to rebuild, so old and new rows never mix definitions.
//!
//! Cost: a PHI access with a patient writes one row as it is applied (`patient`, holding only
//! the pseudonym and an entry-hash prefix besides its key, `ord` and `at`: [`PatientAccess`]);
//! a change one; a late event one or two; once per commit, the aggregates one row per day and
//! per user-day that changed, and one `user_access` row per user and month with accesses
//! since the last commit (their seqs).
//!
//! **Why a user's accesses are seqs per commit, not a row per access.** Until state version 3
//! each access also wrote a `user` row, a second copy of the access. Rows were 2.2 KB of read
//! model per ledger entry (the ledger itself 0.83 KB), and writing them is what bounds the
//! projection: at catch-up, the disk's write bandwidth; while following the head, each commit
//! rewriting about one index page per row (docs/PERFORMANCE.md, session 7). A `user_access`
//! row lists a user's accesses of one month as one commit found them, so a commit writes a
//! row per active user rather than per access, and a user's month is still index reads. Its
//! rows depend on where commits fell (a rebuild may cut them differently); the accesses they
//! list do not.
//!
//! **Open days and late events.** Aggregates of a day are kept in memory while the day is
//! *open*: while its day number is at least the newest day number seen minus `late_days`
//! ("newest" is by `occurred_at`, over every event applied so far, but never more than
//! [`FUTURE_DAYS`] past the entry's `recorded_at`). They are written once per
//! commit, in [`Projection::flush`], for the aggregates that changed since the last flush, and
//! a day that has closed is dropped from memory only after that write, so its `day` and
//! `user_day` rows are final. An event for a day that is already closed is a *late* event: it
//! is still counted, in rows of its own contribution, `day_late` and `user_day_late` (`ord` =
//! its `seq`), which readers add to the day's row ([`DayTotals::merge`],
//! [`UserDay::merge`]; see [`crate::read`]). Every figure is a sum, so the merged figures are
//! exact, except `UserDay::distinct_patients`: a late row counts its own patient, which the
//! day's row may already have counted (an upper bound then). Whether an event is late depends
//! only on the events before it, never on where commits fall, so a rebuild, or a run
//! interrupted at any point, writes the same rows.
//!
//! **State** ([`Projection::snapshot`]): the newest day number and the open days' aggregates,
//! with each open user-day's set of patients as 64-bit digests of their pseudonyms (the first 8
//! bytes of BLAKE3: deterministic everywhere; two patients of one user-day colliding is a
//! 2^-64 event per pair and would undercount that day by one). CBOR, versioned, sorted.
//!
//! [`PatientAccess`]: crate::model::PatientAccess

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use ledger::projection::{Effects, Projection, VerifiedEntry};
use ledger::{Action, ActionClass, ReadModelRow, RowChange, Seq, StoredEvent, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::AnalyticsConfig;
use crate::model::{
    date_of_day_number, day_number, is_failed_login, Access, Change, DayTotals, PatientAccess,
    SiteCalendar, UserAccesses, UserDay,
};

/// Entries applied between commits during a catch-up. Each B-tree page a commit touches is
/// written once per commit, so the more rows per commit, the more share a page. Measured with
/// `scripts/bench-phi --events 2000000 --commit-every N` on one ledger (2 cores, embedded store,
/// 2026-12-02), when the `patient` and `user` rows were still keyed by the pseudonym alone
/// (random pages): 16 384 (the runner's default) 5 300 entries/s in two runs, 65 536 8 900/s,
/// 262 144 11 500/s. Keyed by month first, a commit's rows share pages anyway; not re-measured.
/// The price is memory for the pending rows (about 50 MB at 65 536) and the work redone after
/// a crash; entries are read in smaller slices, so they do not add to it.
pub const COMMIT_EVERY: usize = 65_536;

/// The projection's name in the store.
pub const NAME: &str = "phi-access";
/// How far past the ledger clock (`recorded_at`) an event's day may move the newest day (clock
/// skew between sources and the ledger): an event dated years ahead would otherwise make every
/// later event late.
pub const FUTURE_DAYS: i64 = 1;

/// Read-model tables (see the module doc).
pub const PATIENTS: &str = "patient";
pub const USER_ACCESSES: &str = "user_access";
pub const DAYS: &str = "day";
pub const USER_DAYS: &str = "user_day";
pub const DAYS_LATE: &str = "day_late";
pub const USER_DAYS_LATE: &str = "user_day_late";
pub const CHANGES: &str = "change";

/// The format of the saved state; a state of another version is refused (rebuild), and so is
/// one saved under another configuration of the rows ([`AnalyticsConfig::rows_fingerprint`]).
/// Version 2 keyed the `patient` and `user` rows by month and pseudonym ([`access_key`]) where
/// version 1 keyed them by the pseudonym alone; version 3 keeps the access without what the
/// key holds in `patient` rows, replaces `user` rows with `user_access` rows, and saves the
/// configuration's fingerprint; version 4 keeps only an entry-hash prefix in `patient` rows
/// (the access itself is read from the cited entry); version 5 keys `patient` rows by month
/// and bucket ([`Month::patient_key`]) and names the patient in the row.
pub const STATE_VERSION: u32 = 5;

/// How many buckets a month's `patient` rows are spread over (see the module doc): a commit
/// writes at most this many tail pages of the by-key index, and a key read returns about
/// 1/`PATIENT_BUCKETS` of the month's accesses.
pub const PATIENT_BUCKETS: u64 = 4096;

/// A UTC calendar month, the bucket of the `patient` and `user_access` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The UTC month `at` falls in.
    pub fn of(at: Timestamp) -> Month {
        let d = at.to_datetime();
        Month {
            year: d.year(),
            month: d.month(),
        }
    }

    fn next(self) -> Month {
        if self.month >= 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                month: self.month + 1,
                ..self
            }
        }
    }

    /// Every month with an instant in `[from, to)`, ascending (none when `from >= to`).
    pub fn span(from: Timestamp, to: Timestamp) -> Vec<Month> {
        if from >= to {
            return Vec::new();
        }
        let last = Month::of(Timestamp(to.0 - 1));
        let mut months = vec![Month::of(from)];
        while let Some(&m) = months.last().filter(|m| **m < last) {
            months.push(m.next());
        }
        months
    }

    /// The key of `pseudonym`'s rows of this month in the `user_access` table.
    pub fn key(self, pseudonym: &str) -> String {
        format!("{:04}-{:02}/{pseudonym}", self.year, self.month)
    }

    /// The key of the `patient` rows of this month that may name `pseudonym`: the month and
    /// the patient's bucket ([`patient_bucket`]), three hex digits.
    pub fn patient_key(self, pseudonym: &str) -> String {
        self.bucket_key(patient_bucket(pseudonym))
    }

    /// [`Month::patient_key`] of a bucket.
    fn bucket_key(self, bucket: u64) -> String {
        format!("{:04}-{:02}/{bucket:03x}", self.year, self.month)
    }

    /// The month's first instant (UTC): the `at` of its `user_access` rows.
    pub fn start(self) -> Timestamp {
        let first = NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("a month of a valid timestamp has a first day");
        Timestamp(first.and_utc().timestamp_micros())
    }
}

/// The key of the `user_access` row of an access at `at` by the user `pseudonym`: the UTC
/// month, then the pseudonym (see the module doc for why).
pub fn access_key(pseudonym: &str, at: Timestamp) -> String {
    Month::of(at).key(pseudonym)
}

/// The bucket of a patient's `patient` rows, below [`PATIENT_BUCKETS`]: the top bits of
/// [`patient_digest`], so pseudonyms spread evenly and every platform and run agrees.
pub fn patient_bucket(pseudonym: &str) -> u64 {
    bucket_of(patient_digest(pseudonym))
}

/// The bucket of a patient whose [`patient_digest`] is `digest`.
fn bucket_of(digest: u64) -> u64 {
    digest >> (64 - PATIENT_BUCKETS.trailing_zeros())
}

/// The PHI-access projection. `config` must have passed [`AnalyticsConfig::validate`].
pub struct PhiAccessProjection {
    config: AnalyticsConfig,
    cal: SiteCalendar,
    /// The newest site-local day number seen (`None` before the first event), capped at
    /// [`FUTURE_DAYS`] past the entry's `recorded_at`.
    newest_day: Option<i64>,
    /// Open days (and closed ones not flushed yet), by day number.
    days: BTreeMap<i64, OpenDay>,
    /// The seqs of PHI accesses applied since the last flush, by UTC month and user: the next
    /// `user_access` rows. Empty after every flush, so not part of the state.
    user_accesses: BTreeMap<(Month, String), Vec<Seq>>,
}

/// One day's running aggregates.
#[derive(Debug, Clone)]
struct OpenDay {
    totals: DayTotals,
    dirty: bool,
    users: BTreeMap<String, OpenUserDay>,
}

#[derive(Debug, Clone)]
struct OpenUserDay {
    day: UserDay,
    /// Digests of the patients whose PHI the user accessed that day ([`patient_digest`]).
    patients: BTreeSet<u64>,
    dirty: bool,
}

/// 64 bits of a patient pseudonym's BLAKE3 digest: the same on every platform and run, unlike
/// std's randomly seeded hashers.
fn patient_digest(pseudonym: &str) -> u64 {
    let hash = blake3::hash(pseudonym.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// What one event is, for the aggregates.
struct Facts<'a> {
    seq: Seq,
    event: &'a StoredEvent,
    access: Option<&'a Access>,
    after_hours: bool,
    login: bool,
    failed_login: bool,
    export: bool,
    change: bool,
    phi_read: bool,
    /// The [`patient_digest`] of a PHI access's patient: computed once, for the `patient` row's
    /// bucket and the user-day's distinct patients.
    patient: Option<u64>,
}

impl<'a> Facts<'a> {
    fn of(
        seq: Seq,
        event: &'a StoredEvent,
        access: Option<&'a Access>,
        cal: &SiteCalendar,
        config: &AnalyticsConfig,
    ) -> Facts<'a> {
        let listed = |list: &[String]| list.iter().any(|a| a.eq_ignore_ascii_case(&event.action));
        Facts {
            seq,
            event,
            access,
            after_hours: access.is_some() && cal.is_after_hours(Timestamp(event.occurred_at)),
            login: event.action == "login" || event.action == "login_failed",
            failed_login: is_failed_login(event),
            export: listed(&config.export_actions),
            change: listed(&config.change_actions),
            phi_read: access.is_some()
                && Action::parse(&event.action).map(|a| a.class()) == Some(ActionClass::Read),
            patient: access
                .and_then(|a| a.patient.as_deref())
                .map(patient_digest),
        }
    }

    fn add_to_day(&self, t: &mut DayTotals) {
        let e = self.event;
        if t.events == 0 {
            t.first_seq = self.seq;
        }
        t.first_seq = t.first_seq.min(self.seq);
        t.last_seq = t.last_seq.max(self.seq);
        t.events += 1;
        bump(&mut t.events_by_source, &e.source);
        if self.login {
            t.logins += 1;
            bump(&mut t.logins_by_source, &e.source);
        }
        if self.failed_login {
            t.failed_logins += 1;
            bump(&mut t.failed_logins_by_source, &e.source);
        }
        if self.export {
            t.exports += 1;
        }
        if self.change {
            bump(&mut t.changes, &e.action);
        }
        if let Some(a) = self.access {
            t.phi_accesses += 1;
            if self.after_hours {
                t.after_hours_phi += 1;
            }
            bump(&mut t.phi_by_role, a.role.as_deref().unwrap_or(NONE));
            bump(&mut t.phi_by_action, &a.action);
            bump(
                &mut t.phi_by_resource_type,
                a.resource_type.as_deref().unwrap_or(NONE),
            );
            bump(&mut t.phi_by_outcome, &a.outcome);
        }
    }

    /// Adds everything but `distinct_patients`, which depends on what the day saw before.
    fn add_to_user_day(&self, u: &mut UserDay) {
        let e = self.event;
        if u.events == 0 {
            u.first_seq = self.seq;
        }
        u.first_seq = u.first_seq.min(self.seq);
        u.last_seq = u.last_seq.max(self.seq);
        u.events += 1;
        if e.actor.role.is_some() {
            u.role = e.actor.role.clone();
        }
        if self.login {
            u.logins += 1;
        }
        if self.failed_login {
            u.failed_logins += 1;
        }
        if self.export {
            u.exports += 1;
        }
        if e.outcome != "success" {
            u.failures += 1;
        }
        if self.access.is_some() {
            u.phi_accesses += 1;
            if self.phi_read {
                u.phi_reads += 1;
            }
            if self.after_hours {
                u.after_hours_phi += 1;
            }
        }
    }
}

/// The key for "no role" and "no resource type" in the per-day breakdowns.
const NONE: &str = "(none)";

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

fn put<T: Serialize>(table: &str, key: &str, ord: i64, at: Timestamp, value: &T) -> RowChange {
    RowChange::Put(ReadModelRow {
        table: table.to_owned(),
        key: key.to_owned(),
        ord,
        at,
        // Serializing plain structs of strings, integers and string-keyed maps cannot fail.
        value: serde_json::to_string(value).expect("read-model values serialize"),
    })
}

impl PhiAccessProjection {
    pub fn new(config: AnalyticsConfig) -> PhiAccessProjection {
        PhiAccessProjection {
            cal: SiteCalendar::new(&config),
            config,
            newest_day: None,
            days: BTreeMap::new(),
            user_accesses: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &AnalyticsConfig {
        &self.config
    }

    /// The oldest open day number, given the newest seen.
    fn oldest_open(&self, newest: i64) -> i64 {
        newest.saturating_sub(i64::from(self.config.late_days))
    }

    /// Counts `f` in the open aggregates of day `n`.
    fn aggregate(&mut self, n: i64, f: &Facts<'_>) {
        let day = self.days.entry(n).or_insert_with(|| OpenDay {
            totals: DayTotals {
                day: date_of_day_number(n).to_string(),
                ..DayTotals::default()
            },
            dirty: false,
            users: BTreeMap::new(),
        });
        f.add_to_day(&mut day.totals);
        day.dirty = true;
        let Some(user) = f.event.actor.user_id.as_deref() else {
            return;
        };
        let u = match day.users.get_mut(user) {
            Some(u) => u,
            None => day
                .users
                .entry(user.to_owned())
                .or_insert_with(|| OpenUserDay {
                    day: UserDay {
                        user: user.to_owned(),
                        day: day.totals.day.clone(),
                        ..UserDay::default()
                    },
                    patients: BTreeSet::new(),
                    dirty: false,
                }),
        };
        f.add_to_user_day(&mut u.day);
        if let Some(p) = f.patient {
            u.patients.insert(p);
            u.day.distinct_patients = u.patients.len() as u64;
        }
        u.dirty = true;
    }

    /// Writes the rows of a late event's own contribution to day `date`.
    fn late(&self, date: NaiveDate, f: &Facts<'_>, effects: &mut Effects) {
        let key = date.to_string();
        let start = self.cal.start_of(date);
        let ord = f.seq as i64;
        let mut totals = DayTotals {
            day: key.clone(),
            ..DayTotals::default()
        };
        f.add_to_day(&mut totals);
        effects
            .changes
            .push(put(DAYS_LATE, &key, ord, start, &totals));
        if let Some(user) = f.event.actor.user_id.as_deref() {
            let mut u = UserDay {
                user: user.to_owned(),
                day: key,
                ..UserDay::default()
            };
            f.add_to_user_day(&mut u);
            u.distinct_patients = u64::from(f.patient.is_some());
            effects
                .changes
                .push(put(USER_DAYS_LATE, user, ord, start, &u.row()));
        }
    }
}

impl Projection for PhiAccessProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn commit_every(&self) -> usize {
        COMMIT_EVERY
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let state: State = ledger::projection::decode_state(NAME, STATE_VERSION, state)?;
        if state.config[..] != self.config.rows_fingerprint() {
            return Err(
                "it was saved under another phi-access configuration (clinical_resource_types, \
                 export_actions, change_actions, late_days or [site] changed since), and rows of \
                 both would mix definitions"
                    .to_owned(),
            );
        }
        self.newest_day = state.newest_day;
        self.user_accesses.clear();
        self.days = state
            .days
            .into_iter()
            .map(|d| {
                let date = date_of_day_number(d.0).to_string();
                let users =
                    d.3.into_iter()
                        .map(|u| u.into_open(&date))
                        .collect::<Result<BTreeMap<_, _>, _>>()?;
                Ok((
                    d.0,
                    OpenDay {
                        totals: d.2,
                        dirty: d.1,
                        users,
                    },
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = State {
            config: self.config.rows_fingerprint().to_vec(),
            newest_day: self.newest_day,
            days: self
                .days
                .iter()
                .map(|(n, d)| {
                    DayState(
                        *n,
                        d.dirty,
                        d.totals.clone(),
                        d.users.iter().map(|(k, u)| UserState::of(k, u)).collect(),
                    )
                })
                .collect(),
        };
        ledger::projection::encode_state(STATE_VERSION, &state)
    }

    fn apply(&mut self, entry: &VerifiedEntry<'_>, effects: &mut Effects) {
        let Some(e) = entry.event else { return };
        let at = Timestamp(e.occurred_at);
        let ord = entry.seq as i64;
        let access = Access::from_event(entry.seq, &entry.entry_hash, e, &self.config);
        let facts = Facts::of(entry.seq, e, access.as_ref(), &self.cal, &self.config);
        if let Some(a) = &access {
            let month = Month::of(at);
            if let (Some(patient), Some(digest)) = (&a.patient, facts.patient) {
                effects.changes.push(put(
                    PATIENTS,
                    &month.bucket_key(bucket_of(digest)),
                    ord,
                    at,
                    &PatientAccess::of(patient, &entry.entry_hash),
                ));
            }
            if let Some(user) = &a.user {
                self.user_accesses
                    .entry((month, user.clone()))
                    .or_default()
                    .push(entry.seq);
            }
        }
        if facts.change {
            let change = Change {
                seq: entry.seq,
                entry_hash: entry.entry_hash.to_hex(),
                occurred_at: at.to_rfc3339(),
                action: e.action.clone(),
                user: e.actor.user_id.clone(),
                role: e.actor.role.clone(),
                outcome: e.outcome.clone(),
                source: e.source.clone(),
                resource_type: e.resource.as_ref().map(|r| r.kind.clone()),
                detail: e.detail.clone(),
            };
            effects
                .changes
                .push(put(CHANGES, &e.action, ord, at, &change));
        }
        let date = self.cal.date(at);
        let n = day_number(date);
        // A clock far ahead at one source must not close every other day: "newest" moves at
        // most to FUTURE_DAYS past the ledger's own clock.
        let horizon = self.cal.day_number(Timestamp(
            entry
                .recorded_at
                .0
                .saturating_add(FUTURE_DAYS * 86_400_000_000),
        ));
        let newest = self
            .newest_day
            .map_or(n.min(horizon), |d| d.max(n.min(horizon)));
        self.newest_day = Some(newest);
        if n < self.oldest_open(newest) {
            self.late(date, &facts, effects);
        } else {
            self.aggregate(n, &facts);
        }
    }

    fn flush(&mut self, effects: &mut Effects) {
        for ((month, user), seqs) in std::mem::take(&mut self.user_accesses) {
            // Entries are applied in seq order, so `seqs` ascends and starts the row.
            let ord = seqs[0] as i64;
            let row = UserAccesses { seqs };
            effects.changes.push(put(
                USER_ACCESSES,
                &month.key(&user),
                ord,
                month.start(),
                &row,
            ));
        }
        for (n, day) in &mut self.days {
            let date = date_of_day_number(*n);
            let start = self.cal.start_of(date);
            if day.dirty {
                effects
                    .changes
                    .push(put(DAYS, &day.totals.day, 0, start, &day.totals));
                day.dirty = false;
            }
            for (user, u) in &mut day.users {
                if u.dirty {
                    effects
                        .changes
                        .push(put(USER_DAYS, user, *n, start, &u.day.row()));
                    u.dirty = false;
                }
            }
        }
        // Every closed day's rows were just written: forget it.
        if let Some(newest) = self.newest_day {
            let oldest = self.oldest_open(newest);
            self.days = self.days.split_off(&oldest);
        }
    }
}

/// The saved state: `[STATE_VERSION, State]`. Tuple structs encode as CBOR arrays, without
/// field names: an open user-day costs its pseudonym, a few integers and 8 bytes a patient.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// [`AnalyticsConfig::rows_fingerprint`] of the configuration the rows were made under.
    #[serde(with = "serde_bytes")]
    config: Vec<u8>,
    newest_day: Option<i64>,
    /// Ascending by day number.
    days: Vec<DayState>,
}

/// `(day number, dirty, totals, user-days ascending by user)`.
#[derive(Debug, Serialize, Deserialize)]
struct DayState(i64, bool, DayTotals, Vec<UserState>);

/// `(user, dirty, role, counters, patients)`: `counters` are events, logins, failed logins,
/// PHI accesses, PHI reads, exports, failures, after-hours PHI, first seq, last seq;
/// `patients` the ascending patient digests, 8 bytes big-endian each.
#[derive(Debug, Serialize, Deserialize)]
struct UserState(
    String,
    bool,
    Option<String>,
    [u64; 10],
    #[serde(with = "serde_bytes")] Vec<u8>,
);

impl UserState {
    fn of(user: &str, u: &OpenUserDay) -> UserState {
        let d = &u.day;
        UserState(
            user.to_owned(),
            u.dirty,
            d.role.clone(),
            [
                d.events,
                d.logins,
                d.failed_logins,
                d.phi_accesses,
                d.phi_reads,
                d.exports,
                d.failures,
                d.after_hours_phi,
                d.first_seq,
                d.last_seq,
            ],
            {
                let mut packed = Vec::with_capacity(u.patients.len() * 8);
                for p in &u.patients {
                    packed.extend_from_slice(&p.to_be_bytes());
                }
                packed
            },
        )
    }

    fn into_open(self, date: &str) -> Result<(String, OpenUserDay), String> {
        let UserState(user, dirty, role, c, packed) = self;
        if packed.len() % 8 != 0 {
            return Err(format!(
                "the patient set of user-day {user}/{date} is {} bytes, not a multiple of 8",
                packed.len()
            ));
        }
        let patients: BTreeSet<u64> = packed
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("chunks of 8")))
            .collect();
        let day = UserDay {
            user: user.clone(),
            day: date.to_owned(),
            role,
            events: c[0],
            logins: c[1],
            failed_logins: c[2],
            phi_accesses: c[3],
            phi_reads: c[4],
            distinct_patients: patients.len() as u64,
            exports: c[5],
            failures: c[6],
            after_hours_phi: c[7],
            first_seq: c[8],
            last_seq: c[9],
        };
        Ok((
            user,
            OpenUserDay {
                day,
                patients,
                dirty,
            },
        ))
    }
}

#[cfg(test)]
mod tests;
