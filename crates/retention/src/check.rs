//! The retention check: from a full verification of the stream (from genesis, against every
//! stored and given checkpoint), the legal holds and the coverage read model, decides whether
//! the ledger still holds everything the policy says it must. Pure: the binary verifies, reads
//! and appends; this decides.
//!
//! What a passing check proves, and the violation each failure is named by:
//!
//! - the chain is intact from genesis to the head and extends every checkpoint: no entry is
//!   missing (`entry_missing`), no payload is gone without an authorization (`payload_missing`),
//!   nothing was cut off or rewritten since a checkpoint (`rollback`), nothing else is damaged
//!   (`chain_damaged`);
//! - every purged payload was past its horizon: six years old (the floor every store
//!   enforces), past the horizon of the rule it was purged under at the authorization, and
//!   past the horizon the policy gives that rule today (`purged_inside_horizon`);
//! - no purge removed more than its authorization counted (`purge_exceeds_authorization`);
//! - every purge considered every hold in force (its authorization names them), and none
//!   purged under a hold of the whole stream or of a time range the purged entries fall in
//!   (`purge_under_hold`). Patient and user holds are applied by the plan the purge removes
//!   (the purged payloads no longer say whom they were about);
//! - every regular source wrote: no silence longer than `max_silence_minutes` ended within
//!   `window_days` before the check (`coverage_gap`), and none is still going on
//!   (`source_silent`).

use std::collections::BTreeSet;

use ledger::record::{PurgedRule, RetentionCheck, MIN_RETENTION_MICROS};
use ledger::verify::{Problem, PurgeTally};
use ledger::{Digest, Seq, StreamId, Timestamp, VerifyReport};
use serde::Serialize;

use crate::config::{expires_at, RetentionConfig, FEDERAL_FLOOR_YEARS};
use crate::holds::{Hold, HoldSet};
use crate::projection::{Gap, SourceRow};
use crate::ts;

/// Everything the check decides on.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// The date the policy is evaluated at (now, or `--as-of`).
    pub as_of: Timestamp,
    pub config: &'a RetentionConfig,
    /// A full verification: from genesis, with the stored and given checkpoints.
    pub verify: &'a VerifyReport,
    /// Every hold, released or not.
    pub holds: &'a HoldSet,
    /// Coverage gaps (at least those that ended within the window before `as_of`).
    pub gaps: &'a [Gap],
    /// Every source, as last seen.
    pub sources: &'a [SourceRow],
}

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Entries are missing from the chain (verify: `gap`).
    EntryMissing,
    /// A payload is gone with no authorization covering it.
    PayloadMissing,
    /// The ledger was cut off or rewritten after a checkpoint (`truncated`, `rewritten`).
    Rollback,
    /// Any other damage verify names.
    ChainDamaged,
    /// A payload was purged before its horizon ended.
    PurgedInsideHorizon,
    /// A purge removed more, or newer, payloads than its authorization names.
    PurgeExceedsAuthorization,
    /// A purge ignored a hold in force, or removed what a hold keeps.
    PurgeUnderHold,
    /// A regular source was silent longer than allowed, and has resumed.
    CoverageGap,
    /// A regular source has been silent longer than allowed, and still is.
    SourceSilent,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::EntryMissing => "entry_missing",
            ViolationKind::PayloadMissing => "payload_missing",
            ViolationKind::Rollback => "rollback",
            ViolationKind::ChainDamaged => "chain_damaged",
            ViolationKind::PurgedInsideHorizon => "purged_inside_horizon",
            ViolationKind::PurgeExceedsAuthorization => "purge_exceeds_authorization",
            ViolationKind::PurgeUnderHold => "purge_under_hold",
            ViolationKind::CoverageGap => "coverage_gap",
            ViolationKind::SourceSilent => "source_silent",
        }
    }

    /// The violation a verification problem is.
    pub fn of_problem(problem: Problem) -> ViolationKind {
        match problem {
            Problem::Gap => ViolationKind::EntryMissing,
            Problem::PayloadMissing => ViolationKind::PayloadMissing,
            Problem::Truncated | Problem::Rewritten => ViolationKind::Rollback,
            _ => ViolationKind::ChainDamaged,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The entry it is about, when one can be named.
    pub seq: Option<Seq>,
    /// One sentence for people.
    pub detail: String,
}

/// A purge authorization and what was purged under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeSummary {
    /// The authorization's entry.
    pub seq: Seq,
    #[serde(serialize_with = "ts::rfc3339")]
    pub recorded_at: Timestamp,
    pub authorized_by: String,
    /// SHA-256 of the archive the purged entries are kept in.
    pub archive: String,
    pub from: Seq,
    pub to: Seq,
    /// Payloads the authorization counted.
    pub authorized: u64,
    /// Payloads found purged under it.
    pub purged: u64,
    #[serde(serialize_with = "ts::opt_rfc3339")]
    pub oldest_purged: Option<Timestamp>,
    #[serde(serialize_with = "ts::opt_rfc3339")]
    pub newest_purged: Option<Timestamp>,
    pub rules: Vec<PurgedRule>,
    pub holds: Vec<Seq>,
}

