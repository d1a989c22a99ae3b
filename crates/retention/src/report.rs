//! The retention status a compliance report shows for a period: the policy applied, the legal
//! holds in force at the end of the period, the retention checks run in it (and the latest one
//! before its end, even an older one), the purge authorizations, and the coverage gaps that
//! ended in it. Built from the `retention` read model ([`crate::read`]) without a scan of the
//! ledger; [`RetentionStatus::to_value`] is the JSON the HIPAA report's input takes
//! (`phi_access::report::HipaaInput::retention`), which every rendering of the report shows.
//!
//! Times are RFC 3339 (UTC, microseconds); users and patients appear only as the pseudonyms the
//! holds name. A period is `[from, to)` by the ledger's clock (`recorded_at`).

use ledger::{Seq, Store, StoreError, StreamId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::RetentionConfig;
use crate::holds::Hold;
use crate::projection::{CheckRow, Gap, PurgeRow};
use crate::read;

/// The retention section of a compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionStatus {
    /// One line leading with `COMPLIANT`, `VIOLATION`, `NO CHECK` or `NOT AVAILABLE`: what the
    /// latest retention check before the end of the period found.
    pub status: String,
    /// The period, `[period_start, period_end)`.
    pub period_start: String,
    pub period_end: String,
    /// The read model's position: the last entry its figures include (`None`: the retention
    /// projection has not run).
    pub read_model_position: Option<Seq>,
    pub policy: PolicySummary,
    /// Holds in force at the end of the period (added before it, not released before it).
    pub holds_in_force: u64,
    /// Holds released within the period.
    pub holds_released_in_period: u64,
    /// The holds in force at the end of the period, by seq.
    pub holds: Vec<HoldSummary>,
    /// Retention checks recorded within the period.
    pub checks_run: u64,
    /// Of those, how many found no violation.
    pub checks_compliant: u64,
    /// The latest check recorded before the end of the period, in it or not.
    pub latest_check: Option<CheckSummary>,
    /// The checks recorded within the period, by seq.
    pub checks: Vec<CheckSummary>,
    /// Purge authorizations recorded before the end of the period (all of them, not only the
    /// period's: what the ledger had let go by then).
    pub purges_authorized: u64,
    /// Of those, how many were recorded within the period.
    pub purges_in_period: u64,
    /// Payloads those authorizations let go.
    pub payloads_authorized: u64,
    /// Those authorizations, by seq.
    pub purges: Vec<PurgeSummary>,
    /// Coverage gaps (silences of a regular source) that ended within the period.
    pub gaps_ended: u64,
    /// Those gaps, by end.
    pub gaps: Vec<GapSummary>,
}

/// The policy applied: its digest, the default horizon and every longer one, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// SHA-256 of its canonical rendering (docs/RETENTION.md).
    pub digest: String,
    pub default_years: u32,
    /// Every rule, `default` first.
    pub rules: Vec<RuleSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    pub name: String,
    pub years: u32,
    pub why: String,
}

/// A hold in force. Its subject is a pseudonym, never a raw identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSummary {
    /// The hold's entry (its identity).
    pub seq: Seq,
    /// `stream`, `patient`, `user` or `time`.
    pub scope: String,
    /// The patient's or user's pseudonym.
    pub subject: Option<String>,
    /// The held `occurred_at` range of a time hold.
    pub from: Option<String>,
    pub to: Option<String>,
    /// When it was recorded.
    pub since: String,
    pub reason: String,
}

/// A retention check the ledger recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// The check's entry.
    pub seq: Seq,
    pub recorded_at: String,
    /// The date it evaluated the policy and coverage at.
    pub as_of: String,
    /// Compliant.
    pub ok: bool,
    pub violations: u64,
    /// The kinds of violation found.
    pub findings: Vec<String>,
    /// Entries it verified, up to `head`.
    pub entries: u64,
    pub head: Option<Seq>,
    /// Recorded within the period.
    pub in_period: bool,
}

