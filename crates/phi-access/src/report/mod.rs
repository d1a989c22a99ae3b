//! The HIPAA compliance report and the accounting of disclosures (45 CFR 164.528): plain
//! models and their renderings. The binary gathers the data (read model, security
//! projection, verifier) into the input structs; everything here is pure, so the same input
//! always renders the same bytes.
//!
//! It must never present figures as sound when the ledger did not verify: every rendering
//! leads with the integrity statement, and a failed verification becomes the warning of
//! [`integrity_warning`] in every format.
//!
//! - [`build_hipaa`] turns a [`HipaaInput`] into a [`HipaaReport`] (totals, breakdowns, top
//!   users, flags, changes, security events, retention).
//! - JSON: the models, pretty-printed ([`hipaa_json`], [`disclosures_json`]).
//! - CSV: one long layout for both reports, documented in [`hipaa_csv`].
//! - HTML: one self-contained page per report ([`hipaa_html`], [`disclosures_html`]).
//! - Text: the disclosures as a terminal table ([`disclosures_text`]).

mod csv_rows;
mod hipaa;
mod html;
mod text;

use serde::{Deserialize, Serialize};

use crate::model::{Change, DayTotals, UserDay};
use crate::patterns::Flag;

pub use csv_rows::{disclosures_csv, hipaa_csv};
pub use hipaa::build_hipaa;
pub use html::{disclosures_html, hipaa_html};
pub use text::disclosures_text;

/// The period a report covers: days `[from, to)`, site time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// `YYYY-MM-DD`, first day included.
    pub from: String,
    /// `YYYY-MM-DD`, first day not included.
    pub to: String,
    /// IANA name of the site's time zone, in which days are counted.
    pub timezone: String,
}

/// What verification said about the entries a report rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    pub ok: bool,
    /// The verifier's one-line statement.
    pub statement: String,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub entries_verified: u64,
    pub first_bad_seq: Option<u64>,
    /// The kind of damage (payload changed, link broken, gap, ...).
    pub problem: Option<String>,
    pub detail: Option<String>,
    pub checkpoint: Option<CheckpointInfo>,
    pub checkpoints_stored: u64,
    pub checkpoints_valid: u64,
    /// The read model's saved position (the last `seq` the report's figures include).
    pub read_model_position: Option<u64>,
}

/// The latest checkpoint the verification was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub size: u64,
    pub root: String,
    pub signer: String,
    pub signature_valid: bool,
    /// Whether the checkpoint covers the verified range.
    pub anchors_range: bool,
}

