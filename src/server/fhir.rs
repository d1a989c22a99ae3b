//! HL7 FHIR R4 `AuditEvent` → the ledger's event contract (`docs/FHIR.md` is the mapping in
//! prose). A pure function over JSON: the route feeds its result to the same validation,
//! pseudonymization and append path as `POST /v1/events`.
//!
//! Only what the contract has a place for is taken; everything else (names, `altId`,
//! `outcomeDesc`, `entity.query`, narrative text) is dropped rather than stored, because it
//! may carry PHI in free form. Elements R4 does not define, and any `modifierExtension` (whose
//! meaning we cannot know), are refused with an OperationOutcome naming the element.

use serde_json::{json, Map, Value};

/// One OperationOutcome issue: FHIR issue type code, message, FHIRPath of the element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: String,
}

impl Issue {
    fn new(code: &'static str, expression: &str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            code,
            diagnostics: diagnostics.into(),
            expression: expression.to_owned(),
        }
    }
}

/// An OperationOutcome resource with `issues` at severity `error`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(|i| json!({
            "severity": "error",
            "code": i.code,
            "diagnostics": i.diagnostics,
            "expression": [i.expression],
        })).collect::<Vec<_>>(),
    })
}

/// Where a field of the event contract came from in the AuditEvent (for errors found by the
/// ledger's validation after mapping).
pub fn expression_of(contract_field: &str) -> &'static str {
    match contract_field {
        "occurred_at" => "AuditEvent.recorded",
        "action" => "AuditEvent.action",
        "outcome" => "AuditEvent.outcome",
        "actor.user_id" => "AuditEvent.agent.who",
        "actor.role" => "AuditEvent.agent.role",
        "actor.ip" => "AuditEvent.agent.network.address",
        "resource.type" | "resource.id" | "patient_id" => "AuditEvent.entity.what",
        "request.method" => "AuditEvent.subtype",
        "source" => "AuditEvent.source.observer",
        "detail" => "AuditEvent.type",
        _ => "AuditEvent",
    }
}

const AUDIT_EVENT_ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "type",
    "subtype",
    "action",
    "period",
    "recorded",
    "outcome",
    "outcomeDesc",
    "purposeOfEvent",
    "agent",
    "source",
    "entity",
];

const AGENT_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "type",
    "role",
    "who",
    "altId",
    "name",
    "requestor",
    "location",
    "policy",
    "media",
    "network",
    "purposeOfUse",
];

const ENTITY_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "what",
    "type",
    "role",
    "lifecycle",
    "securityLabel",
    "name",
    "description",
    "query",
    "detail",
];

const SOURCE_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "site",
    "observer",
    "type",
];

struct Mapper {
    issues: Vec<Issue>,
}

/// The codes of a Coding or a CodeableConcept (R4 uses both shapes in AuditEvent; later
/// versions moved some Codings to CodeableConcepts), with their systems.
fn codings(v: &Value) -> Vec<(&str, &str)> {
    fn one(c: &Value) -> Option<(&str, &str)> {
        Some((c["system"].as_str().unwrap_or(""), c["code"].as_str()?))
    }
    match v.get("coding").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(one).collect(),
        None => one(v).into_iter().collect(),
    }
}

fn first_code(v: &Value) -> Option<&str> {
    codings(v).first().map(|(_, c)| *c)
}

/// `Type/id` from a reference (relative, absolute or versioned: `Patient/example/_history/1`).
fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let base = reference.split("/_history/").next().unwrap_or(reference);
    let mut parts = base.rsplit('/');
    let id = parts.next()?;
    let kind = parts.next()?;
    let type_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    (type_ok && !id.is_empty()).then_some((kind, id))
}

impl Mapper {
    fn fail(&mut self, code: &'static str, expression: &str, diagnostics: impl Into<String>) {
        self.issues.push(Issue::new(code, expression, diagnostics));
    }

    fn check_elements(&mut self, map: &Map<String, Value>, known: &[&str], path: &str) {
        for key in map.keys() {
            if key == "modifierExtension" {
                self.fail(
                    "not-supported",
                    &format!("{path}.modifierExtension"),
                    "modifier extensions change the meaning of the resource and are not supported",
                );
            } else if !known.contains(&key.as_str()) && !key.starts_with('_') {
                self.fail(
                    "structure",
                    &format!("{path}.{key}"),
                    "is not an element of the R4 resource",
                );
            }
        }
    }

