//! Small value types. Each one is valid by construction: a `StreamId` that exists has passed
//! its rules, a `Timestamp` is whole microseconds of UTC.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Position of an entry in its stream: contiguous from 0 (the genesis entry).
pub type Seq = u64;

/// A 32-byte digest (SHA-256 output, entry hash, payload digest, idempotency digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The `prev_hash` of the genesis entry.
    pub const ZERO: Digest = Digest([0u8; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }

    /// From a stored byte string; `None` when it is not exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Name of a ledger stream: 1 to 64 characters of `[a-z0-9._-]`, starting with a letter or
/// digit. Streams chain independently (one per tenant, for instance).
///
/// Shared (`Arc<str>`): every entry read carries its stream, and a clone must not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid stream name {0:?}: use 1 to 64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")]
pub struct InvalidStreamId(pub String);

impl StreamId {
    pub fn new(name: &str) -> Result<StreamId, InvalidStreamId> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(StreamId(Arc::from(name)))
        } else {
            Err(InvalidStreamId(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StreamId {
    fn default() -> Self {
        StreamId(Arc::from("default"))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A point in time as whole microseconds since the Unix epoch, UTC. Integers, not floats or
/// strings, so the hashed layout has one representation per instant (PostgreSQL's
/// `timestamptz` has the same resolution).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-22T14:03:11.250Z`, any offset). Digits finer than a
    /// microsecond are truncated, which is documented in `docs/FORMAT.md`.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let dt = DateTime::parse_from_rfc3339(s).ok()?;
        Some(Timestamp(dt.with_timezone(&Utc).timestamp_micros()))
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-22T14:03:11.250000Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(StreamId::new("default").is_ok());
        assert!(StreamId::new("tenant-42.ehr_web").is_ok());
        for bad in ["", "-x", "UPPER", "a b", &"x".repeat(65)] {
            assert!(StreamId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-22T14:03:11.250Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T14:03:11.250000Z");
        let offset = Timestamp::parse_rfc3339("2026-11-22T15:03:11.250+01:00").unwrap();
        assert_eq!(t, offset);
        assert!(Timestamp::parse_rfc3339("2026-11-22 14:03").is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn digest_hex() {
        let d = Digest([0xab; 32]);
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("abc"), None);
    }
}
