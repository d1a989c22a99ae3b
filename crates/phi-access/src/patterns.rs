//! Unusual access patterns: which user-days stand out against the user's own history or
//! against their role's peers, with the figures that make each flag judgeable by a reviewer.
//! Pure functions over [`UserDay`] rows; no I/O, no clock. It must never flag on a figure it
//! cannot show: every [`Flag`] carries the value, the baseline and the peers' percentile it
//! was compared with, and a sentence that states them.
//!
//! # The statistics
//!
//! Five metrics per user-day: distinct patients, PHI reads, exports, failed events (outcome
//! other than `success`), and the after-hours share (after-hours PHI accesses ÷ PHI accesses).
//! Every threshold below is a key of the `[unusual]` table of the configuration file
//! (defaults in brackets).
//!
//! **Own baseline.** For user U on day D, the baseline is U's *active* days (days with at
//! least one event) in the trailing window `[D − baseline_days, D)` [30 days]; D itself is
//! never part of its own baseline. Days without activity are left out rather than counted as
//! zeros: D is an active day, so the fair comparison is with U's other working days. Counting
//! days off as zeros would halve the mean of a part-time or weekday-only user and inflate the
//! standard deviation with the work/off bimodality, so an ordinary working day would look like
//! a spike to the ratio test and real spikes would hide behind the variance. `history_days` is
//! the number of days in that baseline; for the after-hours share only days with at least one
//! PHI access count (a day without PHI access has no share). The baseline is the mean and the
//! sample standard deviation (divisor n − 1; 0 for a single day) of the metric over those
//! days. A day is **above its own baseline** when all of:
//! - `history_days >= min_history_days` [7] (a new or rarely active user has no baseline yet:
//!   quiet users with a short history are not flagged on it);
//! - value > mean + `sigma` × sd [3.0];
//! - value ≥ `min_ratio` × mean [3.0] (stops flags on users whose days barely vary, where
//!   a small rise is many standard deviations);
//! - the metric's floor is reached: `min_distinct_patients` [20], `min_phi_reads` [50],
//!   `min_exports` [3], `min_failures` [10]; for the after-hours share, the day's after-hours
//!   PHI accesses ≥ `min_after_hours` [10] (so 2 of 3 accesses at night is not a flag).
//!
//! A baseline mean of 0 (say, a user who never exported, or never worked after hours) makes
//! the ratio test trivially true and the sigma test "value > 0": the floor alone then decides.
//!
//! **Peers.** U's peers on day D are the other users whose active days in the same window
//! carry U's role of day D (each user-day's role is the role of the user's latest event that
//! day). When they number at least `min_peers` [5] distinct users, `peer_percentile` is the
//! `peer_percentile`-th percentile [99] of the metric over all their user-days in the window,
//! by linear interpolation between closest ranks (as NumPy's default, Excel's PERCENTILE.INC):
//! with the n values sorted x₀ ≤ … ≤ xₙ₋₁ and h = (n − 1) · p / 100, it is
//! x⌊h⌋ + (h − ⌊h⌋) · (x⌈h⌉ − x⌊h⌋). A day is **above its peers** when value > that
//! percentile and the metric's floor is reached. A user-day without a role has no peers.
//!
//! **Flags.** One [`Flag`] per (user, day, metric) on which either test fires, for days in
//! `[from, to)`. Comparisons allow 10⁻⁹ (relative) for rounding, so identical days never
//! exceed each other. Flags are listed by day, then by how far above the reference the value
//! is (value ÷ the baseline mean or peer percentile, whichever test fired and gives the larger
//! ratio; references below 1, or below 1 percentage point for the share, count as that), then
//! by user and metric.
//!
//! Cost: rows are grouped by user and by role once, and days are judged in date order, so
//! each role's window slides forward (sorted insertions and removals) and is shared by all
//! its users; U's own rows are taken out of it by order statistics rather than by copying;
//! the exact percentile is computed only when a cheap lower bound says the day may exceed
//! it; days below every floor are skipped.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::Unusual;
use crate::model::{day_number, UserDay};

