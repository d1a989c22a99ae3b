//! The retention operations a command (or a scheduled job) runs: legal holds, the check, the
//! plan and the purge. Each takes a [`Session`]: the store, a writer on the stream to append
//! the ledger's own records with, and who is acting. The clock is the writer's, so tests run
//! the operations years apart with a manual clock.
//!
//! What each operation decides is in the pure modules ([`crate::check`], [`crate::plan`]);
//! this module reads, verifies, appends and purges around them.

use std::path::Path;
use std::sync::Arc;

use ledger::checkpoint::NoteVerifier;
use ledger::projection::{ProjectionError, Runner};
use ledger::record::{
    HoldRelease, HoldScope, LegalHold, PurgeAuthorization, Record, RetentionCheck, HOLD_ACTION,
    HOLD_RELEASE_ACTION, PURGE_ACTION, RETENTION_CHECK_ACTION,
};
use ledger::verify::{verify_store, VerifyOptions};
use ledger::{
    Clock, GroupCommitWriter, Ingest, PhiScanner, Pseudonymizer, Receipt, Seq, Store, StoreError,
    StreamId, Timestamp,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::archive::{archive_reader, open_archive, store_page};
use crate::check::{evaluate, CheckInput, CheckReport};
use crate::config::RetentionConfig;
use crate::holds::HoldSet;
use crate::plan::{Plan, Planner};
use crate::projection::RetentionProjection;
use crate::read;

/// The action of the event recorded when a purge is refused.
pub const PURGE_REFUSED_ACTION: &str = "retention_purge_refused";

/// How many payloads one purge transaction removes at most (a million-payload purge is a
/// series of these, each durable on its own, all under one authorization).
pub const PURGE_BATCH: u64 = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is refused (bad input, nothing to do, a rule says no): nothing was changed
    /// except, where said, the refusal's own record.
    #[error("{0}")]
    Refused(String),
    /// Anything else (I/O, a ledger that cannot be read as expected).
    #[error("{0}")]
    Failed(String),
}

impl From<ProjectionError> for OpsError {
    fn from(e: ProjectionError) -> OpsError {
        match e {
            ProjectionError::Store(e) => OpsError::Store(e),
            other => OpsError::Failed(format!("the retention projection: {other}")),
        }
    }
}

/// Who acts, on which ledger.
pub struct Session {
    pub store: Arc<dyn Store>,
    pub stream: StreamId,
    /// Appends the ledger's own records; its clock is the operations' clock.
    pub writer: GroupCommitWriter,
    /// Pseudonymizes the actor (and a hold's subject) like any event.
    pub ingest: Ingest,
    pub clock: Arc<dyn Clock>,
    /// The event contract's `actor` object of whoever runs the operation (raw user id; it is
    /// pseudonymized on append).
    pub actor: Value,
}

impl Session {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.ingest.pseudonymizer
    }

    /// Appends an event the ledger writes about itself and returns its receipt once durable.
    async fn append(
        &self,
        action: &str,
        outcome: &str,
        detail: &str,
        record: Option<Record>,
    ) -> Result<Receipt, OpsError> {
        let body = json!({"occurred_at": self.now().to_rfc3339(), "action": action,
                          "outcome": outcome, "actor": self.actor,
                          "resource": {"type": "AuditLog"},
                          "source": "auditledger", "detail": detail});
        let prepared = match record {
            Some(record) => self.ingest.prepare_record(&body, record),
            None => self.ingest.prepare(&body, None),
        }
        .map_err(|e| OpsError::Failed(format!("cannot record the {action} event: {e}")))?;
        let mut receipts = self
            .writer
            .append(vec![prepared])
            .await
            .map_err(|e| OpsError::Failed(format!("cannot record the {action} event: {e}")))?;
        Ok(receipts.remove(0))
    }
}

