//! Entries: a payload chained into a stream, the columns extracted from it for queries, and
//! the receipt a caller gets once an entry is durable.

use serde::Serialize;

use crate::event::AuditEvent;
use crate::hash::HashAlg;
use crate::payload::{ColumnsRef, Genesis, Payload, PayloadError, StoredEvent};
use crate::pseudonym::Pseudonymizer;
use crate::types::{Digest, Seq, StreamId, Timestamp};

/// What kind of payload an entry holds (a column, checked against the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Genesis,
    Event,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Genesis => "genesis",
            EntryKind::Event => "event",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        match s {
            "genesis" => Some(EntryKind::Genesis),
            "event" => Some(EntryKind::Event),
            _ => None,
        }
    }
}

/// Values copied out of the payload into their own columns so stores can index and query
/// them. Verification recomputes them from the payload and compares: a report never rests on
/// a column nobody checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub kind: EntryKind,
    pub occurred_at: Option<Timestamp>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// The actor's user pseudonym (text form).
    pub actor: Option<String>,
    /// The patient pseudonym (text form).
    pub patient: Option<String>,
    pub phi: bool,
    /// Idempotency digest, looked up on retries.
    pub idem: Option<Digest>,
}

impl Columns {
    pub fn of(payload: &Payload) -> Columns {
        match payload {
            Payload::Genesis(_) => Columns {
                kind: EntryKind::Genesis,
                ..Columns::undecodable()
            },
            Payload::Event(e) => Columns {
                kind: EntryKind::Event,
                occurred_at: Some(Timestamp(e.occurred_at)),
                action: Some(e.action.clone()),
                outcome: Some(e.outcome.clone()),
                actor: e.actor.user_id.clone(),
                patient: e.patient_id.clone(),
                phi: e.phi,
                idem: e.idem,
            },
        }
    }

    /// The columns of a payload given as its stored bytes, reading only what they need
    /// (the same values as `Columns::of(&Payload::decode(bytes)?)`, property-tested).
    pub fn of_bytes(bytes: &[u8]) -> Result<Columns, PayloadError> {
        let r = ColumnsRef::read(bytes)?;
        let text = |b: Option<&[u8]>| -> Result<Option<String>, PayloadError> {
            b.map(|b| {
                String::from_utf8(b.to_vec())
                    .map_err(|_| PayloadError::Malformed("text is not UTF-8".into()))
            })
            .transpose()
        };
        Ok(Columns {
            kind: if r.genesis {
                EntryKind::Genesis
            } else {
                EntryKind::Event
            },
            occurred_at: r.occurred_at.map(Timestamp),
            action: text(r.action)?,
            outcome: text(r.outcome)?,
            actor: text(r.actor)?,
            patient: text(r.patient)?,
            phi: r.phi,
            idem: match r.idem {
                None => None,
                Some(b) => Some(
                    Digest::from_slice(b)
                        .ok_or_else(|| PayloadError::Malformed("idem is not 32 bytes".into()))?,
                ),
            },
        })
    }

    /// The first stored column that differs from the payload, by name, without allocating.
    pub fn first_difference_from(&self, r: &ColumnsRef<'_>) -> Option<&'static str> {
        let kind = if r.genesis {
            EntryKind::Genesis
        } else {
            EntryKind::Event
        };
        if self.kind != kind {
            Some("kind")
        } else if self.occurred_at.map(|t| t.0) != r.occurred_at {
            Some("occurred_at")
        } else if self.action.as_ref().map(|s| s.as_bytes()) != r.action {
            Some("action")
        } else if self.outcome.as_ref().map(|s| s.as_bytes()) != r.outcome {
            Some("outcome")
        } else if self.actor.as_ref().map(|s| s.as_bytes()) != r.actor {
            Some("actor")
        } else if self.patient.as_ref().map(|s| s.as_bytes()) != r.patient {
            Some("patient")
        } else if self.phi != r.phi {
            Some("phi")
        } else if self.idem.as_ref().map(|d| &d.0[..]) != r.idem {
            Some("idem")
        } else {
            None
        }
    }

    /// Columns for an entry whose payload is missing or unreadable (nothing to extract).
    pub fn undecodable() -> Columns {
        Columns {
            kind: EntryKind::Event,
            occurred_at: None,
            action: None,
            outcome: None,
            actor: None,
            patient: None,
            phi: false,
            idem: None,
        }
    }
}

/// A payload ready to be chained: encoded and digested by the caller's task, so the single
/// writer only assigns positions and computes one small hash per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEntry {
    pub payload: Vec<u8>,
    pub payload_digest: Digest,
    pub columns: Columns,
}

impl PreparedEntry {
    pub fn new(payload: &Payload, alg: HashAlg) -> PreparedEntry {
        let bytes = payload.encode();
        PreparedEntry {
            payload_digest: alg.payload_digest(&bytes),
            columns: Columns::of(payload),
            payload: bytes,
        }
    }

