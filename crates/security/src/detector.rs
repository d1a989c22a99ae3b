//! The detection rules. A [`Detector`] is fed observations in ledger order and returns the
//! detections each one completes; it is a pure function of the stream and its configuration,
//! so a replay from the first entry yields exactly the same detections.
//!
//! Windowed rules fire once per key and window: after a detection, the same rule stays quiet
//! for that key until the evidence window has passed, so a burst of 50 failed logins is one
//! brute-force detection, not 46.

use std::collections::HashMap;

use chrono::{Datelike, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use ledger::{Seq, Timestamp};
use serde::Serialize;

use crate::config::RulesConfig;
use crate::observation::Observation;
use crate::window::{Evidence, Window};

const SECOND: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    BruteForce,
    PasswordSpraying,
    AccountAttack,
    UnauthorizedAccess,
    SessionHijack,
    BulkExport,
    ConfigurationChange,
    AfterHoursPhi,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::BruteForce => "brute_force",
            Rule::PasswordSpraying => "password_spraying",
            Rule::AccountAttack => "account_attack",
            Rule::UnauthorizedAccess => "unauthorized_access",
            Rule::SessionHijack => "session_hijack",
            Rule::BulkExport => "bulk_export",
            Rule::ConfigurationChange => "configuration_change",
            Rule::AfterHoursPhi => "after_hours_phi",
        }
    }
}

/// An IP pseudonym to refuse until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Block {
    pub ip: String,
    pub until: Timestamp,
}

/// One security event: which rule, how severe, who (pseudonyms), when, and the `seq` range of
/// the entries that are its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub rule: Rule,
    pub severity: Severity,
    /// (what, pseudonym): `ip`, `user`, `session`.
    pub subjects: Vec<(&'static str, String)>,
    pub window_from: Timestamp,
    pub window_to: Timestamp,
    pub first_seq: Seq,
    pub last_seq: Seq,
    /// Events that make up the evidence.
    pub evidence: usize,
    /// One sentence for people (pseudonyms only).
    pub summary: String,
    pub block: Option<Block>,
}

#[derive(Debug, Default)]
struct Session {
    last: Option<Timestamp>,
    ips: Vec<String>,
    agents: Vec<String>,
    first_seq: Seq,
}

/// The rules and the state their windows need.
pub struct Detector {
    config: RulesConfig,
    tz: Tz,
    watermark: Timestamp,
    observed: u64,
    /// Failed logins by IP; the value is the user tried (password spraying counts them).
    failed_by_ip: HashMap<String, Window>,
    /// Failed logins by user; the value is the IP (account attack counts them).
    failed_by_user: HashMap<String, Window>,
    denied_by_user: HashMap<String, Window>,
    /// Successful PHI reads by user; the value is the patient.
    reads_by_user: HashMap<String, Window>,
    sessions: HashMap<String, Session>,
    /// No new detection of a rule for a key before this time.
    quiet_until: HashMap<(Rule, String), Timestamp>,
    last_unauthorized: HashMap<String, Timestamp>,
}

impl Detector {
    /// `config` must have passed `RulesConfig::validate` (its time zone parses).
    pub fn new(config: RulesConfig) -> Detector {
        let tz = config.after_hours_phi.timezone.parse().unwrap_or(Tz::UTC);
        Detector {
            config,
            tz,
            watermark: Timestamp(i64::MIN),
            observed: 0,
            failed_by_ip: HashMap::new(),
            failed_by_user: HashMap::new(),
            denied_by_user: HashMap::new(),
            reads_by_user: HashMap::new(),
            sessions: HashMap::new(),
            quiet_until: HashMap::new(),
            last_unauthorized: HashMap::new(),
        }
    }