impl PurgeSummary {
    fn of(t: &PurgeTally) -> PurgeSummary {
        let a = &t.authorization;
        PurgeSummary {
            seq: t.seq,
            recorded_at: t.recorded_at,
            authorized_by: a.authorized_by.clone(),
            archive: a.archive.clone(),
            from: a.from,
            to: a.to,
            authorized: a.count,
            purged: t.purged,
            oldest_purged: t.oldest_purged,
            newest_purged: t.newest_purged,
            rules: a.rules.clone(),
            holds: a.holds.clone(),
        }
    }
}

/// A silence of a regular source: ended (`to`, `resumed_seq`) or still going on at as-of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageGap {
    pub source: String,
    #[serde(serialize_with = "ts::rfc3339")]
    pub from: Timestamp,
    /// `None`: still silent at as-of.
    #[serde(serialize_with = "ts::opt_rfc3339")]
    pub to: Option<Timestamp>,
    /// Minutes of silence (to as-of when still silent).
    pub minutes: u64,
    pub last_seq: Seq,
    pub resumed_seq: Option<Seq>,
}

/// The check's verdict: `--json` prints it, [`text`](Self::text) renders it for people and
/// [`record`](Self::record) is what the check appends to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    #[serde(serialize_with = "ts::rfc3339")]
    pub as_of: Timestamp,
    pub stream: StreamId,
    /// Entries verified.
    pub entries: u64,
    pub head_seq: Option<Seq>,
    pub head_hash: Option<Digest>,
    pub checkpoints_verified: u64,
    pub payloads_purged: u64,
    pub purges: Vec<PurgeSummary>,
    /// Holds in force at as-of (not released), by seq.
    pub holds_active: Vec<Seq>,
    pub violations: Vec<Violation>,
    /// Silences of regular sources within the window (each is also a violation).
    pub coverage_gaps: Vec<CoverageGap>,
    /// Things that limit what the check can prove, without being violations.
    pub warnings: Vec<String>,
    pub default_years: u32,
    /// [`crate::Policy::digest`] of the policy applied.
    pub policy_digest: String,
}

const MINUTE: i64 = 60_000_000;

