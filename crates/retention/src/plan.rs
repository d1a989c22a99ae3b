//! The purge plan: which entries are past their horizon and under no hold, as inclusive `seq`
//! ranges per policy rule, and their union (what a purge removes). Pure: the caller feeds the
//! entries in `seq` order (from a scan or an archive) and gets the plan.
//!
//! Each entry is one of:
//!
//! - **eligible**: past its rule's horizon at as-of (`expires_at(recorded_at, years) <=
//!   as_of`) and covered by no hold in force;
//! - **held**: past its horizon but covered by a hold (counted under the lowest such hold);
//! - **inside its horizon**;
//! - **already purged** (its payload is gone);
//! - **never eligible**: the genesis entry, an unreadable payload, and the ledger's own records
//!   (purge authorizations, holds and releases, retention checks), which verification and the
//!   hold list rest on.
//!
//! Memory is one pair of `seq` per run of eligible entries, not one per entry. Since
//! `recorded_at` never decreases with `seq`, a caller may stop feeding at the first entry
//! recorded at or after [`Planner::stop_at`]: none from there on can be past any horizon.

use std::collections::BTreeMap;

use ledger::record::{HoldScope, PurgedRule};
use ledger::{Entry, Payload, Seq, StoredEvent, Timestamp};
use serde::Serialize;

use crate::config::{expires_at, horizon_cutoff, horizon_end, Policy};
use crate::holds::HoldSet;
use crate::ts;

/// Inclusive runs of consecutive `seq`s, built in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Runs(Vec<(Seq, Seq)>);

impl Runs {
    fn push(&mut self, seq: Seq) {
        match self.0.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(seq) => *end = seq,
            _ => self.0.push((seq, seq)),
        }
    }
}

/// What one rule makes eligible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePlan {
    /// The rule's name (`default` for the default horizon).
    pub rule: String,
    pub years: u32,
    pub why: String,
    /// Entries recorded before this are past the rule's horizon at as-of (as-of minus the
    /// rule's years).
    #[serde(serialize_with = "ts::rfc3339")]
    pub cutoff: Timestamp,
    /// Eligible entries under the rule.
    pub count: u64,
    /// Their inclusive `seq` runs, ascending.
    pub ranges: Vec<(Seq, Seq)>,
    /// `recorded_at` of the oldest and newest of them.
    #[serde(serialize_with = "ts::opt_rfc3339")]
    pub oldest: Option<Timestamp>,
    #[serde(serialize_with = "ts::opt_rfc3339")]
    pub newest: Option<Timestamp>,
}

/// Entries past their horizon that a hold keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldCount {
    /// The hold's entry.
    pub hold: Seq,
    pub scope: Option<HoldScope>,
    pub count: u64,
}

/// What may be let go at as-of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(serialize_with = "ts::rfc3339")]
    pub as_of: Timestamp,
    /// [`Policy::digest`] of the policy applied.
    pub policy_digest: String,
    /// Entries looked at.
    pub entries: u64,
    /// One per rule, the default first, then the policy's rules in order.
    pub per_rule: Vec<RulePlan>,
    /// Past their horizon but kept by a hold, per hold, by hold seq.
    pub held: Vec<HeldCount>,
    pub already_purged: u64,
    pub eligible: u64,
    pub inside_horizon: u64,
    /// The genesis entry, the ledger's own records, unreadable payloads.
    pub never_eligible: u64,
    /// The union of the rules' runs: what a purge removes.
    pub eligible_ranges: Vec<(Seq, Seq)>,
}

/// Per-rule running totals.
#[derive(Debug, Clone, Default)]
struct RuleTotals {
    count: u64,
    runs: Runs,
    oldest: Option<Timestamp>,
    newest: Option<Timestamp>,
}

/// Builds a [`Plan`] from entries fed in `seq` order.
pub struct Planner<'a> {
    policy: &'a Policy,
    holds: &'a HoldSet,
    as_of: Timestamp,
    /// Index 0: the default; `i + 1`: `policy.rules[i]`.
    rules: Vec<RuleTotals>,
    union: Runs,
    held: BTreeMap<Seq, u64>,
    entries: u64,
    already_purged: u64,
    eligible: u64,
    inside_horizon: u64,
    never_eligible: u64,
}

