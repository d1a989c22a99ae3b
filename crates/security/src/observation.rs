//! The part of an audit event the rules read, taken from a verified entry. Pseudonyms only:
//! the detector never sees a raw identifier.

use ledger::payload::StoredEvent;
use ledger::{Seq, Timestamp};

/// Actions whose events the detector itself appends: never input to the rules, so detections
/// cannot trigger detections.
pub const OWN_ACTIONS: [&str; 2] = ["security_event", "block_lifted"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub seq: Seq,
    /// When it happened (the service's clock), the time the windows run on.
    pub at: Timestamp,
    pub action: String,
    pub outcome: String,
    pub user: Option<String>,
    pub role: Option<String>,
    pub ip: Option<String>,
    pub session: Option<String>,
    pub user_agent: Option<String>,
    pub phi: bool,
    pub patient: Option<String>,
    pub resource_type: Option<String>,
    /// Records in an export, when the event says (`detail` "exported N records").
    pub records: Option<u64>,
}

impl Observation {
    /// `None` for the detector's own output.
    pub fn from_event(seq: Seq, e: &StoredEvent) -> Option<Observation> {
        if OWN_ACTIONS.contains(&e.action.as_str()) {
            return None;
        }
        Some(Observation {
            seq,
            at: Timestamp(e.occurred_at),
            action: e.action.clone(),
            outcome: e.outcome.clone(),
            user: e.actor.user_id.clone(),
            role: e.actor.role.clone(),
            ip: e.actor.ip.clone(),
            session: e.actor.session_id.clone(),
            user_agent: e.actor.user_agent.clone(),
            phi: e.phi,
            patient: e.patient_id.clone(),
            resource_type: e.resource.as_ref().map(|r| r.kind.clone()),
            records: e.detail.as_deref().and_then(records_in),
        })
    }

    /// A `login` that failed, or `login_failed`.
    pub fn is_failed_login(&self) -> bool {
        self.action == "login_failed" || (self.action == "login" && self.outcome != "success")
    }

    /// A request for PHI refused by access control.
    pub fn is_denied_phi(&self) -> bool {
        self.phi && self.outcome == "denied"
    }

    /// A successful read of one patient's PHI.
    pub fn is_phi_read(&self) -> bool {
        self.phi
            && self.outcome == "success"
            && self.patient.is_some()
            && matches!(self.action.as_str(), "read" | "record_view" | "search")
    }

    pub fn is_export(&self) -> bool {
        self.action == "export" || self.action.ends_with("_export")
    }
}

/// "exported 250 records" -> 250.
fn records_in(detail: &str) -> Option<u64> {
    let words: Vec<&str> = detail.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(['.', ',']) == "records")
        .and_then(|w| w[0].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::records_in;

    #[test]
    fn record_counts_in_detail() {
        assert_eq!(records_in("exported 250 records"), Some(250));
        assert_eq!(records_in("exported 3 records."), Some(3));
        assert_eq!(records_in("exported many records"), None);
        assert_eq!(records_in("viewed chart"), None);
    }
}