    /// Pseudonymizes and encodes one validated event.
    pub fn event(
        event: &AuditEvent,
        p: &Pseudonymizer,
        idem: Option<Digest>,
        alg: HashAlg,
    ) -> PreparedEntry {
        PreparedEntry::new(
            &Payload::Event(StoredEvent::from_event(event, p, idem)),
            alg,
        )
    }

    pub fn genesis(stream: &StreamId, alg: HashAlg, at: Timestamp) -> PreparedEntry {
        PreparedEntry::new(&Payload::Genesis(Genesis::new(stream, alg, at)), alg)
    }

    /// Chains this payload at `seq` after `prev_hash`.
    pub fn chain(
        self,
        stream: &StreamId,
        seq: Seq,
        recorded_at: Timestamp,
        prev_hash: Digest,
        alg: HashAlg,
    ) -> Entry {
        let entry_hash = alg.entry_hash(stream, seq, recorded_at, &prev_hash, &self.payload_digest);
        Entry {
            stream: stream.clone(),
            seq,
            recorded_at,
            payload: Some(self.payload),
            payload_digest: self.payload_digest,
            prev_hash,
            entry_hash,
            columns: self.columns,
        }
    }
}

/// One stored entry, every field as the store holds it (nothing here is trusted until
/// [`crate::verify`] has recomputed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: StreamId,
    pub seq: Seq,
    pub recorded_at: Timestamp,
    /// `None` once a payload has been purged under an authorization (the digest stays).
    pub payload: Option<Vec<u8>>,
    pub payload_digest: Digest,
    pub prev_hash: Digest,
    pub entry_hash: Digest,
    pub columns: Columns,
}

impl Entry {
    pub fn receipt(&self) -> Receipt {
        Receipt {
            stream: self.stream.clone(),
            seq: self.seq,
            entry_hash: self.entry_hash,
            recorded_at: self.recorded_at,
        }
    }

    pub fn decode_payload(&self) -> Option<Result<Payload, PayloadError>> {
        self.payload.as_deref().map(Payload::decode)
    }
}

/// What a caller gets back once its entry is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub stream: StreamId,
    pub seq: Seq,
    pub entry_hash: Digest,
    #[serde(serialize_with = "ser_rfc3339")]
    pub recorded_at: Timestamp,
}

fn ser_rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

impl Entry {
    /// The JSON view of an entry for people and APIs: hashes in hex, times in RFC 3339, the
    /// payload decoded (pseudonyms only: raw identifiers are never stored).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let body = match self.decode_payload() {
            None => json!({"purged": true}),
            Some(Err(e)) => json!({"undecodable": e.to_string()}),
            Some(Ok(Payload::Genesis(g))) => json!({"genesis": {
                "hash": g.hash, "format": g.format, "stream": g.stream,
                "created_at": Timestamp(g.created_at).to_rfc3339()}}),
            Some(Ok(Payload::Event(e))) => {
                let mut v = serde_json::to_value(&e).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert(
                        "occurred_at".into(),
                        json!(Timestamp(e.occurred_at).to_rfc3339()),
                    );
                    obj.remove("idem");
                    if let Some(d) = e.idem {
                        obj.insert("idempotency_digest".into(), json!(d.to_hex()));
                    }
                }
                json!({ "event": v })
            }
        };
        let mut out = json!({
            "stream": self.stream,
            "seq": self.seq,
            "recorded_at": self.recorded_at.to_rfc3339(),
            "entry_hash": self.entry_hash,
            "prev_hash": self.prev_hash,
            "payload_digest": self.payload_digest,
            "kind": self.columns.kind,
        });
        if let (Some(o), Some(b)) = (out.as_object_mut(), body.as_object()) {
            o.extend(b.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AuditEvent, ParseOptions};
    use crate::pseudonym::{PseudonymKey, Pseudonymizer};

    #[test]
    fn column_view_agrees_with_the_full_decode() {
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([3; 32]));
        let mut v = crate::event::tests_support::sample();
        let mut payloads = vec![Payload::Genesis(Genesis::new(
            &StreamId::default(),
            HashAlg::Sha256,
            Timestamp(5),
        ))];
        for patient in [Some("p-1"), None] {
            v["patient_id"] = patient.into();
            let e = AuditEvent::from_value(&v, ParseOptions::default()).unwrap();
            payloads.push(Payload::Event(StoredEvent::from_event(
                &e,
                &p,
                Some(Digest([4; 32])),
            )));
            payloads.push(Payload::Event(StoredEvent::from_event(&e, &p, None)));
        }
        for payload in payloads {
            let bytes = payload.encode();
            assert_eq!(Columns::of_bytes(&bytes).unwrap(), Columns::of(&payload));
        }
        assert!(Columns::of_bytes(&[0xa0]).is_err(), "a map with no section");
        assert!(Columns::of_bytes(b"garbage").is_err());
    }
}