impl<'a> Planner<'a> {
    /// `policy` must have passed [`Policy::validate`]; `holds` are the holds now (released
    /// ones keep nothing).
    pub fn new(policy: &'a Policy, holds: &'a HoldSet, as_of: Timestamp) -> Planner<'a> {
        Planner {
            policy,
            holds,
            as_of,
            rules: vec![RuleTotals::default(); policy.rules.len() + 1],
            union: Runs::default(),
            held: BTreeMap::new(),
            entries: 0,
            already_purged: 0,
            eligible: 0,
            inside_horizon: 0,
            never_eligible: 0,
        }
    }

    /// Classifies one entry (decoding its payload). Entries must come in ascending `seq`
    /// order; an entry not fed is never in a range.
    pub fn push(&mut self, entry: &Entry) {
        match entry.decode_payload() {
            None => {
                self.entries += 1;
                self.already_purged += 1;
            }
            Some(Ok(Payload::Event(event))) => {
                self.push_event(entry.seq, entry.recorded_at, &event)
            }
            Some(Ok(Payload::Genesis(_))) | Some(Err(_)) => {
                self.entries += 1;
                self.never_eligible += 1;
            }
        }
    }

    /// Classifies one entry already decoded (its payload is `event`).
    pub fn push_event(&mut self, seq: Seq, recorded_at: Timestamp, event: &StoredEvent) {
        self.entries += 1;
        if event.record.is_some() {
            self.never_eligible += 1;
            return;
        }
        let index = self.policy.rule_index(event);
        let years = self.policy.rule_for(event).years;
        if expires_at(recorded_at, years) > self.as_of {
            self.inside_horizon += 1;
            return;
        }
        if let Some(hold) = self.holds.covering(event) {
            *self.held.entry(hold).or_default() += 1;
            return;
        }
        let totals = &mut self.rules[index.map_or(0, |i| i + 1)];
        totals.count += 1;
        totals.runs.push(seq);
        totals.oldest = Some(totals.oldest.map_or(recorded_at, |o| o.min(recorded_at)));
        totals.newest = Some(totals.newest.map_or(recorded_at, |n| n.max(recorded_at)));
        self.union.push(seq);
        self.eligible += 1;
    }

    /// The union of the eligible runs so far.
    /// Entries fed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn eligible_ranges(&self) -> &[(Seq, Seq)] {
        &self.union.0
    }

    /// The cutoff of the longest horizon: every entry recorded before it is past its horizon,
    /// whatever its rule.
    pub fn earliest_cutoff(&self) -> Timestamp {
        let years = self.policy.all_rules().map(|r| r.years).max();
        horizon_cutoff(self.as_of, years.unwrap_or(self.policy.default_years))
    }

    /// The cutoff of the shortest horizon (the default): entries recorded before it may be
    /// past their horizon; see [`stop_at`](Self::stop_at) for where to stop reading.
    pub fn latest_cutoff(&self) -> Timestamp {
        horizon_cutoff(self.as_of, self.shortest())
    }

    /// No entry recorded at or after this is past any horizon (the latest cutoff plus the
    /// two-day margin of February 29, see [`crate::config::horizon_cutoff`]).
    pub fn stop_at(&self) -> Timestamp {
        horizon_end(self.as_of, self.shortest())
    }

    fn shortest(&self) -> u32 {
        let years = self.policy.all_rules().map(|r| r.years).min();
        years.unwrap_or(self.policy.default_years)
    }

    pub fn finish(self) -> Plan {
        let per_rule = self
            .policy
            .all_rules()
            .zip(self.rules)
            .map(|(rule, totals)| RulePlan {
                rule: rule.name.to_owned(),
                years: rule.years,
                why: rule.why.to_owned(),
                cutoff: horizon_cutoff(self.as_of, rule.years),
                count: totals.count,
                ranges: totals.runs.0,
                oldest: totals.oldest,
                newest: totals.newest,
            })
            .collect();
        let held = self
            .held
            .into_iter()
            .map(|(hold, count)| HeldCount {
                hold,
                scope: self.holds.get(hold).map(|h| h.scope),
                count,
            })
            .collect();
        Plan {
            as_of: self.as_of,
            policy_digest: self.policy.digest(),
            entries: self.entries,
            per_rule,
            held,
            already_purged: self.already_purged,
            eligible: self.eligible,
            inside_horizon: self.inside_horizon,
            never_eligible: self.never_eligible,
            eligible_ranges: self.union.0,
        }
    }
}

/// How many ranges [`Plan::text`] lists per rule before summarizing the rest.
const RANGES_SHOWN: usize = 10;

impl Plan {
    /// The union of the rules' runs: what a purge removes.
    pub fn eligible_ranges(&self) -> &[(Seq, Seq)] {
        &self.eligible_ranges
    }

    /// What a purge authorization records per rule (rules with nothing eligible left out).
    pub fn purged_rules(&self) -> Vec<PurgedRule> {
        self.per_rule
            .iter()
            .filter_map(|r| {
                Some(PurgedRule {
                    rule: r.rule.clone(),
                    count: r.count,
                    years: r.years,
                    newest: r.newest?.0,
                })
            })
            .collect()
    }

    /// The plan for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "Retention plan as of {} (policy sha256 {})\n",
            self.as_of, self.policy_digest
        );
        for r in &self.per_rule {
            out.push_str(&format!(
                "{} ({} years; {}): recorded before {} is past its horizon\n",
                r.rule, r.years, r.why, r.cutoff
            ));
            match (r.oldest, r.newest) {
                (Some(oldest), Some(newest)) => {
                    out.push_str(&format!(
                        "  {} eligible in {} range{}, recorded {oldest} to {newest}: {}\n",
                        r.count,
                        r.ranges.len(),
                        if r.ranges.len() == 1 { "" } else { "s" },
                        ranges_text(&r.ranges)
                    ));
                }
                _ => out.push_str("  none eligible\n"),
            }
        }
        for h in &self.held {
            let scope = h.scope.map_or("", HoldScope::as_str);
            out.push_str(&format!(
                "held: {} past their horizon, kept by hold {} ({scope})\n",
                h.count, h.hold
            ));
        }
        out.push_str(&format!(
            "entries: {} looked at; {} eligible in {} range{}; {} inside their horizon; {} already purged; {} never eligible (genesis, the ledger's own records, unreadable)\n",
            self.entries,
            self.eligible,
            self.eligible_ranges.len(),
            if self.eligible_ranges.len() == 1 { "" } else { "s" },
            self.inside_horizon,
            self.already_purged,
            self.never_eligible
        ));
        out
    }
}

fn ranges_text(ranges: &[(Seq, Seq)]) -> String {
    let mut parts: Vec<String> = ranges
        .iter()
        .take(RANGES_SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > RANGES_SHOWN {
        parts.push(format!("and {} more", ranges.len() - RANGES_SHOWN));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
