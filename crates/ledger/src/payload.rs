//! The payload of an entry: the pseudonymized event (or the genesis record) as canonical CBOR.
//!
//! Determinism (RFC 8949 §4.2.1, "core deterministic encoding"): definite lengths, integers and
//! lengths in their shortest form, no floats, no tags, and map keys sorted by the bytes of their
//! encoding. For text keys shorter than 24 bytes that order is "shorter first, then bytewise",
//! and serde/ciborium write struct fields in declaration order with definite lengths and
//! shortest integers, so each struct below declares its fields in exactly that order. Optional
//! fields are omitted when absent (never `null`), so one event has one encoding.
//! [`check_canonical`] proves the rules on any byte string; the tests run it over random events.
//!
//! The digest of an entry covers the payload bytes as stored, so a verifier never re-encodes;
//! determinism matters for idempotent retries (a retry must give the same digest) and for
//! reproducible exports.

use serde::{Deserialize, Serialize};

use crate::event::AuditEvent;
use crate::hash::{HashAlg, FORMAT_VERSION};
use crate::pseudonym::Pseudonymizer;
use crate::types::{Digest, StreamId, Timestamp};

/// Who acted, pseudonymized. Field order is canonical order (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredActor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// An audit event as stored: the contract's field names, every identifier replaced by its
/// pseudonym's text form. Field order is canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub phi: bool,
    /// Keyed digest of the client's idempotency key, when one was given; kept inside the
    /// payload so that the column it is looked up by is covered by the hash.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes32")]
    pub idem: Option<Digest>,
    pub actor: StoredActor,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What a ledger-written event records (purge authorizations, holds, retention checks);
    /// never set from a client's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::record::Record>,
    pub source: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<StoredRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<StoredResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// Microseconds since the Unix epoch, UTC.
    pub occurred_at: i64,
}

impl StoredEvent {
    /// Pseudonymizes every identifier of `event`.
    pub fn from_event(event: &AuditEvent, p: &Pseudonymizer, idem: Option<Digest>) -> StoredEvent {
        let keyed = |raw: &str, _field: &'static str| {
            Ok::<_, &'static str>(p.pseudonymize(raw).to_string())
        };
        match StoredEvent::build(event, idem, keyed) {
            Ok(stored) => stored,
            // `keyed` never fails.
            Err(never) => unreachable!("keyed pseudonymization failed for {never}"),
        }
    }

    /// Replaces identifiers with the legacy pseudonyms an import already carries: the fields of
    /// `event` hold the old system's SHA-256 hex instead of raw ids. Fails with the name of the
    /// first field that is not 64 hex digits. IP addresses were not hashed by the legacy export;
    /// they are hashed the legacy way here, so no raw address is stored.
    pub fn from_legacy_event(
        event: &AuditEvent,
        idem: Option<Digest>,
    ) -> Result<StoredEvent, &'static str> {
        StoredEvent::build(event, idem, |value, field| {
            if field == "actor.ip" {
                return Ok(Pseudonymizer::legacy_sha256(value).to_string());
            }
            Pseudonymizer::legacy_from_hex(value)
                .map(|p| p.to_string())
                .ok_or(field)
        })
    }

    /// The stored form of `event`, with each identifier (and the name of its field) passed
    /// through `pseudonym`.
    fn build(
        event: &AuditEvent,
        idem: Option<Digest>,
        pseudonym: impl Fn(&str, &'static str) -> Result<String, &'static str>,
    ) -> Result<StoredEvent, &'static str> {
        let id = |raw: Option<&str>, field| raw.map(|r| pseudonym(r, field)).transpose();
        let ip = event.actor.ip.map(|ip| ip.to_string());
        Ok(StoredEvent {
            phi: event.phi,
            idem,
            actor: StoredActor {
                ip: id(ip.as_deref(), "actor.ip")?,
                role: event.actor.role.clone(),
                user_id: id(event.actor.user_id.as_deref(), "actor.user_id")?,
                session_id: id(event.actor.session_id.as_deref(), "actor.session_id")?,
                user_agent: event.actor.user_agent.clone(),
            },
            action: event.action.as_str().to_owned(),
            detail: event.detail.clone(),
            record: None,
            source: event.source.clone(),
            outcome: event.outcome.as_str().to_owned(),
            request: event.request.as_ref().map(|r| StoredRequest {
                path: r.path.clone(),
                method: r.method.clone(),
            }),
            resource: match &event.resource {
                None => None,
                Some(r) => Some(StoredResource {
                    id: id(r.id.as_deref(), "resource.id")?,
                    kind: r.kind.clone(),
                }),
            },
            patient_id: id(event.patient_id.as_deref(), "patient_id")?,
            occurred_at: event.occurred_at.micros(),
        })
    }
}

