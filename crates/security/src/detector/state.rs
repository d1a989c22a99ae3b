//! The detector's memory, apart from its configuration: saved by the projection with its
//! position so that after a restart the detector resumes exactly where it stopped, neither
//! missing nor repeating a detection.
//!
//! Encoded as CBOR: `[version, state]`. Maps are sorted (`BTreeMap`) and written as arrays of
//! `[key, value]` pairs, so that keys need not be strings and the same state always encodes to
//! the same bytes.

use std::collections::BTreeMap;

use ledger::{Seq, Timestamp};
use serde::{Deserialize, Serialize};

use super::Rule;
use crate::window::Window;

/// The format of [`encode_state`]; a saved state of another version is refused (the caller
/// then starts from an empty state and replays).
pub const STATE_VERSION: u32 = 1;

/// What one session has been seen from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The latest event time of the session.
    pub(crate) last: Option<Timestamp>,
    pub(crate) ips: Vec<String>,
    pub(crate) agents: Vec<String>,
    pub(crate) first_seq: Seq,
}

/// Everything a [`Detector`](super::Detector) remembers besides its configuration. Opaque:
/// take it with `Detector::snapshot`, save it with [`encode_state`], give it back to
/// `Detector::restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorState {
    /// The latest event time seen.
    pub(crate) watermark: Timestamp,
    /// Observations fed so far.
    pub(crate) observed: u64,
    /// Evidence before this time may have been evicted: the rules that keep state ignore
    /// events older than this (they could otherwise detect again what was already detected).
    pub(crate) forgotten: Timestamp,
    /// Failed logins by IP; the value is the user tried (password spraying counts them).
    #[serde(with = "pairs")]
    pub(crate) failed_by_ip: BTreeMap<String, Window>,
    /// Failed logins by user; the value is the IP (account attack counts them).
    #[serde(with = "pairs")]
    pub(crate) failed_by_user: BTreeMap<String, Window>,
    #[serde(with = "pairs")]
    pub(crate) denied_by_user: BTreeMap<String, Window>,
    /// Successful PHI reads by user; the value is the patient.
    #[serde(with = "pairs")]
    pub(crate) reads_by_user: BTreeMap<String, Window>,
    #[serde(with = "pairs")]
    pub(crate) sessions: BTreeMap<String, Session>,
    /// No new detection of a rule for a key before this time.
    #[serde(with = "pairs")]
    pub(crate) quiet_until: BTreeMap<(Rule, String), Timestamp>,
    /// The end of the evidence of each user's latest unauthorized-access detection.
    #[serde(with = "pairs")]
    pub(crate) last_unauthorized: BTreeMap<String, Timestamp>,
}

impl Default for DetectorState {
    fn default() -> Self {
        DetectorState {
            watermark: Timestamp(i64::MIN),
            observed: 0,
            forgotten: Timestamp(i64::MIN),
            failed_by_ip: BTreeMap::new(),
            failed_by_user: BTreeMap::new(),
            denied_by_user: BTreeMap::new(),
            reads_by_user: BTreeMap::new(),
            sessions: BTreeMap::new(),
            quiet_until: BTreeMap::new(),
            last_unauthorized: BTreeMap::new(),
        }
    }
}

impl DetectorState {
    /// Observations fed so far.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// The latest event time seen, `None` before the first observation.
    pub fn watermark(&self) -> Option<Timestamp> {
        (self.observed > 0).then_some(self.watermark)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("saved detector state is not valid CBOR: {0}")]
    Cbor(#[from] ciborium::de::Error<std::io::Error>),
    #[error("saved detector state has an unexpected shape: {0}")]
    Shape(#[from] ciborium::value::Error),
    #[error("saved detector state has format version {found}; this build reads {STATE_VERSION}")]
    Version { found: u32 },
    #[error("saved detector state is followed by {0} stray bytes")]
    Trailing(usize),
}

/// The state as CBOR `[STATE_VERSION, state]`; equal states give equal bytes.
pub fn encode_state(state: &DetectorState) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&(STATE_VERSION, state), &mut out)
        .expect("CBOR encoding into memory does not fail");
    out
}

/// The inverse of [`encode_state`]; refuses another format version and trailing bytes.
pub fn decode_state(bytes: &[u8]) -> Result<DetectorState, StateError> {
    let mut rest = bytes;
    let (found, value): (u32, ciborium::Value) = ciborium::from_reader(&mut rest)?;
    if !rest.is_empty() {
        return Err(StateError::Trailing(rest.len()));
    }
    if found != STATE_VERSION {
        return Err(StateError::Version { found });
    }
    Ok(value.deserialized()?)
}

/// A map as an array of `[key, value]` pairs: keys of any type, in any format.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