/// What a flag is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    DistinctPatients,
    PhiReads,
    Exports,
    Failures,
    AfterHoursShare,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::DistinctPatients,
        Metric::PhiReads,
        Metric::Exports,
        Metric::Failures,
        Metric::AfterHoursShare,
    ];

    /// The name used in JSON, CSV and the configuration's documentation.
    pub fn name(self) -> &'static str {
        match self {
            Metric::DistinctPatients => "distinct_patients",
            Metric::PhiReads => "phi_reads",
            Metric::Exports => "exports",
            Metric::Failures => "failures",
            Metric::AfterHoursShare => "after_hours_share",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn is_share(self) -> bool {
        self == Metric::AfterHoursShare
    }

    /// The metric on `day`; `None` when the day says nothing about it (the after-hours share
    /// of a day without PHI access).
    pub fn value(self, day: &UserDay) -> Option<f64> {
        let count = |n: u64| Some(n as f64);
        match self {
            Metric::DistinctPatients => count(day.distinct_patients),
            Metric::PhiReads => count(day.phi_reads),
            Metric::Exports => count(day.exports),
            Metric::Failures => count(day.failures),
            Metric::AfterHoursShare => (day.phi_accesses > 0).then(|| day.after_hours_share()),
        }
    }

    /// Whether `day` reaches the metric's floor, below which it is never flagged.
    pub fn reaches_floor(self, day: &UserDay, config: &Unusual) -> bool {
        match self {
            Metric::DistinctPatients => day.distinct_patients >= config.min_distinct_patients,
            Metric::PhiReads => day.phi_reads >= config.min_phi_reads,
            Metric::Exports => day.exports >= config.min_exports,
            Metric::Failures => day.failures >= config.min_failures,
            Metric::AfterHoursShare => {
                day.phi_accesses > 0 && day.after_hours_phi >= config.min_after_hours
            }
        }
    }

    /// The smallest reference the ordering divides by (see the module doc).
    fn unit(self) -> f64 {
        if self.is_share() {
            0.01
        } else {
            1.0
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One unusual user-day, with the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub user: String,
    pub role: Option<String>,
    /// `YYYY-MM-DD`, site time.
    pub day: String,
    pub metric: Metric,
    /// The user's value that day (a fraction 0..=1 for the after-hours share).
    pub value: f64,
    /// Mean and sample standard deviation of the user's own baseline days (`None` without any).
    pub baseline_mean: Option<f64>,
    pub baseline_sd: Option<f64>,
    /// Days in the user's own baseline (active days in the trailing window).
    pub history_days: u32,
    /// The role's `peer_percentile`-th percentile value (`None` without enough peers).
    pub peer_percentile: Option<f64>,
    /// Distinct other users of the role in the window.
    pub peer_users: usize,
    pub above_own_baseline: bool,
    pub above_peers: bool,
    /// One sentence with all the figures.
    pub explanation: String,
    /// The `seq` range of the user-day's events.
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Flags for the days in `[from, to)`. `user_days` should cover
/// `[from - baseline_days, to)`; rows outside it are ignored, rows with an unparsable day are
/// skipped, and several rows of one (user, day) are merged (an open day's row and a late row).
pub fn unusual_days(
    user_days: &[UserDay],
    from: NaiveDate,
    to: NaiveDate,
    config: &Unusual,
) -> Vec<Flag> {
    let (from_n, to_n) = (day_number(from), day_number(to));
    let index = Index::build(user_days, from_n - i64::from(config.baseline_days), to_n);
    // Day by day, so that each role's window slides forward instead of being rebuilt.
    let mut todo: Vec<(i64, usize, usize)> = Vec::new();
    for (user, days) in index.users.iter().enumerate() {
        let start = days.partition_point(|e| e.n < from_n);
        let end = days.partition_point(|e| e.n < to_n);
        todo.extend((start..end).map(|i| (days[i].n, user, i)));
    }
    todo.sort_unstable();
    let mut windows: HashMap<&str, RoleWindow> = HashMap::new();
    let mut flags: Vec<(f64, Flag)> = Vec::new();
    for (n, user, i) in todo {
        let entry = &index.users[user][i];
        let day = &entry.day;
        let metrics: Vec<Metric> = Metric::ALL
            .into_iter()
            .filter(|m| m.reaches_floor(day, config))
            .collect();
        if metrics.is_empty() {
            continue;
        }
        let own = index.own_window(user, n, config.baseline_days);
        let peers = day.role.as_deref().map(|role| {
            let (role, rows) = index.role(role);
            let window = windows.entry(role).or_default();
            window.advance_to(&index, rows, n, config.baseline_days);
            PeerSet::new(window, own, role)
        });
        for metric in metrics {
            flags.extend(judge(entry, metric, own, peers.as_ref(), config));
        }
    }
    flags.sort_by(|(sa, a), (sb, b)| {
        a.day
            .cmp(&b.day)
            .then(sb.total_cmp(sa))
            .then_with(|| a.user.cmp(&b.user))
            .then(a.metric.cmp(&b.metric))
    });
    flags.into_iter().map(|(_, f)| f).collect()
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending) by linear interpolation between
/// closest ranks; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    order_statistic_interpolated(sorted.len(), p, |k| sorted[k])
}

fn order_statistic_interpolated(n: usize, p: f64, kth: impl Fn(usize) -> f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * p.clamp(0.0, 100.0) / 100.0;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    let (x_lo, x_hi) = (kth(lo), kth(hi.min(n - 1)));
    Some(x_lo + (h - lo as f64) * (x_hi - x_lo))
}

/// One merged user-day and its day number.
struct Entry {
    n: i64,
    day: UserDay,
}

/// The rows grouped by user (each sorted by day) and, per role, `(day, user, position)`
/// sorted by day.
struct Index {
    users: Vec<Vec<Entry>>,
    roles: HashMap<String, Vec<(i64, usize, usize)>>,
}

impl Index {
    fn build(user_days: &[UserDay], lo: i64, hi: i64) -> Index {
        let mut merged: BTreeMap<(&str, i64), UserDay> = BTreeMap::new();
        for row in user_days {
            let Ok(date) = row.day.parse::<NaiveDate>() else {
                continue;
            };
            let n = day_number(date);
            if n < lo || n >= hi {
                continue;
            }
            merged
                .entry((row.user.as_str(), n))
                .and_modify(|d| d.merge(row))
                .or_insert_with(|| row.clone());
        }
        let mut users: Vec<Vec<Entry>> = Vec::new();
        let mut last_user: Option<&str> = None;
        for ((user, n), day) in merged {
            if last_user != Some(user) {
                users.push(Vec::new());
                last_user = Some(user);
            }
            users
                .last_mut()
                .expect("pushed above")
                .push(Entry { n, day });
        }
        let mut roles: HashMap<String, Vec<(i64, usize, usize)>> = HashMap::new();
        for (u, days) in users.iter().enumerate() {
            for (i, e) in days.iter().enumerate() {
                if let Some(role) = &e.day.role {
                    roles.entry(role.clone()).or_default().push((e.n, u, i));
                }
            }
        }
        for rows in roles.values_mut() {
            rows.sort_unstable();
        }
        Index { users, roles }
    }

    /// A role's name as the index holds it, and its rows.
    fn role(&self, role: &str) -> (&str, &[(i64, usize, usize)]) {
        match self.roles.get_key_value(role) {
            Some((name, rows)) => (name.as_str(), rows.as_slice()),
            // Every role of an indexed user-day is indexed; an unknown one has no rows.
            None => ("", &[]),
        }
    }

    /// `user`'s entries in `[n - baseline_days, n)`.
    fn own_window(&self, user: usize, n: i64, baseline_days: u32) -> &[Entry] {
        let days = &self.users[user];
        let start = days.partition_point(|e| e.n < n - i64::from(baseline_days));
        let end = days.partition_point(|e| e.n < n);
        &days[start..end]
    }
}

/// A role's user-days in one window: the distinct users and, per metric, the sorted values.
#[derive(Default)]
struct RoleWindow {
    /// The role's rows `[start, end)` (positions in its index list) are in the window.
    start: usize,
    end: usize,
    /// User-days in the window per user.
    users: HashMap<usize, u32>,
    values: [Vec<f64>; 5],
}

impl RoleWindow {
    /// Slides the window to `[n - baseline_days, n)`; `n` never decreases between calls.
    fn advance_to(
        &mut self,
        index: &Index,
        rows: &[(i64, usize, usize)],
        n: i64,
        baseline_days: u32,
    ) {
        while self.end < rows.len() && rows[self.end].0 < n {
            let (_, u, i) = rows[self.end];
            *self.users.entry(u).or_default() += 1;
            for (m, v) in metric_values(&index.users[u][i].day) {
                let values = &mut self.values[m.index()];
                values.insert(values.partition_point(|x| *x < v), v);
            }
            self.end += 1;
        }
        while self.start < self.end && rows[self.start].0 < n - i64::from(baseline_days) {
            let (_, u, i) = rows[self.start];
            if let Some(count) = self.users.get_mut(&u) {
                *count -= 1;
                if *count == 0 {
                    self.users.remove(&u);
                }
            }
            for (m, v) in metric_values(&index.users[u][i].day) {
                let values = &mut self.values[m.index()];
                values.remove(values.partition_point(|x| *x < v));
            }
            self.start += 1;
        }
    }
}

/// The metrics a user-day has a value for, with the values.
fn metric_values(day: &UserDay) -> impl Iterator<Item = (Metric, f64)> + '_ {
    Metric::ALL
        .into_iter()
        .filter_map(move |m| m.value(day).map(|v| (m, v)))
}

/// A user-day's peers: the role's window less the user's own rows of that role.
struct PeerSet<'w> {
    window: &'w RoleWindow,
    /// The user's own rows of the role's window.
    mine: Vec<&'w UserDay>,
    /// Distinct other users of the role in the window.
    users: usize,
}

