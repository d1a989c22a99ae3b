//! A synthetic but realistic clinic day, for `demo` and the benchmarks: staff log in (some
//! mistype their password), read and update patient charts, billing exports a worklist, the
//! coverage service calculates coverage, an administrator changes a role, a front-desk clerk is
//! refused a clinical note, and at night an attacker tries passwords from one address.
//!
//! Same seed, same day. The identifiers are made up and follow the shapes of the event
//! contract (`u-1042`, `p-20931`, `s-88f1`).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What the generator put into the day, so the demo can say it.
#[derive(Debug, Default, Clone)]
pub struct DaySummary {
    pub events: usize,
    pub logins: usize,
    pub failed_logins: usize,
    pub brute_force_attempts: usize,
    pub phi_reads: usize,
    pub updates: usize,
    pub exports: usize,
    pub denied: usize,
    pub role_changes: usize,
    pub service_events: usize,
}

const ROLES: [(&str, usize); 5] = [
    ("nurse", 24),
    ("physician", 10),
    ("front_desk", 6),
    ("billing", 3),
    ("admin", 2),
];
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
const CHART_PATHS: [(&str, &str, &str); 4] = [
    ("Patient", "/patients/{id}", "viewed chart summary"),
    (
        "Observation",
        "/patients/{id}/observations",
        "viewed CGM readings",
    ),
    (
        "MedicationRequest",
        "/patients/{id}/medications",
        "viewed medication list",
    ),
    (
        "MedicalRecord",
        "/patients/{id}/notes",
        "viewed clinical notes",
    ),
];

struct Staff {
    user_id: String,
    role: &'static str,
    ip: String,
}

