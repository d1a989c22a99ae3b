//! Where the security rules' thresholds come from: `--rules FILE` (or `AUDITLEDGER_RULES`),
//! else `<data-dir>/security.toml` when it exists, else the documented defaults
//! (`crates/security/src/config.rs`, docs/SECURITY.md).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use security::RulesConfig;

/// The file name looked for in the data directory.
pub const RULES_FILE: &str = "security.toml";

#[derive(Debug, Args, Clone, Default)]
pub struct RulesArgs {
    /// Security rules (TOML; see docs/SECURITY.md for every key and its default)
    /// [default: <data-dir>/security.toml if it exists, else the built-in defaults].
    #[arg(long, env = "AUDITLEDGER_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl RulesArgs {
    pub fn load(&self, data_dir: &Path) -> anyhow::Result<RulesConfig> {
        load_config_file(
            self.rules.as_deref(),
            &data_dir.join(RULES_FILE),
            "rules",
            RulesConfig::from_toml,
        )
    }
}

/// A TOML configuration: the file named on the command line (which must exist), else
/// `default` when it exists, else `T::default()`. Errors name the file.
pub fn load_config_file<T: Default, E: std::error::Error + Send + Sync + 'static>(
    named: Option<&Path>,
    default: &Path,
    what: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> anyhow::Result<T> {
    let path: PathBuf = match named {
        Some(p) => p.to_owned(),
        None if default.exists() => default.to_owned(),
        None => return Ok(T::default()),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// `2026-11-22T10:00:00Z`, or a duration back from now: `90s`, `15m`, `24h`, `7d`.
pub fn parse_since(s: &str, now: ledger::Timestamp) -> Result<ledger::Timestamp, String> {
    if let Some(t) = ledger::Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let bad = || format!("{s:?} is neither an RFC 3339 time nor a duration like 15m, 24h, 7d");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let back = n
        .checked_mul(secs * 1_000_000)
        .ok_or_else(|| format!("{s:?} is too far back"))?;
    Ok(ledger::Timestamp(now.0.saturating_sub(back)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::Timestamp;

    #[test]
    fn since_takes_times_and_durations() {
        let now = Timestamp(10_000_000_000);
        assert_eq!(
            parse_since("90s", now),
            Ok(Timestamp(10_000_000_000 - 90_000_000))
        );
        assert_eq!(
            parse_since("2h", now),
            Ok(Timestamp(10_000_000_000 - 7_200_000_000))
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z", now),
            Ok(Timestamp(1_000_000))
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5w", now).is_err());
        assert!(parse_since("h", now).is_err());
    }

    #[test]
    fn rules_file_is_optional_but_must_parse_when_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RulesArgs::default().load(dir.path()).unwrap(),
            RulesConfig::default()
        );
        std::fs::write(dir.path().join(RULES_FILE), "[brute_force]\nfailures = 7\n").unwrap();
        assert_eq!(
            RulesArgs::default()
                .load(dir.path())
                .unwrap()
                .brute_force
                .failures,
            7
        );
        let named = RulesArgs {
            rules: Some(dir.path().join("missing.toml")),
        };
        assert!(named.load(dir.path()).is_err());
        std::fs::write(dir.path().join("bad.toml"), "[brute_force]\nfailure = 7\n").unwrap();
        let bad = RulesArgs {
            rules: Some(dir.path().join("bad.toml")),
        };
        assert!(format!("{:#}", bad.load(dir.path()).unwrap_err()).contains("bad.toml"));
    }
}
