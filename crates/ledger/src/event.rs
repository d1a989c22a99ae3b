//! The event contract of `docs/DESIGN.md`: JSON from a service, parsed and validated into typed
//! values. Every rule that fails is reported with the field it concerns; the value itself is
//! never echoed (it may be a raw identifier, which must not reach logs or error messages).

use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::phi::{PhiPolicy, PhiScanner};
use crate::types::Timestamp;

/// Longest accepted identifier (user, session, resource, patient).
pub const MAX_ID_LEN: usize = 256;
/// Longest `detail`.
pub const MAX_DETAIL_LEN: usize = 4096;
/// Longest `user_agent` and `request.path`.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest action, role, resource type, request method and source.
pub const MAX_NAME_LEN: usize = 128;

/// One rule broken by one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `actor.ip`.
    pub field: String,
    /// The rule, in words, e.g. `must be an IPv4 or IPv6 address`.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// Every problem found in one event. `index` is the event's position in its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{}", self.describe())]
pub struct EventError {
    pub index: Option<usize>,
    pub errors: Vec<FieldError>,
}

impl EventError {
    fn describe(&self) -> String {
        let list = self
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        match self.index {
            Some(i) => format!("event {i}: {list}"),
            None => list,
        }
    }

    pub fn at(mut self, index: usize) -> EventError {
        self.index = Some(index);
        self
    }
}

/// How an action maps to the FHIR AuditEvent action code (C, R, U, D, E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionClass {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl ActionClass {
    /// The FHIR R4 `AuditEvent.action` code.
    pub fn fhir_code(self) -> &'static str {
        match self {
            ActionClass::Create => "C",
            ActionClass::Read => "R",
            ActionClass::Update => "U",
            ActionClass::Delete => "D",
            ActionClass::Execute => "E",
        }
    }
}

/// An action name: lower-case `[a-z][a-z0-9_]*`. The vocabulary is open; known names map to a
/// class, unknown ones are `execute`-class.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Action(String);

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        let name = name.to_ascii_lowercase();
        let bytes = name.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_NAME_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        ok.then_some(Action(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn class(&self) -> ActionClass {
        match self.0.as_str() {
            "create" | "import" | "csv_ingest" => ActionClass::Create,
            "read" | "record_view" | "export" | "worklist_export" | "search" => ActionClass::Read,
            "update" | "rule_update" | "role_change" | "config_change" => ActionClass::Update,
            "delete" => ActionClass::Delete,
            _ => ActionClass::Execute,
        }
    }

    /// A failed login: the `login_failed` action, or `login` with a failure-class outcome.
    pub fn is_failed_login(&self, outcome: Outcome) -> bool {
        self.0 == "login_failed" || (self.0 == "login" && outcome.is_failure())
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({})", self.0)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of the audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    /// The action failed (wrong password, validation error, ...).
    Failure,
    /// The action was refused by access control.
    Denied,
    /// The system failed while doing it.
    Error,
}

impl Outcome {
    pub const NAMES: [&'static str; 4] = ["success", "failure", "denied", "error"];

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            "error" => Some(Outcome::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

/// Who acted. Identifiers are raw here and only here: [`crate::payload::StoredEvent`] holds
/// their pseudonyms.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Actor {
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub ip: Option<IpAddr>,
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: String,
    pub id: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: Option<String>,
    pub path: Option<String>,
}

/// A validated event with raw identifiers. It exists only between parsing and
/// pseudonymization; its `Debug` prints no identifier.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub occurred_at: Timestamp,
    pub action: Action,
    pub outcome: Outcome,
    pub actor: Actor,
    pub resource: Option<Resource>,
    pub patient_id: Option<String>,
    pub phi: bool,
    pub request: Option<Request>,
    pub source: String,
    pub detail: Option<String>,
}

impl fmt::Debug for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditEvent")
            .field("occurred_at", &self.occurred_at)
            .field("action", &self.action)
            .field("outcome", &self.outcome)
            .field("source", &self.source)
            .field("identifiers", &"<hidden>")
            .finish()
    }
}

/// Options of parsing that a site configures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    pub phi_policy: PhiPolicy,
    /// The event is one the ledger writes about itself (a purge authorization, a legal hold,
    /// a retention check): the actions reserved for those ([`crate::record::RESERVED_ACTIONS`])
    /// are allowed. A client's event never is: a forged "purge authorization" must not get in.
    pub ledger_record: bool,
}

impl AuditEvent {
    /// Parses one event from JSON text.
    pub fn from_json(text: &str, opts: ParseOptions) -> Result<AuditEvent, EventError> {
        let value: Value = serde_json::from_str(text).map_err(|e| EventError {
            index: None,
            errors: vec![FieldError {
                field: "$".into(),
                // serde_json's message names line and column, never the value.
                rule: format!("must be valid JSON ({})", e.classify_message()),
            }],
        })?;
        AuditEvent::from_value(&value, opts)
    }