impl<'w> PeerSet<'w> {
    fn new(window: &'w RoleWindow, own_window: &'w [Entry], role: &str) -> PeerSet<'w> {
        let mine: Vec<&UserDay> = own_window
            .iter()
            .map(|e| &e.day)
            .filter(|d| d.role.as_deref() == Some(role))
            .collect();
        PeerSet {
            window,
            users: window.users.len() - usize::from(!mine.is_empty()),
            mine,
        }
    }

    /// Whether there are enough peers for a percentile.
    fn enough(&self, config: &Unusual) -> bool {
        self.users >= config.min_peers.max(1)
    }

    /// The peers' percentile of `metric`, when there are enough peers.
    fn percentile(&self, metric: Metric, config: &Unusual) -> Option<f64> {
        if !self.enough(config) {
            return None;
        }
        let all = &self.window.values[metric.index()];
        let mut minus: Vec<f64> = self.mine.iter().filter_map(|d| metric.value(d)).collect();
        minus.sort_unstable_by(f64::total_cmp);
        order_statistic_interpolated(all.len() - minus.len(), config.peer_percentile, |k| {
            kth_of_difference(all, &minus, k)
        })
    }

    /// A cheap lower bound of [`PeerSet::percentile`]: taking values out of a sorted list
    /// only raises its order statistics, so the k-th of the difference is at least the k-th
    /// of the whole window, and the interpolated percentile at least its lower rank's value.
    fn percentile_at_least(&self, metric: Metric, config: &Unusual) -> Option<f64> {
        if !self.enough(config) {
            return None;
        }
        let all = &self.window.values[metric.index()];
        let mine = self
            .mine
            .iter()
            .filter(|d| metric.value(d).is_some())
            .count();
        let n = all.len() - mine;
        let h = n.checked_sub(1)? as f64 * config.peer_percentile.clamp(0.0, 100.0) / 100.0;
        Some(all[h.floor() as usize])
    }
}

