//! Settings of `auditledger serve`: command line, environment, TOML file, defaults, in that
//! order of precedence. Every setting has one name in all three places (`--max-body-bytes`,
//! `AUDITLEDGER_MAX_BODY_BYTES`, `max_body_bytes = ...`), and its default is stated in
//! `--help`, so an operator never has to read code to know what the server will do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ledger::PhiPolicy;
use serde::Deserialize;

use crate::cli::PhiPolicyArg;

/// `auditledger serve` flags. Each is optional here so that the file can supply it; the
/// default stated in the help applies when neither flag, environment nor file sets it.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with '_' for '-'), e.g.
    /// `listen = "0.0.0.0:8080"`. Flags and environment override it.
    #[arg(long, env = "AUDITLEDGER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout
    /// as `listening on http://ADDR`. [default: 127.0.0.1:8080]
    #[arg(long, env = "AUDITLEDGER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Most events in one POST /v1/events request (more: 413). [default: 1000]
    #[arg(long, env = "AUDITLEDGER_MAX_EVENTS_PER_REQUEST", value_name = "N")]
    pub max_events_per_request: Option<usize>,

    /// Largest request body in bytes (larger: 413). [default: 1048576]
    #[arg(long, env = "AUDITLEDGER_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Most append requests being validated or waiting for the writer at once; more are
    /// refused with 503 and Retry-After, which bounds memory to about this many bodies.
    /// [default: 1024]
    #[arg(long, env = "AUDITLEDGER_MAX_INFLIGHT_APPENDS", value_name = "N")]
    pub max_inflight_appends: Option<usize>,

    /// Requests the writer queues before pushing back (503 + Retry-After). [default: 4096]
    #[arg(long, env = "AUDITLEDGER_QUEUE_DEPTH", value_name = "N")]
    pub queue_depth: Option<usize>,

    /// Most entries committed in one transaction. [default: 4096]
    #[arg(long, env = "AUDITLEDGER_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,

    /// Under load, how long the writer waits for more requests before committing, in
    /// microseconds (0: never waits). [default: 1000]
    #[arg(long, env = "AUDITLEDGER_GATHER_WINDOW_US", value_name = "US")]
    pub gather_window_us: Option<u64>,

    /// Seconds a pushed-back client is told to wait (Retry-After). [default: 1]
    #[arg(long, env = "AUDITLEDGER_RETRY_AFTER_SECONDS", value_name = "S")]
    pub retry_after_seconds: Option<u64>,

    /// What to do with free text (detail, user_agent, request.path) that looks like PHI:
    /// reject or redact. [default: reject]
    #[arg(long, env = "AUDITLEDGER_PHI_POLICY", value_enum)]
    pub phi_policy: Option<PhiPolicyArg>,

    /// Take the caller's IP (recorded, pseudonymized, in refusals) from the first address of
    /// X-Forwarded-For. Only behind a reverse proxy that sets it. [default: false]
    #[arg(long, env = "AUDITLEDGER_TRUST_FORWARDED_FOR", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,

    /// Most entries one GET /v1/entries returns. [default: 1000]
    #[arg(long, env = "AUDITLEDGER_MAX_READ_LIMIT", value_name = "N")]
    pub max_read_limit: Option<usize>,

    /// On SIGTERM, how long in-flight requests may take to finish before the server stops
    /// waiting for them (the writer still commits and acknowledges what it holds).
    /// [default: 30]
    #[arg(long, env = "AUDITLEDGER_SHUTDOWN_GRACE_SECONDS", value_name = "S")]
    pub shutdown_grace_seconds: Option<u64>,

    /// How often auth.db is checked for tokens created or revoked by `auditledger token`, in
    /// milliseconds: a revocation takes effect within this time. [default: 1000]
    #[arg(long, env = "AUDITLEDGER_AUTH_RELOAD_MS", value_name = "MS")]
    pub auth_reload_ms: Option<u64>,

    /// Sign and store a checkpoint after this many new entries; 0 turns it off.
    /// [default: 10000]
    #[arg(long, env = "AUDITLEDGER_CHECKPOINT_EVERY_ENTRIES", value_name = "N")]
    pub checkpoint_every_entries: Option<u64>,

    /// Sign and store a checkpoint when this many seconds passed and the ledger grew; 0 turns
    /// it off. A last checkpoint is always taken at shutdown. [default: 300]
    #[arg(long, env = "AUDITLEDGER_CHECKPOINT_EVERY_SECONDS", value_name = "S")]
    pub checkpoint_every_seconds: Option<u64>,

    /// Also write each checkpoint as a file here (`<stream>-<size>.checkpoint`): point it at
    /// off-site or WORM storage, since only a checkpoint kept outside the database proves that
    /// nothing was rolled back. [default: none]
    #[arg(long, env = "AUDITLEDGER_CHECKPOINT_DIR", value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// How often the projections (security detection, block list) look for new entries once
    /// caught up, in milliseconds; 0 turns them off in this server (run `auditledger project`
    /// elsewhere). [default: 200]
    #[arg(long, env = "AUDITLEDGER_PROJECTION_POLL_MS", value_name = "MS")]
    pub projection_poll_ms: Option<u64>,

    /// Security rules (TOML, docs/SECURITY.md). [default: <data-dir>/security.toml if it
    /// exists, else the built-in defaults]
    #[arg(long, env = "AUDITLEDGER_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// PHI-access analytics settings (TOML, docs/PHI-ACCESS.md). [default:
    /// <data-dir>/phi-access.toml if it exists, else the built-in defaults]
    #[arg(long, env = "AUDITLEDGER_ANALYTICS", value_name = "FILE")]
    pub analytics: Option<PathBuf>,

    /// `--retention FILE` (`AUDITLEDGER_RETENTION`): the retention policy and coverage
    /// settings, for the compliance report's retention section. Boxed: the command-line enum
    /// keeps its variants of similar sizes.
    #[command(flatten)]
    pub retention: Box<crate::commands::retention::RetentionConfigArgs>,
}