/// The security projection's detections over the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityInput {
    /// `false` when the security projection is not running.
    pub available: bool,
    pub events: Vec<SecurityEventRow>,
    pub blocks_issued: u64,
    pub blocks_lifted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEventRow {
    pub at: String,
    pub rule: String,
    pub severity: String,
    pub summary: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Everything the compliance report is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HipaaInput {
    pub generated_at: String,
    pub stream: String,
    pub period: Period,
    pub integrity: Integrity,
    /// One row per day of the period (several rows of one day are merged).
    pub days: Vec<DayTotals>,
    /// The user-days of the period only.
    pub user_days: Vec<UserDay>,
    pub flags: Vec<Flag>,
    pub changes: Vec<Change>,
    pub security: SecurityInput,
    /// The retention status for the period (the binary fills it from the `retention` crate's
    /// `report::RetentionStatus`, docs/PHI-ACCESS.md lists its fields); `None` where retention
    /// checks are not available.
    pub retention: Option<serde_json::Value>,
}

/// The compliance report: what `hipaa_json` prints, and what the CSV and HTML show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HipaaReport {
    /// The integrity warning when the ledger did not verify (see [`integrity_warning`]); first,
    /// so that it is the first thing every rendering shows.
    pub warning: Option<String>,
    pub title: String,
    pub generated_at: String,
    pub stream: String,
    pub period: Period,
    pub integrity: Integrity,
    pub access_summary: AccessSummary,
    pub security_events: SecuritySection,
    pub phi_access: PhiAccessSection,
    pub system_changes: SystemChanges,
    pub retention: RetentionSection,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSummary {
    pub events: u64,
    pub logins: u64,
    pub failed_logins: u64,
    /// Distinct user pseudonyms with at least one event in the period.
    pub distinct_users: u64,
    pub by_source: Vec<SourceRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    pub source: String,
    pub events: u64,
    pub logins: u64,
    pub failed_logins: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySection {
    pub available: bool,
    /// One row per (rule, severity), most frequent first.
    pub by_rule: Vec<RuleCount>,
    pub by_severity: Vec<Count>,
    pub blocks_issued: u64,
    pub blocks_lifted: u64,
    pub events: Vec<SecurityEventRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule: String,
    pub severity: String,
    pub count: u64,
}

/// A count under a name (a role, an action, a severity, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhiAccessSection {
    pub total: u64,
    pub after_hours: u64,
    pub exports: u64,
    pub by_role: Vec<Count>,
    pub by_action: Vec<Count>,
    pub by_resource_type: Vec<Count>,
    pub by_outcome: Vec<Count>,
    /// Every day of the period, zeros included.
    pub per_day: Vec<DayCount>,
    /// The ten users with the most PHI accesses.
    pub top_users: Vec<TopUser>,
    pub unusual: Vec<Flag>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    pub day: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUser {
    pub user: String,
    /// The role of the user's latest day in the period.
    pub role: Option<String>,
    pub phi_accesses: u64,
    /// Sum over the days of the day's distinct patients (a patient seen on two days counts
    /// twice).
    pub distinct_patients_total: u64,
    /// Days with at least one event.
    pub days_active: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemChanges {
    pub by_action: Vec<ActionCount>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCount {
    pub action: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionSection {
    pub available: bool,
    /// The detail's `status` line (`COMPLIANT: ...`, `VIOLATION: ...`, `NO CHECK: ...`), or
    /// "retention checks not available in this version" without a detail.
    pub status: String,
    /// The retention status as given (policy, holds in force, checks, purges, coverage gaps),
    /// shown as is in the JSON, flattened in the CSV, as tables in the HTML.
    pub detail: Option<serde_json::Value>,
}

/// One line of the accounting of disclosures: one access to the patient's PHI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosureLine {
    pub occurred_at: String,
    pub user: Option<String>,
    pub role: Option<String>,
    pub action: String,
    pub outcome: String,
    pub source: String,
    pub resource_type: Option<String>,
    pub seq: u64,
    pub entry_hash: String,
    /// Matched through the legacy SHA-256 pseudonym.
    pub legacy: bool,
    /// The cited entry verified and re-derives this line.
    pub verified: bool,
}

/// The accounting of disclosures for one patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosureReport {
    pub generated_at: String,
    pub stream: String,
    /// The keyed pseudonym, never the raw id.
    pub patient: String,
    pub legacy_pseudonym: String,
    pub from: String,
    pub to: String,
    pub lines: Vec<DisclosureLine>,
    pub integrity: Integrity,
    pub requested_by: Option<String>,
    /// The audit-log-read entry recording this request.
    pub request_seq: Option<u64>,
}

impl DisclosureReport {
    /// Who asked, and the entry that records the request.
    fn request(&self) -> Option<String> {
        let by = self.requested_by.as_ref()?;
        Some(match self.request_seq {
            Some(seq) => format!("{by} (request recorded at seq {seq})"),
            None => by.clone(),
        })
    }

    /// "3 accesses (1 through the legacy pseudonym, 1 not verified)".
    fn summary(&self) -> String {
        let legacy = self.lines.iter().filter(|l| l.legacy).count();
        let unverified = self.lines.iter().filter(|l| !l.verified).count();
        format!(
            "{} accesses ({legacy} through the legacy pseudonym, {unverified} not verified)",
            self.lines.len()
        )
    }
}

/// The banner a failed verification puts in front of every rendering; `None` when it passed.
pub fn integrity_warning(i: &Integrity) -> Option<String> {
    if i.ok {
        return None;
    }
    let mut what = i.problem.clone().unwrap_or_else(|| i.statement.clone());
    if let Some(seq) = i.first_bad_seq {
        what.push_str(&format!(" at seq {seq}"));
    }
    if let Some(detail) = &i.detail {
        what.push_str(&format!(" ({detail})"));
    }
    Some(format!(
        "The ledger did NOT verify over this period: {what}. The figures below rest on \
         entries that failed verification and must not be relied on."
    ))
}

/// The compliance report, pretty-printed JSON.
pub fn hipaa_json(r: &HipaaReport) -> String {
    pretty(r)
}

/// The disclosures report, pretty-printed JSON, with `warning` first when it did not verify.
pub fn disclosures_json(r: &DisclosureReport) -> String {
    pretty(&WithWarning::of(r))
}

/// A disclosures report with its integrity warning, for the renderings that print fields.
#[derive(Serialize)]
struct WithWarning<'a> {
    warning: Option<String>,
    #[serde(flatten)]
    report: &'a DisclosureReport,
}

impl WithWarning<'_> {
    fn of(report: &DisclosureReport) -> WithWarning<'_> {
        WithWarning {
            warning: integrity_warning(&report.integrity),
            report,
        }
    }
}

fn pretty<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs (string keys, no non-finite floats from the statistics)
    // cannot fail; a NaN would print as null.
    let mut s = serde_json::to_string_pretty(value).expect("report models serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
