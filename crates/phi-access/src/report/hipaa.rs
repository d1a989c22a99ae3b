//! Building the compliance report's sections from the gathered input.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{
    integrity_warning, AccessSummary, ActionCount, Count, DayCount, HipaaInput, HipaaReport,
    Period, PhiAccessSection, RetentionSection, RuleCount, SecurityInput, SecuritySection,
    SourceRow, SystemChanges, TopUser,
};
use crate::model::{Change, DayTotals, UserDay};
use crate::patterns::Flag;

/// How many users the "top users" table lists.
const TOP_USERS: usize = 10;

/// The report over `input`. Rows of `days` with the same day are merged; `flags` are kept in
/// the order given ([`crate::patterns::unusual_days`] orders them).
pub fn build_hipaa(input: HipaaInput) -> HipaaReport {
    let totals = sum_days(&input.days);
    HipaaReport {
        title: "HIPAA compliance report".into(),
        generated_at: input.generated_at,
        stream: input.stream,
        warning: integrity_warning(&input.integrity),
        access_summary: access_summary(&totals, &input.user_days),
        security_events: security_section(input.security),
        phi_access: phi_access(
            &input.period,
            &input.days,
            &totals,
            &input.user_days,
            input.flags,
        ),
        system_changes: system_changes(input.changes),
        retention: retention(input.retention),
        period: input.period,
        integrity: input.integrity,
    }
}

fn sum_days(days: &[DayTotals]) -> DayTotals {
    let mut total = DayTotals::default();
    for d in days {
        total.merge(d);
    }
    total
}

/// Counts of a map, most frequent first, then by name.
fn counts(map: &BTreeMap<String, u64>) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .iter()
        .map(|(k, n)| Count {
            key: k.clone(),
            count: *n,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v
}

/// A per-source count of the day totals and the field of [`SourceRow`] it fills.
type SourceColumn<'a> = (&'a BTreeMap<String, u64>, fn(&mut SourceRow) -> &mut u64);

fn access_summary(totals: &DayTotals, user_days: &[UserDay]) -> AccessSummary {
    let mut sources: BTreeMap<&str, SourceRow> = BTreeMap::new();
    let columns: [SourceColumn; 3] = [
        (&totals.events_by_source, |r| &mut r.events),
        (&totals.logins_by_source, |r| &mut r.logins),
        (&totals.failed_logins_by_source, |r| &mut r.failed_logins),
    ];
    for (counts, column) in columns {
        for (source, n) in counts {
            let row = sources.entry(source).or_insert_with(|| SourceRow {
                source: source.clone(),
                ..SourceRow::default()
            });
            *column(row) += n;
        }
    }
    let mut by_source: Vec<SourceRow> = sources.into_values().collect();
    by_source.sort_by(|a, b| {
        b.events
            .cmp(&a.events)
            .then_with(|| a.source.cmp(&b.source))
    });
    let users: std::collections::BTreeSet<&str> =
        user_days.iter().map(|d| d.user.as_str()).collect();
    AccessSummary {
        events: totals.events,
        logins: totals.logins,
        failed_logins: totals.failed_logins,
        distinct_users: users.len() as u64,
        by_source,
    }
}

fn security_section(input: SecurityInput) -> SecuritySection {
    let mut by_rule: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut by_severity: BTreeMap<String, u64> = BTreeMap::new();
    for e in &input.events {
        *by_rule.entry((&e.rule, &e.severity)).or_default() += 1;
        *by_severity.entry(e.severity.clone()).or_default() += 1;
    }
    let mut by_rule: Vec<RuleCount> = by_rule
        .into_iter()
        .map(|((rule, severity), count)| RuleCount {
            rule: rule.to_owned(),
            severity: severity.to_owned(),
            count,
        })
        .collect();
    by_rule.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    SecuritySection {
        available: input.available,
        by_rule,
        by_severity: counts(&by_severity),
        blocks_issued: input.blocks_issued,
        blocks_lifted: input.blocks_lifted,
        events: input.events,
    }
}

fn phi_access(
    period: &Period,
    days: &[DayTotals],
    totals: &DayTotals,
    user_days: &[UserDay],
    flags: Vec<Flag>,
) -> PhiAccessSection {
    PhiAccessSection {
        total: totals.phi_accesses,
        after_hours: totals.after_hours_phi,
        exports: totals.exports,
        by_role: counts(&totals.phi_by_role),
        by_action: counts(&totals.phi_by_action),
        by_resource_type: counts(&totals.phi_by_resource_type),
        by_outcome: counts(&totals.phi_by_outcome),
        per_day: per_day(period, days),
        top_users: top_users(user_days),
        unusual: flags,
    }
}

/// One row per day of the period, zeros included; days outside the period that the input
/// holds anyway are kept, so the rows always add up to the total. A period that does not
/// parse lists the input's days only.
fn per_day(period: &Period, days: &[DayTotals]) -> Vec<DayCount> {
    let mut by_day: BTreeMap<String, u64> = BTreeMap::new();
    if let (Ok(from), Ok(to)) = (
        period.from.parse::<NaiveDate>(),
        period.to.parse::<NaiveDate>(),
    ) {
        let mut d = from;
        while d < to {
            by_day.insert(d.to_string(), 0);
            d = d.succ_opt().unwrap_or(to);
        }
    }
    for d in days {
        *by_day.entry(d.day.clone()).or_default() += d.phi_accesses;
    }
    by_day
        .into_iter()
        .map(|(day, count)| DayCount { day, count })
        .collect()
}

fn top_users(user_days: &[UserDay]) -> Vec<TopUser> {
    let mut users: BTreeMap<&str, (TopUser, &str)> = BTreeMap::new();
    for d in user_days {
        let (u, latest) = users.entry(&d.user).or_insert_with(|| {
            let top = TopUser {
                user: d.user.clone(),
                ..TopUser::default()
            };
            (top, "")
        });
        u.phi_accesses += d.phi_accesses;
        u.distinct_patients_total += d.distinct_patients;
        u.days_active += 1;
        if d.role.is_some() && d.day.as_str() >= *latest {
            u.role = d.role.clone();
            *latest = &d.day;
        }
    }
    let mut top: Vec<TopUser> = users
        .into_values()
        .map(|(u, _)| u)
        .filter(|u| u.phi_accesses > 0)
        .collect();
    top.sort_by(|a, b| {
        b.phi_accesses
            .cmp(&a.phi_accesses)
            .then_with(|| a.user.cmp(&b.user))
    });
    top.truncate(TOP_USERS);
    top
}

/// The listed changes and their counts by action (counted from the list, so the two agree).
fn system_changes(mut changes: Vec<Change>) -> SystemChanges {
    changes.sort_by_key(|c| c.seq);
    let mut by_action: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &changes {
        *by_action.entry(&c.action).or_default() += 1;
    }
    let mut by_action: Vec<ActionCount> = by_action
        .into_iter()
        .map(|(action, count)| ActionCount {
            action: action.to_owned(),
            count,
        })
        .collect();
    by_action.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.action.cmp(&b.action)));
    SystemChanges { by_action, changes }
}

fn retention(status: Option<serde_json::Value>) -> RetentionSection {
    match status {
        None => RetentionSection {
            available: false,
            status: "retention checks not available in this version".into(),
            detail: None,
        },
        Some(detail) => RetentionSection {
            available: true,
            status: detail
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("see detail")
                .to_owned(),
            detail: Some(detail),
        },
    }
}