/// Runs the check.
pub fn evaluate(input: &CheckInput<'_>) -> CheckReport {
    let v = input.verify;
    let mut violations = Vec::new();
    if !v.ok {
        let kind = v
            .problem
            .map_or(ViolationKind::ChainDamaged, ViolationKind::of_problem);
        let problem = v.problem.map_or("damage", Problem::as_str);
        let mut detail = format!(
            "{problem}: {}",
            v.detail.as_deref().unwrap_or("verification failed")
        );
        if let Some(size) = v.checkpoint_size {
            detail.push_str(&format!(" (checkpoint of size {size})"));
        }
        violations.push(Violation {
            kind,
            seq: v.first_bad_seq,
            detail,
        });
    }
    for tally in &v.purges {
        check_purge(input, tally, &mut violations);
    }
    let coverage_gaps = check_coverage(input, &mut violations);
    let mut warnings = Vec::new();
    if v.checkpoints_verified == 0 {
        warnings.push(
            "no checkpoint was verified: a deleted or rewritten tail cannot be detected without one kept outside the database (docs/CHECKPOINTS.md)"
                .to_owned(),
        );
    }
    CheckReport {
        ok: violations.is_empty(),
        as_of: input.as_of,
        stream: v.stream.clone(),
        entries: v.entries,
        head_seq: v.head_seq,
        head_hash: v.head_hash,
        checkpoints_verified: v.checkpoints_verified,
        payloads_purged: v.payloads_purged,
        purges: v.purges.iter().map(PurgeSummary::of).collect(),
        holds_active: input.holds.active().map(|h| h.seq).collect(),
        violations,
        coverage_gaps,
        warnings,
        default_years: input.config.policy.default_years,
        policy_digest: input.config.policy.digest(),
    }
}

/// The horizons, the count and the holds of one purge.
fn check_purge(input: &CheckInput<'_>, t: &PurgeTally, out: &mut Vec<Violation>) {
    if t.purged == 0 {
        return;
    }
    let a = &t.authorization;
    let auth = t.seq;
    let mut add = |kind, detail: String| {
        out.push(Violation {
            kind,
            seq: Some(auth),
            detail,
        })
    };
    // The tally's times are those of the runs of purged entries its range meets, and a run
    // can reach into the range of a later purge: compared with as-of, which is after every
    // purge, a newest entry of another purge is never taken for this one's.
    if let Some(newest) = t.newest_purged {
        let floor_end = Timestamp(newest.0.saturating_add(MIN_RETENTION_MICROS));
        if floor_end > input.as_of {
            add(
                ViolationKind::PurgedInsideHorizon,
                format!(
                    "a payload recorded {newest} was purged (authorization at entry {auth}, {}): it is not six years (2190 days) old at {}",
                    t.recorded_at, input.as_of
                ),
            );
        }
    }
    for rule in &a.rules {
        let newest = Timestamp(rule.newest);
        let end = expires_at(newest, rule.years);
        if end > t.recorded_at {
            add(
                ViolationKind::PurgedInsideHorizon,
                format!(
                    "rule {:?}: the newest entry purged under the authorization at entry {auth} was recorded {newest}; its {} years ran until {end}, after the authorization ({})",
                    rule.rule, rule.years, t.recorded_at
                ),
            );
        }
        if rule.years < FEDERAL_FLOOR_YEARS {
            add(
                ViolationKind::PurgedInsideHorizon,
                format!(
                    "rule {:?}: the authorization at entry {auth} used a horizon of {} years, shorter than HIPAA's six (45 CFR 164.316(b)(2)(i), 164.530(j)(2))",
                    rule.rule, rule.years
                ),
            );
        }
        if let Some(now) = input.config.policy.years_of(&rule.rule) {
            let end = expires_at(newest, now);
            if now > rule.years && end > input.as_of {
                add(
                    ViolationKind::PurgedInsideHorizon,
                    format!(
                        "rule {:?} now keeps entries {now} years (the authorization at entry {auth} applied {}): the newest entry purged under it, recorded {newest}, is kept until {end}",
                        rule.rule, rule.years
                    ),
                );
            }
        }
    }
    if t.purged > a.count {
        add(
            ViolationKind::PurgeExceedsAuthorization,
            format!(
                "{} payloads were purged under the authorization at entry {auth}, which counted {}",
                t.purged, a.count
            ),
        );
    }
    if a.rules.is_empty() {
        add(
            ViolationKind::PurgeExceedsAuthorization,
            format!(
                "the authorization at entry {auth} names no policy rule, yet {} payloads were purged under it",
                t.purged
            ),
        );
    }
    // The purged span, for time holds: the newest is at most the newest entry the
    // authorization counted (the tally's own may belong to a later purge, see above).
    let span = match (t.oldest_purged, t.newest_purged) {
        (Some(oldest), Some(newest)) => {
            let named = a.rules.iter().map(|r| Timestamp(r.newest)).max();
            Some((oldest, named.map_or(newest, |n| n.min(newest)).max(oldest)))
        }
        _ => None,
    };
    for hold in input.holds.active_at(auth) {
        let reasons = hold_breaches(hold, t, span);
        if !reasons.is_empty() {
            add(
                ViolationKind::PurgeUnderHold,
                format!(
                    "hold {} was in force at the authorization at entry {auth}: {}",
                    hold.seq,
                    reasons.join("; ")
                ),
            );
        }
    }
}

