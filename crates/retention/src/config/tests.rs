use ledger::payload::{StoredActor, StoredResource};
use proptest::prelude::*;

use super::*;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("a valid RFC 3339 time")
}

fn event(action: &str, resource: Option<&str>, source: &str) -> StoredEvent {
    StoredEvent {
        phi: false,
        idem: None,
        actor: StoredActor::default(),
        action: action.to_owned(),
        detail: None,
        record: None,
        source: source.to_owned(),
        outcome: "success".into(),
        request: None,
        resource: resource.map(|kind| StoredResource {
            id: None,
            kind: kind.to_owned(),
        }),
        patient_id: None,
        occurred_at: 0,
    }
}

fn rule(name: &str, years: u32) -> Rule {
    Rule {
        name: name.to_owned(),
        years,
        actions: Vec::new(),
        resource_types: Vec::new(),
        sources: Vec::new(),
        why: "state law".into(),
    }
}

#[test]
fn defaults_are_valid_and_an_empty_file_gives_them() {
    let config = RetentionConfig::from_toml("").unwrap();
    assert_eq!(config, RetentionConfig::default());
    assert_eq!(config.policy.default_years, 6);
    assert!(config.policy.rules.is_empty());
    assert_eq!(
        (
            config.coverage.max_silence_minutes,
            config.coverage.regular_hours,
            config.coverage.window_days
        ),
        (120, 20, 30)
    );
}

/// Extracts the first ```toml block of `text`, each line stripped of `strip` (the doc-comment
/// marker of a module doc).
fn toml_block(text: &str, strip: &str) -> String {
    let start = text.find("```toml").expect("a toml block") + "```toml".len();
    let end = start + text[start..].find("```").expect("closed");
    text[start..end]
        .lines()
        .map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix(strip).unwrap_or(l);
            format!("{}\n", l.strip_prefix(' ').unwrap_or(l))
        })
        .collect()
}

/// The documented defaults are the defaults: the module doc's TOML and the one in
/// docs/RETENTION.md both parse to `RetentionConfig::default()`, and their commented example
/// rule is valid once uncommented.
#[test]
fn the_documented_defaults_are_the_defaults() {
    let from_module = toml_block(include_str!("../config.rs"), "//!");
    let doc = include_str!("../../../../docs/RETENTION.md");
    let section = &doc[doc.find("## The policy file").expect("the section")..];
    let from_doc = toml_block(section, "");
    for block in [&from_module, &from_doc] {
        assert_eq!(
            RetentionConfig::from_toml(block).unwrap(),
            RetentionConfig::default(),
            "{block}"
        );
        // Uncomment the example rule: it must parse and be valid.
        let example: String = block
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[[policy.rule]]")
                        || ["name", "years", "actions", "why"]
                            .iter()
                            .any(|k| rest.starts_with(&format!("{k} ="))) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        // The rule must come after default_years and before [coverage].
        let config = RetentionConfig::from_toml(&example).unwrap();
        assert_eq!(config.policy.rules.len(), 1, "{example}");
        assert_eq!(config.policy.rules[0].years, 10);
    }
}

#[test]
fn fewer_than_six_years_is_refused_naming_the_regulation() {
    let e = RetentionConfig::from_toml("[policy]\ndefault_years = 5\n").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("policy.default_years"), "{text}");
    assert!(text.contains("164.316(b)(2)(i)"), "{text}");
    assert!(text.contains("164.530(j)(2)"), "{text}");
    assert!(RetentionConfig::from_toml("[policy]\ndefault_years = 7\n").is_ok());
}

