//! The `retention` projection: keeps the legal holds and the audit coverage of each source,
//! so that the retention check and the purge plan read them instead of scanning the ledger,
//! and lists the retention checks and purge authorizations recorded, for the reports.
//! It appends no entries of its own; everything it writes is derived data that a rebuild
//! reproduces row for row.
//!
//! Read model (projection `retention`):
//!
//! | table            | key            | ord           | at                | value              |
//! |------------------|----------------|---------------|-------------------|--------------------|
//! | `hold`           | hold's seq     | 0             | hold's recorded_at | [`Hold`]          |
//! | `orphan_release` | release's seq  | 0             | release's recorded_at | [`OrphanRelease`] |
//! | `gap`            | source         | resuming seq  | end of the silence | [`Gap`]           |
//! | `source`         | source         | 0             | last seen         | [`SourceRow`]      |
//! | `check`          | check's seq    | 0             | check's recorded_at | [`CheckRow`]     |
//! | `purge`          | authorization's seq | 0        | its recorded_at   | [`PurgeRow`]       |
//!
//! **Holds.** An entry whose record is a [`LegalHold`](ledger::record::LegalHold) adds a
//! `hold` row; one whose record is a [`HoldRelease`](ledger::record::HoldRelease) rewrites the
//! row of the hold it names with the release. A release that names no hold, or a hold already
//! released, changes no hold: it is kept visible as an `orphan_release` row instead.
//!
//! **Checks and purges.** Each retention check the ledger recorded (a
//! [`RetentionCheck`](ledger::record::RetentionCheck) record) is a `check` row, and each purge
//! authorization (a [`PurgeAuthorization`](ledger::record::PurgeAuthorization) record) a
//! `purge` row, so that reports list them without a scan. Neither is kept in the state. A
//! projection saved before these tables existed has no rows for the checks and purges it had
//! applied: a rebuild (`auditledger project retention --rebuild`) fills them in.
//!
//! **Coverage**, by the ledger's clock (`recorded_at`, which never goes back, unlike a
//! source's own `occurred_at`): per source (the event's `source`), the last entry seen and the
//! clock hours (UTC) among the last 24 in which the source wrote. When a source resumes after
//! a silence longer than `coverage.max_silence_minutes`, and it was *regular* before the
//! silence (it wrote in at least `coverage.regular_hours` of the 24 clock hours up to its last
//! entry), the silence is a `gap` row. Silences still open are found by the check from the
//! `source` rows, written once per commit ([`Projection::flush`]) for the sources that wrote.
//!
//! The genesis entry and entries whose payload was purged are skipped: nothing in them says
//! what they were (the runner still verifies their hashes). Purges only touch entries years
//! old, so a rebuild after a purge can miss only gaps of those years, long outside any window.
//! Gaps depend on `[coverage]`: after changing it, rebuild the projection.
//!
//! **State** ([`Projection::snapshot`]): every hold (a handful) and per source its last entry,
//! hour and 32-bit hour mask: CBOR, versioned, sorted; a few dozen bytes per source.

use std::collections::BTreeMap;

use ledger::projection::{Effects, Projection, VerifiedEntry};
use ledger::record::{PurgeAuthorization, PurgedRule, Record, RetentionCheck};
use ledger::{ReadModelRow, RowChange, Seq, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::CoverageConfig;
use crate::holds::{Hold, Release};

/// The projection's name in the store.
pub const NAME: &str = "retention";

/// Read-model tables (see the module doc).
pub const HOLDS: &str = "hold";
pub const ORPHAN_RELEASES: &str = "orphan_release";
pub const GAPS: &str = "gap";
pub const SOURCES: &str = "source";
pub const CHECKS: &str = "check";
pub const PURGES: &str = "purge";

/// The format of the saved state; a state of another version is refused (rebuild).
pub const STATE_VERSION: u32 = 1;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
/// The hours of the mask that decide regularity: the 24 up to and including the last one.
const DAY_MASK: u32 = 0x00ff_ffff;

/// A silence of a regular source, ended by the entry `resumed_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub source: String,
    /// `recorded_at` of the source's last entry before the silence.
    pub from: Timestamp,
    /// `recorded_at` of the entry that ended it.
    pub to: Timestamp,
    /// Whole minutes of silence.
    pub minutes: u64,
    /// The source's last entry before the silence.
    pub last_seq: Seq,
    pub resumed_seq: Seq,
    /// Clock hours, of the 24 before the silence, in which the source wrote.
    pub hours_before: u32,
}

/// A source as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    pub source: String,
    /// `recorded_at` of its newest entry.
    pub last_seen: Timestamp,
    pub last_seq: Seq,
    /// Clock hours, of the 24 up to `last_seen`, in which it wrote.
    pub hours: u32,
    /// `hours >= coverage.regular_hours`: a silence from `last_seen` on is an outage once it
    /// is longer than `coverage.max_silence_minutes`.
    pub regular: bool,
}