/// The first entry of every stream. It fixes the hash algorithm and the format version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Hash algorithm name (`sha256`).
    pub hash: String,
    /// Entry format version (1).
    pub format: u8,
    pub stream: String,
    /// Microseconds since the Unix epoch, UTC.
    pub created_at: i64,
}

impl Genesis {
    pub fn new(stream: &StreamId, alg: HashAlg, created_at: Timestamp) -> Genesis {
        Genesis {
            hash: alg.name().to_owned(),
            format: FORMAT_VERSION,
            stream: stream.as_str().to_owned(),
            created_at: created_at.micros(),
        }
    }
}

/// What an entry's payload holds.
// Payloads are decoded one at a time and dropped; boxing the larger variant would only add an
// allocation per decode.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Genesis(Genesis),
    Event(StoredEvent),
}

/// The map on the wire: exactly one section is present. Later payload kinds add sections
/// (keys sorted canonically), which older readers reject as "no known section".
#[derive(Serialize, Deserialize)]
struct PayloadWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<StoredEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    genesis: Option<Genesis>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not a valid entry payload: {0}")]
    Malformed(String),
    #[error("payload must hold exactly one of `event` or `genesis`")]
    NoSingleSection,
}

impl Payload {
    /// The canonical CBOR bytes.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Payload::Genesis(g) => PayloadWire {
                event: None,
                genesis: Some(g.clone()),
            },
            Payload::Event(e) => PayloadWire {
                event: Some(e.clone()),
                genesis: None,
            },
        };
        let mut out = Vec::with_capacity(384);
        // Writing into a Vec cannot fail, and every type here is serializable.
        ciborium::into_writer(&wire, &mut out).expect("encoding into a Vec cannot fail");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let wire: PayloadWire =
            ciborium::from_reader(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        match (wire.event, wire.genesis) {
            (Some(e), None) => Ok(Payload::Event(e)),
            (None, Some(g)) => Ok(Payload::Genesis(g)),
            _ => Err(PayloadError::NoSingleSection),
        }
    }
}

/// The values the extracted columns hold, borrowed from a payload's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
///
/// Text values are raw bytes, not validated as UTF-8: the verifier only compares them with
/// stored strings (equal bytes to a valid string are valid), and `Columns::of_bytes` validates.
pub struct ColumnsRef<'a> {
    pub genesis: bool,
    pub occurred_at: Option<i64>,
    pub action: Option<&'a [u8]>,
    pub outcome: Option<&'a [u8]>,
    pub actor: Option<&'a [u8]>,
    pub patient: Option<&'a [u8]>,
    pub phi: bool,
    pub idem: Option<&'a [u8]>,
}

impl<'a> ColumnsRef<'a> {
    /// Reads the column values out of a payload without decoding the rest.
    ///
    /// Verification recomputes the columns of every entry; through serde this decode was
    /// the largest part of the verifier's cost (profiled), so this walks the CBOR directly,
    /// borrowing strings and skipping what the columns do not need. It agrees with
    /// `Columns::of(&Payload::decode(bytes))` (property-tested in this module).
    pub fn read(bytes: &'a [u8]) -> Result<ColumnsRef<'a>, PayloadError> {
        let mut r = CborReader { buf: bytes, at: 0 };
        let sections = r.map_len()?;
        let mut out: Option<ColumnsRef<'a>> = None;
        for _ in 0..sections {
            let key = r.text_bytes()?;
            if out.is_some() && (key == b"event" || key == b"genesis") {
                return Err(PayloadError::NoSingleSection);
            }
            match key {
                b"genesis" => {
                    r.skip(0)?;
                    out = Some(ColumnsRef {
                        genesis: true,
                        ..ColumnsRef::default()
                    });
                }
                b"event" => out = Some(read_event(&mut r)?),
                _ => r.skip(0)?,
            }
        }
        if r.at != bytes.len() {
            return Err(PayloadError::Malformed(
                "trailing bytes after the payload".into(),
            ));
        }
        out.ok_or(PayloadError::NoSingleSection)
    }
}

fn read_event<'a>(r: &mut CborReader<'a>) -> Result<ColumnsRef<'a>, PayloadError> {
    let mut c = ColumnsRef::default();
    let (mut phi, mut action, mut outcome, mut occurred, mut actor) =
        (None, None, None, None, false);
    for _ in 0..r.map_len()? {
        match r.text_bytes()? {
            b"phi" => phi = Some(r.boolean()?),
            b"idem" => c.idem = r.optional(|r| r.bytes())?,
            b"actor" => {
                actor = true;
                for _ in 0..r.map_len()? {
                    match r.text_bytes()? {
                        b"user_id" => c.actor = r.optional(|r| r.text_bytes())?,
                        _ => r.skip(0)?,
                    }
                }
            }
            b"action" => action = Some(r.text_bytes()?),
            b"outcome" => outcome = Some(r.text_bytes()?),
            b"patient_id" => c.patient = r.optional(|r| r.text_bytes())?,
            b"occurred_at" => occurred = Some(r.int()?),
            _ => r.skip(0)?,
        }
    }
    let missing = |f: &str| PayloadError::Malformed(format!("event lacks {f}"));
    c.phi = phi.ok_or_else(|| missing("phi"))?;
    c.action = Some(action.ok_or_else(|| missing("action"))?);
    c.outcome = Some(outcome.ok_or_else(|| missing("outcome"))?);
    c.occurred_at = Some(occurred.ok_or_else(|| missing("occurred_at"))?);
    if !actor {
        return Err(missing("actor"));
    }
    Ok(c)
}