#[test]
fn unknown_keys_and_bad_rules_are_refused_with_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[policy]\ndefault_yeras = 6\n", "default_yeras"),
        ("[coverage]\nmax_silence = 5\n", "max_silence"),
        ("[policy]\nrules = []\n", "rules"),
        (
            "[[policy.rule]]\nname = \"x\"\nyears = 10\nwhy = \"w\"\naction = [\"read\"]\n",
            "action",
        ),
        (
            "[[policy.rule]]\nname = \"short\"\nyears = 5\nwhy = \"w\"\n",
            "shorter than policy.default_years",
        ),
        (
            "[policy]\ndefault_years = 8\n[[policy.rule]]\nname = \"r\"\nyears = 7\nwhy = \"w\"\n",
            "shorter than policy.default_years",
        ),
        (
            "[[policy.rule]]\nname = \"r\"\nyears = 10\nwhy = \" \"\n",
            "why",
        ),
        ("[[policy.rule]]\nname = \"r\"\nyears = 10\n", "why"),
        (
            "[[policy.rule]]\nname = \"default\"\nyears = 10\nwhy = \"w\"\n",
            "policy.default_years instead",
        ),
        (
            "[[policy.rule]]\nname = \"r\"\nyears = 10\nwhy = \"w\"\n[[policy.rule]]\nname = \"r\"\nyears = 11\nwhy = \"w\"\n",
            "same name",
        ),
        ("[[policy.rule]]\nname = \"\"\nyears = 10\nwhy = \"w\"\n", "name"),
        ("[policy]\ndefault_years = 101\n", "more than 100"),
        ("[coverage]\nregular_hours = 25\n", "regular_hours"),
        ("[coverage]\nregular_hours = 0\n", "regular_hours"),
        ("[coverage]\nwindow_days = 0\n", "window_days"),
        ("[coverage]\nmax_silence_minutes = 0\n", "max_silence_minutes"),
        (
            "[coverage]\nwindow_days = 1\nmax_silence_minutes = 1440\n",
            "shorter than coverage.window_days",
        ),
    ];
    for (text, expected) in cases {
        let e = RetentionConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn a_rule_matches_when_every_list_it_gives_contains_the_value() {
    let mut r = rule("r", 10);
    assert!(
        r.matches(&event("read", None, "ehr")),
        "no lists: everything"
    );
    r.actions = vec!["Role_Change".into(), "config_change".into()];
    assert!(
        r.matches(&event("role_change", None, "ehr")),
        "actions ignore case"
    );
    assert!(!r.matches(&event("read", None, "ehr")));
    r.resource_types = vec!["Practitioner".into()];
    assert!(r.matches(&event("role_change", Some("Practitioner"), "ehr")));
    assert!(!r.matches(&event("role_change", Some("practitioner"), "ehr")));
    assert!(
        !r.matches(&event("role_change", None, "ehr")),
        "no resource is not a listed type"
    );
    r.sources = vec!["admin-console".into()];
    assert!(!r.matches(&event("role_change", Some("Practitioner"), "ehr")));
    assert!(r.matches(&event("role_change", Some("Practitioner"), "admin-console")));
}

#[test]
fn the_longest_matching_horizon_wins() {
    let mut ten = rule("config", 10);
    ten.actions = vec!["config_change".into()];
    let mut eight = rule("admin-source", 8);
    eight.sources = vec!["admin".into()];
    let mut also_ten = rule("also-ten", 10);
    also_ten.sources = vec!["admin".into()];
    let policy = Policy {
        default_years: 6,
        rules: vec![eight, ten, also_ten],
    };
    policy.validate().unwrap();
    let of = |e: &StoredEvent| {
        let r = policy.rule_for(e);
        (r.name.to_owned(), r.years)
    };
    assert_eq!(of(&event("read", None, "ehr")), ("default".into(), 6));
    assert_eq!(of(&event("read", None, "admin")), ("also-ten".into(), 10));
    assert_eq!(
        of(&event("config_change", None, "admin")),
        ("config".into(), 10),
        "on a tie, the first rule listed"
    );
    assert_eq!(
        policy.rule_for(&event("read", None, "ehr")).why,
        DEFAULT_WHY
    );
    assert_eq!(policy.years_of("admin-source"), Some(8));
    assert_eq!(policy.years_of("default"), Some(6));
    assert_eq!(policy.years_of("gone"), None);
    let names: Vec<&str> = policy.all_rules().map(|r| r.name).collect();
    assert_eq!(names, ["default", "admin-source", "config", "also-ten"]);
}

#[test]
fn calendar_years_in_utc() {
    assert_eq!(
        expires_at(ts("2019-03-01T10:15:30.123456Z"), 6),
        ts("2025-03-01T10:15:30.123456Z")
    );
    // February 29 plus years that land on a common year: February 28.
    assert_eq!(
        expires_at(ts("2020-02-29T23:59:59Z"), 6),
        ts("2026-02-28T23:59:59Z")
    );
    // ... and on a leap year: February 29.
    assert_eq!(
        expires_at(ts("2020-02-29T08:00:00Z"), 4),
        ts("2024-02-29T08:00:00Z")
    );
    // Six calendar years are never shorter than the stores' floor of 2190 days.
    for start in [
        "2020-02-29T00:00:00Z",
        "2021-03-01T00:00:00Z",
        "2019-01-01T00:00:00Z",
    ] {
        let t = ts(start);
        assert!(
            expires_at(t, 6).0 - t.0 >= ledger::record::MIN_RETENTION_MICROS,
            "{start}"
        );
    }
    assert_eq!(
        expires_at(ts("1969-12-31T23:00:00Z"), 1),
        ts("1970-12-31T23:00:00Z")
    );
    assert_eq!(expires_at(Timestamp(0), u32::MAX), Timestamp(i64::MAX));
    assert_eq!(
        horizon_cutoff(ts("2026-11-29T00:00:00Z"), 6),
        ts("2020-11-29T00:00:00Z")
    );
    assert_eq!(
        horizon_cutoff(ts("2028-02-29T12:00:00Z"), 6),
        ts("2022-02-28T12:00:00Z")
    );
}

#[test]
fn the_policy_digest_ignores_layout_and_list_order_only() {
    let a = RetentionConfig::from_toml(
        "[policy]\ndefault_years = 6\n[[policy.rule]]\nname = \"r\"\nyears = 10\nactions = [\"a\", \"b\"]\nwhy = \"w\"\n",
    )
    .unwrap();
    let b = RetentionConfig::from_toml(
        "# a comment\n[[policy.rule]]\nwhy = \"w\"\nactions = [\"b\", \"a\", \"a\"]\nyears = 10\nname = \"r\"\n[coverage]\nwindow_days = 7\n",
    )
    .unwrap();
    assert_eq!(a.policy_digest(), b.policy_digest());
    assert_eq!(a.policy_digest().len(), 64);
    let mut c = a.clone();
    c.policy.rules[0].years = 11;
    assert_ne!(a.policy_digest(), c.policy_digest());
    let mut d = a.clone();
    d.policy.rules[0].why = "other".into();
    assert_ne!(a.policy_digest(), d.policy_digest());
    assert_eq!(
        Policy::default().canonical(),
        "auditledger-retention-policy 1\ndefault_years 6\n"
    );
}

/// Instants around the February 29ths of 2016..2032 and elsewhere.
fn instants() -> impl Strategy<Value = Timestamp> {
    (2016i32..2033, 0u32..5, 0i64..86_400_000_000).prop_map(|(year, day, micros)| {
        let (m, d) = [(2, 27), (2, 28), (2, 29), (3, 1), (7, 15)][day as usize];
        let date = NaiveDate::from_ymd_opt(year, m, d)
            .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
            .unwrap();
        let midnight = date
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        Timestamp(midnight + micros)
    })
}

proptest! {
    /// Before the cutoff every entry is past its horizon; from two days after it, none is.
    #[test]
    fn the_cutoff_bounds_the_entries_past_their_horizon(
        recorded in instants(),
        as_of in instants(),
        years in 1u32..12,
    ) {
        let past = expires_at(recorded, years) <= as_of;
        if recorded < horizon_cutoff(as_of, years) {
            prop_assert!(past);
        }
        if recorded >= horizon_end(as_of, years) {
            prop_assert!(!past);
        }
    }

    /// Adding years keeps the time of day and never moves by more than a day from the same
    /// date in the target year.
    #[test]
    fn expiry_keeps_the_time_of_day(t in instants(), years in 0u32..20) {
        let e = expires_at(t, years).to_datetime();
        let s = t.to_datetime();
        prop_assert_eq!(e.time(), s.time());
        prop_assert_eq!(e.year(), s.year() + years as i32);
        prop_assert_eq!(e.month(), s.month());
        prop_assert!(e.day() == s.day() || (s.day() == 29 && e.day() == 28));
    }
}