/// The same settings as read from the TOML file. Unknown keys are an error: a misspelt
/// setting silently left at its default is worse than a refusal to start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    max_events_per_request: Option<usize>,
    max_body_bytes: Option<usize>,
    max_inflight_appends: Option<usize>,
    queue_depth: Option<usize>,
    max_batch: Option<usize>,
    gather_window_us: Option<u64>,
    retry_after_seconds: Option<u64>,
    phi_policy: Option<String>,
    trust_forwarded_for: Option<bool>,
    max_read_limit: Option<usize>,
    shutdown_grace_seconds: Option<u64>,
    auth_reload_ms: Option<u64>,
    checkpoint_every_entries: Option<u64>,
    checkpoint_every_seconds: Option<u64>,
    checkpoint_dir: Option<PathBuf>,
    projection_poll_ms: Option<u64>,
    rules: Option<PathBuf>,
    analytics: Option<PathBuf>,
    retention: Option<PathBuf>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub max_events_per_request: usize,
    pub max_body_bytes: usize,
    pub max_inflight_appends: usize,
    pub queue_depth: usize,
    pub max_batch: usize,
    pub gather_window: Duration,
    pub retry_after_seconds: u64,
    pub phi_policy: PhiPolicy,
    pub trust_forwarded_for: bool,
    pub max_read_limit: usize,
    pub shutdown_grace: Duration,
    pub auth_reload: Duration,
    pub checkpoints: super::checkpoints::CheckpointPolicy,
    /// `None`: projections off.
    pub projection_poll: Option<Duration>,
    pub rules: Option<PathBuf>,
    pub analytics: Option<PathBuf>,
    pub retention: Option<PathBuf>,
    /// The retention settings themselves: `serve` loads them from `retention` (else the data
    /// directory's `retention.toml`) before it starts; [`Settings::resolve`] leaves the
    /// defaults.
    pub retention_config: retention::RetentionConfig,
}

