//! Structured logs through `tracing`, on stderr. The level comes from `--log-level` or
//! `RUST_LOG` (default `warn`). Nothing logged carries a raw identifier or a key: the code
//! only ever has pseudonyms, counts and positions in hand when it logs.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

pub fn init(global: &GlobalArgs) -> anyhow::Result<()> {
    let filter = match &global.log_level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