    /// The action name: from type/subtype where they say more than the action code, else the
    /// action code's class (C/R/U/D/E).
    fn action(&mut self, r: &Map<String, Value>) -> Option<String> {
        let code = match r.get("action") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.as_str() {
                "C" => Some("create"),
                "R" => Some("read"),
                "U" => Some("update"),
                "D" => Some("delete"),
                "E" => Some("execute"),
                _ => {
                    self.fail(
                        "code-invalid",
                        "AuditEvent.action",
                        "must be one of C, R, U, D, E",
                    );
                    return None;
                }
            },
            Some(_) => {
                self.fail("value", "AuditEvent.action", "must be a code (string)");
                return None;
            }
        };
        let type_codes = r.get("type").map(codings).unwrap_or_default();
        let subtypes: Vec<(&str, &str)> = r
            .get("subtype")
            .and_then(Value::as_array)
            .map(|list| list.iter().flat_map(codings).collect())
            .unwrap_or_default();
        let has_sub = |code: &str| subtypes.iter().any(|(_, c)| *c == code);
        let from_type = type_codes.iter().find_map(|(_, t)| match *t {
            // DICOM 110114 User Authentication: subtype 110122 Login, 110123 Logout.
            "110114" if has_sub("110122") => Some("login"),
            "110114" if has_sub("110123") => Some("logout"),
            "110106" => Some("export"),
            "110107" => Some("import"),
            "110112" => Some("search"),
            "rest" => subtypes.iter().find_map(|(_, s)| match *s {
                "read" | "vread" | "history-instance" | "history-type" | "history-system" => {
                    Some("read")
                }
                "search" | "search-type" | "search-system" => Some("search"),
                "create" => Some("create"),
                "update" | "patch" => Some("update"),
                "delete" => Some("delete"),
                _ => None,
            }),
            _ => None,
        });
        Some(from_type.or(code).unwrap_or("execute").to_owned())
    }

    fn outcome(&mut self, r: &Map<String, Value>) -> Option<&'static str> {
        // R4: a code string. Later versions: a CodeableConcept under `code`; accept its code.
        let code = match r.get("outcome") {
            None | Some(Value::Null) => {
                self.fail(
                    "required",
                    "AuditEvent.outcome",
                    "is required by the ledger (every entry records an outcome)",
                );
                return None;
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => v.get("code").and_then(first_code),
        };
        match code {
            Some("0") | Some("success") => Some("success"),
            Some("4") | Some("minor") => Some("failure"),
            Some("8") | Some("12") | Some("serious") | Some("major") => Some("error"),
            _ => {
                self.fail(
                    "code-invalid",
                    "AuditEvent.outcome",
                    "must be one of 0, 4, 8, 12",
                );
                None
            }
        }
    }

    fn actor(&mut self, r: &Map<String, Value>) -> Option<Value> {
        let Some(agents) = r
            .get("agent")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            self.fail(
                "required",
                "AuditEvent.agent",
                "at least one agent is required",
            );
            return None;
        };
        for (i, a) in agents.iter().enumerate() {
            let path = format!("AuditEvent.agent[{i}]");
            let Some(map) = a.as_object() else {
                self.fail("structure", &path, "must be an object");
                return None;
            };
            self.check_elements(map, AGENT_ELEMENTS, &path);
            if !map.get("requestor").is_some_and(Value::is_boolean) {
                self.fail(
                    "required",
                    &format!("{path}.requestor"),
                    "is required (true or false)",
                );
            }
        }
        // The requestor is the actor; without one, the first agent.
        let agent = agents
            .iter()
            .find(|a| a["requestor"] == Value::Bool(true))
            .unwrap_or(&agents[0]);
        let mut actor = Map::new();
        let who = &agent["who"];
        if let Some(id) = who["identifier"]["value"]
            .as_str()
            .or_else(|| who["reference"].as_str())
        {
            actor.insert("user_id".into(), json!(id));
        }
        let role = agent
            .get("role")
            .and_then(Value::as_array)
            .and_then(|roles| roles.iter().find_map(first_code))
            .or_else(|| agent.get("type").and_then(first_code));
        if let Some(role) = role {
            actor.insert("role".into(), json!(role));
        }
        // The network address is an IP only when it parses as one (type 2 = IP address; type
        // 1 is a machine name, which the contract has no field for).
        let ip = std::iter::once(agent).chain(agents.iter()).find_map(|a| {
            a["network"]["address"]
                .as_str()
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
        });
        if let Some(ip) = ip {
            actor.insert("ip".into(), json!(ip));
        }
        Some(Value::Object(actor))
    }

    /// (resource, patient id): the patient from an entity whose `what` is `Patient/…`, the
    /// resource from the first entity about something else (or the patient itself).
    fn entities(&mut self, r: &Map<String, Value>) -> (Option<Value>, Option<String>) {
        let Some(list) = r.get("entity") else {
            return (None, None);
        };
        let Some(list) = list.as_array() else {
            self.fail("structure", "AuditEvent.entity", "must be an array");
            return (None, None);
        };
        let mut patient = None;
        let mut resource = None;
        let mut patient_resource = None;
        for (i, e) in list.iter().enumerate() {
            let path = format!("AuditEvent.entity[{i}]");
            let Some(map) = e.as_object() else {
                self.fail("structure", &path, "must be an object");
                continue;
            };
            self.check_elements(map, ENTITY_ELEMENTS, &path);
            let Some(reference) = e["what"]["reference"].as_str() else {
                continue;
            };
            match split_reference(reference) {
                Some(("Patient", id)) => {
                    patient.get_or_insert_with(|| id.to_owned());
                    patient_resource.get_or_insert_with(|| json!({"type": "Patient", "id": id}));
                }
                Some((kind, id)) => {
                    resource.get_or_insert_with(|| json!({"type": kind, "id": id}));
                }
                None => self.fail(
                    "value",
                    &format!("{path}.what.reference"),
                    "must be a reference of the form Type/id",
                ),
            }
        }
        (resource.or(patient_resource), patient)
    }

    fn source(&mut self, r: &Map<String, Value>) -> Option<String> {
        let Some(source) = r.get("source").and_then(Value::as_object) else {
            self.fail("required", "AuditEvent.source", "is required");
            return None;
        };
        self.check_elements(source, SOURCE_ELEMENTS, "AuditEvent.source");
        let observer = &source.get("observer").cloned().unwrap_or(Value::Null);
        let name = observer["identifier"]["value"]
            .as_str()
            .or_else(|| observer["display"].as_str())
            .or_else(|| observer["reference"].as_str());
        if name.is_none() {
            self.fail(
                "required",
                "AuditEvent.source.observer",
                "is required (identifier.value, display or reference)",
            );
        }
        name.map(str::to_owned)
    }
}

