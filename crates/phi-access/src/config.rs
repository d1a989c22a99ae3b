//! What counts as PHI access, the site's day and working hours, and every threshold of the
//! unusual-pattern statistics, from a TOML file (`<data-dir>/phi-access.toml` by default).
//! Absent keys take the defaults below; unknown keys are refused, so a misspelt threshold is
//! not silently ignored.
//!
//! ```toml
//! # An event is a PHI access when it says `phi: true`, or when its resource type is one of
//! # these (FHIR resource types that hold clinical data about a patient).
//! clinical_resource_types = ["Patient", "Observation", "MedicalRecord", "Condition",
//!   "Encounter", "MedicationRequest", "MedicationStatement", "DiagnosticReport", "Procedure",
//!   "AllergyIntolerance", "Immunization", "DocumentReference", "CarePlan", "ImagingStudy",
//!   "Specimen", "Coverage", "Claim"]
//! export_actions = ["export", "worklist_export", "bulk_export"]
//! # Listed under "system changes" in the compliance report.
//! change_actions = ["role_change", "rule_update", "config_change", "token_create",
//!   "token_revoke", "block_lifted", "key_rotate"]
//! # A day's aggregates stay open this many days behind the newest event seen; an event for an
//! # older day is still counted, in a late row (docs/PHI-ACCESS.md says what that changes).
//! late_days = 3
//!
//! [site]                           # the site's calendar: days and working hours
//! timezone = "America/New_York"
//! start_hour = 7
//! end_hour = 19
//! weekdays_only = true
//!
//! [unusual]                        # docs/PHI-ACCESS.md explains the statistics
//! baseline_days = 30               # trailing window of a user's own baseline
//! min_history_days = 7             # active days a user needs before their baseline counts
//! sigma = 3.0                      # flag when value > mean + sigma * standard deviation ...
//! min_ratio = 3.0                  # ... and value >= min_ratio * mean
//! peer_percentile = 99.0           # flag when value > this percentile of the role's user-days
//! min_peers = 5                    # distinct users a role needs before peers count
//! min_distinct_patients = 20       # floors: below these a day is never flagged
//! min_phi_reads = 50
//! min_exports = 3
//! min_failures = 10
//! min_after_hours = 10             # after-hours PHI accesses, for the after-hours share
//! ```

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid phi-access configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid phi-access configuration: {0}")]
    Invalid(String),
}

/// The site's calendar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Site {
    /// IANA time zone name; days and working hours are in this zone.
    pub timezone: String,
    pub start_hour: u32,
    pub end_hour: u32,
    pub weekdays_only: bool,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            timezone: "America/New_York".into(),
            start_hour: 7,
            end_hour: 19,
            weekdays_only: true,
        }
    }
}

/// Thresholds of the unusual-pattern flags.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Unusual {
    pub baseline_days: u32,
    pub min_history_days: u32,
    pub sigma: f64,
    pub min_ratio: f64,
    pub peer_percentile: f64,
    pub min_peers: usize,
    pub min_distinct_patients: u64,
    pub min_phi_reads: u64,
    pub min_exports: u64,
    pub min_failures: u64,
    pub min_after_hours: u64,
}

impl Default for Unusual {
    fn default() -> Self {
        Unusual {
            baseline_days: 30,
            min_history_days: 7,
            sigma: 3.0,
            min_ratio: 3.0,
            peer_percentile: 99.0,
            min_peers: 5,
            min_distinct_patients: 20,
            min_phi_reads: 50,
            min_exports: 3,
            min_failures: 10,
            min_after_hours: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub clinical_resource_types: Vec<String>,
    pub export_actions: Vec<String>,
    pub change_actions: Vec<String>,
    pub late_days: u32,
    pub site: Site,
    pub unusual: Unusual,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            clinical_resource_types: [
                "Patient",
                "Observation",
                "MedicalRecord",
                "Condition",
                "Encounter",
                "MedicationRequest",
                "MedicationStatement",
                "DiagnosticReport",
                "Procedure",
                "AllergyIntolerance",
                "Immunization",
                "DocumentReference",
                "CarePlan",
                "ImagingStudy",
                "Specimen",
                "Coverage",
                "Claim",
            ]
            .map(String::from)
            .to_vec(),
            export_actions: ["export", "worklist_export", "bulk_export"]
                .map(String::from)
                .to_vec(),
            change_actions: [
                "role_change",
                "rule_update",
                "config_change",
                "token_create",
                "token_revoke",
                "block_lifted",
                "key_rotate",
            ]
            .map(String::from)
            .to_vec(),
            late_days: 3,
            site: Site::default(),
            unusual: Unusual::default(),
        }
    }
}