/// What a purge did wrong about one hold in force at its authorization.
fn hold_breaches(hold: &Hold, t: &PurgeTally, span: Option<(Timestamp, Timestamp)>) -> Vec<String> {
    let mut reasons = Vec::new();
    if !t.authorization.holds.contains(&hold.seq) {
        reasons.push("the authorization does not name it".to_owned());
    }
    if hold.covers_everything() {
        reasons.push("it keeps every entry of the stream".to_owned());
    } else if hold.scope == ledger::record::HoldScope::Time {
        // The purged payloads no longer say when their events occurred: their recorded_at
        // span stands in for it.
        if let Some((oldest, newest)) = span {
            if hold.meets_span(oldest, newest) {
                reasons.push(format!(
                    "it keeps events from {} to {}, and the purged entries were recorded from {oldest} to {newest}",
                    hold.from.map_or("the beginning".to_owned(), |t| t.to_string()),
                    hold.to.map_or("the end".to_owned(), |t| t.to_string()),
                ));
            }
        }
    }
    reasons
}

/// Gaps and open silences within the window.
fn check_coverage(input: &CheckInput<'_>, out: &mut Vec<Violation>) -> Vec<CoverageGap> {
    let c = &input.config.coverage;
    let as_of = input.as_of;
    let window_start = Timestamp(as_of.0.saturating_sub(c.window()));
    let mut found = Vec::new();
    let mut gaps: Vec<&Gap> = input
        .gaps
        .iter()
        .filter(|g| window_start <= g.to && g.to <= as_of)
        .collect();
    gaps.sort_by(|a, b| (a.to, &a.source).cmp(&(b.to, &b.source)));
    for g in gaps {
        out.push(Violation {
            kind: ViolationKind::CoverageGap,
            seq: Some(g.resumed_seq),
            detail: format!(
                "source {:?} recorded nothing for {} from {} to {} (audit recording stopped; it had written in {} of the 24 hours before)",
                g.source,
                minutes(g.minutes),
                g.from,
                g.to,
                g.hours_before
            ),
        });
        found.push(CoverageGap {
            source: g.source.clone(),
            from: g.from,
            to: Some(g.to),
            minutes: g.minutes,
            last_seq: g.last_seq,
            resumed_seq: Some(g.resumed_seq),
        });
    }
    let silent_since = Timestamp(as_of.0.saturating_sub(c.max_silence()));
    for s in input.sources {
        if s.regular && window_start <= s.last_seen && s.last_seen < silent_since {
            let silence = ((as_of.0 - s.last_seen.0) / MINUTE) as u64;
            out.push(Violation {
                kind: ViolationKind::SourceSilent,
                seq: Some(s.last_seq),
                detail: format!(
                    "source {:?} has recorded nothing since {} ({} before {as_of}; audit recording stopped; it had written in {} of the 24 hours before)",
                    s.source,
                    s.last_seen,
                    minutes(silence),
                    s.hours
                ),
            });
            found.push(CoverageGap {
                source: s.source.clone(),
                from: s.last_seen,
                to: None,
                minutes: silence,
                last_seq: s.last_seq,
                resumed_seq: None,
            });
        }
    }
    found
}

