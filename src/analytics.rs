//! Where the PHI-access analytics settings come from: `--analytics FILE` (or
//! `AUDITLEDGER_ANALYTICS`), else `<data-dir>/phi-access.toml` when it exists, else the
//! documented defaults (`crates/phi-access/src/config.rs`, docs/PHI-ACCESS.md).

use std::path::{Path, PathBuf};

use clap::Args;
use phi_access::AnalyticsConfig;

use crate::rules::load_config_file;

/// The file name looked for in the data directory.
pub const ANALYTICS_FILE: &str = "phi-access.toml";

#[derive(Debug, Args, Clone, Default)]
pub struct AnalyticsArgs {
    /// PHI-access analytics settings: clinical resource types, the site's time zone and
    /// working hours, unusual-pattern thresholds (TOML; docs/PHI-ACCESS.md lists every key)
    /// [default: <data-dir>/phi-access.toml if it exists, else the built-in defaults].
    #[arg(long, env = "AUDITLEDGER_ANALYTICS", value_name = "FILE")]
    pub analytics: Option<PathBuf>,
}

impl AnalyticsArgs {
    pub fn load(&self, data_dir: &Path) -> anyhow::Result<AnalyticsConfig> {
        load_config_file(
            self.analytics.as_deref(),
            &data_dir.join(ANALYTICS_FILE),
            "analytics",
            AnalyticsConfig::from_toml,
        )
    }
}