    /// Validates one event already parsed as JSON, collecting every broken rule.
    pub fn from_value(value: &Value, opts: ParseOptions) -> Result<AuditEvent, EventError> {
        let mut v = Validator {
            errors: Vec::new(),
            opts,
        };
        let event = v.event(value);
        match event {
            Some(event) if v.errors.is_empty() => Ok(event),
            _ => Err(EventError {
                index: None,
                errors: v.errors,
            }),
        }
    }
}

trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        };
        format!("{kind} at line {} column {}", self.line(), self.column())
    }
}

struct Validator {
    errors: Vec<FieldError>,
    opts: ParseOptions,
}

/// Which rules a string field obeys.
#[derive(Clone, Copy)]
enum Text {
    /// An identifier: non-empty, at most `MAX_ID_LEN`, pseudonymized later.
    Id,
    /// A short name (role, type, method, source): non-empty, printable, at most `MAX_NAME_LEN`.
    Name,
    /// Free text stored as written, so scanned for PHI.
    Free(usize),
}

impl Validator {
    fn fail(&mut self, field: &str, rule: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            rule: rule.into(),
        });
    }

    fn object<'v>(
        &mut self,
        field: &str,
        value: &'v Value,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(map) = value.as_object() else {
            self.fail(field, "must be a JSON object");
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let path = if field == "$" {
                    key.clone()
                } else {
                    format!("{field}.{key}")
                };
                // An unknown field could carry an identifier that would then escape
                // pseudonymization, so it is refused rather than ignored.
                self.fail(
                    &path,
                    format!(
                        "is not a field of the event contract (known: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(map)
    }

    /// `Some(Some(s))` present and valid, `Some(None)` absent or null, `None` invalid.
    fn text(
        &mut self,
        map: &Map<String, Value>,
        parent: &str,
        key: &str,
        rules: Text,
        required: bool,
    ) -> Option<Option<String>> {
        let field = if parent.is_empty() {
            key.to_owned()
        } else {
            format!("{parent}.{key}")
        };
        let value = match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(&field, "is required");
                    return None;
                }
                return Some(None);
            }
            Some(v) => v,
        };
        let Some(s) = value.as_str() else {
            self.fail(
                &field,
                format!("must be a string, not {}", json_type(value)),
            );
            return None;
        };
        if s.trim().is_empty() {
            self.fail(&field, "must not be empty");
            return None;
        }
        let max = match rules {
            Text::Id => MAX_ID_LEN,
            Text::Name => MAX_NAME_LEN,
            Text::Free(max) => max,
        };
        if s.len() > max {
            self.fail(
                &field,
                format!("must be at most {max} bytes (got {})", s.len()),
            );
            return None;
        }
        if s.chars().any(|c| c.is_control()) {
            self.fail(&field, "must not contain control characters");
            return None;
        }
        if let Text::Free(_) = rules {
            if let Some(kind) = PhiScanner::global().find(s) {
                match self.opts.phi_policy {
                    PhiPolicy::Reject => {
                        self.fail(&field, format!("looks like it contains PHI ({}); free text must not carry identifiers", kind.name()));
                        return None;
                    }
                    PhiPolicy::Redact => {
                        return Some(Some(PhiScanner::global().redact(s).into_owned()))
                    }
                }
            }
        }
        Some(Some(s.to_owned()))
    }

    fn event(&mut self, value: &Value) -> Option<AuditEvent> {
        const KNOWN: &[&str] = &[
            "occurred_at",
            "action",
            "outcome",
            "actor",
            "resource",
            "patient_id",
            "phi",
            "request",
            "source",
            "detail",
        ];
        let map = self.object("$", value, KNOWN)?;

        let occurred_at = self
            .text(map, "", "occurred_at", Text::Name, true)
            .flatten()
            .and_then(|s| {
                let t = Timestamp::parse_rfc3339(&s);
                if t.is_none() {
                    self.fail(
                        "occurred_at",
                        "must be an RFC 3339 timestamp such as 2026-11-22T14:03:11.250Z",
                    );
                }
                t
            });
        let action = self.text(map, "", "action", Text::Name, true).flatten().and_then(|s| {
            let a = Action::parse(&s);
            if a.is_none() {
                self.fail("action", "must be a name of letters, digits and '_' starting with a letter (e.g. read, login_failed)");
            } else if !self.opts.ledger_record && crate::record::RESERVED_ACTIONS.contains(&s.as_str()) {
                self.fail("action", "is reserved for records the ledger writes itself (retention and legal-hold commands)");
                return None;
            }
            a
        });
        let outcome = self
            .text(map, "", "outcome", Text::Name, true)
            .flatten()
            .and_then(|s| {
                let o = Outcome::parse(&s);
                if o.is_none() {
                    self.fail(
                        "outcome",
                        format!("must be one of {}", Outcome::NAMES.join(", ")),
                    );
                }
                o
            });
        let actor = match map.get("actor") {
            None | Some(Value::Null) => {
                self.fail("actor", "is required");
                None
            }
            Some(v) => self.actor(v),
        };
        let resource = match map.get("resource") {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.resource(v).map(Some),
        };
        let patient_id = self.text(map, "", "patient_id", Text::Id, false);
        let phi = match map.get("phi") {
            None | Some(Value::Null) => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                self.fail(
                    "phi",
                    format!("must be true or false, not {}", json_type(v)),
                );
                None
            }
        };
        let request = match map.get("request") {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.request(v).map(Some),
        };
        let source = self.text(map, "", "source", Text::Name, true).flatten();
        let detail = self.text(map, "", "detail", Text::Free(MAX_DETAIL_LEN), false);

        Some(AuditEvent {
            occurred_at: occurred_at?,
            action: action?,
            outcome: outcome?,
            actor: actor?,
            resource: resource?,
            patient_id: patient_id?,
            phi: phi?,
            request: request?,
            source: source?,
            detail: detail?,
        })
    }

    fn actor(&mut self, value: &Value) -> Option<Actor> {
        let map = self.object(
            "actor",
            value,
            &["user_id", "role", "ip", "session_id", "user_agent"],
        )?;
        let user_id = self.text(map, "actor", "user_id", Text::Id, false);
        let role = self.text(map, "actor", "role", Text::Name, false);
        let ip = self.text(map, "actor", "ip", Text::Name, false).map(|ip| {
            ip.and_then(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.fail("actor.ip", "must be an IPv4 or IPv6 address");
                    None
                }
            })
        });
        let ip_ok = !self.errors.iter().any(|e| e.field == "actor.ip");
        let session_id = self.text(map, "actor", "session_id", Text::Id, false);
        let user_agent = self.text(map, "actor", "user_agent", Text::Free(MAX_TEXT_LEN), false);
        if !ip_ok {
            return None;
        }
        Some(Actor {
            user_id: user_id?,
            role: role?,
            ip: ip?,
            session_id: session_id?,
            user_agent: user_agent?,
        })
    }

    fn resource(&mut self, value: &Value) -> Option<Resource> {
        let map = self.object("resource", value, &["type", "id"])?;
        let kind = self
            .text(map, "resource", "type", Text::Name, true)
            .flatten();
        let id = self.text(map, "resource", "id", Text::Id, false);
        Some(Resource {
            kind: kind?,
            id: id?,
        })
    }

    fn request(&mut self, value: &Value) -> Option<Request> {
        let map = self.object("request", value, &["method", "path"])?;
        let method = self.text(map, "request", "method", Text::Name, false);
        let path = self.text(map, "request", "path", Text::Free(MAX_TEXT_LEN), false);
        Some(Request {
            method: method?.map(|m| m.to_ascii_uppercase()),
            path: path?,
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The contract's example event, for tests across the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use serde_json::{json, Value};

    pub(crate) fn sample() -> Value {
        json!({"occurred_at": "2026-11-22T14:03:11.250Z",
            "action": "read", "outcome": "success",
            "actor": {"user_id": "u-1042", "role": "nurse", "ip": "10.1.4.22",
                      "session_id": "s-88f1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
            "resource": {"type": "Patient", "id": "p-20931"},
            "patient_id": "p-20931", "phi": true,
            "request": {"method": "GET", "path": "/patients/{id}"},
            "source": "ehr-web", "detail": "viewed chart summary"})
    }

    /// A chain of `n` entries of the default stream: the genesis entry, then `sample()`
    /// events, chained with SHA-256 at `recorded_at` = seq.
    pub(crate) fn chain(n: u64) -> Vec<crate::entry::Entry> {
        use crate::entry::PreparedEntry;
        use crate::pseudonym::{PseudonymKey, Pseudonymizer};
        use crate::types::{Digest, StreamId, Timestamp};
        use crate::HashAlg;

        let stream = StreamId::default();
        let alg = HashAlg::Sha256;
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([1; 32]));
        let event = super::AuditEvent::from_value(&sample(), super::ParseOptions::default())
            .expect("the sample is valid");
        let mut out = vec![PreparedEntry::genesis(&stream, alg, Timestamp(0)).chain(
            &stream,
            0,
            Timestamp(0),
            Digest::ZERO,
            alg,
        )];
        for seq in 1..n {
            let prev = out.last().expect("the genesis entry").entry_hash;
            out.push(PreparedEntry::event(&event, &p, None, alg).chain(
                &stream,
                seq,
                Timestamp(seq as i64),
                prev,
                alg,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;
    use serde_json::json;

    fn errors_of(v: Value) -> Vec<FieldError> {
        AuditEvent::from_value(&v, ParseOptions::default())
            .unwrap_err()
            .errors
    }

    fn fields_of(v: Value) -> Vec<String> {
        errors_of(v).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn parses_the_contract_example() {
        let e = AuditEvent::from_value(&sample(), ParseOptions::default()).unwrap();
        assert_eq!(e.action.as_str(), "read");
        assert_eq!(e.action.class(), ActionClass::Read);
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.actor.ip, Some("10.1.4.22".parse().unwrap()));
        assert_eq!(e.resource.as_ref().unwrap().kind, "Patient");
        assert!(e.phi);
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("occurred_at");
        assert_eq!(fields_of(v), ["occurred_at"]);

        let mut v = sample();
        v["phi"] = json!("yes");
        v["actor"]["user_id"] = json!(42);
        let fields = fields_of(v);
        assert!(
            fields.contains(&"phi".to_string()) && fields.contains(&"actor.user_id".to_string()),
            "{fields:?}"
        );
    }

    #[test]
    fn each_rule_names_field_and_rule() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("2026-11-22"), "occurred_at", "RFC 3339"),
            (json!("maybe"), "outcome", "one of"),
        ];
        for (value, field, rule) in cases {
            let mut v = sample();
            v[field] = value;
            let errs = errors_of(v);
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].field, field);
            assert!(errs[0].rule.contains(rule), "{:?}", errs[0]);
        }
        let mut v = sample();
        v["actor"]["ip"] = json!("10.1.4.999");
        assert_eq!(fields_of(v), ["actor.ip"]);
        let mut v = sample();
        v["patient_id"] = json!("p".repeat(MAX_ID_LEN + 1));
        let errs = errors_of(v);
        assert_eq!(errs[0].field, "patient_id");
        assert!(errs[0].rule.contains("at most"));
        let mut v = sample();
        v["surname"] = json!("Doe");
        assert_eq!(fields_of(v), ["surname"]);
    }

    #[test]
    fn reserved_actions_are_refused_from_clients() {
        for action in crate::record::RESERVED_ACTIONS {
            let mut v = sample();
            v["action"] = json!(action);
            assert_eq!(fields_of(v.clone()), ["action"], "{action}");
            let own = ParseOptions {
                ledger_record: true,
                ..ParseOptions::default()
            };
            assert!(AuditEvent::from_value(&v, own).is_ok(), "{action}");
        }
    }

    #[test]
    fn phi_in_free_text_is_rejected_without_echoing_it() {
        let mut v = sample();
        v["detail"] = json!("called patient at 555-123-4567");
        let errs = errors_of(v.clone());
        assert_eq!(errs[0].field, "detail");
        assert!(errs[0].rule.contains("phone"));
        assert!(!format!("{errs:?}").contains("4567"));

        let redacted = AuditEvent::from_value(
            &v,
            ParseOptions {
                phi_policy: PhiPolicy::Redact,
                ..ParseOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            redacted.detail.as_deref(),
            Some("called patient at [REDACTED:phone]")
        );
    }

    #[test]
    fn errors_never_echo_raw_identifiers() {
        let mut v = sample();
        v["actor"]["ip"] = json!("not-an-ip-u-1042");
        v["patient_id"] = json!(["p-20931"]);
        let text = AuditEvent::from_value(&v, ParseOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            !text.contains("u-1042") && !text.contains("p-20931"),
            "{text}"
        );
        let ok = AuditEvent::from_value(&sample(), ParseOptions::default()).unwrap();
        let dbg = format!("{ok:?}");
        assert!(!dbg.contains("u-1042") && !dbg.contains("p-20931") && !dbg.contains("10.1.4.22"));
    }

    #[test]
    fn unknown_actions_are_execute_class() {
        let a = Action::parse("Coverage_Calc").unwrap();
        assert_eq!(a.as_str(), "coverage_calc");
        assert_eq!(a.class(), ActionClass::Execute);
        assert!(Action::parse("1abc").is_none());
        assert!(Action::parse("rm -rf").is_none());
        assert!(Action::parse("login")
            .unwrap()
            .is_failed_login(Outcome::Failure));
        assert!(!Action::parse("login")
            .unwrap()
            .is_failed_login(Outcome::Success));
    }
}