    /// Feeds one observation; returns the detections it completes.
    pub fn observe(&mut self, o: &Observation) -> Vec<Detection> {
        let mut out = Vec::new();
        self.watermark = self.watermark.max(o.at);
        self.observed += 1;
        if o.is_failed_login() {
            self.failed_login(o, &mut out);
        }
        if o.is_denied_phi() {
            self.unauthorized(o, &mut out);
        }
        if o.session.is_some() {
            self.session(o, &mut out);
        }
        self.bulk_export(o, &mut out);
        self.configuration_change(o, &mut out);
        self.after_hours(o, &mut out);
        if self.observed.is_multiple_of(4096) {
            self.evict();
        }
        out
    }

    /// Records a detection unless the rule is quiet for this key; then keeps it quiet until
    /// `quiet_until`.
    fn fire(
        &mut self,
        key: &str,
        quiet_until: Timestamp,
        at: Timestamp,
        d: Detection,
        out: &mut Vec<Detection>,
    ) {
        let k = (d.rule, key.to_owned());
        if self.quiet_until.get(&k).is_some_and(|until| at <= *until) {
            return;
        }
        self.quiet_until.insert(k, quiet_until);
        out.push(d);
    }

    fn failed_login(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.clone();
        if let Some(ip) = &o.ip {
            let w = self.failed_by_ip.entry(ip.clone()).or_default();
            w.insert(o.at, o.seq, o.user.as_deref().unwrap_or(""));
            let brute = c
                .brute_force
                .enabled
                .then(|| {
                    w.find(
                        o.at,
                        o.seq,
                        c.brute_force.window_secs as i64 * SECOND,
                        c.brute_force.failures,
                        1,
                    )
                })
                .flatten();
            let spray = c
                .password_spraying
                .enabled
                .then(|| {
                    w.find(
                        o.at,
                        o.seq,
                        c.password_spraying.window_secs as i64 * SECOND,
                        c.password_spraying.users,
                        c.password_spraying.users,
                    )
                })
                .flatten();
            if let Some(e) = brute {
                let until = Timestamp(e.to.0 + c.brute_force.block_secs as i64 * SECOND);
                let d = detection(
                    Rule::BruteForce,
                    Severity::High,
                    vec![("ip", ip.clone())],
                    &e,
                    format!(
                        "{} failed logins from one IP within {} s; IP blocked until {}",
                        e.events, c.brute_force.window_secs, until
                    ),
                );
                let d = Detection {
                    block: Some(Block {
                        ip: ip.clone(),
                        until,
                    }),
                    ..d
                };
                self.fire(
                    ip,
                    Timestamp(e.to.0 + c.brute_force.window_secs as i64 * SECOND),
                    o.at,
                    d,
                    out,
                );
            }
            if let Some(e) = spray {
                let d = detection(
                    Rule::PasswordSpraying,
                    Severity::High,
                    vec![("ip", ip.clone())],
                    &e,
                    format!(
                        "failed logins from one IP against {} distinct users within {} s",
                        e.distinct, c.password_spraying.window_secs
                    ),
                );
                self.fire(
                    ip,
                    Timestamp(e.to.0 + c.password_spraying.window_secs as i64 * SECOND),
                    o.at,
                    d,
                    out,
                );
            }
        }
        if let (Some(user), true) = (&o.user, c.account_attack.enabled) {
            let w = self.failed_by_user.entry(user.clone()).or_default();
            w.insert(o.at, o.seq, o.ip.as_deref().unwrap_or(""));
            let a = &c.account_attack;
            if let Some(e) = w.find(
                o.at,
                o.seq,
                a.window_secs as i64 * SECOND,
                a.failures,
                a.ips,
            ) {
                let d = detection(
                    Rule::AccountAttack,
                    Severity::Medium,
                    vec![("user", user.clone())],
                    &e,
                    format!(
                        "{} failed logins for one user from {} IPs within {} s",
                        e.events, e.distinct, a.window_secs
                    ),
                );
                self.fire(
                    user,
                    Timestamp(e.to.0 + a.window_secs as i64 * SECOND),
                    o.at,
                    d,
                    out,
                );
            }
        }
    }