/// A release that released nothing: it names no hold, or one already released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanRelease {
    /// The release's entry.
    pub seq: Seq,
    pub at: Timestamp,
    /// The hold it names.
    pub hold: Seq,
    pub reason: String,
    /// Why it released nothing.
    pub why: String,
}

/// A retention check the ledger recorded: the entry's `seq` and `recorded_at`, and the
/// [`RetentionCheck`](ledger::record::RetentionCheck) record's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRow {
    /// The check's entry.
    pub seq: Seq,
    /// When the check's outcome was committed.
    pub recorded_at: Timestamp,
    /// Compliant: no violation found.
    pub ok: bool,
    /// The head it verified up to (`None` for an empty stream).
    pub head: Option<Seq>,
    /// The date the policy and coverage were evaluated at.
    pub as_of: Timestamp,
    /// Entries verified.
    pub entries: u64,
    /// The kinds of violation found, each once.
    pub findings: Vec<String>,
    pub violations: u64,
}

impl CheckRow {
    pub fn from_record(seq: Seq, recorded_at: Timestamp, record: &RetentionCheck) -> CheckRow {
        CheckRow {
            seq,
            recorded_at,
            ok: record.ok,
            head: record.head,
            as_of: Timestamp(record.as_of),
            entries: record.entries,
            findings: record.findings.clone(),
            violations: record.violations,
        }
    }
}

/// A purge authorization the ledger recorded: the entry's `seq` and `recorded_at`, and what
/// the [`PurgeAuthorization`](ledger::record::PurgeAuthorization) record says (its `seq` runs
/// left out: `from`, `to` and `count` summarize them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRow {
    /// The authorization's entry.
    pub seq: Seq,
    pub recorded_at: Timestamp,
    /// First and last seq of the purged range (inclusive).
    pub from: Seq,
    pub to: Seq,
    /// Payloads authorized to go.
    pub count: u64,
    /// SHA-256 of the archive that holds them, lower-case hex.
    pub archive: String,
    /// The size of the signed checkpoint inside the archive.
    pub archive_size: u64,
    /// Who authorized it, as given.
    pub authorized_by: String,
    /// The holds in force when it was decided.
    pub holds: Vec<Seq>,
    /// What went under each policy rule.
    pub rules: Vec<PurgedRule>,
}

impl PurgeRow {
    pub fn from_record(seq: Seq, recorded_at: Timestamp, record: &PurgeAuthorization) -> PurgeRow {
        PurgeRow {
            seq,
            recorded_at,
            from: record.from,
            to: record.to,
            count: record.count,
            archive: record.archive.clone(),
            archive_size: record.archive_size,
            authorized_by: record.authorized_by.clone(),
            holds: record.holds.clone(),
            rules: record.rules.clone(),
        }
    }
}

/// The retention projection. `coverage` must have passed [`CoverageConfig::validate`].
pub struct RetentionProjection {
    coverage: CoverageConfig,
    holds: BTreeMap<Seq, Hold>,
    sources: BTreeMap<String, SourceState>,
}

/// What the projection remembers of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceState {
    last_seen: i64,
    last_seq: Seq,
    /// The clock hour (UTC, hours since the epoch) of `last_seen`.
    last_hour: i64,
    /// Bit `i`: the source wrote in hour `last_hour - i`.
    mask: u32,
    /// Changed since the last flush.
    dirty: bool,
}

impl SourceState {
    fn hours(&self) -> u32 {
        (self.mask & DAY_MASK).count_ones()
    }
}

fn put<T: Serialize>(table: &str, key: &str, ord: i64, at: Timestamp, value: &T) -> RowChange {
    RowChange::Put(ReadModelRow {
        table: table.to_owned(),
        key: key.to_owned(),
        ord,
        at,
        // Plain structs of strings, integers and options: serializing cannot fail.
        value: serde_json::to_string(value).expect("read-model values serialize"),
    })
}