/// A minimal zero-copy CBOR reader for the types payloads use.
struct CborReader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> CborReader<'a> {
    fn malformed(&self, why: &str) -> PayloadError {
        PayloadError::Malformed(format!("{why} at offset {}", self.at))
    }

    fn peek(&self) -> Result<u8, PayloadError> {
        self.buf
            .get(self.at)
            .copied()
            .ok_or_else(|| self.malformed("unexpected end"))
    }

    /// (major type, argument); indefinite lengths are refused.
    fn head(&mut self) -> Result<(u8, u64), PayloadError> {
        let first = self.peek()?;
        let (major, info) = (first >> 5, first & 0x1f);
        self.at += 1;
        let arg = match info {
            0..=23 => info as u64,
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = self
                    .buf
                    .get(self.at..self.at + n)
                    .ok_or_else(|| self.malformed("unexpected end in head"))?;
                self.at += n;
                raw.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
            }
            _ => return Err(self.malformed("indefinite length or reserved head")),
        };
        Ok((major, arg))
    }

    fn expect(&mut self, major: u8, what: &str) -> Result<u64, PayloadError> {
        let (m, arg) = self.head()?;
        if m != major {
            return Err(self.malformed(&format!("expected {what}")));
        }
        Ok(arg)
    }

    fn map_len(&mut self) -> Result<u64, PayloadError> {
        self.expect(5, "a map")
    }

    fn slice(&mut self, len: u64) -> Result<&'a [u8], PayloadError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.at.checked_add(l))
            .filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| self.malformed("string runs past the end"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// A text string's bytes (UTF-8 is checked by whoever turns them into `str`).
    fn text_bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.expect(3, "a text string")?;
        self.slice(len)
    }

    fn bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.expect(2, "a byte string")?;
        self.slice(len)
    }

    fn int(&mut self) -> Result<i64, PayloadError> {
        match self.head()? {
            (0, n) => i64::try_from(n).map_err(|_| self.malformed("integer out of range")),
            (1, n) => i64::try_from(n)
                .map(|n| -1 - n)
                .map_err(|_| self.malformed("integer out of range")),
            _ => Err(self.malformed("expected an integer")),
        }
    }

    fn boolean(&mut self) -> Result<bool, PayloadError> {
        match self.head()? {
            (7, 20) => Ok(false),
            (7, 21) => Ok(true),
            _ => Err(self.malformed("expected a boolean")),
        }
    }

    /// `null` reads as `None` (writers omit absent fields; readers accept both).
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, PayloadError>,
    ) -> Result<Option<T>, PayloadError> {
        if self.peek()? == 0xf6 {
            self.at += 1;
            return Ok(None);
        }
        read(self).map(Some)
    }

    fn skip(&mut self, depth: usize) -> Result<(), PayloadError> {
        if depth > 16 {
            return Err(self.malformed("nesting deeper than 16"));
        }
        match self.head()? {
            (0 | 1 | 7, _) => Ok(()),
            (2 | 3, len) => self.slice(len).map(|_| ()),
            (4, n) => (0..n).try_for_each(|_| self.skip(depth + 1)),
            (5, n) => (0..n * 2).try_for_each(|_| self.skip(depth + 1)),
            _ => Err(self.malformed("tags are not used in payloads")),
        }
    }
}

