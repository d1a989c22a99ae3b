//! The retention policy (how long entries must be kept) and the coverage settings (when a
//! silent source is an audit outage), from a TOML file (`<data-dir>/retention.toml` by
//! default). Absent keys take the defaults below; unknown keys are refused, so a misspelt
//! horizon is not silently ignored; a horizon under the federal floor is refused.
//!
//! ```toml
//! [policy]
//! # HIPAA: audit records are documentation kept "for 6 years from the date of its creation or
//! # the date when it last was in effect, whichever is later" (45 CFR 164.316(b)(2)(i) and
//! # 164.530(j)(2)). The federal floor: fewer years are refused.
//! default_years = 6
//!
//! # Longer horizons, one [[policy.rule]] each; none by default, since six years is the only
//! # federal floor. State law, ASTM E2147, a contract or counsel may ask for longer: cite it in
//! # `why`, which plans and reports show. A rule matches an entry when each list it gives
//! # contains the entry's value; the longest matching horizon wins. For example:
//! #
//! # [[policy.rule]]
//! # name = "access-control-and-configuration"
//! # years = 10
//! # actions = ["role_change", "config_change", "rule_update", "token_create", "token_revoke", "key_rotate"]
//! # why = "state records schedule: security configuration 10 years (cite the statute)"
//!
//! [coverage]
//! # A regular source silent for longer than this is an audit outage ("audit recording
//! # stopped"): two missed hours of a source that writes every hour.
//! max_silence_minutes = 120
//! # A source is regular when it wrote in at least this many of the 24 clock hours before the
//! # silence: around the clock, allowing a few quiet night hours. A source that writes only in
//! # working hours is not regular, and its nights are not outages.
//! regular_hours = 20
//! # Gaps that ended, and silences still open, within this many days before the check are
//! # violations: a month, the usual cycle of the information system activity review
//! # (45 CFR 164.308(a)(1)(ii)(D)). Older gaps were reported by the checks of their time.
//! window_days = 30
//! ```

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use ledger::{HashAlg, StoredEvent, Timestamp};
use serde::{Deserialize, Serialize};

/// HIPAA's six years (45 CFR 164.316(b)(2)(i), 164.530(j)(2)): no horizon may be shorter.
pub const FEDERAL_FLOOR_YEARS: u32 = 6;
/// No horizon may be longer (a typo guard; a century outlives any schedule).
pub const MAX_YEARS: u32 = 100;
/// The name plans, reports and purge authorizations give the default horizon.
pub const DEFAULT_RULE: &str = "default";
/// Why the default horizon is what it is, shown beside it.
pub const DEFAULT_WHY: &str =
    "HIPAA 45 CFR 164.316(b)(2)(i), 164.530(j)(2): six years from creation";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid retention configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid retention configuration: {0}")]
    Invalid(String),
}

/// Everything in the retention file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub policy: Policy,
    pub coverage: CoverageConfig,
}

/// How long entries are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The horizon of every entry no rule matches, in calendar years from `recorded_at`.
    pub default_years: u32,
    /// Longer horizons (`[[policy.rule]]`).
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_years: FEDERAL_FLOOR_YEARS,
            rules: Vec::new(),
        }
    }
}

/// A longer horizon for the entries it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Named in plans, reports and purge authorizations: keep it stable.
    pub name: String,
    pub years: u32,
    /// Each list constrains the entry's value (an empty or absent list constrains nothing):
    /// actions (compared without case), resource types, sources.
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub resource_types: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    /// The regulation or reason, shown in plans and reports.
    pub why: String,
}

impl Rule {
    /// Whether every list the rule gives contains the event's value.
    pub fn matches(&self, event: &StoredEvent) -> bool {
        let action = self.actions.is_empty()
            || self
                .actions
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&event.action));
        let resource = self.resource_types.is_empty()
            || event
                .resource
                .as_ref()
                .is_some_and(|r| self.resource_types.contains(&r.kind));
        let source = self.sources.is_empty() || self.sources.contains(&event.source);
        action && resource && source
    }
}

/// The rule an entry falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef<'a> {
    /// [`DEFAULT_RULE`] when no rule matches.
    pub name: &'a str,
    pub years: u32,
    pub why: &'a str,
}