/// Generates about `target` events of one day (2026-11-22 UTC), in time order.
pub fn clinic_day(seed: u64, target: usize) -> (Vec<Value>, DaySummary) {
    let mut rng = StdRng::seed_from_u64(seed);
    let day = Utc
        .with_ymd_and_hms(2026, 11, 22, 0, 0, 0)
        .single()
        .expect("a valid date");
    let mut staff = Vec::new();
    let mut n = 1000;
    for (role, count) in ROLES {
        for _ in 0..count {
            n += rng.gen_range(1..40);
            staff.push(Staff {
                user_id: format!("u-{n}"),
                role,
                ip: format!("10.1.{}.{}", rng.gen_range(1..8), rng.gen_range(2..250)),
            });
        }
    }
    let patients: Vec<String> = (0..3000).map(|i| format!("p-{}", 20000 + i * 7)).collect();
    let mut events: Vec<(DateTime<Utc>, Value)> = Vec::with_capacity(target + 64);
    let mut s = DaySummary::default();

    // Night: a brute-force burst from one outside address against an admin account.
    let attack_start = day + Duration::minutes(2 * 60 + 13);
    for i in 0..12 {
        events.push((
            attack_start + Duration::seconds(i * 14),
            json!({"action": "login_failed", "outcome": "failure", "source": "ehr-web",
                   "actor": {"user_id": "admin", "ip": "203.0.113.77", "user_agent": "python-requests/2.31"},
                   "request": {"method": "POST", "path": "/login"}, "detail": "invalid password"}),
        ));
        s.brute_force_attempts += 1;
        s.failed_logins += 1;
    }
    // Morning: an administrator changes a role.
    let admin = staff
        .iter()
        .find(|u| u.role == "admin")
        .expect("there is an admin");
    events.push((
        day + Duration::hours(7) + Duration::minutes(5),
        json!({"action": "role_change", "outcome": "success", "source": "ehr-admin",
               "actor": {"user_id": admin.user_id, "role": "admin", "ip": admin.ip, "session_id": "s-a0001"},
               "resource": {"type": "Practitioner", "id": staff[3].user_id},
               "detail": "role nurse -> charge_nurse"}),
    ));
    s.role_changes += 1;

    let mut session = 0x1000u32;
    while events.len() < target {
        let user = staff.choose(&mut rng).expect("staff is not empty");
        session += 1;
        let sid = format!("s-{session:x}");
        let start = day + Duration::minutes(rng.gen_range(6 * 60..20 * 60));
        let actor = json!({"user_id": user.user_id, "role": user.role, "ip": user.ip, "session_id": sid, "user_agent": USER_AGENT});
        let mut t = start;
        if rng.gen_bool(0.08) {
            events.push((t, json!({"action": "login", "outcome": "failure", "source": "ehr-web", "actor": actor,
                                    "request": {"method": "POST", "path": "/login"}, "detail": "invalid password"})));
            s.failed_logins += 1;
            t += Duration::seconds(20);
        }
        events.push((
            t,
            json!({"action": "login", "outcome": "success", "source": "ehr-web", "actor": actor,
                                "request": {"method": "POST", "path": "/login"}}),
        ));
        s.logins += 1;
        let actions = rng.gen_range(5..40);
        for _ in 0..actions {
            t += Duration::seconds(rng.gen_range(5..240));
            let patient = patients.choose(&mut rng).expect("patients is not empty");
            let (rtype, path, detail) = *CHART_PATHS.choose(&mut rng).expect("non-empty");
            let roll: f64 = rng.gen();
            let event = match user.role {
                "front_desk" if rtype == "MedicalRecord" => {
                    s.denied += 1;
                    json!({"action": "read", "outcome": "denied", "source": "ehr-web", "actor": actor,
                           "resource": {"type": rtype, "id": patient}, "patient_id": patient, "phi": true,
                           "request": {"method": "GET", "path": path}, "detail": "role may not read clinical notes"})
                }
                "billing" if roll < 0.1 => {
                    s.exports += 1;
                    json!({"action": "worklist_export", "outcome": "success", "source": "coverage-service", "actor": actor,
                           "resource": {"type": "Worklist", "id": format!("w-{}", rng.gen_range(100..999))}, "phi": true,
                           "request": {"method": "GET", "path": "/worklists/{id}/export"},
                           "detail": format!("exported {} records", rng.gen_range(20..400))})
                }
                "physician" | "nurse" if roll < 0.15 => {
                    s.updates += 1;
                    json!({"action": "update", "outcome": "success", "source": "ehr-web", "actor": actor,
                           "resource": {"type": rtype, "id": patient}, "patient_id": patient, "phi": true,
                           "request": {"method": "PUT", "path": path}, "detail": "updated chart"})
                }
                _ => {
                    s.phi_reads += 1;
                    json!({"action": "record_view", "outcome": "success", "source": "ehr-web", "actor": actor,
                           "resource": {"type": rtype, "id": patient}, "patient_id": patient, "phi": true,
                           "request": {"method": "GET", "path": path}, "detail": detail})
                }
            };
            events.push((t, event));
        }
        // The coverage service works alongside.
        if rng.gen_bool(0.3) {
            let patient = patients.choose(&mut rng).expect("non-empty");
            events.push((t, json!({"action": "coverage_calc", "outcome": "success", "source": "coverage-service",
                                    "actor": {"user_id": "svc-coverage", "role": "service", "ip": "10.2.0.5"},
                                    "resource": {"type": "Coverage", "id": patient}, "patient_id": patient, "phi": true,
                                    "detail": "calculated CGM coverage"})));
            s.service_events += 1;
        }
        events.push((
            t + Duration::seconds(30),
            json!({"action": "logout", "outcome": "success", "source": "ehr-web", "actor": actor}),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    let values: Vec<Value> = events
        .into_iter()
        .map(|(t, mut v)| {
            v["occurred_at"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            v
        })
        .collect();
    s.events = values.len();
    (values, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::{AuditEvent, ParseOptions};

    #[test]
    fn every_generated_event_is_valid_and_deterministic() {
        let (a, summary) = clinic_day(7, 3000);
        for v in &a {
            AuditEvent::from_value(v, ParseOptions::default())
                .unwrap_or_else(|e| panic!("{e}: {v}"));
        }
        assert!(
            summary.brute_force_attempts >= 5 && summary.role_changes == 1 && summary.denied > 0
        );
        assert_eq!(clinic_day(7, 3000).0, a);
    }
}