impl Settings {
    /// Flags/environment over the file over the defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let phi_policy = match (args.phi_policy, file.phi_policy.as_deref()) {
            (Some(PhiPolicyArg::Reject), _) | (None, Some("reject") | None) => PhiPolicy::Reject,
            (Some(PhiPolicyArg::Redact), _) | (None, Some("redact")) => PhiPolicy::Redact,
            (None, Some(other)) => {
                anyhow::bail!("phi_policy must be \"reject\" or \"redact\", not {other:?}")
            }
        };
        let s = Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            max_events_per_request: args
                .max_events_per_request
                .or(file.max_events_per_request)
                .unwrap_or(1000),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(1 << 20),
            max_inflight_appends: args
                .max_inflight_appends
                .or(file.max_inflight_appends)
                .unwrap_or(1024),
            queue_depth: args.queue_depth.or(file.queue_depth).unwrap_or(4096),
            max_batch: args.max_batch.or(file.max_batch).unwrap_or(4096),
            gather_window: Duration::from_micros(
                args.gather_window_us
                    .or(file.gather_window_us)
                    .unwrap_or(1000),
            ),
            retry_after_seconds: args
                .retry_after_seconds
                .or(file.retry_after_seconds)
                .unwrap_or(1),
            phi_policy,
            trust_forwarded_for: args
                .trust_forwarded_for
                .or(file.trust_forwarded_for)
                .unwrap_or(false),
            max_read_limit: args.max_read_limit.or(file.max_read_limit).unwrap_or(1000),
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace_seconds
                    .or(file.shutdown_grace_seconds)
                    .unwrap_or(30),
            ),
            auth_reload: Duration::from_millis(
                args.auth_reload_ms.or(file.auth_reload_ms).unwrap_or(1000),
            ),
            checkpoints: super::checkpoints::CheckpointPolicy {
                every_entries: args
                    .checkpoint_every_entries
                    .or(file.checkpoint_every_entries)
                    .unwrap_or(10_000),
                every: Duration::from_secs(
                    args.checkpoint_every_seconds
                        .or(file.checkpoint_every_seconds)
                        .unwrap_or(300),
                ),
                dir: args.checkpoint_dir.clone().or(file.checkpoint_dir),
            },
            projection_poll: match args
                .projection_poll_ms
                .or(file.projection_poll_ms)
                .unwrap_or(200)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            rules: args.rules.clone().or(file.rules),
            analytics: args.analytics.clone().or(file.analytics),
            retention: args.retention.retention.clone().or(file.retention),
            retention_config: retention::RetentionConfig::default(),
        };
        for (name, v) in [
            ("max_events_per_request", s.max_events_per_request),
            ("max_body_bytes", s.max_body_bytes),
            ("max_inflight_appends", s.max_inflight_appends),
            ("queue_depth", s.queue_depth),
            ("max_batch", s.max_batch),
            ("max_read_limit", s.max_read_limit),
        ] {
            if v == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        Ok(s)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax_body_bytes = 2048\nphi_policy = \"redact\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            max_body_bytes: Some(4096),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.listen.port(), 9999, "from the file");
        assert_eq!(s.max_body_bytes, 4096, "the flag wins");
        assert_eq!(s.phi_policy, PhiPolicy::Redact);
        assert_eq!(s.max_events_per_request, 1000, "the default");

        assert_eq!(s.retention, None);
        assert_eq!(s.retention_config, retention::RetentionConfig::default());
        std::fs::write(&path, "retention = \"/etc/auditledger/retention.toml\"\n").unwrap();
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(
            s.retention.as_deref(),
            Some(Path::new("/etc/auditledger/retention.toml")),
            "from the file, loaded by serve"
        );

        std::fs::write(&path, "max_body_byte = 1\n").unwrap();
        let err = Settings::resolve(&args).unwrap_err();
        assert!(format!("{err:#}").contains("max_body_byte"), "{err:#}");
        std::fs::write(&path, "queue_depth = 0\n").unwrap();
        assert!(Settings::resolve(&args).is_err());
    }
}
