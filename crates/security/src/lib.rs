//! Security-event detection: the rules a security officer expects, as pure functions of the
//! audit stream (no I/O, no clock: time is the events' own `occurred_at`), so that replaying a
//! stream always yields the same detections.
//!
//! - [`observation`]: what the rules look at, taken from a verified entry's payload.
//! - [`config`]: every threshold, with documented defaults, from TOML.
//! - [`window`]: per-key sliding windows over event time that tolerate out-of-order arrival.
//! - [`detector`]: the rules, and the detections they produce.

pub mod config;
pub mod detector;
pub mod observation;
pub mod window;

pub use config::{ConfigError, RulesConfig};
pub use detector::{decode_state, encode_state, DetectorState, StateError};
pub use detector::{Block, Detection, Detector, Rule, Severity};
pub use observation::Observation;
pub mod projection;
pub mod read;

pub use projection::SecurityProjection;