impl Policy {
    /// The rule with the longest horizon among those matching `event` (the first one listed
    /// on a tie), else the default.
    pub fn rule_for(&self, event: &StoredEvent) -> RuleRef<'_> {
        match self.rule_index(event) {
            None => self.default_rule(),
            Some(i) => self.rule_ref(i),
        }
    }

    /// The index in `rules` of [`rule_for`](Self::rule_for)'s rule (`None`: the default).
    pub fn rule_index(&self, event: &StoredEvent) -> Option<usize> {
        let mut best: (Option<usize>, u32) = (None, self.default_years);
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.years > best.1 && rule.matches(event) {
                best = (Some(i), rule.years);
            }
        }
        best.0
    }

    fn rule_ref(&self, i: usize) -> RuleRef<'_> {
        let rule = &self.rules[i];
        RuleRef {
            name: &rule.name,
            years: rule.years,
            why: &rule.why,
        }
    }

    pub fn default_rule(&self) -> RuleRef<'_> {
        RuleRef {
            name: DEFAULT_RULE,
            years: self.default_years,
            why: DEFAULT_WHY,
        }
    }

    /// Every rule, the default first, then the file's rules in order.
    pub fn all_rules(&self) -> impl Iterator<Item = RuleRef<'_>> {
        std::iter::once(self.default_rule()).chain((0..self.rules.len()).map(|i| self.rule_ref(i)))
    }

    /// The horizon the policy now gives rule `name` (`default` included), if it has one.
    pub fn years_of(&self, name: &str) -> Option<u32> {
        self.all_rules().find(|r| r.name == name).map(|r| r.years)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(what));
        if self.default_years < FEDERAL_FLOOR_YEARS {
            return bad(format!(
                "policy.default_years = {} is shorter than the six years HIPAA requires \
                 (45 CFR 164.316(b)(2)(i) and 164.530(j)(2): six years from creation)",
                self.default_years
            ));
        }
        if self.default_years > MAX_YEARS {
            return bad(format!(
                "policy.default_years = {} is more than {MAX_YEARS}",
                self.default_years
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let label = format!("policy.rule[{i}] ({:?})", rule.name);
            if rule.name.trim().is_empty() || rule.name.trim() != rule.name {
                return bad(format!(
                    "{label}: a rule needs a name without surrounding spaces"
                ));
            }
            if rule.name == DEFAULT_RULE {
                return bad(format!(
                    "{label}: \"{DEFAULT_RULE}\" names the default horizon; set policy.default_years instead"
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return bad(format!("{label}: another rule has the same name"));
            }
            if rule.years < self.default_years {
                return bad(format!(
                    "{label}: years = {} is shorter than policy.default_years = {}; a rule can only keep entries longer",
                    rule.years, self.default_years
                ));
            }
            if rule.years > MAX_YEARS {
                return bad(format!(
                    "{label}: years = {} is more than {MAX_YEARS}",
                    rule.years
                ));
            }
            if rule.why.trim().is_empty() {
                return bad(format!(
                    "{label}: `why` must name the regulation or reason for the longer horizon"
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 (lower-case hex) of the policy's canonical rendering
    /// ([`canonical`](Self::canonical)): reports and checks name the policy they applied.
    pub fn digest(&self) -> String {
        HashAlg::Sha256.digest(self.canonical().as_bytes()).to_hex()
    }

    /// The policy as text, one line per item, independent of the file's layout and comments:
    /// `auditledger-retention-policy 1`, `default_years N`, then per rule in file order
    /// `rule NAME years N actions [..] resource_types [..] sources [..] why WHY`, every string
    /// a JSON string, each list sorted and without duplicates (their order means nothing).
    pub fn canonical(&self) -> String {
        let json = |s: &str| serde_json::Value::from(s).to_string();
        let list = |l: &[String]| {
            let mut l: Vec<&str> = l.iter().map(String::as_str).collect();
            l.sort_unstable();
            l.dedup();
            format!(
                "[{}]",
                l.iter().map(|s| json(s)).collect::<Vec<_>>().join(",")
            )
        };
        let mut out = format!(
            "auditledger-retention-policy 1\ndefault_years {}\n",
            self.default_years
        );
        for r in &self.rules {
            out.push_str(&format!(
                "rule {} years {} actions {} resource_types {} sources {} why {}\n",
                json(&r.name),
                r.years,
                list(&r.actions),
                list(&r.resource_types),
                list(&r.sources),
                json(&r.why)
            ));
        }
        out
    }
}

/// When a silent source is an audit outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoverageConfig {
    pub max_silence_minutes: u32,
    pub regular_hours: u32,
    pub window_days: u32,
}

impl Default for CoverageConfig {
    fn default() -> Self {
        CoverageConfig {
            max_silence_minutes: 120,
            regular_hours: 20,
            window_days: 30,
        }
    }
}

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 86_400_000_000;

impl CoverageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if !(1..=24).contains(&self.regular_hours) {
            return bad("coverage.regular_hours must be 1..=24 (hours of the 24 before a silence)");
        }
        if !(1..=3660).contains(&self.window_days) {
            return bad("coverage.window_days must be 1..=3660");
        }
        if self.max_silence_minutes == 0 {
            return bad("coverage.max_silence_minutes must be at least 1");
        }
        if i64::from(self.max_silence_minutes) * MINUTE >= self.window() {
            return bad("coverage.max_silence_minutes must be shorter than coverage.window_days");
        }
        Ok(())
    }

    /// `max_silence_minutes` in microseconds.
    pub fn max_silence(&self) -> i64 {
        i64::from(self.max_silence_minutes) * MINUTE
    }

    /// `window_days` in microseconds.
    pub fn window(&self) -> i64 {
        i64::from(self.window_days) * DAY
    }
}

impl RetentionConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<RetentionConfig, ConfigError> {
        let config: RetentionConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy.validate()?;
        self.coverage.validate()
    }

    /// The policy's digest ([`Policy::digest`]).
    pub fn policy_digest(&self) -> String {
        self.policy.digest()
    }
}

/// The end of a horizon of `years` calendar years from `recorded_at`, in UTC, at the same time
/// of day: 2020-03-01T10:00Z + 6 years is 2026-03-01T10:00Z, and February 29 + n years is
/// February 28 when the year it lands in has no February 29. An entry is past its horizon at
/// `as_of` when `expires_at(recorded_at, years) <= as_of`. Saturates at the ends of time.
pub fn expires_at(recorded_at: Timestamp, years: u32) -> Timestamp {
    let t = recorded_at.to_datetime().naive_utc();
    let year = i32::try_from(years)
        .ok()
        .and_then(|y| t.year().checked_add(y));
    shifted(t, year).unwrap_or(Timestamp(i64::MAX))
}

/// The instant before which every entry recorded is past a horizon of `years` at `as_of`:
/// `as_of` minus `years` calendar years (February 29 becomes February 28 the same way).
///
/// Every entry recorded before it is past its horizon. Because February 29 maps to February
/// 28, the converse has a margin: an entry recorded up to a day after it (on February 28 or 29
/// of a leap year) may still be past, and none recorded two days or more after it is.
pub fn horizon_cutoff(as_of: Timestamp, years: u32) -> Timestamp {
    let t = as_of.to_datetime().naive_utc();
    let year = i32::try_from(years)
        .ok()
        .and_then(|y| t.year().checked_sub(y));
    shifted(t, year).unwrap_or(Timestamp(i64::MIN))
}

/// An instant from which on no entry is past a horizon of `years` at `as_of` (see
/// [`horizon_cutoff`]): a reader going through entries in `recorded_at` order may stop there.
pub fn horizon_end(as_of: Timestamp, years: u32) -> Timestamp {
    Timestamp(horizon_cutoff(as_of, years).0.saturating_add(2 * DAY))
}

/// `t` moved to `year`, February 29 to February 28 where that year has none.
fn shifted(t: NaiveDateTime, year: Option<i32>) -> Option<Timestamp> {
    let year = year?;
    let date = NaiveDate::from_ymd_opt(year, t.month(), t.day()).or_else(|| {
        (t.month() == 2 && t.day() == 29)
            .then(|| NaiveDate::from_ymd_opt(year, 2, 28))
            .flatten()
    })?;
    Some(Timestamp(
        date.and_time(t.time()).and_utc().timestamp_micros(),
    ))
}

#[cfg(test)]
mod tests;