/// A purge authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeSummary {
    /// The authorization's entry.
    pub seq: Seq,
    pub recorded_at: String,
    /// The purged range, inclusive.
    pub from: Seq,
    pub to: Seq,
    /// Payloads authorized to go.
    pub count: u64,
    pub authorized_by: String,
    /// SHA-256 of the archive holding them.
    pub archive: String,
    /// Recorded within the period.
    pub in_period: bool,
}

/// A silence of a regular source longer than allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapSummary {
    pub source: String,
    /// Its last entry before the silence.
    pub from: String,
    /// The entry that ended it.
    pub to: String,
    pub minutes: u64,
    pub resumed_seq: Seq,
}

/// What [`summarize`] is built from: the read model's rows.
#[derive(Debug, Clone, Default)]
pub struct StatusInput {
    pub position: Option<Seq>,
    /// Every hold, released or not.
    pub holds: Vec<Hold>,
    /// The checks recorded within the period.
    pub checks: Vec<CheckRow>,
    /// The latest check recorded before the end of the period.
    pub latest_check: Option<CheckRow>,
    /// Every purge authorization.
    pub purges: Vec<PurgeRow>,
    /// Gaps that ended at or after the start of the period.
    pub gaps: Vec<Gap>,
}

/// The status of `stream` over `[from, to)` from the `retention` read model, as it is (bring
/// the projection up to the head first for figures current to it).
pub async fn status(
    store: &dyn Store,
    stream: &StreamId,
    config: &RetentionConfig,
    from: Timestamp,
    to: Timestamp,
) -> Result<RetentionStatus, StoreError> {
    let input = StatusInput {
        position: read::position(store, stream).await?,
        holds: read::holds(store, stream).await?,
        checks: read::checks(store, stream, Some(from), Some(to)).await?,
        latest_check: read::latest_check(store, stream, Some(to)).await?,
        purges: read::purges(store, stream).await?,
        gaps: read::gaps(store, stream, from).await?,
    };
    Ok(summarize(config, from, to, input))
}

/// The status over `[from, to)` from the rows in `input` (rows outside the period are left
/// out as documented on each field).
pub fn summarize(
    config: &RetentionConfig,
    from: Timestamp,
    to: Timestamp,
    input: StatusInput,
) -> RetentionStatus {
    let in_period = |t: Timestamp| from <= t && t < to;
    let policy = PolicySummary {
        digest: config.policy_digest(),
        default_years: config.policy.default_years,
        rules: config
            .policy
            .all_rules()
            .map(|r| RuleSummary {
                name: r.name.to_owned(),
                years: r.years,
                why: r.why.to_owned(),
            })
            .collect(),
    };
    let holds: Vec<HoldSummary> = input
        .holds
        .iter()
        .filter(|h| h.added_at < to && h.released.as_ref().is_none_or(|r| r.at >= to))
        .map(|h| HoldSummary {
            seq: h.seq,
            scope: h.scope.as_str().to_owned(),
            subject: h.subject.clone(),
            from: h.from.map(Timestamp::to_rfc3339),
            to: h.to.map(Timestamp::to_rfc3339),
            since: h.added_at.to_rfc3339(),
            reason: h.reason.clone(),
        })
        .collect();
    let released = input
        .holds
        .iter()
        .filter(|h| h.released.as_ref().is_some_and(|r| in_period(r.at)))
        .count() as u64;
    let check = |c: &CheckRow| CheckSummary {
        seq: c.seq,
        recorded_at: c.recorded_at.to_rfc3339(),
        as_of: c.as_of.to_rfc3339(),
        ok: c.ok,
        violations: c.violations,
        findings: c.findings.clone(),
        entries: c.entries,
        head: c.head,
        in_period: in_period(c.recorded_at),
    };
    let mut period_checks: Vec<&CheckRow> = input
        .checks
        .iter()
        .filter(|c| in_period(c.recorded_at))
        .collect();
    period_checks.sort_by_key(|c| c.seq);
    let latest = input
        .latest_check
        .as_ref()
        .filter(|c| c.recorded_at < to)
        .map(check);
    let purges: Vec<PurgeSummary> = input
        .purges
        .iter()
        .filter(|p| p.recorded_at < to)
        .map(|p| PurgeSummary {
            seq: p.seq,
            recorded_at: p.recorded_at.to_rfc3339(),
            from: p.from,
            to: p.to,
            count: p.count,
            authorized_by: p.authorized_by.clone(),
            archive: p.archive.clone(),
            in_period: in_period(p.recorded_at),
        })
        .collect();
    let gaps: Vec<GapSummary> = input
        .gaps
        .iter()
        .filter(|g| in_period(g.to))
        .map(|g| GapSummary {
            source: g.source.clone(),
            from: g.from.to_rfc3339(),
            to: g.to.to_rfc3339(),
            minutes: g.minutes,
            resumed_seq: g.resumed_seq,
        })
        .collect();
    let checks: Vec<CheckSummary> = period_checks.iter().map(|c| check(c)).collect();
    let compliant = checks.iter().filter(|c| c.ok).count() as u64;
    RetentionStatus {
        status: verdict(
            input.position,
            latest.as_ref(),
            checks.len() as u64,
            compliant,
        ),
        period_start: from.to_rfc3339(),
        period_end: to.to_rfc3339(),
        read_model_position: input.position,
        policy,
        holds_in_force: holds.len() as u64,
        holds_released_in_period: released,
        holds,
        checks_run: checks.len() as u64,
        checks_compliant: compliant,
        latest_check: latest,
        checks,
        purges_authorized: purges.len() as u64,
        purges_in_period: purges.iter().filter(|p| p.in_period).count() as u64,
        payloads_authorized: purges.iter().map(|p| p.count).sum(),
        purges,
        gaps_ended: gaps.len() as u64,
        gaps,
    }
}