/// The `k`-th smallest (0-based) of the multiset `all` minus its sub-multiset `minus`, both
/// sorted: the first `all[i]` with at least `k + 1` values of the difference at or below it.
fn kth_of_difference(all: &[f64], minus: &[f64], k: usize) -> f64 {
    let at_or_below =
        |v: f64| all.partition_point(|x| *x <= v) - minus.partition_point(|x| *x <= v);
    let i = all.partition_point(|x| at_or_below(*x) < k + 1);
    all[i.min(all.len() - 1)]
}

/// Mean and sample standard deviation of a user's baseline days.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    days: u32,
    mean: f64,
    sd: f64,
}

impl Baseline {
    fn of(values: impl Iterator<Item = f64>) -> Baseline {
        let values: Vec<f64> = values.collect();
        let n = values.len();
        if n == 0 {
            return Baseline {
                days: 0,
                mean: 0.0,
                sd: 0.0,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n < 2 {
            0.0
        } else {
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        };
        Baseline {
            days: n as u32,
            mean,
            sd,
        }
    }
}

/// Rounding allowance of the comparisons (relative, at least absolute 1e-9).
fn tolerance(reference: f64) -> f64 {
    1e-9 * reference.abs().max(1.0)
}

fn exceeds(value: f64, threshold: f64) -> bool {
    value > threshold + tolerance(threshold)
}

fn at_least(value: f64, threshold: f64) -> bool {
    value >= threshold - tolerance(threshold)
}

/// The flag for (`entry`, `metric`) with its ordering score, if either test fires. The
/// caller has checked the metric's floor; `own` is the user's baseline window, `peers` their
/// role's (`None` without a role).
fn judge(
    entry: &Entry,
    metric: Metric,
    own: &[Entry],
    peers: Option<&PeerSet>,
    config: &Unusual,
) -> Option<(f64, Flag)> {
    let day = &entry.day;
    let value = metric.value(day)?;
    let own = Baseline::of(own.iter().filter_map(|e| metric.value(&e.day)));
    let above_own = own.days >= config.min_history_days.max(1)
        && exceeds(value, own.mean + config.sigma * own.sd)
        && at_least(value, config.min_ratio * own.mean);
    // Most days are below their peers' percentile: the exact figure is needed only for a
    // day that may exceed it or that is flagged anyway.
    let may_exceed_peers = peers
        .and_then(|p| p.percentile_at_least(metric, config))
        .is_some_and(|bound| exceeds(value, bound));
    if !above_own && !may_exceed_peers {
        return None;
    }
    let peer_percentile = peers.and_then(|p| p.percentile(metric, config));
    let above_peers = peer_percentile.is_some_and(|pp| exceeds(value, pp));
    if !above_own && !above_peers {
        return None;
    }
    let ratio = |reference: f64| value / reference.max(metric.unit());
    let mut score = 0.0f64;
    if above_own {
        score = score.max(ratio(own.mean));
    }
    if let (true, Some(pp)) = (above_peers, peer_percentile) {
        score = score.max(ratio(pp));
    }
    let mut flag = Flag {
        user: day.user.clone(),
        role: day.role.clone(),
        day: day.day.clone(),
        metric,
        value,
        baseline_mean: (own.days > 0).then_some(own.mean),
        baseline_sd: (own.days > 0).then_some(own.sd),
        history_days: own.days,
        peer_percentile,
        peer_users: peers.map_or(0, |p| p.users),
        above_own_baseline: above_own,
        above_peers,
        explanation: String::new(),
        first_seq: day.first_seq,
        last_seq: day.last_seq,
    };
    flag.explanation = explain(&flag, day, config);
    Some((score, flag))
}

/// A number as a reviewer reads it: whole numbers without decimals, others to one decimal.
pub(crate) fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{:.0}", v.round())
    } else {
        format!("{v:.1}")
    }
}

