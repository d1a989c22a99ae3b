//! From a client's batch of JSON events to entries ready for the writer: validate every event,
//! pseudonymize, encode and digest, in parallel. All or nothing: one bad event and the whole
//! batch is refused with every problem listed, so nothing of a bad batch is ever written.

use rayon::prelude::*;
use serde_json::Value;

use crate::entry::PreparedEntry;
use crate::event::{AuditEvent, EventError, FieldError, ParseOptions};
use crate::hash::HashAlg;
use crate::payload::{Payload, StoredEvent};
use crate::pseudonym::Pseudonymizer;

/// How identifiers in the input are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentifierMode {
    /// Raw identifiers, pseudonymized with the site's key (the normal case).
    #[default]
    Raw,
    /// Rows exported from the legacy system: identifiers already hold its unkeyed SHA-256 hex.
    LegacySha256,
}

/// Turns client input into prepared entries.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub pseudonymizer: Pseudonymizer,
    pub parse: ParseOptions,
    pub mode: IdentifierMode,
    pub alg: HashAlg,
}

impl Ingest {
    pub fn new(pseudonymizer: Pseudonymizer) -> Ingest {
        Ingest {
            pseudonymizer,
            parse: ParseOptions::default(),
            mode: IdentifierMode::Raw,
            alg: HashAlg::default(),
        }
    }

    /// Prepares one event; `idem` is the client's idempotency key and `index` the event's
    /// position under it.
    pub fn prepare(
        &self,
        value: &Value,
        idem: Option<(&str, u32)>,
    ) -> Result<PreparedEntry, EventError> {
        let stored = self.stored(value, idem, self.parse)?;
        Ok(PreparedEntry::new(&Payload::Event(stored), self.alg))
    }

    /// Prepares an event the ledger writes about itself, carrying `record` (a purge
    /// authorization, a legal hold, a retention check). Its action may be one of the reserved
    /// ones a client's event can't use.
    pub fn prepare_record(
        &self,
        value: &Value,
        record: crate::record::Record,
    ) -> Result<PreparedEntry, EventError> {
        let opts = ParseOptions {
            ledger_record: true,
            ..self.parse
        };
        let mut stored = self.stored(value, None, opts)?;
        stored.record = Some(record);
        Ok(PreparedEntry::new(&Payload::Event(stored), self.alg))
    }

    fn stored(
        &self,
        value: &Value,
        idem: Option<(&str, u32)>,
        opts: ParseOptions,
    ) -> Result<StoredEvent, EventError> {
        let event = AuditEvent::from_value(value, opts)?;
        let idem = idem.map(|(key, index)| self.pseudonymizer.idempotency_digest(key, index));
        Ok(match self.mode {
            IdentifierMode::Raw => StoredEvent::from_event(&event, &self.pseudonymizer, idem),
            IdentifierMode::LegacySha256 => StoredEvent::from_legacy_event(&event, idem).map_err(|field| EventError {
                index: None,
                errors: vec![FieldError {
                    field: field.to_owned(),
                    rule: "must be the legacy system's SHA-256 hex (64 hex digits) in legacy import mode".to_owned(),
                }],
            })?,
        })
    }

    /// Prepares a batch; `first_index` numbers the events (for idempotency and error messages).
    /// Either every event is valid, or the errors of every invalid one are returned.
    pub fn prepare_batch(
        &self,
        values: &[Value],
        idem_key: Option<&str>,
        first_index: usize,
    ) -> Result<Vec<PreparedEntry>, Vec<EventError>> {
        let results: Vec<Result<PreparedEntry, EventError>> = values
            .par_iter()
            .enumerate()
            .map(|(i, v)| {
                let index = first_index + i;
                self.prepare(v, idem_key.map(|k| (k, index as u32)))
                    .map_err(|e| e.at(index))
            })
            .collect();
        let mut ok = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(p) => ok.push(p),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonym::PseudonymKey;

    fn ingest() -> Ingest {
        Ingest::new(Pseudonymizer::new(PseudonymKey::from_bytes([5; 32])))
    }

    #[test]
    fn one_bad_event_refuses_the_batch_and_names_it() {
        let good = crate::event::tests_support::sample();
        let mut bad = good.clone();
        bad["outcome"] = "perhaps".into();
        let errs = ingest()
            .prepare_batch(&[good.clone(), bad, good], None, 0)
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].index, Some(1));
        assert_eq!(errs[0].errors[0].field, "outcome");
    }

    #[test]
    fn idempotency_digest_depends_on_key_and_position() {
        let v = crate::event::tests_support::sample();
        let i = ingest();
        let a = i
            .prepare_batch(&[v.clone(), v.clone()], Some("k1"), 0)
            .unwrap();
        let again = i
            .prepare_batch(&[v.clone(), v.clone()], Some("k1"), 0)
            .unwrap();
        assert_eq!(a, again, "a retry prepares identical entries");
        assert_ne!(a[0].columns.idem, a[1].columns.idem);
        let other = i.prepare_batch(&[v], Some("k2"), 0).unwrap();
        assert_ne!(a[0].columns.idem, other[0].columns.idem);
    }

    #[test]
    fn legacy_mode_keeps_the_old_hashes() {
        let mut v = crate::event::tests_support::sample();
        let old = Pseudonymizer::legacy_sha256("p-20931");
        let hex_only = old.to_string().trim_start_matches("sha256:").to_owned();
        v["patient_id"] = hex_only.clone().into();
        v["resource"]["id"] = hex_only.into();
        v["actor"]["user_id"] = Pseudonymizer::legacy_sha256("u-1042")
            .to_string()
            .trim_start_matches("sha256:")
            .into();
        v["actor"]["session_id"] = serde_json::Value::Null;
        let mut i = ingest();
        i.mode = IdentifierMode::LegacySha256;
        let p = i.prepare(&v, None).unwrap();
        assert_eq!(p.columns.patient, Some(old.to_string()));

        v["patient_id"] = "p-20931".into();
        let err = i.prepare(&v, None).unwrap_err();
        assert_eq!(err.errors[0].field, "patient_id");
    }
}