impl RetentionProjection {
    pub fn new(coverage: CoverageConfig) -> RetentionProjection {
        RetentionProjection {
            coverage,
            holds: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    pub fn coverage(&self) -> &CoverageConfig {
        &self.coverage
    }

    /// The holds seen so far (as of the last applied entry), in seq order.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    fn hold_row(hold: &Hold) -> RowChange {
        put(HOLDS, &hold.seq.to_string(), 0, hold.added_at, hold)
    }

    fn release(&mut self, entry: &VerifiedEntry<'_>, hold: Seq, reason: &str) -> RowChange {
        let release = Release {
            seq: entry.seq,
            at: entry.recorded_at,
            reason: reason.to_owned(),
        };
        let why = match self.holds.get_mut(&hold) {
            Some(h) => match &h.released {
                None => {
                    h.released = Some(release);
                    return Self::hold_row(h);
                }
                Some(first) => format!("hold {hold} was already released by entry {}", first.seq),
            },
            None => format!("no legal hold was recorded at entry {hold}"),
        };
        let orphan = OrphanRelease {
            seq: entry.seq,
            at: entry.recorded_at,
            hold,
            reason: reason.to_owned(),
            why,
        };
        put(
            ORPHAN_RELEASES,
            &entry.seq.to_string(),
            0,
            entry.recorded_at,
            &orphan,
        )
    }

    /// Notes that `source` wrote entry `seq` at `t`; returns the gap it ends, if any.
    fn seen(&mut self, source: &str, seq: Seq, t: Timestamp) -> Option<Gap> {
        let hour = t.0.div_euclid(HOUR);
        let Some(s) = self.sources.get_mut(source) else {
            self.sources.insert(
                source.to_owned(),
                SourceState {
                    last_seen: t.0,
                    last_seq: seq,
                    last_hour: hour,
                    mask: 1,
                    dirty: true,
                },
            );
            return None;
        };
        let silence = t.0.saturating_sub(s.last_seen);
        let gap = (silence > self.coverage.max_silence()
            && s.hours() >= self.coverage.regular_hours)
            .then(|| Gap {
                source: source.to_owned(),
                from: Timestamp(s.last_seen),
                to: t,
                minutes: (silence / MINUTE) as u64,
                last_seq: s.last_seq,
                resumed_seq: seq,
                hours_before: s.hours(),
            });
        // The ledger clock does not go back; should it ever, nothing moves backwards here.
        if hour > s.last_hour {
            let shift = hour - s.last_hour;
            s.mask = if shift >= 32 { 0 } else { s.mask << shift };
            s.last_hour = hour;
        }
        s.mask |= 1;
        s.last_seen = s.last_seen.max(t.0);
        s.last_seq = seq;
        s.dirty = true;
        gap
    }
}

impl Projection for RetentionProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let state: State = ledger::projection::decode_state(NAME, STATE_VERSION, state)?;
        self.holds = state.holds.into_iter().map(|h| (h.seq, h)).collect();
        self.sources = state.sources.into_iter().collect();
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = State {
            holds: self.holds.values().cloned().collect(),
            sources: self
                .sources
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
        };
        ledger::projection::encode_state(STATE_VERSION, &state)
    }

    fn apply(&mut self, entry: &VerifiedEntry<'_>, effects: &mut Effects) {
        // The genesis entry and purged payloads say nothing about holds or sources.
        let Some(e) = entry.event else { return };
        match &e.record {
            Some(Record::LegalHold(record)) => {
                let hold = Hold::from_record(entry.seq, entry.recorded_at, record);
                effects.changes.push(Self::hold_row(&hold));
                self.holds.insert(hold.seq, hold);
            }
            Some(Record::HoldRelease(record)) => {
                let row = self.release(entry, record.hold, &record.reason);
                effects.changes.push(row);
            }
            Some(Record::RetentionCheck(record)) => {
                let row = CheckRow::from_record(entry.seq, entry.recorded_at, record);
                let key = entry.seq.to_string();
                effects
                    .changes
                    .push(put(CHECKS, &key, 0, entry.recorded_at, &row));
            }
            Some(Record::PurgeAuthorization(record)) => {
                let row = PurgeRow::from_record(entry.seq, entry.recorded_at, record);
                let key = entry.seq.to_string();
                effects
                    .changes
                    .push(put(PURGES, &key, 0, entry.recorded_at, &row));
            }
            None => {}
        }
        if let Some(gap) = self.seen(&e.source, entry.seq, entry.recorded_at) {
            effects
                .changes
                .push(put(GAPS, &gap.source, gap.resumed_seq as i64, gap.to, &gap));
        }
    }

    fn flush(&mut self, effects: &mut Effects) {
        let regular_hours = self.coverage.regular_hours;
        for (source, s) in self.sources.iter_mut().filter(|(_, s)| s.dirty) {
            let row = SourceRow {
                source: source.clone(),
                last_seen: Timestamp(s.last_seen),
                last_seq: s.last_seq,
                hours: s.hours(),
                regular: s.hours() >= regular_hours,
            };
            effects
                .changes
                .push(put(SOURCES, source, 0, row.last_seen, &row));
            s.dirty = false;
        }
    }
}

/// The saved state: `[STATE_VERSION, State]`.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Ascending by seq.
    holds: Vec<Hold>,
    /// Ascending by source.
    sources: Vec<(String, SourceState)>,
}

#[cfg(test)]
mod tests;