/// Serde adapter: `Option<Digest>` as a CBOR byte string (not an array of integers).
mod opt_bytes32 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Digest;

    pub fn serialize<S: Serializer>(v: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_bytes(&d.0),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let bytes: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        match bytes {
            None => Ok(None),
            Some(b) => Digest::from_slice(&b)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("idem must be 32 bytes")),
        }
    }
}

/// Checks that `bytes` is one CBOR data item in RFC 8949 §4.2.1 core deterministic encoding,
/// restricted to what payloads use (unsigned and negative integers, byte and text strings,
/// arrays, maps, false/true/null). Returns the reason it is not.
pub fn check_canonical(bytes: &[u8]) -> Result<(), String> {
    let end = item(bytes, 0, 0)?;
    if end != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the data item",
            bytes.len() - end
        ));
    }
    Ok(())
}

/// Reads an item head at `at`: (major type, argument, offset after the head).
fn head(bytes: &[u8], at: usize) -> Result<(u8, u64, usize), String> {
    let first = *bytes.get(at).ok_or("unexpected end")?;
    let (major, info) = (first >> 5, first & 0x1f);
    let (arg, len) = match info {
        0..=23 => (info as u64, 0),
        24..=27 => {
            let n = 1usize << (info - 24);
            let raw = bytes
                .get(at + 1..at + 1 + n)
                .ok_or("unexpected end in head")?;
            let arg = raw.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
            let min = match n {
                1 => 24,
                2 => 0x100,
                4 => 0x1_0000,
                _ => 0x1_0000_0000,
            };
            if major != 7 && arg < min {
                return Err(format!(
                    "argument {arg} not in shortest form at offset {at}"
                ));
            }
            (arg, n)
        }
        31 => return Err(format!("indefinite length at offset {at}")),
        _ => return Err(format!("reserved additional information at offset {at}")),
    };
    Ok((major, arg, at + 1 + len))
}