/// Brings the retention projection (holds, coverage) up to the head. A projection stopped by
/// damage keeps what it applied before it: the check's verification names the damage.
pub async fn catch_up(
    s: &Session,
    config: &RetentionConfig,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<(), OpsError> {
    let mut runner = Runner::open(
        s.store.clone(),
        s.writer.clone(),
        RetentionProjection::new(config.coverage.clone()),
    )
    .await?;
    match runner.catch_up(progress).await {
        Ok(_) | Err(ProjectionError::Moved(_)) | Err(ProjectionError::Damaged { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What a new legal hold covers (raw identifiers: pseudonymized here, never stored).
#[derive(Debug, Clone)]
pub enum HoldTarget {
    Stream,
    Patient(String),
    User(String),
    /// Events that occurred in `from..to`.
    Time {
        from: Timestamp,
        to: Timestamp,
    },
}

fn check_text(what: &str, text: &str) -> Result<(), OpsError> {
    if text.trim().is_empty() || text.len() > ledger::event::MAX_TEXT_LEN {
        return Err(OpsError::Refused(format!(
            "the {what} must be 1 to {} characters",
            ledger::event::MAX_TEXT_LEN
        )));
    }
    if let Some(kind) = PhiScanner::global().find(text) {
        return Err(OpsError::Refused(format!(
            "the {what} looks like it contains PHI ({}): it is kept in the ledger for good, so say it without",
            kind.name()
        )));
    }
    Ok(())
}

/// Records a legal hold. A patient or user hold is recorded twice: under the keyed pseudonym
/// and under the legacy unkeyed one, so entries imported from the old system are held too.
/// Returns the receipts (each hold's id is its entry's seq).
pub async fn add_hold(
    s: &Session,
    target: &HoldTarget,
    reason: &str,
) -> Result<Vec<Receipt>, OpsError> {
    check_text("reason", reason)?;
    let p = s.pseudonymizer();
    let holds: Vec<LegalHold> = match target {
        HoldTarget::Stream => vec![hold(HoldScope::Stream, None, None, None, reason)],
        HoldTarget::Time { from, to } => {
            if from >= to {
                return Err(OpsError::Refused(
                    "the hold's time range is empty: --from must be before --to".into(),
                ));
            }
            vec![hold(HoldScope::Time, None, Some(*from), Some(*to), reason)]
        }
        HoldTarget::Patient(raw) | HoldTarget::User(raw) => {
            if raw.is_empty() || raw.len() > ledger::event::MAX_ID_LEN {
                return Err(OpsError::Refused(format!(
                    "the identifier must be 1 to {} characters",
                    ledger::event::MAX_ID_LEN
                )));
            }
            let scope = if matches!(target, HoldTarget::Patient(_)) {
                HoldScope::Patient
            } else {
                HoldScope::User
            };
            [
                p.pseudonymize(raw).to_string(),
                Pseudonymizer::legacy_sha256(raw).to_string(),
            ]
            .into_iter()
            .map(|subject| hold(scope, Some(subject), None, None, reason))
            .collect()
        }
    };
    let mut receipts = Vec::new();
    for h in holds {
        let detail = format!("legal hold on {} added", h.scope.as_str());
        receipts.push(
            s.append(HOLD_ACTION, "success", &detail, Some(Record::LegalHold(h)))
                .await?,
        );
    }
    Ok(receipts)
}

fn hold(
    scope: HoldScope,
    subject: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    reason: &str,
) -> LegalHold {
    LegalHold {
        to: to.map(|t| t.micros()),
        from: from.map(|t| t.micros()),
        scope,
        reason: reason.to_owned(),
        subject,
    }
}

/// Releases the hold recorded at entry `hold`. Refused (nothing recorded) when there is no
/// such hold or it was released already.
pub async fn release_hold(
    s: &Session,
    config: &RetentionConfig,
    hold: Seq,
    reason: &str,
) -> Result<Receipt, OpsError> {
    check_text("reason", reason)?;
    catch_up(s, config, |_, _| {}).await?;
    let holds = read::hold_set(s.store.as_ref(), &s.stream).await?;
    let Some(h) = holds.get(hold) else {
        return Err(OpsError::Refused(format!(
            "there is no legal hold at entry {hold} (`auditledger retention hold list` lists them)"
        )));
    };
    if h.is_released() {
        return Err(OpsError::Refused(format!(
            "the legal hold at entry {hold} is released already"
        )));
    }
    let receipt = s
        .append(
            HOLD_RELEASE_ACTION,
            "success",
            &format!("legal hold at entry {hold} released"),
            Some(Record::HoldRelease(HoldRelease {
                hold,
                reason: reason.to_owned(),
            })),
        )
        .await?;
    catch_up(s, config, |_, _| {}).await?;
    Ok(receipt)
}

/// The holds, as the projection has them once caught up.
pub async fn holds(s: &Session, config: &RetentionConfig) -> Result<HoldSet, OpsError> {
    catch_up(s, config, |_, _| {}).await?;
    Ok(read::hold_set(s.store.as_ref(), &s.stream).await?)
}

/// The retention check at `as_of`: verifies the whole stream (with the given checkpoints and
/// the store's own), reads holds and coverage from the projection, decides, and appends the
/// outcome as a `retention_check` entry. `progress(entries verified)`.
pub async fn check(
    s: &Session,
    config: &RetentionConfig,
    as_of: Timestamp,
    verify: &VerifyOptions,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<(CheckReport, Receipt), OpsError> {
    catch_up(s, config, |_, _| {}).await?;
    let report = verify_store(s.store.as_ref(), &s.stream, verify, progress).await?;
    let holds = read::hold_set(s.store.as_ref(), &s.stream).await?;
    let since = Timestamp(as_of.micros() - config.coverage.window());
    let gaps = read::gaps(s.store.as_ref(), &s.stream, since).await?;
    let sources = read::sources(s.store.as_ref(), &s.stream).await?;
    let outcome = evaluate(&CheckInput {
        as_of,
        config,
        verify: &report,
        holds: &holds,
        gaps: &gaps,
        sources: &sources,
    });
    let record: RetentionCheck = outcome.record();
    let detail = if outcome.ok {
        "retention check: compliant".to_owned()
    } else {
        format!("retention check: {} violation(s)", outcome.violations.len())
    };
    let receipt = s
        .append(
            RETENTION_CHECK_ACTION,
            if outcome.ok { "success" } else { "failure" },
            &detail,
            Some(Record::RetentionCheck(record)),
        )
        .await?;
    Ok((outcome, receipt))
}

/// What is past its horizon at `as_of` and under no hold (reads only the entries old enough
/// to be past the shortest horizon).
pub async fn plan(
    s: &Session,
    config: &RetentionConfig,
    as_of: Timestamp,
    mut progress: impl FnMut(u64) + Send,
) -> Result<Plan, OpsError> {
    let holds = holds(s, config).await?;
    let mut planner = Planner::new(&config.policy, &holds, as_of);
    let stop = planner.stop_at();
    let mut chunks = s.store.scan(&s.stream, 0);
    'scan: while let Some(chunk) = chunks.recv().await {
        for e in chunk? {
            if e.recorded_at >= stop {
                break 'scan;
            }
            planner.push(&e);
        }
        progress(planner.entries());
    }
    Ok(planner.finish())
}

/// What a purge did.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeOutcome {
    /// The authorization's entry.
    pub authorization: Receipt,
    pub record: PurgeAuthorization,
    /// Payloads removed now (a purge resumed after a crash removes what is left).
    pub purged: u64,
    /// The plan it carried out (what was kept, and why).
    pub plan: Plan,
}

/// Purges, under a new authorization, the payloads of the entries in the archive at
/// `archive` that are past their horizon now and under no hold.
///
/// Refused, with the refusal recorded in the ledger, when the archive does not match the
/// ledger or nothing in it may go. The archive must verify against its own signed checkpoint
/// (opened with `key`) and every entry in it must have the ledger's entry hash at its seq.
pub async fn purge(
    s: &Session,
    config: &RetentionConfig,
    archive: &Path,
    key: &NoteVerifier,
    authorized_by: &str,
    mut progress: impl FnMut(&str, u64, u64) + Send,
) -> Result<PurgeOutcome, OpsError> {
    check_text("authorization (--authorized-by)", authorized_by)?;
    let as_of = s.now();
    let path = archive.to_owned();
    let verifier = key.clone();
    let opened = tokio::task::spawn_blocking(move || open_archive(&path, &verifier))
        .await
        .map_err(|e| OpsError::Failed(e.to_string()))?;
    let opened = match opened {
        Ok(o) => o,
        Err(e) => return Err(refuse(s, &format!("the archive is refused: {e}")).await),
    };
    if opened.stream != s.stream {
        return Err(refuse(
            s,
            &format!(
                "the archive holds stream {}, not {}",
                opened.stream, s.stream
            ),
        )
        .await);
    }
    let size = opened.checkpoint.size;
    let head = s.store.head(&s.stream).await?.map_or(0, |h| h.seq + 1);
    if size > head {
        return Err(refuse(
            s,
            &format!("the archive holds {size} entries, the ledger only {head}"),
        )
        .await);
    }
    let holds = holds(s, config).await?;
    let mut planner = Planner::new(&config.policy, &holds, as_of);
    let mut reader = archive_reader(&opened.path)?;
    let mut next: Seq = 0;
    while next < size {
        let page = store_page(s.store.as_ref(), &s.stream, next, size).await?;
        for stored in &page {
            let archived = reader
                .next_entry()
                .map_err(|e| OpsError::Failed(e.to_string()))?
                .ok_or_else(|| OpsError::Failed("the archive ended early".into()))?;
            if archived.seq != stored.seq || archived.entry_hash != stored.entry_hash {
                return Err(refuse(
                    s,
                    &format!(
                        "the archive does not match the ledger at entry {}: it is not a copy of this ledger",
                        stored.seq
                    ),
                )
                .await);
            }
            match (&stored.payload, &archived.payload) {
                // Purged already: the planner counts it.
                (None, _) => planner.push(stored),
                // Only what the archive holds may go.
                (Some(_), Some(_)) => planner.push(&archived),
                (Some(_), None) => {}
            }
        }
        next += page.len() as u64;
        progress("reading the archive", next, size);
    }
    let plan = planner.finish();
    let ranges = plan.eligible_ranges().to_vec();
    let (Some(&(from, _)), Some(&(_, to))) = (ranges.first(), ranges.last()) else {
        return Err(refuse(
            s,
            &format!(
                "nothing in the archive may be purged at {}: {} entries are inside their horizon, {} under a legal hold, {} purged already",
                as_of.to_rfc3339(),
                plan.inside_horizon,
                plan.held.iter().map(|h| h.count).sum::<u64>(),
                plan.already_purged
            ),
        )
        .await);
    };
    let record = PurgeAuthorization {
        to,
        from,
        count: plan.eligible,
        holds: holds.active().map(|h| h.seq).collect(),
        rules: plan.purged_rules(),
        ranges: ranges.clone(),
        archive: opened.sha256.to_hex(),
        archive_size: size,
        authorized_by: authorized_by.to_owned(),
    };
    let authorization = s
        .append(
            PURGE_ACTION,
            "success",
            &format!(
                "purge of {} payload(s) in entries {from}..={to} authorized; kept: {} inside their horizon, {} under a legal hold",
                plan.eligible,
                plan.inside_horizon,
                plan.held.iter().map(|h| h.count).sum::<u64>()
            ),
            Some(Record::PurgeAuthorization(record.clone())),
        )
        .await?;
    let mut purged = 0u64;
    for &(f, t) in &ranges {
        let mut at = f;
        while at <= t {
            let end = t.min(at + PURGE_BATCH - 1);
            match s
                .store
                .purge_payloads(&s.stream, authorization.seq, at, end)
                .await
            {
                Ok(n) => purged += n,
                Err(StoreError::Refused(why)) => {
                    return Err(refuse(
                        s,
                        &format!("the store refused to purge entries {at}..={end}: {why}"),
                    )
                    .await)
                }
                Err(e) => return Err(e.into()),
            }
            progress("purging payloads", purged, plan.eligible);
            at = end + 1;
        }
    }
    Ok(PurgeOutcome {
        authorization,
        record,
        purged,
        plan,
    })
}

/// Records a refused purge in the ledger (who tried, and why it was refused) and returns the
/// refusal. If even the record cannot be written, that error is returned instead.
async fn refuse(s: &Session, why: &str) -> OpsError {
    let detail: String = why
        .chars()
        .take(ledger::event::MAX_DETAIL_LEN / 2)
        .collect();
    match s
        .append(PURGE_REFUSED_ACTION, "denied", &detail, None)
        .await
    {
        Ok(receipt) => OpsError::Refused(format!(
            "{why} (the refusal is recorded at entry {})",
            receipt.seq
        )),
        Err(e) => e,
    }
}
