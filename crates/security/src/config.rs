//! Every threshold of every rule, from a TOML file. Absent keys take the defaults below, which
//! follow common practice (NIST SP 800-63B's guidance on throttling failed authentication, the
//! HIPAA Security Rule's audit-control and log-in monitoring standards, 45 CFR 164.308(a)(5)
//! and 164.312(b)). Unknown keys are refused, so a misspelt threshold is not silently ignored.
//!
//! ```toml
//! tolerance_secs = 300            # events may arrive this much out of time order
//!
//! [brute_force]                   # HIGH: failed logins from one IP
//! failures = 5
//! window_secs = 300
//! block_secs = 86400              # the IP is blocked this long
//!
//! [password_spraying]             # HIGH: failed logins from one IP against many users
//! users = 10
//! window_secs = 600
//!
//! [account_attack]                # MEDIUM: failed logins for one user from several IPs
//! failures = 10
//! ips = 3
//! window_secs = 900
//!
//! [unauthorized_access]           # MEDIUM (HIGH if repeated): refused PHI requests of one user
//! denials = 3
//! window_secs = 600
//! repeat_secs = 86400
//!
//! [session_hijack]                # CRITICAL: one session from two IPs or two user agents
//! max_session_secs = 43200        # a session unused this long is over
//!
//! [bulk_export]                   # HIGH: a big export, or one user reading many patients
//! records = 1000
//! patients = 50
//! window_secs = 3600
//!
//! [configuration_change]          # MEDIUM: each of these actions
//! actions = ["role_change", "rule_update", "config_change", "token_create", "token_revoke"]
//!
//! [after_hours_phi]               # LOW: PHI access outside working hours, site time
//! timezone = "America/New_York"
//! start_hour = 7
//! end_hour = 19
//! weekdays_only = true
//! cooldown_secs = 28800           # at most one per user in this time
//! ```
//! Every section also takes `enabled = false`.

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid rules configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid rules configuration: {0}")]
    Invalid(String),
}

macro_rules! section {
    ($name:ident { $($field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub enabled: bool,
            $(pub $field: $ty,)*
        }
        impl Default for $name {
            fn default() -> Self {
                $name { enabled: true, $($field: $default,)* }
            }
        }
    };
}

section!(BruteForce {
    failures: usize = 5,
    window_secs: u64 = 300,
    block_secs: u64 = 86_400
});
section!(PasswordSpraying {
    users: usize = 10,
    window_secs: u64 = 600
});
section!(AccountAttack {
    failures: usize = 10,
    ips: usize = 3,
    window_secs: u64 = 900
});
section!(UnauthorizedAccess {
    denials: usize = 3,
    window_secs: u64 = 600,
    repeat_secs: u64 = 86_400
});
section!(SessionHijack {
    max_session_secs: u64 = 43_200
});
section!(BulkExport {
    records: u64 = 1000,
    patients: usize = 50,
    window_secs: u64 = 3600
});
section!(ConfigurationChange {
    actions: Vec<String> = ["role_change", "rule_update", "config_change", "token_create", "token_revoke"]
        .map(String::from)
        .to_vec()
});
section!(AfterHoursPhi {
    timezone: String = "America/New_York".into(),
    start_hour: u32 = 7,
    end_hour: u32 = 19,
    weekdays_only: bool = true,
    cooldown_secs: u64 = 28_800,
});

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    pub tolerance_secs: u64,
    pub brute_force: BruteForce,
    pub password_spraying: PasswordSpraying,
    pub account_attack: AccountAttack,
    pub unauthorized_access: UnauthorizedAccess,
    pub session_hijack: SessionHijack,
    pub bulk_export: BulkExport,
    pub configuration_change: ConfigurationChange,
    pub after_hours_phi: AfterHoursPhi,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            tolerance_secs: 300,
            brute_force: BruteForce::default(),
            password_spraying: PasswordSpraying::default(),
            account_attack: AccountAttack::default(),
            unauthorized_access: UnauthorizedAccess::default(),
            session_hijack: SessionHijack::default(),
            bulk_export: BulkExport::default(),
            configuration_change: ConfigurationChange::default(),
            after_hours_phi: AfterHoursPhi::default(),
        }
    }
}

impl RulesConfig {
    pub fn from_toml(text: &str) -> Result<RulesConfig, ConfigError> {
        let config: RulesConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Invalid(why.to_owned()));
        let counts = [
            ("brute_force.failures", self.brute_force.failures),
            ("password_spraying.users", self.password_spraying.users),
            ("account_attack.failures", self.account_attack.failures),
            ("account_attack.ips", self.account_attack.ips),
            (
                "unauthorized_access.denials",
                self.unauthorized_access.denials,
            ),
            ("bulk_export.patients", self.bulk_export.patients),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return bad(&format!("{name} must be at least 1"));
        }
        let windows = [
            ("brute_force.window_secs", self.brute_force.window_secs),
            (
                "password_spraying.window_secs",
                self.password_spraying.window_secs,
            ),
            (
                "account_attack.window_secs",
                self.account_attack.window_secs,
            ),
            (
                "unauthorized_access.window_secs",
                self.unauthorized_access.window_secs,
            ),
            ("bulk_export.window_secs", self.bulk_export.window_secs),
            (
                "session_hijack.max_session_secs",
                self.session_hijack.max_session_secs,
            ),
        ];
        if let Some((name, _)) = windows.iter().find(|(_, n)| *n == 0) {
            return bad(&format!("{name} must be at least 1 second"));
        }
        let h = &self.after_hours_phi;
        if h.start_hour > 23 || h.end_hour > 24 || h.start_hour >= h.end_hour {
            return bad("after_hours_phi: need 0 <= start_hour < end_hour <= 24");
        }
        if h.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(&format!(
                "after_hours_phi.timezone {:?} is not an IANA time zone",
                h.timezone
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = RulesConfig::from_toml("").unwrap();
        assert_eq!(c, RulesConfig::default());
        let c = RulesConfig::from_toml(
            "[brute_force]\nfailures = 8\n[after_hours_phi]\ntimezone = \"Europe/Berlin\"",
        )
        .unwrap();
        assert_eq!(c.brute_force.failures, 8);
        assert_eq!(c.brute_force.window_secs, 300);
        assert_eq!(c.after_hours_phi.timezone, "Europe/Berlin");
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(
            RulesConfig::from_toml("[brute_force]\nfailure = 8").is_err(),
            "misspelt key"
        );
        assert!(RulesConfig::from_toml("[brute_force]\nfailures = 0").is_err());
        assert!(RulesConfig::from_toml("[after_hours_phi]\ntimezone = \"Mars/Olympus\"").is_err());
        assert!(
            RulesConfig::from_toml("[after_hours_phi]\nstart_hour = 20\nend_hour = 7").is_err()
        );
    }
}