fn item(bytes: &[u8], at: usize, depth: usize) -> Result<usize, String> {
    if depth > 16 {
        return Err("nesting deeper than 16".into());
    }
    let (major, arg, mut at) = head(bytes, at)?;
    match major {
        0 | 1 => Ok(at),
        2 | 3 => {
            let end = at.checked_add(arg as usize).ok_or("length overflow")?;
            let s = bytes.get(at..end).ok_or("string runs past the end")?;
            if major == 3 {
                std::str::from_utf8(s).map_err(|_| "text string is not UTF-8".to_string())?;
            }
            Ok(end)
        }
        4 => {
            for _ in 0..arg {
                at = item(bytes, at, depth + 1)?;
            }
            Ok(at)
        }
        5 => {
            let mut prev_key: Option<&[u8]> = None;
            for _ in 0..arg {
                let key_end = item(bytes, at, depth + 1)?;
                let key = &bytes[at..key_end];
                if let Some(prev) = prev_key {
                    if prev >= key {
                        return Err(format!("map keys not in bytewise order at offset {at}"));
                    }
                }
                prev_key = Some(key);
                at = item(bytes, key_end, depth + 1)?;
            }
            Ok(at)
        }
        6 => Err(format!("tag at offset {at} (tags are not used)")),
        _ => match arg {
            20..=22 => Ok(at),
            _ => Err(format!("float or simple value {arg} (not used)")),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{AuditEvent, ParseOptions};
    use crate::pseudonym::PseudonymKey;
    use proptest::prelude::*;

    fn event_json(seed: &Sample) -> serde_json::Value {
        let mut v = serde_json::json!({
            "occurred_at": seed.time, "action": seed.action, "outcome": seed.outcome,
            "actor": {}, "source": seed.source, "phi": seed.phi,
        });
        let actor = &mut v["actor"];
        if let Some(u) = &seed.user {
            actor["user_id"] = u.clone().into();
        }
        if let Some(r) = &seed.role {
            actor["role"] = r.clone().into();
        }
        if let Some(ip) = &seed.ip {
            actor["ip"] = ip.clone().into();
        }
        if let Some(p) = &seed.patient {
            v["patient_id"] = p.clone().into();
            v["resource"] = serde_json::json!({"type": "Patient", "id": p});
        }
        if let Some(d) = &seed.detail {
            v["detail"] = d.clone().into();
        }
        v
    }

    #[derive(Debug, Clone)]
    struct Sample {
        time: String,
        action: String,
        outcome: String,
        source: String,
        phi: bool,
        user: Option<String>,
        role: Option<String>,
        ip: Option<String>,
        patient: Option<String>,
        detail: Option<String>,
    }

    fn sample_strategy() -> impl Strategy<Value = Sample> {
        (
            (0i64..4_000_000_000, 0u32..1_000_000),
            "[a-z][a-z_]{0,20}",
            prop::sample::select(vec!["success", "failure", "denied", "error"]),
            "[a-z][a-z-]{0,30}",
            any::<bool>(),
            prop::option::of("[a-zA-Z0-9-]{1,40}"),
            prop::option::of("[a-z]{1,12}"),
            prop::option::of((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())),
            prop::option::of("[a-z0-9-]{1,40}"),
            prop::option::of("[a-z][a-z ]{0,199}"),
        )
            .prop_map(
                |(
                    (secs, micros),
                    action,
                    outcome,
                    source,
                    phi,
                    user,
                    role,
                    ip,
                    patient,
                    detail,
                )| Sample {
                    time: chrono::DateTime::from_timestamp(secs, micros * 1000)
                        .unwrap()
                        .to_rfc3339(),
                    action,
                    outcome: outcome.to_string(),
                    source,
                    phi,
                    user,
                    role,
                    ip: ip.map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
                    patient,
                    detail,
                },
            )
    }

    proptest! {
        #[test]
        fn same_event_same_bytes_and_canonical(sample in sample_strategy()) {
            let p = Pseudonymizer::new(PseudonymKey::from_bytes([9; 32]));
            let json = event_json(&sample);
            let a = AuditEvent::from_value(&json, ParseOptions::default()).unwrap();
            // Parse again from the JSON text with keys in another order.
            let text = serde_json::to_string(&json).unwrap();
            let b = AuditEvent::from_json(&text, ParseOptions::default()).unwrap();
            let bytes_a = Payload::Event(StoredEvent::from_event(&a, &p, None)).encode();
            let bytes_b = Payload::Event(StoredEvent::from_event(&b, &p, None)).encode();
            prop_assert_eq!(&bytes_a, &bytes_b);
            prop_assert_eq!(check_canonical(&bytes_a), Ok(()));
            // Decoding and re-encoding gives the same bytes.
            let decoded = Payload::decode(&bytes_a).unwrap();
            prop_assert_eq!(decoded.encode(), bytes_a.clone());
            // The verifier's zero-copy column reader agrees with the full decode.
            let via_reader = crate::entry::Columns::of_bytes(&bytes_a).unwrap();
            prop_assert_eq!(via_reader, crate::entry::Columns::of(&decoded));
        }
    }

    #[test]
    fn genesis_is_canonical() {
        let g = Payload::Genesis(Genesis::new(
            &StreamId::default(),
            HashAlg::Sha256,
            Timestamp(1),
        ));
        let bytes = g.encode();
        assert_eq!(check_canonical(&bytes), Ok(()));
        assert_eq!(Payload::decode(&bytes).unwrap(), g);
    }

    #[test]
    fn idem_is_a_byte_string() {
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([9; 32]));
        let e = AuditEvent::from_value(
            &crate::event::tests_support::sample(),
            ParseOptions::default(),
        )
        .unwrap();
        let bytes = Payload::Event(StoredEvent::from_event(&e, &p, Some(Digest([7; 32])))).encode();
        assert_eq!(check_canonical(&bytes), Ok(()));
        // "idem" key then a 32-byte byte string header (0x58 0x20).
        let needle = [0x64, b'i', b'd', b'e', b'm', 0x58, 0x20];
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn checker_rejects_non_canonical() {
        // {"b": 1, "a": 2}: keys out of order.
        assert!(check_canonical(&[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02]).is_err());
        // 1 encoded in two bytes.
        assert!(check_canonical(&[0x18, 0x01]).is_err());
        // indefinite-length map.
        assert!(check_canonical(&[0xbf, 0xff]).is_err());
        // a float.
        assert!(check_canonical(&[0xf9, 0x3c, 0x00]).is_err());
        // trailing garbage.
        assert!(check_canonical(&[0x01, 0x02]).is_err());
        assert_eq!(
            check_canonical(&[0xa2, 0x61, b'a', 0x01, 0x62, b'a', b'a', 0x02]),
            Ok(())
        );
    }

    #[test]
    fn raw_identifiers_are_not_in_the_payload() {
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([9; 32]));
        let e = AuditEvent::from_value(
            &crate::event::tests_support::sample(),
            ParseOptions::default(),
        )
        .unwrap();
        let bytes = Payload::Event(StoredEvent::from_event(&e, &p, None)).encode();
        for raw in ["u-1042", "p-20931", "10.1.4.22", "s-88f1"] {
            assert!(
                !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
                "{raw} leaked"
            );
        }
    }
}