    fn unauthorized(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.unauthorized_access.clone();
        let Some(user) = o.user.as_ref().filter(|_| c.enabled) else {
            return;
        };
        let w = self.denied_by_user.entry(user.clone()).or_default();
        w.insert(o.at, o.seq, "");
        let Some(e) = w.find(o.at, o.seq, c.window_secs as i64 * SECOND, c.denials, 1) else {
            return;
        };
        let repeated = self.last_unauthorized.get(user).is_some_and(|last| {
            e.from.0 - last.0 <= c.repeat_secs as i64 * SECOND && e.from > *last
        });
        let severity = if repeated {
            Severity::High
        } else {
            Severity::Medium
        };
        let d = detection(
            Rule::UnauthorizedAccess,
            severity,
            vec![("user", user.clone())],
            &e,
            format!(
                "{} refused PHI requests by one user within {} s{}",
                e.events,
                c.window_secs,
                if repeated { ", again" } else { "" }
            ),
        );
        let before = out.len();
        self.fire(
            user,
            Timestamp(e.to.0 + c.window_secs as i64 * SECOND),
            o.at,
            d,
            out,
        );
        if out.len() > before {
            self.last_unauthorized.insert(user.clone(), e.to);
        }
    }

    fn session(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.session_hijack.clone();
        let Some(sid) = &o.session else { return };
        let s = self.sessions.entry(sid.clone()).or_default();
        if s.last
            .is_some_and(|last| o.at.0 - last.0 > c.max_session_secs as i64 * SECOND)
        {
            *s = Session::default();
        }
        if s.last.is_none() {
            s.first_seq = o.seq;
        }
        s.last = Some(s.last.map_or(o.at, |l| l.max(o.at)));
        let mut found = Vec::new();
        if let Some(ip) = &o.ip {
            if !s.ips.is_empty() && !s.ips.contains(ip) {
                found.push(format!("a second IP ({} seen before)", s.ips.len()));
            }
            if !s.ips.contains(ip) {
                s.ips.push(ip.clone());
            }
        }
        if let Some(ua) = &o.user_agent {
            if !s.agents.is_empty() && !s.agents.contains(ua) {
                found.push("a second user agent".to_owned());
            }
            if !s.agents.contains(ua) {
                s.agents.push(ua.clone());
            }
        }
        let first_seq = s.first_seq;
        if o.action == "logout" {
            self.sessions.remove(sid);
        }
        if found.is_empty() || !c.enabled {
            return;
        }
        let mut subjects = vec![("session", sid.clone())];
        subjects.extend(o.user.iter().map(|u| ("user", u.clone())));
        subjects.extend(o.ip.iter().map(|ip| ("ip", ip.clone())));
        let d = Detection {
            rule: Rule::SessionHijack,
            severity: Severity::Critical,
            subjects,
            window_from: o.at,
            window_to: o.at,
            first_seq,
            last_seq: o.seq,
            evidence: 2,
            summary: format!("one session used from {}", found.join(" and ")),
            block: None,
        };
        // One detection per new IP or agent: the key includes what was new.
        let key = format!(
            "{sid}/{}/{}",
            o.ip.as_deref().unwrap_or(""),
            o.user_agent.as_deref().unwrap_or("")
        );
        self.fire(&key, Timestamp(i64::MAX), o.at, d, out);
    }

