//! The detection rules. A [`Detector`] is fed observations in ledger order and returns the
//! detections each one completes; it is a pure function of the stream and its configuration,
//! so a replay from the first entry yields exactly the same detections.
//!
//! Windowed rules fire once per key and window: after a detection, the same rule stays quiet
//! for that key until the evidence window has passed, so a burst of 50 failed logins is one
//! brute-force detection, not 46.
//!
//! Time order: events may arrive up to `tolerance_secs` behind the latest event time seen
//! (the watermark) and count exactly as if they had arrived in order. Evidence older than the
//! longest window plus the tolerance, behind the watermark, is forgotten from time to time;
//! an event older than what may have been forgotten is too late for the rules that keep state
//! (it can still be a configuration change or a big export), so that forgetting never changes
//! a detection of an event within the tolerance and a very late event never repeats one.
//!
//! The state ([`DetectorState`]) can be saved and restored: a detector restored from the
//! snapshot taken after event k goes on exactly as the original would have.

mod state;

use chrono::{Datelike, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use ledger::{Seq, Timestamp};
use serde::{Deserialize, Serialize};

use self::state::Session;
pub use self::state::{decode_state, encode_state, DetectorState, StateError, STATE_VERSION};
use crate::config::{AccountAttack, BruteForce, PasswordSpraying, RulesConfig};
use crate::observation::Observation;
use crate::window::Evidence;

const SECOND: i64 = 1_000_000;

/// Eviction of forgotten evidence runs after every this many observations.
const EVICT_EVERY: u64 = 4096;

/// `secs` in microseconds, saturating (configured durations are not bounded above).
fn micros(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(SECOND)
}

/// `t + secs`, saturating.
fn after(t: Timestamp, secs: u64) -> Timestamp {
    Timestamp(t.0.saturating_add(micros(secs)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// The rules and the state their windows need.
pub struct Detector {
    config: RulesConfig,
    tz: Tz,
    state: DetectorState,
    /// Eviction runs after every this many observations (0: never). Not part of the state:
    /// when eviction runs does not change any detection.
    evict_every: u64,
}

impl Detector {
    /// `config` must have passed `RulesConfig::validate` (its time zone parses).
    pub fn new(config: RulesConfig) -> Detector {
        Detector::restore(config, DetectorState::default())
    }

    /// A detector that goes on from a [`snapshot`](Detector::snapshot). `config` should be the
    /// one the snapshot was taken under: with another, evidence the old one had already
    /// forgotten stays forgotten.
    pub fn restore(config: RulesConfig, state: DetectorState) -> Detector {
        let tz = config.after_hours_phi.timezone.parse().unwrap_or(Tz::UTC);
        Detector {
            config,
            tz,
            state,
            evict_every: EVICT_EVERY,
        }
    }

    /// Everything the detector remembers, to save with the position of the last observation.
    pub fn snapshot(&self) -> DetectorState {
        self.state.clone()
    }

    /// The state, without copying it (`encode_state(detector.state())`).
    pub fn state(&self) -> &DetectorState {
        &self.state
    }

    /// Observations fed so far (since the first, across restores).
    pub fn observed(&self) -> u64 {
        self.state.observed
    }

    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    #[cfg(test)]
    fn evict_every(mut self, n: u64) -> Detector {
        self.evict_every = n;
        self
    }

    /// Feeds one observation; returns the detections it completes.
    pub fn observe(&mut self, o: &Observation) -> Vec<Detection> {
        let mut out = Vec::new();
        self.state.watermark = self.state.watermark.max(o.at);
        self.state.observed += 1;
        // Older than evidence that may have been forgotten: too late for the rules that
        // keep state.
        let current = o.at >= self.state.forgotten;
        if current && o.is_failed_login() {
            self.failed_login(o, &mut out);
        }
        if current && o.is_denied_phi() {
            self.unauthorized(o, &mut out);
        }
        if current && o.session.is_some() {
            self.session(o, &mut out);
        }
        self.bulk_export(o, current, &mut out);
        self.configuration_change(o, &mut out);
        if current {
            self.after_hours(o, &mut out);
        }
        if self.evict_every != 0 && self.state.observed.is_multiple_of(self.evict_every) {
            self.evict();
        }
        out
    }

    /// Records the detection `d` builds unless `rule` is quiet for this key; then keeps it
    /// quiet until `quiet_until`. Returns whether it fired. `d` is called only then: while a
    /// rule is quiet, every event of a busy key would otherwise format a summary for nothing.
    fn fire(
        &mut self,
        rule: Rule,
        key: &str,
        quiet_until: Timestamp,
        at: Timestamp,
        d: impl FnOnce() -> Detection,
        out: &mut Vec<Detection>,
    ) -> bool {
        let k = (rule, key.to_owned());
        if self
            .state
            .quiet_until
            .get(&k)
            .is_some_and(|until| at <= *until)
        {
            return false;
        }
        let d = d();
        debug_assert_eq!(d.rule, rule);
        self.state.quiet_until.insert(k, quiet_until);
        out.push(d);
        true
    }

    fn failed_login(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        // The sections read (plain numbers: cheap to copy, unlike the whole configuration).
        let c = FailedLoginRules {
            brute_force: self.config.brute_force.clone(),
            password_spraying: self.config.password_spraying.clone(),
            account_attack: self.config.account_attack.clone(),
        };
        if let Some(ip) = &o.ip {
            let w = self.state.failed_by_ip.entry(ip.clone()).or_default();
            w.insert(o.at, o.seq, o.user.as_deref().unwrap_or(""));
            let brute = c
                .brute_force
                .enabled
                .then(|| {
                    w.find(
                        o.at,
                        o.seq,
                        micros(c.brute_force.window_secs),
                        c.brute_force.failures,
                        0,
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
                        micros(c.password_spraying.window_secs),
                        c.password_spraying.users,
                        c.password_spraying.users,
                    )
                })
                .flatten();
            if let Some(e) = brute {
                let until = after(e.to, c.brute_force.block_secs);
                let d = || Detection {
                    block: Some(Block {
                        ip: ip.clone(),
                        until,
                    }),
                    ..detection(
                        Rule::BruteForce,
                        Severity::High,
                        vec![("ip", ip.clone())],
                        &e,
                        format!(
                            "{} failed logins from one IP within {} s; IP blocked until {}",
                            e.events, c.brute_force.window_secs, until
                        ),
                    )
                };
                let quiet_until = after(e.to, c.brute_force.window_secs);
                self.fire(Rule::BruteForce, ip, quiet_until, o.at, d, out);
            }
            if let Some(e) = spray {
                let d = || {
                    detection(
                        Rule::PasswordSpraying,
                        Severity::High,
                        vec![("ip", ip.clone())],
                        &e,
                        format!(
                            "failed logins from one IP against {} distinct users within {} s",
                            e.distinct, c.password_spraying.window_secs
                        ),
                    )
                };
                let quiet_until = after(e.to, c.password_spraying.window_secs);
                self.fire(Rule::PasswordSpraying, ip, quiet_until, o.at, d, out);
            }
        }
        if let (Some(user), true) = (&o.user, c.account_attack.enabled) {
            let w = self.state.failed_by_user.entry(user.clone()).or_default();
            w.insert(o.at, o.seq, o.ip.as_deref().unwrap_or(""));
            let a = &c.account_attack;
            if let Some(e) = w.find(o.at, o.seq, micros(a.window_secs), a.failures, a.ips) {
                let d = || {
                    detection(
                        Rule::AccountAttack,
                        Severity::Medium,
                        vec![("user", user.clone())],
                        &e,
                        format!(
                            "{} failed logins for one user from {} IPs within {} s",
                            e.events, e.distinct, a.window_secs
                        ),
                    )
                };
                let quiet_until = after(e.to, a.window_secs);
                self.fire(Rule::AccountAttack, user, quiet_until, o.at, d, out);
            }
        }
    }

    fn unauthorized(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.unauthorized_access.clone();
        let Some(user) = o.user.as_ref().filter(|_| c.enabled) else {
            return;
        };
        let w = self.state.denied_by_user.entry(user.clone()).or_default();
        w.insert(o.at, o.seq, "");
        let Some(e) = w.find(o.at, o.seq, micros(c.window_secs), c.denials, 0) else {
            return;
        };
        let repeated = self
            .state
            .last_unauthorized
            .get(user)
            .is_some_and(|last| e.from > *last && e.from <= after(*last, c.repeat_secs));
        let severity = if repeated {
            Severity::High
        } else {
            Severity::Medium
        };
        let d = || {
            detection(
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
            )
        };
        let quiet_until = after(e.to, c.window_secs);
        if self.fire(Rule::UnauthorizedAccess, user, quiet_until, o.at, d, out) {
            self.state.last_unauthorized.insert(user.clone(), e.to);
        }
    }

    fn session(&mut self, o: &Observation, out: &mut Vec<Detection>) {
        let c = self.config.session_hijack.clone();
        let Some(sid) = &o.session else { return };
        let s = self.state.sessions.entry(sid.clone()).or_default();
        if s.last
            .is_some_and(|last| o.at > after(last, c.max_session_secs))
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
            self.state.sessions.remove(sid);
        }
        if found.is_empty() || !c.enabled {
            return;
        }
        let mut subjects = vec![("session", sid.clone())];
        subjects.extend(o.user.iter().map(|u| ("user", u.clone())));
        subjects.extend(o.ip.iter().map(|ip| ("ip", ip.clone())));
        // One detection per new IP or agent of the session: what was new is now remembered
        // with it, so it is not new again until the session ends.
        out.push(Detection {
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
        });
    }

    /// `current`: the event is not too late for the distinct-patients window.
    fn bulk_export(&mut self, o: &Observation, current: bool, out: &mut Vec<Detection>) {
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
        if !current || !o.is_phi_read() {
            return;
        }
        let (Some(user), Some(patient)) = (&o.user, &o.patient) else {
            return;
        };
        let w = self.state.reads_by_user.entry(user.clone()).or_default();
        w.insert(o.at, o.seq, patient);
        if let Some(e) = w.find(o.at, o.seq, micros(c.window_secs), c.patients, c.patients) {
            let d = || {
                detection(
                    Rule::BulkExport,
                    Severity::High,
                    vec![("user", user.clone())],
                    &e,
                    format!(
                        "one user read the PHI of {} distinct patients within {} s",
                        e.distinct, c.window_secs
                    ),
                )
            };
            let quiet_until = after(e.to, c.window_secs);
            self.fire(Rule::BulkExport, user, quiet_until, o.at, d, out);
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
        let c = &self.config.after_hours_phi;
        let Some(user) = o
            .user
            .as_ref()
            .filter(|_| c.enabled && o.phi && o.outcome == "success")
        else {
            return;
        };
        let (start_hour, end_hour, weekdays_only, cooldown_secs) =
            (c.start_hour, c.end_hour, c.weekdays_only, c.cooldown_secs);
        let local = self.tz.from_utc_datetime(&o.at.to_datetime().naive_utc());
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let hour = local.hour();
        if !(weekdays_only && weekend) && hour >= start_hour && hour < end_hour {
            return;
        }
        let d = || Detection {
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
        let quiet_until = after(o.at, cooldown_secs);
        self.fire(Rule::AfterHoursPhi, user, quiet_until, o.at, d, out);
    }

    /// Forgets evidence no rule can use any more: older than the longest window plus the
    /// out-of-order tolerance, behind the newest event seen (the horizon). Every event within
    /// the tolerance sees exactly what it would have seen without eviction; events before the
    /// horizon are from then on too late for the rules that keep state.
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
        let s = &mut self.state;
        let horizon = Timestamp(
            s.watermark
                .0
                .saturating_sub(micros(longest.saturating_add(c.tolerance_secs))),
        );
        s.forgotten = s.forgotten.max(horizon);
        let horizon = s.forgotten;
        for map in [
            &mut s.failed_by_ip,
            &mut s.failed_by_user,
            &mut s.denied_by_user,
            &mut s.reads_by_user,
        ] {
            map.retain(|_, w| {
                w.evict_before(horizon);
                !w.is_empty()
            });
        }
        // A session unused for its lifetime before any event that is not too late is over.
        let session_horizon = horizon
            .0
            .saturating_sub(micros(c.session_hijack.max_session_secs));
        s.sessions
            .retain(|_, session| session.last.is_some_and(|l| l.0 >= session_horizon));
        // Quiet periods over before any event that is not too late.
        s.quiet_until.retain(|_, until| *until >= horizon);
        // A detection no later one can be a repetition of.
        let u = &c.unauthorized_access;
        let repeat_horizon = horizon
            .0
            .saturating_sub(micros(u.repeat_secs.saturating_add(u.window_secs)));
        s.last_unauthorized
            .retain(|_, last| last.0 >= repeat_horizon);
    }
}

/// The configuration sections the failed-login rules read.
struct FailedLoginRules {
    brute_force: BruteForce,
    password_spraying: PasswordSpraying,
    account_attack: AccountAttack,
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
mod proptests;
#[cfg(test)]
mod tests;
