//! Gathers what the reports rest on, for the command line and the HTTP server alike: the
//! `phi-access`, `security` and `retention` read models for the figures, and the ledger itself
//! for the evidence. A report never presents a figure as sound on the read model's word: the entries a
//! disclosures report cites are re-read, re-verified and re-derived, and proven to be in the
//! latest signed checkpoint; the compliance report verifies the chain over the period's
//! entries and ties its last entry to that checkpoint.

use std::sync::Arc;

use chrono::NaiveDate;
use ledger::checkpoint::{Checkpoint, NoteVerifier};
use ledger::evidence::{anchor_entries, verify_segment, AnchorReport, SegmentReport};
use ledger::projection::{ProjectionError, Runner};
use ledger::verify::check_entry;
use ledger::{
    Digest, GroupCommitWriter, Payload, Pseudonymizer, Seq, Store, StoreError, StreamId, Timestamp,
};
use phi_access::model::Access;
use phi_access::report::{
    build_hipaa, CheckpointInfo, DisclosureLine, DisclosureReport, HipaaInput, HipaaReport,
    Integrity, Period, SecurityEventRow, SecurityInput,
};
use phi_access::{read, AnalyticsConfig, SiteCalendar};
use retention::{RetentionConfig, RetentionProjection};
use security::Severity;
use serde_json::{json, Value};

/// Most rows a report reads from one security listing.
const SECURITY_ROWS: usize = 100_000;

/// Where a report's data comes from.
pub struct Sources<'a> {
    pub store: &'a dyn Store,
    pub stream: &'a StreamId,
    pub config: &'a AnalyticsConfig,
    /// The key the stored checkpoints must be signed with; without it nothing is anchored.
    pub checkpoint_key: Option<&'a NoteVerifier>,
}

/// Brings the `retention` projection (holds, coverage, checks, purges) up to the head. It
/// appends nothing, so any writer of the stream does. A projection stopped by a damaged entry
/// keeps what it applied before it: that is returned as a warning, since the report's own
/// verification names the damage. Another runner moving it (a server) is fine too.
pub async fn catch_up_retention(
    store: Arc<dyn Store>,
    writer: GroupCommitWriter,
    config: &RetentionConfig,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<Option<String>, ProjectionError> {
    let projection = RetentionProjection::new(config.coverage.clone());
    let mut runner = Runner::open(store, writer, projection).await?;
    match runner.catch_up(progress).await {
        Ok(_) | Err(ProjectionError::Moved(_)) => Ok(None),
        Err(ProjectionError::Damaged {
            seq,
            problem,
            detail,
        }) => Ok(Some(format!(
            "the retention projection stopped before entry {seq} ({}): {detail}; the retention \
             section covers the entries before it",
            problem.as_str()
        ))),
        Err(e) => Err(e),
    }
}

/// A disclosures request.
pub struct DisclosureQuery<'a> {
    /// The patient's raw identifier: pseudonymized here, never stored or logged.
    pub raw_patient: &'a str,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Also verify every entry of the period's `seq` span, not only the cited ones.
    pub verify_range: bool,
}

/// Six years before `now`, the span of 45 CFR 164.528 and 164.530(j).
pub fn six_years_before(now: Timestamp) -> Timestamp {
    let dt = now.to_datetime();
    let back = dt.checked_sub_months(chrono::Months::new(72)).unwrap_or(dt);
    Timestamp(back.timestamp_micros())
}

/// The event that records a request for a patient's accounting of disclosures: an audit-log
/// read naming who asked and (pseudonymized on append, like every identifier) which patient.
pub fn disclosure_request_event(actor: Value, q: &DisclosureQuery<'_>) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({"occurred_at": now, "action": "read", "outcome": "success", "actor": actor,
           "resource": {"type": "AuditLog"}, "patient_id": q.raw_patient, "phi": false,
           "source": "auditledger",
           "detail": format!("accounting of disclosures requested for {} to {}",
                             q.from.to_rfc3339(), q.to.to_rfc3339())})
}