/// `95 minutes`, `3 h 05 min`, `2 days 4 h`.
fn minutes(m: u64) -> String {
    match m {
        0..120 => format!("{m} minutes"),
        120..2880 => format!("{} h {:02} min", m / 60, m % 60),
        _ => format!("{} days {} h", m / 1440, (m % 1440) / 60),
    }
}

impl CheckReport {
    /// The record the check appends to the ledger: its verdict and the kinds it found.
    pub fn record(&self) -> RetentionCheck {
        let kinds: BTreeSet<ViolationKind> = self.violations.iter().map(|v| v.kind).collect();
        RetentionCheck {
            ok: self.ok,
            head: self.head_seq,
            as_of: self.as_of.0,
            entries: self.entries,
            findings: kinds.into_iter().map(|k| k.as_str().to_owned()).collect(),
            violations: self.violations.len() as u64,
        }
    }

    /// The report for people: `COMPLIANT` or `VIOLATION` first, then what was proven and
    /// every violation.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        if self.ok {
            line(
                &mut out,
                format!("COMPLIANT: stream {} as of {}", self.stream, self.as_of),
            );
        } else {
            line(
                &mut out,
                format!(
                    "VIOLATION: stream {} as of {}: {} violation{}",
                    self.stream,
                    self.as_of,
                    self.violations.len(),
                    plural(self.violations.len() as u64)
                ),
            );
            for v in &self.violations {
                let at = v.seq.map_or(String::new(), |s| format!(" (entry {s})"));
                line(
                    &mut out,
                    format!("  - {}{at}: {}", v.kind.as_str(), v.detail),
                );
            }
        }
        let head = match (self.head_seq, self.head_hash) {
            (Some(seq), Some(hash)) => format!("to entry {seq} ({hash})"),
            _ => "(empty stream)".to_owned(),
        };
        line(
            &mut out,
            format!(
                "chain: {} entries verified from genesis {head}; {} checkpoint{} verified",
                self.entries,
                self.checkpoints_verified,
                plural(self.checkpoints_verified)
            ),
        );
        line(
            &mut out,
            format!(
                "purged payloads: {} under {} authorization{}",
                self.payloads_purged,
                self.purges.len(),
                plural(self.purges.len() as u64)
            ),
        );
        for p in &self.purges {
            let span = match (p.oldest_purged, p.newest_purged) {
                (Some(o), Some(n)) => format!(", recorded {o} to {n}"),
                _ => String::new(),
            };
            line(
                &mut out,
                format!(
                    "  entry {} ({}, by {:?}): {} of {} authorized in entries {}..={}{span}; archive sha256 {}",
                    p.seq, p.recorded_at, p.authorized_by, p.purged, p.authorized, p.from, p.to, p.archive
                ),
            );
        }
        if self.holds_active.is_empty() {
            line(&mut out, "holds in force: none".to_owned());
        } else {
            let seqs: Vec<String> = self.holds_active.iter().map(|s| s.to_string()).collect();
            line(
                &mut out,
                format!(
                    "holds in force: {} (entries {})",
                    self.holds_active.len(),
                    seqs.join(", ")
                ),
            );
        }
        if self.coverage_gaps.is_empty() {
            line(
                &mut out,
                "coverage: no regular source went silent in the window".to_owned(),
            );
        } else {
            line(
                &mut out,
                format!(
                    "coverage: {} silence(s) in the window",
                    self.coverage_gaps.len()
                ),
            );
        }
        for w in &self.warnings {
            line(&mut out, format!("warning: {w}"));
        }
        line(
            &mut out,
            format!(
                "policy: default {} years; sha256 {}",
                self.default_years, self.policy_digest
            ),
        );
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests;