/// The status line: the latest check's verdict, and how the period's checks went.
fn verdict(
    position: Option<Seq>,
    latest: Option<&CheckSummary>,
    run: u64,
    compliant: u64,
) -> String {
    if position.is_none() {
        return "NOT AVAILABLE: the retention projection has not run yet \
                (`auditledger project retention`)"
            .to_owned();
    }
    let Some(c) = latest else {
        return "NO CHECK: no retention check was recorded before the end of the period \
                (run `auditledger retention check` on a schedule)"
            .to_owned();
    };
    let which = if c.in_period {
        format!(
            "the latest retention check (entry {}, {})",
            c.seq, c.recorded_at
        )
    } else {
        format!(
            "no retention check was recorded in the period; the latest before it (entry {}, {})",
            c.seq, c.recorded_at
        )
    };
    let found = if c.ok {
        format!("COMPLIANT: {which} found no violation")
    } else {
        format!(
            "VIOLATION: {which} found {} violation(s): {}",
            c.violations,
            c.findings.join(", ")
        )
    };
    if run == 0 {
        found
    } else {
        format!("{found}; {compliant} of {run} checks in the period were compliant")
    }
}

impl RetentionStatus {
    /// The status as the JSON value the HIPAA report's input takes.
    pub fn to_value(&self) -> serde_json::Value {
        // Plain structs of strings, integers, booleans and lists: serializing cannot fail.
        serde_json::to_value(self).expect("the retention status serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ledger::payload::StoredActor;
    use ledger::projection::Runner;
    use ledger::record::{
        HoldScope, LegalHold, PurgeAuthorization, PurgedRule, Record, RetentionCheck, HOLD_ACTION,
        PURGE_ACTION, RETENTION_CHECK_ACTION,
    };
    use ledger::{
        GroupCommitWriter, ManualClock, Payload, PreparedEntry, StoredEvent, WriterConfig,
    };

    use super::*;
    use crate::config::Rule;
    use crate::holds::Release;
    use crate::projection::RetentionProjection;

    const HOUR: i64 = 3_600_000_000;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn hold(seq: Seq, added: &str, released: Option<&str>) -> Hold {
        Hold {
            seq,
            added_at: ts(added),
            scope: HoldScope::Patient,
            subject: Some(format!("k1:p{seq}")),
            from: None,
            to: None,
            reason: "litigation 2026-17".into(),
            released: released.map(|at| Release {
                seq: seq + 100,
                at: ts(at),
                reason: "settled".into(),
            }),
        }
    }

    fn check(seq: Seq, at: &str, ok: bool) -> CheckRow {
        CheckRow {
            seq,
            recorded_at: ts(at),
            ok,
            head: Some(seq - 1),
            as_of: ts(at),
            entries: seq,
            findings: if ok {
                vec![]
            } else {
                vec!["coverage_gap".into()]
            },
            violations: u64::from(!ok) * 2,
        }
    }

    fn purge(seq: Seq, at: &str, count: u64) -> PurgeRow {
        PurgeRow {
            seq,
            recorded_at: ts(at),
            from: 1,
            to: count,
            count,
            archive: "ab".repeat(32),
            archive_size: count + 1,
            authorized_by: "privacy officer".into(),
            holds: vec![],
            rules: vec![],
        }
    }

    fn gap(source: &str, to: &str) -> Gap {
        let to = ts(to);
        Gap {
            source: source.into(),
            from: Timestamp(to.0 - 3 * HOUR),
            to,
            minutes: 180,
            last_seq: 5,
            resumed_seq: 9,
            hours_before: 24,
        }
    }

    const FROM: &str = "2026-11-01T04:00:00Z";
    const TO: &str = "2026-12-01T05:00:00Z";

    #[test]
    fn the_period_decides_what_counts() {
        let mut config = RetentionConfig::default();
        config.policy.rules.push(Rule {
            name: "configuration".into(),
            years: 10,
            actions: vec!["config_change".into()],
            resource_types: vec![],
            sources: vec![],
            why: "state schedule".into(),
        });
        let input = StatusInput {
            position: Some(500),
            holds: vec![
                hold(10, "2026-01-01T00:00:00Z", None),
                hold(11, "2026-01-01T00:00:00Z", Some("2026-11-10T00:00:00Z")),
                hold(12, "2026-10-01T00:00:00Z", Some("2026-12-05T00:00:00Z")),
                hold(13, "2026-12-02T00:00:00Z", None),
            ],
            checks: vec![
                check(300, "2026-11-30T00:00:00Z", true),
                check(200, "2026-11-02T00:00:00Z", false),
            ],
            latest_check: Some(check(300, "2026-11-30T00:00:00Z", true)),
            purges: vec![
                purge(50, "2026-06-01T00:00:00Z", 40),
                purge(250, "2026-11-15T00:00:00Z", 7),
                purge(600, "2026-12-03T00:00:00Z", 1000),
            ],
            gaps: vec![
                gap("ehr", "2026-10-31T00:00:00Z"),
                gap("lab", "2026-11-20T00:00:00Z"),
                gap("ehr", "2026-12-01T05:00:00Z"),
            ],
        };
        let s = summarize(&config, ts(FROM), ts(TO), input);
        assert_eq!(s.period_start, "2026-11-01T04:00:00.000000Z");
        assert_eq!(s.read_model_position, Some(500));
        assert_eq!(s.policy.default_years, 6);
        assert_eq!(s.policy.digest, config.policy_digest());
        let rules: Vec<(&str, u32)> = s
            .policy
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.years))
            .collect();
        assert_eq!(rules, [("default", 6), ("configuration", 10)]);

        assert_eq!((s.holds_in_force, s.holds_released_in_period), (2, 1));
        let held: Vec<Seq> = s.holds.iter().map(|h| h.seq).collect();
        assert_eq!(
            held,
            [10, 12],
            "in force at the end, whatever happened after"
        );
        assert_eq!(s.holds[0].subject.as_deref(), Some("k1:p10"));
        assert_eq!(s.holds[0].scope, "patient");
        assert_eq!(s.holds[0].since, "2026-01-01T00:00:00.000000Z");

        assert_eq!((s.checks_run, s.checks_compliant), (2, 1));
        assert_eq!(
            s.checks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [200, 300]
        );
        let latest = s.latest_check.as_ref().unwrap();
        assert_eq!((latest.seq, latest.ok, latest.in_period), (300, true, true));
        assert_eq!(s.checks[0].findings, ["coverage_gap"]);
        assert_eq!(s.checks[0].violations, 2);

        assert_eq!(
            (
                s.purges_authorized,
                s.purges_in_period,
                s.payloads_authorized
            ),
            (2, 1, 47)
        );
        assert_eq!(
            s.purges
                .iter()
                .map(|p| (p.seq, p.in_period))
                .collect::<Vec<_>>(),
            [(50, false), (250, true)]
        );

        assert_eq!(s.gaps_ended, 1);
        assert_eq!(s.gaps[0].source, "lab");
        assert_eq!(s.gaps[0].minutes, 180);

        assert!(
            s.status
                .starts_with("COMPLIANT: the latest retention check (entry 300, "),
            "{}",
            s.status
        );
        assert!(s
            .status
            .ends_with("; 1 of 2 checks in the period were compliant"));

        let v = s.to_value();
        assert_eq!(v["status"], serde_json::json!(s.status));
        assert_eq!(v["holds"][0]["subject"], "k1:p10");
        let back: RetentionStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_status_line_says_what_the_latest_check_found() {
        let config = RetentionConfig::default();
        let at = |input: StatusInput| summarize(&config, ts(FROM), ts(TO), input).status;
        assert!(at(StatusInput::default()).starts_with("NOT AVAILABLE"));
        let ran = || StatusInput {
            position: Some(3),
            ..StatusInput::default()
        };
        assert!(at(ran()).starts_with("NO CHECK"));
        let before = at(StatusInput {
            latest_check: Some(check(2, "2026-10-20T00:00:00Z", false)),
            ..ran()
        });
        assert_eq!(
            before,
            "VIOLATION: no retention check was recorded in the period; the latest before it \
             (entry 2, 2026-10-20T00:00:00.000000Z) found 2 violation(s): coverage_gap"
        );
    }

    fn event(action: &str, record: Option<Record>) -> StoredEvent {
        StoredEvent {
            phi: false,
            idem: None,
            actor: StoredActor::default(),
            action: action.into(),
            detail: None,
            record,
            source: "auditledger".into(),
            outcome: "success".into(),
            request: None,
            resource: None,
            patient_id: None,
            occurred_at: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_status_reads_the_projection_on_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(store_sqlite::SqliteStore::open(dir.path()).unwrap());
        let clock = Arc::new(ManualClock::new(ts("2026-10-01T00:00:00Z")));
        let stream = StreamId::default();
        let (writer, _task) = GroupCommitWriter::start(
            store.clone(),
            stream.clone(),
            clock.clone(),
            WriterConfig::default(),
        )
        .await
        .unwrap();
        let append = |at: &str, e: StoredEvent| {
            clock.set(ts(at));
            let prepared = PreparedEntry::new(&Payload::Event(e), writer.hash_alg());
            let writer = writer.clone();
            async move { writer.append(vec![prepared]).await.unwrap()[0].seq }
        };
        let check_record = |ok: bool, as_of: &str| {
            Record::RetentionCheck(RetentionCheck {
                ok,
                head: Some(1),
                as_of: ts(as_of).0,
                entries: 2,
                findings: if ok {
                    vec![]
                } else {
                    vec!["source_silent".into()]
                },
                violations: u64::from(!ok),
            })
        };
        let hold = append(
            "2026-10-02T00:00:00Z",
            event(
                HOLD_ACTION,
                Some(Record::LegalHold(LegalHold {
                    to: None,
                    from: None,
                    scope: HoldScope::User,
                    reason: "matter 12".into(),
                    subject: Some("k1:u".into()),
                })),
            ),
        )
        .await;
        let before = append(
            "2026-10-20T00:00:00Z",
            event(
                RETENTION_CHECK_ACTION,
                Some(check_record(true, "2026-10-20T00:00:00Z")),
            ),
        )
        .await;
        let purge = append(
            "2026-11-03T00:00:00Z",
            event(
                PURGE_ACTION,
                Some(Record::PurgeAuthorization(PurgeAuthorization {
                    to: 1,
                    from: 1,
                    count: 1,
                    holds: vec![hold],
                    rules: vec![PurgedRule {
                        rule: "default".into(),
                        count: 1,
                        years: 6,
                        newest: 0,
                    }],
                    ranges: vec![(1, 1)],
                    archive: "cd".repeat(32),
                    archive_size: 2,
                    authorized_by: "privacy officer".into(),
                })),
            ),
        )
        .await;
        // Several checks in one instant: the highest seq is the latest.
        let mut in_period = Vec::new();
        for ok in [true, false] {
            in_period.push(
                append(
                    "2026-11-05T00:00:00Z",
                    event(
                        RETENTION_CHECK_ACTION,
                        Some(check_record(ok, "2026-11-05T00:00:00Z")),
                    ),
                )
                .await,
            );
        }
        let after = append(
            "2026-12-02T00:00:00Z",
            event(
                RETENTION_CHECK_ACTION,
                Some(check_record(true, "2026-12-02T00:00:00Z")),
            ),
        )
        .await;

        let config = RetentionConfig::default();
        let (from, to) = (ts(FROM), ts(TO));
        let empty = status(store.as_ref(), &stream, &config, from, to)
            .await
            .unwrap();
        assert!(
            empty.status.starts_with("NOT AVAILABLE"),
            "{}",
            empty.status
        );

        let mut runner = Runner::open(
            store.clone(),
            writer.clone(),
            RetentionProjection::new(config.coverage.clone()),
        )
        .await
        .unwrap();
        runner.set_commit_every(2);
        runner.catch_up(|_, _| {}).await.unwrap();
        drop(runner);

        let all = read::checks(store.as_ref(), &stream, None, None)
            .await
            .unwrap();
        let seqs: Vec<Seq> = all.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [before, in_period[0], in_period[1], after]);
        let latest = read::latest_check(store.as_ref(), &stream, Some(to))
            .await
            .unwrap();
        assert_eq!(latest.map(|c| c.seq), Some(in_period[1]));
        let first = read::latest_check(store.as_ref(), &stream, Some(ts("2026-11-01T00:00:00Z")))
            .await
            .unwrap();
        assert_eq!(first.map(|c| c.seq), Some(before));
        assert_eq!(
            read::latest_check(store.as_ref(), &stream, None)
                .await
                .unwrap()
                .map(|c| c.seq),
            Some(after)
        );
        let purges = read::purges(store.as_ref(), &stream).await.unwrap();
        assert_eq!(purges.len(), 1);
        assert_eq!(
            (purges[0].seq, purges[0].holds.clone()),
            (purge, vec![hold])
        );

        let s = status(store.as_ref(), &stream, &config, from, to)
            .await
            .unwrap();
        assert_eq!(s.read_model_position, Some(after));
        assert_eq!((s.checks_run, s.checks_compliant), (2, 1));
        let latest = s.latest_check.as_ref().unwrap();
        assert_eq!((latest.seq, latest.ok), (in_period[1], false));
        assert_eq!(latest.findings, ["source_silent"]);
        assert!(s.status.starts_with("VIOLATION"), "{}", s.status);
        assert_eq!((s.holds_in_force, s.holds[0].seq), (1, hold));
        assert_eq!(s.holds[0].scope, "user");
        assert_eq!(
            (
                s.purges_authorized,
                s.purges_in_period,
                s.payloads_authorized
            ),
            (1, 1, 1)
        );
        assert_eq!(s.purges[0].archive, "cd".repeat(32));
        assert_eq!(s.gaps_ended, 0);
    }
}