/// The accounting of disclosures for one patient: every PHI access in `[from, to)` under the
/// patient's keyed pseudonym or the legacy SHA-256 one, each re-verified from the ledger.
pub async fn disclosures(
    src: &Sources<'_>,
    pseudonymizer: &Pseudonymizer,
    q: &DisclosureQuery<'_>,
) -> Result<DisclosureReport, StoreError> {
    let keyed = pseudonymizer.pseudonymize(q.raw_patient).to_string();
    let legacy = Pseudonymizer::legacy_sha256(q.raw_patient).to_string();
    let rows = read::patient_rows(
        src.store,
        src.stream,
        &[keyed.clone(), legacy.clone()],
        Some(q.from),
        Some(q.to),
    )
    .await?;
    let checked = recheck_accesses(src, &rows).await?;
    let anchor = match src.checkpoint_key {
        Some(key) => {
            let cited: Vec<(Seq, Digest)> = checked
                .iter()
                .filter(|c| c.problem.is_none())
                .filter_map(|c| Some((c.access.seq, Digest::from_hex(&c.access.entry_hash)?)))
                .collect();
            Some(anchor_entries(src.store, src.stream, &cited, key).await?)
        }
        None => None,
    };
    let range = if q.verify_range {
        let cal = SiteCalendar::new(src.config);
        let span = seq_span(src, &cal, cal.date(q.from), next_day(cal.date(q.to))).await?;
        match span {
            Some((from, to)) => {
                Some(verify_segment(src.store, src.stream, from, to, |_| {}).await?)
            }
            None => None,
        }
    } else {
        None
    };
    let position = read::position(src.store, src.stream).await?;
    let head = src.store.head(src.stream).await?.map(|h| h.seq);
    let failed: Vec<&Rechecked> = checked.iter().filter(|c| c.problem.is_some()).collect();
    let lines = checked
        .iter()
        .map(|c| DisclosureLine {
            occurred_at: c.access.occurred_at.clone(),
            user: c.access.user.clone(),
            role: c.access.role.clone(),
            action: c.access.action.clone(),
            outcome: c.access.outcome.clone(),
            source: c.access.source.clone(),
            resource_type: c.access.resource_type.clone(),
            seq: c.access.seq,
            entry_hash: c.access.entry_hash.clone(),
            legacy: c.row_patient == legacy,
            verified: c.problem.is_none()
                && anchor
                    .as_ref()
                    .is_some_and(|a| !a.failures.iter().any(|f| f.seq == c.access.seq)),
        })
        .collect();
    let integrity = disclosure_integrity(
        &checked,
        &failed,
        anchor.as_ref(),
        range.as_ref(),
        position,
        head,
        src,
    )
    .await?;
    Ok(DisclosureReport {
        generated_at: Timestamp::from_micros(chrono::Utc::now().timestamp_micros()).to_rfc3339(),
        stream: src.stream.to_string(),
        patient: keyed,
        legacy_pseudonym: legacy,
        from: q.from.to_rfc3339(),
        to: q.to.to_rfc3339(),
        lines,
        integrity,
        requested_by: None,
        request_seq: None,
    })
}

/// A cited access, re-read from the ledger.
struct Rechecked {
    /// What the cited entry records (as far as it can be read: see [`unreadable_access`]).
    access: Access,
    /// The patient pseudonym its row is keyed by (keyed or legacy).
    row_patient: String,
    /// Why it does not stand, if it does not.
    problem: Option<(String, String)>,
}