/// A figure of `metric` as a reviewer reads it: a count, or a share as a percentage.
pub(crate) fn figure(metric: Metric, v: f64) -> String {
    if metric.is_share() {
        format!("{}%", num(v * 100.0))
    } else {
        num(v)
    }
}

/// What the user did that day, with the value.
fn what(metric: Metric, value: f64, day: &UserDay) -> String {
    let v = num(value);
    match metric {
        Metric::DistinctPatients => format!("accessed {v} distinct patients"),
        Metric::PhiReads => format!("made {v} PHI reads"),
        Metric::Exports => format!("made {v} exports"),
        Metric::Failures => format!("had {v} failed events"),
        Metric::AfterHoursShare => format!(
            "made {} of their PHI accesses after hours ({} of {})",
            figure(metric, value),
            day.after_hours_phi,
            day.phi_accesses
        ),
    }
}

fn own_clause(f: &Flag, config: &Unusual) -> String {
    let (b, min) = (config.baseline_days, config.min_history_days.max(1));
    let (Some(mean), Some(sd)) = (f.baseline_mean, f.baseline_sd) else {
        return format!("no own baseline (no active day in the previous {b} days)");
    };
    let m = |v: f64| figure(f.metric, v);
    if f.history_days < min {
        return format!(
            "own baseline not used: only {} active days in the previous {b} ({min} needed), \
             with mean {}",
            f.history_days,
            m(mean)
        );
    }
    let base = format!(
        "own baseline mean {} (sd {}) over {} active days of the previous {b}",
        m(mean),
        m(sd),
        f.history_days
    );
    let (t_sigma, t_ratio) = (mean + config.sigma * sd, config.min_ratio * mean);
    let times = if mean > 0.0 {
        format!("{}× the mean, ", num(f.value / mean))
    } else {
        String::new()
    };
    if f.above_own_baseline {
        format!(
            "{base}, so {times}above mean + {} sd = {} and at least {}× mean = {}",
            num(config.sigma),
            m(t_sigma),
            num(config.min_ratio),
            m(t_ratio)
        )
    } else {
        format!(
            "{base}, not exceeded (a flag needs above {} and at least {})",
            m(t_sigma),
            m(t_ratio)
        )
    }
}

fn peer_clause(f: &Flag, config: &Unusual) -> String {
    let Some(role) = &f.role else {
        return "no role, so no peer comparison".into();
    };
    let p = num(config.peer_percentile);
    match f.peer_percentile {
        None => format!(
            "only {} other {role} users in the window ({} needed), so no peer comparison",
            f.peer_users,
            config.min_peers.max(1)
        ),
        Some(pp) => format!(
            "the {p}th percentile of the {} other {role} users' days is {}, {}",
            f.peer_users,
            figure(f.metric, pp),
            if f.above_peers {
                "exceeded"
            } else {
                "not exceeded"
            }
        ),
    }
}