    fn bulk_export(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.bulk_export.clone();
        if !c.enabled {
            return;
        }
        if let (true, Some(records)) = (o.is_export(), o.records) {
            if records > c.records {
                let subjects = o.user.iter().map(|u| ("user", u.clone())).collect();
                out.push(Detection {
                    rule: Rule::BulkExport,
                    severity: Severity::High,
                    subjects,
                    window_from: o.at,
                    window_to: o.at,
                    first_seq: o.seq,
                    last_seq: o.seq,
                    evidence: 1,
                    summary: format!("an export of {records} records (more than {})", c.records),
                    block: None,
                });
            }
        }
        if !o.is_phi_read() {
            return;
        }
        let (Some(user), Some(patient)) = (&o.user, &o.patient) else {
            return;
        };
        let w = self.reads_by_user.entry(user.clone()).or_default();
        w.insert(o.at, o.seq, patient);
        if let Some(e) = w.find(
            o.at,
            o.seq,
            c.window_secs as i64 * SECOND,
            c.patients,
            c.patients,
        ) {
            let d = detection(
                Rule::BulkExport,
                Severity::High,
                vec![("user", user.clone())],
                &e,
                format!(
                    "one user read the PHI of {} distinct patients within {} s",
                    e.distinct, c.window_secs
                ),
            );
            self.fire(
                user,
                Timestamp(e.to.0 + c.window_secs as i64 * SECOND),
                o.at,
                d,
                out,
            );
        }
    }

    fn configuration_change(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = &self.config.configuration_change;
        if !c.enabled || !c.actions.contains(&o.action) {
            return;
        }
        out.push(Detection {
            rule: Rule::ConfigurationChange,
            severity: Severity::Medium,
            subjects: o.user.iter().map(|u| ("user", u.clone())).collect(),
            window_from: o.at,
            window_to: o.at,
            first_seq: o.seq,
            last_seq: o.seq,
            evidence: 1,
            summary: format!("{} ({})", o.action, o.outcome),
            block: None,
        });
    }

    fn after_hours(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.after_hours_phi.clone();
        let Some(user) = o
            .user
            .as_ref()
            .filter(|_| c.enabled && o.phi && o.outcome == "success")
        else {
            return;
        };
        let local = self.tz.from_utc_datetime(&o.at.to_datetime().naive_utc());
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let hour = local.hour();
        if !(c.weekdays_only && weekend) && hour >= c.start_hour && hour < c.end_hour {
            return;
        }
        let d = Detection {
            rule: Rule::AfterHoursPhi,
            severity: Severity::Low,
            subjects: vec![("user", user.clone())],
            window_from: o.at,
            window_to: o.at,
            first_seq: o.seq,
            last_seq: o.seq,
            evidence: 1,
            summary: format!(
                "PHI accessed at {} site time, outside working hours",
                local.format("%a %H:%M")
            ),
            block: None,
        };
        self.fire(
            user,
            Timestamp(o.at.0 + c.cooldown_secs as i64 * SECOND),
            o.at,
            d,
            out,
        );
    }

    /// Forgets window evidence no rule can use any more: older than the longest window plus
    /// the out-of-order tolerance, behind the newest event seen.
    fn evict(&mut self) {
        let c = &self.config;
        let longest = [
            c.brute_force.window_secs,
            c.password_spraying.window_secs,
            c.account_attack.window_secs,
            c.unauthorized_access.window_secs,
            c.bulk_export.window_secs,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let horizon = Timestamp(
            self.watermark
                .0
                .saturating_sub((longest + c.tolerance_secs) as i64 * SECOND),
        );
        for map in [
            &mut self.failed_by_ip,
            &mut self.failed_by_user,
            &mut self.denied_by_user,
            &mut self.reads_by_user,
        ] {
            map.retain(|_, w| {
                w.evict_before(horizon);
                !w.is_empty()
            });
        }
        let session_horizon = self
            .watermark
            .0
            .saturating_sub(c.session_hijack.max_session_secs as i64 * SECOND);
        self.sessions
            .retain(|_, s| s.last.is_some_and(|l| l.0 >= session_horizon));
        let watermark = self.watermark;
        self.quiet_until.retain(|_, until| *until >= watermark);
    }
}

fn detection(
    rule: Rule,
    severity: Severity,
    subjects: Vec<(&'static str, String)>,
    e: &Evidence,
    summary: String,
) -> Detection {
    Detection {
        rule,
        severity,
        subjects,
        window_from: e.from,
        window_to: e.to,
        first_seq: e.first_seq,
        last_seq: e.last_seq,
        evidence: e.events,
        summary,
        block: None,
    }
}

#[cfg(test)]
mod tests;