/// Re-reads the entry each `patient` row cites, checks it on its own (payload digest, entry
/// hash, columns), derives the access again from its payload, and checks that the row
/// describes it (patient, time, entry-hash prefix). A line shows what the entry records; where
/// the entry cannot be read as an event, what the row knows ([`unreadable_access`]).
async fn recheck_accesses(
    src: &Sources<'_>,
    rows: &[read::PatientRow],
) -> Result<Vec<Rechecked>, StoreError> {
    let alg = match src.store.get(src.stream, 0).await? {
        Some(genesis) => ledger::verify::genesis_alg(src.stream, &genesis)
            .map_err(|e| StoreError::Corrupt(format!("the genesis entry is unreadable: {e}")))?,
        None => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let problem = |problem: &str, detail: String| Some((problem.to_owned(), detail));
        let checked = match src.store.get(src.stream, row.seq).await? {
            None => Rechecked {
                access: unreadable_access(row, None),
                row_patient: row.value.patient.clone(),
                problem: problem(
                    "gap",
                    format!("entry {} is missing from the ledger", row.seq),
                ),
            },
            Some(entry) => {
                let check = check_entry(&entry, src.stream, alg);
                match entry.decode_payload() {
                    Some(Ok(Payload::Event(event))) => {
                        let access = Access::of_event(entry.seq, &entry.entry_hash, &event);
                        let problem = match check {
                            Err((p, detail)) => problem(p.as_str(), detail),
                            Ok(()) => {
                                let mismatch = match Access::from_event(
                                    entry.seq,
                                    &entry.entry_hash,
                                    &event,
                                    src.config,
                                ) {
                                    None => Some("the entry is not a PHI access".to_owned()),
                                    Some(a) => row.mismatch(&a),
                                };
                                mismatch.and_then(|why| {
                                    problem(
                                        "read_model_mismatch",
                                        format!(
                                            "the read model's row for entry {} does not describe it: {why} (rebuild with `auditledger project phi-access --rebuild`)",
                                            row.seq
                                        ),
                                    )
                                })
                            }
                        };
                        Rechecked {
                            access,
                            row_patient: row.value.patient.clone(),
                            problem,
                        }
                    }
                    other => {
                        let (p, detail) = match (check, other) {
                            (Err((p, detail)), _) => (p.as_str().to_owned(), detail),
                            (Ok(()), None) => (
                                "payload_missing".to_owned(),
                                format!("entry {}'s payload was purged", row.seq),
                            ),
                            (Ok(()), Some(_)) => (
                                "malformed_payload".to_owned(),
                                format!("entry {} does not hold an event", row.seq),
                            ),
                        };
                        Rechecked {
                            access: unreadable_access(row, Some(&entry.entry_hash)),
                            row_patient: row.value.patient.clone(),
                            problem: Some((p, detail)),
                        }
                    }
                }
            }
        };
        out.push(checked);
    }
    Ok(out)
}