fn explain(f: &Flag, day: &UserDay, config: &Unusual) -> String {
    let who = match &f.role {
        Some(role) => format!("{} ({role})", f.user),
        None => f.user.clone(),
    };
    format!(
        "{who} {} on {}: {}; {}.",
        what(f.metric, f.value, day),
        f.day,
        own_clause(f, config),
        peer_clause(f, config)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// `n` days after 2026-10-01.
    fn day(n: i64) -> String {
        (date("2026-10-01") + chrono::Duration::days(n)).to_string()
    }

    fn user_day(user: &str, role: Option<&str>, n: i64, patients: u64) -> UserDay {
        UserDay {
            user: user.into(),
            day: day(n),
            role: role.map(String::from),
            events: patients * 2,
            phi_accesses: patients * 2,
            phi_reads: patients * 2,
            distinct_patients: patients,
            first_seq: n.max(0) as u64 * 100,
            last_seq: n.max(0) as u64 * 100 + 9,
            ..UserDay::default()
        }
    }

    /// Days 0..40 of a user with `patients(n)` distinct patients each day; flags for 30..40.
    fn history(user: &str, role: Option<&str>, patients: impl Fn(i64) -> u64) -> Vec<UserDay> {
        (0..40)
            .map(|n| user_day(user, role, n, patients(n)))
            .collect()
    }

    fn flags(rows: &[UserDay], config: &Unusual) -> Vec<Flag> {
        unusual_days(rows, date(&day(30)), date(&day(40)), config)
    }

    #[test]
    fn ten_times_the_usual_distinct_patients_is_flagged_with_its_figures() {
        // 8 or 12 patients a day (mean 10, sd ~2.03), then 100 on day 35.
        let rows = history("u1", Some("nurse"), |n| match n {
            35 => 100,
            n if n % 2 == 0 => 8,
            _ => 12,
        });
        let all = flags(&rows, &Unusual::default());
        // PHI reads rose with the patients (200 against 20, above their floor of 50).
        let metrics: Vec<Metric> = all.iter().map(|f| f.metric).collect();
        assert_eq!(metrics, [Metric::DistinctPatients, Metric::PhiReads]);
        let f = &all[0];
        assert_eq!((f.user.as_str(), f.day.as_str()), ("u1", day(35).as_str()));
        assert_eq!(f.metric, Metric::DistinctPatients);
        assert_eq!(f.value, 100.0);
        assert_eq!(f.baseline_mean, Some(10.0));
        let sd = f.baseline_sd.unwrap();
        assert!((sd - 2.034).abs() < 0.001, "{sd}");
        assert_eq!(f.history_days, 30);
        assert!(f.above_own_baseline && !f.above_peers);
        assert_eq!((f.peer_percentile, f.peer_users), (None, 0));
        assert_eq!((f.first_seq, f.last_seq), (3500, 3509));
        for needle in [
            "u1 (nurse) accessed 100 distinct patients",
            &day(35),
            "mean 10 (sd 2.0) over 30 active days of the previous 30",
            "10× the mean",
            "mean + 3 sd = 16.1",
            "3× mean = 30",
            "only 0 other nurse users",
        ] {
            assert!(
                f.explanation.contains(needle),
                "{needle:?} in {}",
                f.explanation
            );
        }
    }

    #[test]
    fn a_steady_user_is_not_flagged() {
        let rows = history("u1", Some("nurse"), |n| 30 + (n % 5) as u64);
        assert_eq!(flags(&rows, &Unusual::default()), vec![]);
    }

    #[test]
    fn a_new_user_with_two_days_of_history_is_not_flagged_on_own_baseline() {
        // Only days 33 and 34 before the big day 35: no own baseline. No peers either.
        let rows: Vec<UserDay> = [(33, 3), (34, 4), (35, 200)]
            .iter()
            .map(|&(n, p)| user_day("new", Some("nurse"), n, p))
            .collect();
        assert_eq!(flags(&rows, &Unusual::default()), vec![]);
    }

    #[test]
    fn a_new_users_big_day_is_flagged_by_peers_with_its_figures() {
        let mut rows: Vec<UserDay> = [(33, 3), (34, 4), (35, 200)]
            .iter()
            .map(|&(n, p)| user_day("new", Some("nurse"), n, p))
            .collect();
        for peer in 0..6 {
            rows.extend(history(&format!("p{peer}"), Some("nurse"), |n| {
                20 + (n % 3) as u64
            }));
        }
        let got: Vec<Flag> = flags(&rows, &Unusual::default())
            .into_iter()
            .filter(|f| f.metric == Metric::DistinctPatients)
            .collect();
        assert_eq!(got.len(), 1, "{got:#?}");
        let f = &got[0];
        assert_eq!(f.user, "new");
        assert!(f.above_peers && !f.above_own_baseline);
        assert_eq!(f.history_days, 2);
        assert_eq!(f.peer_users, 6);
        assert_eq!(f.peer_percentile, Some(22.0));
        assert!(
            f.explanation.contains("only 2 active days"),
            "{}",
            f.explanation
        );
        assert!(
            f.explanation
                .contains("99th percentile of the 6 other nurse users' days is 22, exceeded"),
            "{}",
            f.explanation
        );
    }

    #[test]
    fn percentile_interpolates_linearly_between_closest_ranks() {
        let x = [10.0, 20.0, 30.0, 40.0, 50.0];
        assert_eq!(percentile(&x, 90.0), Some(46.0));
        assert_eq!(percentile(&x, 50.0), Some(30.0));
        assert_eq!(percentile(&x, 0.0), Some(10.0));
        assert_eq!(percentile(&x, 100.0), Some(50.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn peer_percentile_on_a_known_small_set_excludes_the_user() {
        // Five peers, one day each, 10..50 patients; the user has their own earlier days of 90
        // (which must not count among the peers) and 47 on day 35.
        let mut rows: Vec<UserDay> = (0..5)
            .map(|i| user_day(&format!("p{i}"), Some("clerk"), 31, 10 * (i + 1)))
            .collect();
        rows.push(user_day("me", Some("clerk"), 32, 90));
        rows.push(user_day("me", Some("clerk"), 35, 47));
        rows.push(user_day("other-role", Some("doctor"), 32, 1000));
        let config = Unusual {
            peer_percentile: 90.0,
            min_distinct_patients: 20,
            ..Unusual::default()
        };
        let on_35 = |rows: &[UserDay]| -> Vec<Flag> {
            flags(rows, &config)
                .into_iter()
                .filter(|f| f.user == "me" && f.day == day(35))
                .filter(|f| f.metric == Metric::DistinctPatients)
                .collect()
        };
        let got = on_35(&rows);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].peer_percentile, Some(46.0));
        assert_eq!(got[0].peer_users, 5);
        assert!(got[0].above_peers && !got[0].above_own_baseline);
        // 45 is not above 46.
        rows.iter_mut()
            .find(|r| r.day == day(35))
            .unwrap()
            .distinct_patients = 45;
        assert_eq!(on_35(&rows), vec![]);
    }

    #[test]
    fn order_statistics_of_a_difference_match_removing_the_values() {
        let all = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 8.0];
        let minus = [2.0, 5.0];
        let rest = [1.0, 2.0, 3.0, 5.0, 8.0];
        for (k, want) in rest.iter().enumerate() {
            assert_eq!(kth_of_difference(&all, &minus, k), *want);
        }
    }

    fn after_hours_day(user: &str, n: i64, after: u64, total: u64) -> UserDay {
        UserDay {
            user: user.into(),
            day: day(n),
            role: None,
            events: total,
            phi_accesses: total,
            after_hours_phi: after,
            ..UserDay::default()
        }
    }

    #[test]
    fn after_hours_share_against_a_baseline_of_zero() {
        // Never after hours for 30 days, then 12 of 20 accesses after hours.
        let mut rows: Vec<UserDay> = (0..30).map(|n| after_hours_day("u", n, 0, 20)).collect();
        rows.push(after_hours_day("u", 35, 12, 20));
        let got = flags(&rows, &Unusual::default());
        assert_eq!(got.len(), 1, "{got:#?}");
        let f = &got[0];
        assert_eq!(f.metric, Metric::AfterHoursShare);
        assert_eq!(
            (f.value, f.baseline_mean, f.baseline_sd),
            (0.6, Some(0.0), Some(0.0))
        );
        assert!(f.above_own_baseline);
        assert!(f
            .explanation
            .contains("made 60% of their PHI accesses after hours (12 of 20)"));
        assert!(
            f.explanation.contains("own baseline mean 0% (sd 0%)"),
            "{}",
            f.explanation
        );
        assert!(f.explanation.contains("no role, so no peer comparison"));
        // 9 after-hours accesses are below the floor of 10, whatever the share.
        rows.last_mut().unwrap().after_hours_phi = 9;
        rows.last_mut().unwrap().phi_accesses = 9;
        assert_eq!(flags(&rows, &Unusual::default()), vec![]);
        // Days without PHI access carry no share: they are not part of the baseline.
        let mut rows: Vec<UserDay> = (0..30).map(|n| after_hours_day("u", n, 0, 0)).collect();
        rows.push(after_hours_day("u", 35, 12, 20));
        let got = flags(&rows, &Unusual::default());
        assert!(got.is_empty(), "no share history, no peers: {got:#?}");
    }

    #[test]
    fn floors_stop_large_ratios_on_small_numbers() {
        // 1 patient a day, then 15: 15× the mean, but below the floor of 20.
        let rows = history("u1", Some("nurse"), |n| if n == 35 { 15 } else { 1 });
        assert_eq!(flags(&rows, &Unusual::default()), vec![]);
        let lower = Unusual {
            min_distinct_patients: 15,
            min_phi_reads: 1000,
            ..Unusual::default()
        };
        let got = flags(&rows, &lower);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].value, 15.0);
    }

    #[test]
    fn flags_are_ordered_by_day_then_by_how_far_above() {
        let mut rows = history("a", None, |n| if n == 35 { 60 } else { 10 });
        rows.extend(history("b", None, |n| if n == 35 { 200 } else { 10 }));
        rows.extend(history("c", None, |n| if n == 31 { 25 } else { 5 }));
        let config = Unusual {
            min_phi_reads: 100_000,
            ..Unusual::default()
        };
        let got: Vec<(String, String)> = flags(&rows, &config)
            .into_iter()
            .map(|f| (f.day, f.user))
            .collect();
        let want = [(day(31), "c"), (day(35), "b"), (day(35), "a")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(d, u)| (d.clone(), u.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rows_outside_the_window_and_duplicate_rows_are_handled() {
        let mut rows = history("u1", None, |n| if n == 35 { 100 } else { 10 });
        // A late row for day 35 adds to it; a row before the window is ignored.
        let mut late = user_day("u1", None, 35, 5);
        late.first_seq = 99_999;
        late.last_seq = 99_999;
        rows.push(late);
        rows.push(user_day("u1", None, -10, 10_000));
        let got: Vec<Flag> = flags(&rows, &Unusual::default())
            .into_iter()
            .filter(|f| f.metric == Metric::DistinctPatients)
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, 105.0);
        assert_eq!((got[0].first_seq, got[0].last_seq), (3500, 99_999));
        assert_eq!(got[0].baseline_mean, Some(10.0));
    }

    #[test]
    fn five_hundred_users_over_sixty_days_is_quick() {
        let roles = ["nurse", "physician", "clerk", "billing"];
        let mut rows = Vec::new();
        for u in 0..500u64 {
            let role = roles[(u % 4) as usize];
            for n in 0..90i64 {
                let mut d = user_day(&format!("u{u}"), Some(role), n, 20 + (u + n as u64) % 7);
                d.exports = (u + n as u64) % 4;
                d.failures = 10 + (n as u64 % 3);
                d.after_hours_phi = 10 + u % 5;
                rows.push(d);
            }
        }
        let start = std::time::Instant::now();
        let got = unusual_days(&rows, date(&day(30)), date(&day(90)), &Unusual::default());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(got
            .iter()
            .all(|f| !f.above_own_baseline || f.baseline_mean.is_some()));
    }

    proptest! {
        #[test]
        fn peer_percentiles_match_a_direct_computation(
            cells in proptest::collection::vec((0usize..6, 0i64..20, 0u64..40, 0u64..5), 1..120),
            p in 1.0f64..99.0,
            baseline_days in 1u32..8,
        ) {
            let rows: Vec<UserDay> = cells
                .iter()
                .map(|&(u, n, patients, after)| UserDay {
                    after_hours_phi: after.min(patients * 2),
                    ..user_day(&format!("u{u}"), Some("nurse"), n, patients)
                })
                .collect();
            let config = Unusual {
                baseline_days,
                min_history_days: baseline_days,
                peer_percentile: p,
                min_peers: 1,
                min_distinct_patients: 0,
                min_phi_reads: 0,
                min_exports: 0,
                min_failures: 0,
                min_after_hours: 0,
                ..Unusual::default()
            };
            let from = date(&day(0));
            for f in unusual_days(&rows, from, date(&day(20)), &config) {
                let d = day_number(date(&f.day));
                let mut merged: BTreeMap<(String, i64), UserDay> = BTreeMap::new();
                for r in &rows {
                    merged
                        .entry((r.user.clone(), day_number(date(&r.day))))
                        .and_modify(|m| m.merge(r))
                        .or_insert_with(|| r.clone());
                }
                let mut peers: Vec<f64> = merged
                    .iter()
                    .filter(|((u, n), _)| *u != f.user && *n < d && *n >= d - i64::from(baseline_days))
                    .filter_map(|(_, r)| f.metric.value(r))
                    .collect();
                peers.sort_by(f64::total_cmp);
                let users: std::collections::BTreeSet<&String> = merged
                    .keys()
                    .filter(|(u, n)| *u != f.user && *n < d && *n >= d - i64::from(baseline_days))
                    .map(|(u, _)| u)
                    .collect();
                prop_assert_eq!(f.peer_users, users.len());
                let want = if users.is_empty() { None } else { percentile(&peers, p) };
                match (f.peer_percentile, want) {
                    (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-9, "{} vs {}", a, b),
                    (a, b) => prop_assert_eq!(a, b),
                }
            }
        }

        #[test]
        fn identical_days_are_never_flagged_on_their_own_baseline(
            patients in 0u64..500, reads in 0u64..2000, exports in 0u64..50,
            failures in 0u64..100, phi in 0u64..500, after in 0u64..500,
            days in 1i64..40, sigma in 0.0f64..4.0, min_ratio in 1.0f64..4.0,
            min_history in 0u32..10,
        ) {
            let template = UserDay {
                user: "u".into(),
                role: Some("nurse".into()),
                events: phi + failures + 1,
                phi_accesses: phi,
                phi_reads: reads,
                distinct_patients: patients,
                exports,
                failures,
                after_hours_phi: after.min(phi),
                ..UserDay::default()
            };
            let rows: Vec<UserDay> = (40 - days..40)
                .map(|n| UserDay { day: day(n), ..template.clone() })
                .collect();
            let config = Unusual {
                sigma,
                min_ratio,
                min_history_days: min_history,
                min_distinct_patients: 0,
                min_phi_reads: 0,
                min_exports: 0,
                min_failures: 0,
                min_after_hours: 0,
                ..Unusual::default()
            };
            for f in unusual_days(&rows, date(&day(0)), date(&day(40)), &config) {
                prop_assert!(!f.above_own_baseline, "{f:#?}");
            }
        }
    }
}