/// Maps one AuditEvent to an event of the contract, or says every element it cannot take.
pub fn to_event(resource: &Value) -> Result<Value, Vec<Issue>> {
    let mut m = Mapper { issues: Vec::new() };
    let Some(r) = resource.as_object() else {
        return Err(vec![Issue::new(
            "structure",
            "AuditEvent",
            "must be a JSON object",
        )]);
    };
    if r.get("resourceType").and_then(Value::as_str) != Some("AuditEvent") {
        return Err(vec![Issue::new(
            "invalid",
            "AuditEvent.resourceType",
            "must be \"AuditEvent\"",
        )]);
    }
    m.check_elements(r, AUDIT_EVENT_ELEMENTS, "AuditEvent");
    if r.get("type").map(codings).unwrap_or_default().is_empty() {
        m.fail(
            "required",
            "AuditEvent.type",
            "is required (a Coding with a code)",
        );
    }
    let recorded = r.get("recorded").and_then(Value::as_str).map(str::to_owned);
    if recorded.is_none() {
        m.fail(
            "required",
            "AuditEvent.recorded",
            "is required (an instant)",
        );
    }
    let action = m.action(r);
    let outcome = m.outcome(r);
    let actor = m.actor(r);
    let (resource_v, patient) = m.entities(r);
    let source = m.source(r);
    if !m.issues.is_empty() {
        return Err(m.issues);
    }
    let mut event = Map::new();
    event.insert("occurred_at".into(), json!(recorded));
    event.insert("action".into(), json!(action));
    event.insert("outcome".into(), json!(outcome));
    event.insert("actor".into(), actor.unwrap_or_else(|| json!({})));
    if let Some(res) = resource_v {
        event.insert("resource".into(), res);
    }
    if let Some(p) = &patient {
        event.insert("patient_id".into(), json!(p));
        event.insert("phi".into(), json!(true));
    }
    let method = r
        .get("subtype")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(codings)
        .find(|(system, _)| *system == "http://hl7.org/fhir/http-verb")
        .map(|(_, code)| code.to_owned());
    if let Some(method) = method {
        event.insert("request".into(), json!({"method": method}));
    }
    event.insert("source".into(), json!(source));
    // Codes only: the kind of event, never its free-text description.
    let type_code = r.get("type").and_then(first_code).unwrap_or("");
    let subtypes: Vec<&str> = r
        .get("subtype")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(first_code)
        .collect();
    let mut detail = format!("FHIR AuditEvent type {type_code}");
    if !subtypes.is_empty() {
        detail.push_str(&format!(", subtype {}", subtypes.join(" ")));
    }
    if let Some(a) = r.get("action").and_then(Value::as_str) {
        detail.push_str(&format!(", action {a}"));
    }
    event.insert("detail".into(), json!(detail));
    Ok(Value::Object(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like the R4 specification's `audit-event-example-login`.
    pub(crate) fn login() -> Value {
        json!({
          "resourceType": "AuditEvent", "id": "example-login",
          "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"},
          "subtype": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110122", "display": "Login"}],
          "action": "E", "recorded": "2013-06-20T23:41:23Z", "outcome": "0",
          "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                     "who": {"identifier": {"system": "http://example.com/ehr/users", "value": "95"}},
                     "altId": "601847123", "name": "Grahame Grieve", "requestor": true,
                     "network": {"address": "127.0.0.1", "type": "2"}}],
          "source": {"site": "Cloud", "observer": {"identifier": {"value": "hl7connect.healthintersections.com.au"}},
                     "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "3", "display": "Web Server"}]}
        })
    }

    #[test]
    fn the_login_example_maps_to_a_login_by_the_requestor() {
        let e = to_event(&login()).unwrap();
        assert_eq!(e["action"], "login");
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["occurred_at"], "2013-06-20T23:41:23Z");
        assert_eq!(e["actor"]["user_id"], "95");
        assert_eq!(e["actor"]["role"], "IRCP");
        assert_eq!(e["actor"]["ip"], "127.0.0.1");
        assert_eq!(e["source"], "hl7connect.healthintersections.com.au");
        assert!(e.get("patient_id").is_none());
        let text = e.to_string();
        assert!(
            !text.contains("Grahame") && !text.contains("601847123"),
            "names and altId are dropped"
        );
        ledger::AuditEvent::from_value(&e, Default::default()).unwrap();
    }

    #[test]
    fn a_versioned_patient_read_names_the_patient_and_skips_machine_names() {
        let mut r = login();
        r["type"] = json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"});
        r["subtype"] =
            json!([{"system": "http://hl7.org/fhir/restful-interaction", "code": "vread"}]);
        r["action"] = json!("R");
        r["agent"][0]["network"] =
            json!({"address": "Workstation1.ehr.familyclinic.com", "type": "1"});
        r["entity"] = json!([{"what": {"reference": "Patient/example/_history/1"},
                              "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}}]);
        let e = to_event(&r).unwrap();
        assert_eq!(e["action"], "read");
        assert_eq!(e["patient_id"], "example");
        assert_eq!(e["resource"], json!({"type": "Patient", "id": "example"}));
        assert_eq!(e["phi"], true);
        assert!(e["actor"].get("ip").is_none());
    }

    #[test]
    fn outcomes_and_action_codes_map_and_unknown_ones_are_named() {
        for (code, outcome) in [
            ("0", "success"),
            ("4", "failure"),
            ("8", "error"),
            ("12", "error"),
        ] {
            let mut r = login();
            r["outcome"] = json!(code);
            assert_eq!(to_event(&r).unwrap()["outcome"], outcome);
        }
        let mut r = login();
        r["type"] = json!({"code": "110110"});
        r["subtype"] = json!([]);
        for (code, action) in [
            ("C", "create"),
            ("R", "read"),
            ("U", "update"),
            ("D", "delete"),
            ("E", "execute"),
        ] {
            r["action"] = json!(code);
            assert_eq!(to_event(&r).unwrap()["action"], action);
        }
        r["action"] = json!("X");
        r["outcome"] = json!("3");
        r["frobnicate"] = json!(1);
        r["modifierExtension"] = json!([{"url": "x"}]);
        r.as_object_mut().unwrap().remove("recorded");
        r.as_object_mut().unwrap().remove("source");
        let issues = to_event(&r).unwrap_err();
        let exprs: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        for want in [
            "AuditEvent.action",
            "AuditEvent.outcome",
            "AuditEvent.frobnicate",
            "AuditEvent.modifierExtension",
            "AuditEvent.recorded",
            "AuditEvent.source",
        ] {
            assert!(exprs.contains(&want), "{want} in {exprs:?}");
        }
        let oo = operation_outcome(&issues);
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["severity"], "error");
    }

    #[test]
    fn other_resource_types_and_missing_agents_are_refused() {
        assert!(to_event(&json!({"resourceType": "Patient"})).is_err());
        let mut r = login();
        r["agent"] = json!([]);
        let issues = to_event(&r).unwrap_err();
        assert_eq!(issues[0].expression, "AuditEvent.agent");
        let mut r = login();
        r["agent"][0].as_object_mut().unwrap().remove("requestor");
        assert_eq!(
            to_event(&r).unwrap_err()[0].expression,
            "AuditEvent.agent[0].requestor"
        );
    }
}