/// The line of a cited entry that is missing or holds no readable event: what its row knows
/// (seq, time, patient) and the entry hash the ledger holds for it, if any (else the row's
/// prefix of it); the rest is unknown.
fn unreadable_access(row: &read::PatientRow, entry_hash: Option<&Digest>) -> Access {
    Access {
        seq: row.seq,
        entry_hash: entry_hash.map_or_else(|| row.value.entry_hash_prefix.clone(), Digest::to_hex),
        occurred_at: row.at.to_rfc3339(),
        user: None,
        role: None,
        action: String::new(),
        outcome: String::new(),
        source: String::new(),
        resource_type: None,
        patient: Some(row.value.patient.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn disclosure_integrity(
    checked: &[Rechecked],
    failed: &[&Rechecked],
    anchor: Option<&AnchorReport>,
    range: Option<&SegmentReport>,
    position: Option<Seq>,
    head: Option<Seq>,
    src: &Sources<'_>,
) -> Result<Integrity, StoreError> {
    let (stored, valid) = checkpoint_counts(src).await?;
    let mut integrity = Integrity {
        ok: true,
        statement: String::new(),
        from_seq: checked.iter().map(|c| c.access.seq).min(),
        to_seq: checked.iter().map(|c| c.access.seq).max(),
        entries_verified: (checked.len() - failed.len()) as u64,
        first_bad_seq: None,
        problem: None,
        detail: None,
        checkpoint: anchor.and_then(checkpoint_info),
        checkpoints_stored: stored,
        checkpoints_valid: valid,
        read_model_position: position,
    };
    let mut said = Vec::new();
    if let Some(bad) = failed.first() {
        let (problem, detail) = bad.problem.clone().unwrap_or_default();
        integrity.fail(bad.access.seq, &problem, &detail);
    }
    said.push(format!(
        "{} of {} cited entries were re-read and re-verified from the ledger",
        checked.len() - failed.len(),
        checked.len()
    ));
    anchor_statement(anchor, &mut integrity, &mut said);
    if let Some(r) = range {
        segment_statement(r, &mut integrity, &mut said);
    }
    said.push(freshness(position, head));
    integrity.statement = conclude(&integrity, said);
    Ok(integrity)
}

impl IntegrityExt for Integrity {
    fn fail(&mut self, seq: Seq, problem: &str, detail: &str) {
        if self.ok {
            self.ok = false;
            self.first_bad_seq = Some(seq);
            self.problem = Some(problem.to_owned());
            self.detail = Some(detail.to_owned());
        }
    }
}

trait IntegrityExt {
    /// Records the first failure.
    fn fail(&mut self, seq: Seq, problem: &str, detail: &str);
}

fn checkpoint_info(a: &AnchorReport) -> Option<CheckpointInfo> {
    a.checkpoint.as_ref().map(|cp| CheckpointInfo {
        size: cp.size,
        root: cp.root.to_hex(),
        signer: cp.signer.clone(),
        signature_valid: true,
        anchors_range: a.ok,
    })
}

fn anchor_statement(
    anchor: Option<&AnchorReport>,
    integrity: &mut Integrity,
    said: &mut Vec<String>,
) {
    match anchor {
        None => {
            integrity.ok = false;
            integrity
                .problem
                .get_or_insert_with(|| "no_checkpoint_key".to_owned());
            said.push(
                "no checkpoint key is available, so nothing is anchored to a signed checkpoint"
                    .to_owned(),
            );
        }
        Some(a) => {
            if let Some(f) = a.failures.first() {
                integrity.fail(f.seq, "not_in_checkpoint", &f.detail);
            }
            match &a.checkpoint {
                Some(cp) => {
                    let mut s = format!(
                        "{} proven (RFC 9162 inclusion proofs) to be in the checkpoint of size {} signed by {}",
                        a.proven, cp.size, cp.signer
                    );
                    if a.linked_after > 0 {
                        s.push_str(&format!(
                            ", and {} newer linked to its head by the hash chain",
                            a.linked_after
                        ));
                    }
                    said.push(s);
                }
                None => {
                    integrity.ok = false;
                    integrity
                        .problem
                        .get_or_insert_with(|| "no_checkpoint".to_owned());
                    said.push(
                        a.note.clone().unwrap_or_else(|| {
                            "no stored checkpoint verifies under the key: run `auditledger checkpoint`".to_owned()
                        }),
                    );
                }
            }
        }
    }
}

fn segment_statement(r: &SegmentReport, integrity: &mut Integrity, said: &mut Vec<String>) {
    if r.ok {
        said.push(format!(
            "the chain verified over entries {} to {} ({} entries)",
            r.from, r.to, r.entries
        ));
    } else {
        integrity.fail(
            r.first_bad_seq.unwrap_or(r.from),
            r.problem.map_or("damaged", |p| p.as_str()),
            r.detail.as_deref().unwrap_or(""),
        );
        said.push(format!(
            "the chain did NOT verify over entries {} to {}: {}",
            r.from,
            r.to,
            r.detail.as_deref().unwrap_or("damaged")
        ));
    }
}

fn freshness(position: Option<Seq>, head: Option<Seq>) -> String {
    match (position, head) {
        (Some(p), Some(h)) if p >= h => {
            format!("the read model is current to the head (entry {h})")
        }
        (Some(p), Some(h)) => format!(
            "the read model is current to entry {p}: {} newer {} up to the head (entry {h}) {} not covered yet",
            h - p,
            if h - p == 1 { "entry" } else { "entries" },
            if h - p == 1 { "is" } else { "are" },
        ),
        (None, _) => {
            "the phi-access projection has not run yet: run `auditledger project phi-access`"
                .to_owned()
        }
        (Some(p), None) => format!("the read model is current to entry {p}"),
    }
}

fn conclude(integrity: &Integrity, said: Vec<String>) -> String {
    let verdict = if integrity.ok {
        "VERIFIED"
    } else {
        "NOT VERIFIED"
    };
    let mut s = format!("{verdict}: {}.", said.join("; "));
    if let (false, Some(seq), Some(detail)) = (
        integrity.ok,
        integrity.first_bad_seq,
        integrity.detail.as_deref(),
    ) {
        s.push_str(&format!(" First problem at entry {seq}: {detail}."));
    }
    s
}

/// Stored checkpoints, and how many of them open under the key.
async fn checkpoint_counts(src: &Sources<'_>) -> Result<(u64, u64), StoreError> {
    let stored = src.store.checkpoints(src.stream).await?;
    let valid = match src.checkpoint_key {
        Some(key) => stored
            .iter()
            .filter(|c| Checkpoint::open(&c.note, key).is_ok_and(|cp| cp.size == c.size))
            .count(),
        None => 0,
    };
    Ok((stored.len() as u64, valid as u64))
}

fn next_day(d: NaiveDate) -> NaiveDate {
    d.succ_opt().unwrap_or(d)
}

/// The `seq` span of the entries of site days `[from, to)`, from the day aggregates.
async fn seq_span(
    src: &Sources<'_>,
    cal: &SiteCalendar,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Option<(Seq, Seq)>, StoreError> {
    let days = read::day_totals(src.store, src.stream, cal, from, to).await?;
    Ok(span_of(&days))
}

/// The `seq` span of the days' entries (`None` when they have none).
fn span_of(days: &[phi_access::DayTotals]) -> Option<(Seq, Seq)> {
    let active = || days.iter().filter(|d| d.events > 0);
    let first = active().map(|d| d.first_seq).min();
    let last = active().map(|d| d.last_seq).max();
    first.zip(last)
}

/// The HIPAA compliance report for site days `[from, to)`, without its retention section
/// (which then says retention checks are not available): [`hipaa_with_retention`] with
/// `None`.
pub async fn hipaa(
    src: &Sources<'_>,
    from: NaiveDate,
    to: NaiveDate,
    progress: impl FnMut(u64) + Send,
) -> Result<HipaaReport, StoreError> {
    hipaa_with_retention(src, None, from, to, progress).await
}

/// The HIPAA compliance report for site days `[from, to)`. `progress` sees the count of
/// entries verified so far. With `retention` (the policy and coverage settings), the retention
/// section is filled from the retention read model as it is, over the same instants by the
/// ledger's clock (`recorded_at`): bring it up to the head first ([`catch_up_retention`]).
pub async fn hipaa_with_retention(
    src: &Sources<'_>,
    retention: Option<&RetentionConfig>,
    from: NaiveDate,
    to: NaiveDate,
    progress: impl FnMut(u64) + Send,
) -> Result<HipaaReport, StoreError> {
    let cal = SiteCalendar::new(src.config);
    let days = read::day_totals(src.store, src.stream, &cal, from, to).await?;
    let baseline_from = from - chrono::Duration::days(i64::from(src.config.unusual.baseline_days));
    let history = read::user_days(src.store, src.stream, &cal, baseline_from, to).await?;
    let flags = phi_access::patterns::unusual_days(&history, from, to, &src.config.unusual);
    let from_day = from.to_string();
    let user_days: Vec<_> = history.into_iter().filter(|u| u.day >= from_day).collect();
    let (start, end) = (cal.start_of(from), cal.start_of(to));
    let changes = read::changes(src.store, src.stream, start, end).await?;
    let security = security_input(src, start, end).await?;
    let retention = match retention {
        Some(config) => Some(
            retention::report::status(src.store, src.stream, config, start, end)
                .await?
                .to_value(),
        ),
        None => None,
    };
    let integrity = period_integrity(src, &days, progress).await?;
    Ok(build_hipaa(HipaaInput {
        generated_at: Timestamp::from_micros(chrono::Utc::now().timestamp_micros()).to_rfc3339(),
        stream: src.stream.to_string(),
        period: Period {
            from: from.to_string(),
            to: to.to_string(),
            timezone: src.config.site.timezone.clone(),
        },
        integrity,
        days,
        user_days,
        flags,
        changes,
        security,
        retention,
    }))
}

/// Verifies the chain over the `seq` span of the period's entries, and ties its last entry to
/// the latest signed checkpoint (which, with the links, covers every entry of the span).
async fn period_integrity(
    src: &Sources<'_>,
    days: &[phi_access::DayTotals],
    progress: impl FnMut(u64) + Send,
) -> Result<Integrity, StoreError> {
    let (stored, valid) = checkpoint_counts(src).await?;
    let position = read::position(src.store, src.stream).await?;
    let head = src.store.head(src.stream).await?.map(|h| h.seq);
    let span = span_of(days);
    let (first, last) = (span.map(|s| s.0), span.map(|s| s.1));
    let mut integrity = Integrity {
        ok: true,
        statement: String::new(),
        from_seq: first,
        to_seq: last,
        entries_verified: 0,
        first_bad_seq: None,
        problem: None,
        detail: None,
        checkpoint: None,
        checkpoints_stored: stored,
        checkpoints_valid: valid,
        read_model_position: position,
    };
    let mut said = Vec::new();
    match span {
        None => said.push("the period has no entries".to_owned()),
        Some((from, to)) => {
            let segment = verify_segment(src.store, src.stream, from, to, progress).await?;
            integrity.entries_verified = if segment.ok { segment.entries } else { 0 };
            segment_statement(&segment, &mut integrity, &mut said);
            let anchor = match (src.checkpoint_key, segment.last_entry_hash) {
                (Some(key), Some(hash)) if segment.ok => {
                    Some(anchor_entries(src.store, src.stream, &[(to, hash)], key).await?)
                }
                _ => None,
            };
            if segment.ok {
                integrity.checkpoint = anchor.as_ref().and_then(checkpoint_info);
                anchor_statement(anchor.as_ref(), &mut integrity, &mut said);
            }
        }
    }
    said.push(format!(
        "{valid} of {stored} stored checkpoints carry a valid signature"
    ));
    if valid < stored {
        integrity.ok = false;
        integrity
            .problem
            .get_or_insert_with(|| "bad_checkpoint".to_owned());
    }
    said.push(freshness(position, head));
    integrity.statement = conclude(&integrity, said);
    Ok(integrity)
}

/// The security projection's detections, blocks and lifts within `[start, end)`.
async fn security_input(
    src: &Sources<'_>,
    start: Timestamp,
    end: Timestamp,
) -> Result<SecurityInput, StoreError> {
    let available = src
        .store
        .projection(security::projection::NAME, src.stream)
        .await?
        .is_some();
    let events = security::read::events(
        src.store,
        src.stream,
        Some(start),
        Some(end),
        Severity::Low,
        SECURITY_ROWS,
    )
    .await?;
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let rows: Vec<SecurityEventRow> = events
        .iter()
        .map(|v| SecurityEventRow {
            at: text(v, "window_to"),
            rule: text(v, "rule"),
            severity: text(v, "severity"),
            summary: text(v, "summary"),
            first_seq: v["first_seq"].as_u64().unwrap_or_default(),
            last_seq: v["last_seq"].as_u64().unwrap_or_default(),
        })
        .collect();
    let blocks_issued = events
        .iter()
        .filter(|v| v["block_until"].is_string())
        .count() as u64;
    let lifts = security::read::lifts(src.store, src.stream, Some(start), SECURITY_ROWS).await?;
    let end_text = end.to_rfc3339();
    let blocks_lifted = lifts
        .iter()
        .filter(|v| v["at"].as_str().is_some_and(|at| at < end_text.as_str()))
        .count() as u64;
    Ok(SecurityInput {
        available,
        events: rows,
        blocks_issued,
        blocks_lifted,
    })
}
