//! The security projection: feeds the detector the verified stream, records each detection in
//! the ledger as a `security_event` entry and in the read model, and keeps the block list.
//!
//! Read model (projection `security`):
//! - `event`: one row per detection, keyed by its idempotency digest, `at` = end of its window;
//!   the row names the `security_event` entry that records it (`ledger_seq`).
//! - `block`: one row per blocked IP pseudonym, `at` = when the block expires. A later block
//!   of the same IP replaces it; a `block_lifted` entry removes it.
//! - `lift`: one row per lifted block (`ord` = the `block_lifted` entry's `seq`), for reports.
//!
//! Everything here is a deterministic function of the entries, so replay gives the same rows.

use ledger::payload::{StoredActor, StoredEvent, StoredResource};
use ledger::projection::{own_entry_digest, Effects, OwnEntry, Projection, VerifiedEntry};
use ledger::{ReadModelRow, RowChange, Timestamp};
use serde_json::json;

use crate::config::RulesConfig;
use crate::detector::{decode_state, encode_state, Detection, Detector};
use crate::observation::Observation;

/// The projection's name in the store.
pub const NAME: &str = "security";
/// `source` of the entries this projection appends.
pub const SOURCE: &str = "auditledger-security";
/// `action` of a detection's entry.
pub const SECURITY_EVENT: &str = "security_event";
/// `action` of an admin's lifting of a block; its `resource` is a [`BLOCKED_IP`] whose id is
/// the blocked IP (pseudonymized on append like every identifier).
pub const BLOCK_LIFTED: &str = "block_lifted";
/// `resource.type` of a [`BLOCK_LIFTED`] entry.
pub const BLOCKED_IP: &str = "BlockedIp";

/// Read-model tables.
pub const EVENTS: &str = "event";
pub const BLOCKS: &str = "block";
pub const LIFTS: &str = "lift";

pub struct SecurityProjection {
    config: RulesConfig,
    detector: Detector,
}

impl SecurityProjection {
    /// `config` must have passed `RulesConfig::validate`.
    pub fn new(config: RulesConfig) -> SecurityProjection {
        SecurityProjection {
            detector: Detector::new(config.clone()),
            config,
        }
    }

    fn detected(&self, d: &Detection, effects: &mut Effects) {
        let subjects: Vec<String> = d
            .subjects
            .iter()
            .map(|(what, who)| format!("{what}={who}"))
            .collect();
        let range = format!("{}-{}", d.first_seq, d.last_seq);
        let mut parts: Vec<&[u8]> = vec![d.rule.name().as_bytes(), range.as_bytes()];
        parts.extend(subjects.iter().map(|s| s.as_bytes()));
        let idem = own_entry_digest(NAME, &parts);
        let key = idem.to_hex();
        let subject = |what: &str| {
            d.subjects
                .iter()
                .find(|(w, _)| *w == what)
                .map(|(_, who)| who.clone())
        };
        let event = StoredEvent {
            phi: false,
            idem: Some(idem),
            actor: StoredActor {
                ip: subject("ip"),
                role: None,
                user_id: subject("user"),
                session_id: subject("session"),
                user_agent: None,
            },
            action: SECURITY_EVENT.to_owned(),
            detail: Some(format!(
                "{} {}: {}; evidence seq {}..={}",
                d.rule.name(),
                d.severity.name(),
                d.summary,
                d.first_seq,
                d.last_seq
            )),
            record: None,
            source: SOURCE.to_owned(),
            outcome: "success".to_owned(),
            request: None,
            resource: Some(StoredResource {
                id: None,
                kind: "SecurityEvent".to_owned(),
            }),
            patient_id: None,
            occurred_at: d.window_to.micros(),
        };
        let value = json!({
            "id": key,
            "rule": d.rule.name(),
            "severity": d.severity.name(),
            "subjects": d.subjects.iter().map(|(w, who)| json!({"kind": w, "pseudonym": who})).collect::<Vec<_>>(),
            "window_from": d.window_from.to_rfc3339(),
            "window_to": d.window_to.to_rfc3339(),
            "first_seq": d.first_seq,
            "last_seq": d.last_seq,
            "evidence": d.evidence,
            "summary": d.summary,
            "block_until": d.block.as_ref().map(|b| b.until.to_rfc3339()),
        });
        if let Some(block) = &d.block {
            effects.changes.push(RowChange::Put(ReadModelRow {
                table: BLOCKS.to_owned(),
                key: block.ip.clone(),
                ord: 0,
                at: block.until,
                value: json!({
                    "ip": block.ip,
                    "until": block.until.to_rfc3339(),
                    "since": d.window_to.to_rfc3339(),
                    "rule": d.rule.name(),
                    "detection": key,
                    "first_seq": d.first_seq,
                    "last_seq": d.last_seq,
                })
                .to_string(),
            }));
        }
        effects.own.push(OwnEntry {
            event,
            row: Some(ReadModelRow {
                table: EVENTS.to_owned(),
                key,
                ord: 0,
                at: d.window_to,
                value: value.to_string(),
            }),
        });
    }

    fn lifted(&self, entry: &VerifiedEntry<'_>, e: &StoredEvent, effects: &mut Effects) {
        let Some(ip) = e
            .resource
            .as_ref()
            .filter(|r| r.kind == BLOCKED_IP)
            .and_then(|r| r.id.clone())
        else {
            return;
        };
        effects.changes.push(RowChange::Delete {
            table: BLOCKS.to_owned(),
            key: ip.clone(),
            ord: 0,
        });
        effects.changes.push(RowChange::Put(ReadModelRow {
            table: LIFTS.to_owned(),
            key: ip.clone(),
            ord: entry.seq as i64,
            at: Timestamp(e.occurred_at),
            value: json!({
                "ip": ip,
                "at": Timestamp(e.occurred_at).to_rfc3339(),
                "by": e.actor.user_id,
                "reason": e.detail,
                "ledger_seq": entry.seq,
                "ledger_entry_hash": entry.entry_hash.to_hex(),
            })
            .to_string(),
        }));
    }
}

impl Projection for SecurityProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let state = decode_state(state).map_err(|e| e.to_string())?;
        self.detector = Detector::restore(self.config.clone(), state);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_state(self.detector.state())
    }

    fn apply(&mut self, entry: &VerifiedEntry<'_>, effects: &mut Effects) {
        let Some(e) = entry.event else { return };
        if e.action == BLOCK_LIFTED {
            self.lifted(entry, e, effects);
            return;
        }
        // Observation::from_event refuses the projection's own output.
        let Some(o) = Observation::from_event(entry.seq, e) else {
            return;
        };
        for d in self.detector.observe(&o) {
            self.detected(&d, effects);
        }
    }
}