impl AnalyticsConfig {
    /// A digest of what the projection's rows depend on: the clinical resource types, the
    /// export and change actions (each compared without regard to case or order, as the
    /// projection compares them), `late_days` and the site calendar. Not the `[unusual]`
    /// thresholds, which apply when reports are read. The projection saves it with its state
    /// and refuses to resume under another, so old and new rows never mix definitions.
    pub fn rows_fingerprint(&self) -> [u8; 32] {
        let set = |list: &[String]| {
            let mut v: Vec<String> = list.iter().map(|s| s.to_ascii_lowercase()).collect();
            v.sort();
            v.dedup();
            v
        };
        let site = &self.site;
        let described = serde_json::json!([
            "phi-access rows v1",
            set(&self.clinical_resource_types),
            set(&self.export_actions),
            set(&self.change_actions),
            self.late_days,
            site.timezone,
            site.start_hour,
            site.end_hour,
            site.weekdays_only,
        ]);
        *blake3::hash(described.to_string().as_bytes()).as_bytes()
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<AnalyticsConfig, ConfigError> {
        let config: AnalyticsConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(what));
        if self.site.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!(
                "site.timezone {:?} is not an IANA time zone name (e.g. \"America/New_York\")",
                self.site.timezone
            ));
        }
        if self.site.start_hour > 23 || self.site.end_hour > 24 {
            return bad("site.start_hour must be 0..=23 and site.end_hour 0..=24".into());
        }
        if self.site.start_hour >= self.site.end_hour {
            return bad("site.start_hour must be before site.end_hour".into());
        }
        let u = &self.unusual;
        if u.baseline_days == 0 || u.baseline_days > 366 {
            return bad("unusual.baseline_days must be 1..=366".into());
        }
        if u.min_history_days > u.baseline_days {
            return bad("unusual.min_history_days must not exceed unusual.baseline_days".into());
        }
        let sigma_ok = u.sigma.is_finite() && u.sigma >= 0.0;
        let ratio_ok = u.min_ratio.is_finite() && u.min_ratio >= 1.0;
        if !(sigma_ok && ratio_ok) {
            return bad("unusual.sigma must be >= 0 and unusual.min_ratio >= 1".into());
        }
        if !(u.peer_percentile > 0.0 && u.peer_percentile < 100.0) {
            return bad("unusual.peer_percentile must be strictly between 0 and 100".into());
        }
        if self.late_days > 366 {
            return bad("late_days must be at most 366".into());
        }
        Ok(())
    }

    /// The site's time zone (validated).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.site.timezone.parse().unwrap_or(chrono_tz::Tz::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_gives_them() {
        assert_eq!(
            AnalyticsConfig::from_toml("").unwrap(),
            AnalyticsConfig::default()
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key() {
        let e = AnalyticsConfig::from_toml("[unusual]\nsigmaa = 2.0\n").unwrap_err();
        assert!(e.to_string().contains("sigmaa"), "{e}");
        let e = AnalyticsConfig::from_toml("[site]\ntimezone = \"Mars/Olympus\"\n").unwrap_err();
        assert!(e.to_string().contains("site.timezone"), "{e}");
        let e = AnalyticsConfig::from_toml("[unusual]\npeer_percentile = 100.0\n").unwrap_err();
        assert!(e.to_string().contains("peer_percentile"), "{e}");
    }

    /// The documented defaults are the defaults: the module doc's TOML and the one in
    /// docs/PHI-ACCESS.md both parse to `AnalyticsConfig::default()`.
    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let toml_block = |text: &str, strip: &str| -> String {
            let start = text.find("```toml").expect("a toml block") + "```toml".len();
            let end = start + text[start..].find("```").expect("closed");
            text[start..end]
                .lines()
                .map(|l| {
                    l.trim_start()
                        .strip_prefix(strip)
                        .unwrap_or(l)
                        .trim_start_matches(' ')
                })
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .replace(&format!("{strip}\n"), "\n")
        };
        let module = include_str!("config.rs");
        let from_module = toml_block(module, "//!");
        assert_eq!(
            AnalyticsConfig::from_toml(&from_module).unwrap(),
            AnalyticsConfig::default(),
            "{from_module}"
        );
        let doc = include_str!("../../../docs/PHI-ACCESS.md");
        let section = &doc[doc.find("## Configuration").expect("the section")..];
        let from_doc = toml_block(section, "");
        assert_eq!(
            AnalyticsConfig::from_toml(&from_doc).unwrap(),
            AnalyticsConfig::default(),
            "{from_doc}"
        );
    }
}
