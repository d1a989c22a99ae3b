//! `auditledger retention hold|check|plan`, `auditledger archive` and `auditledger purge`:
//! the command line of the retention crate's operations (crates/retention/src/ops.rs).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ledger::{Clock, SystemClock, Timestamp};
use retention::ops::{self, HoldTarget, OpsError, Session};
use retention::RetentionConfig;

use crate::commands::verify::progress_bar;
use crate::context::Context;
use crate::recorder::{OperatorEvent, Recorder};
use crate::rules::load_config_file;
use crate::{EXIT_DAMAGED, EXIT_OK};

/// The file name looked for in the data directory.
pub const RETENTION_FILE: &str = "retention.toml";

#[derive(Debug, Args, Clone, Default)]
pub struct RetentionConfigArgs {
    /// Retention policy and coverage settings (TOML; docs/RETENTION.md lists every key)
    /// [default: <data-dir>/retention.toml if it exists, else six years for everything].
    #[arg(long, env = "AUDITLEDGER_RETENTION", value_name = "FILE")]
    pub retention: Option<PathBuf>,
}

impl RetentionConfigArgs {
    pub fn load(&self, data_dir: &Path) -> anyhow::Result<RetentionConfig> {
        load_config_file(
            self.retention.as_deref(),
            &data_dir.join(RETENTION_FILE),
            "retention",
            RetentionConfig::from_toml,
        )
    }
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub command: RetentionCommand,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Legal holds: `hold add`, `hold release`, `hold list`. Each add and release is an entry
    /// in the ledger with its reason.
    Hold(HoldArgs),
    /// Prove the ledger keeps what it must: the chain intact from genesis, consistent with
    /// every stored and given checkpoint, no entry inside its horizon or under a hold missing
    /// or without its payload, and no regular source silent. The result is appended as a
    /// `retention_check` entry. Exit status 0 compliant, 1 violation, 2 usage or I/O error.
    Check(CheckArgs),
    /// List what is past its horizon and under no hold: counts, seq ranges, oldest and newest
    /// dates, per policy rule. Changes nothing.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(subcommand)]
    pub command: HoldCommand,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold: entries it covers are kept past any horizon until it is released.
    /// Give exactly one of --patient, --user, --from/--to or --whole-stream.
    Add {
        /// Hold every entry naming this patient (the raw id: pseudonymized, never stored;
        /// entries imported from the old system under its unkeyed hash are held too).
        #[arg(long, group = "scope")]
        patient: Option<String>,
        /// Hold every entry whose actor is this user (raw id; pseudonymized like --patient).
        #[arg(long, group = "scope")]
        user: Option<String>,
        /// Hold the events that occurred from this time (RFC 3339 or YYYY-MM-DD, UTC) ...
        #[arg(long, requires = "to", group = "scope")]
        from: Option<String>,
        /// ... to this time (exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Hold the whole stream (every entry).
        #[arg(long, group = "scope")]
        whole_stream: bool,
        /// Why (a matter, a ticket; kept in the ledger for good, so no PHI).
        #[arg(long)]
        reason: String,
    },
    /// Release the hold recorded at entry SEQ (`hold list` shows them).
    Release {
        /// The seq of the hold's entry.
        #[arg(long)]
        hold: u64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        config: RetentionConfigArgs,
    },
    /// List the holds in force (and released ones with --all).
    List {
        #[arg(long)]
        all: bool,
        /// One JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: RetentionConfigArgs,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Evaluate horizons and coverage at this date instead of now (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub as_of: Option<String>,
    /// A checkpoint kept outside the database that the ledger must extend (repeatable).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,
    /// Verifier key file (`auditledger key public`) to check checkpoints with [default: the
    /// one derived from the data directory's signing key].
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub config: RetentionConfigArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long)]
    pub json: bool,
    /// Plan at this date instead of now (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub as_of: Option<String>,
    #[command(flatten)]
    pub config: RetentionConfigArgs,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Archive the entries recorded before this date (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub before: String,
    /// The archive file to create (never overwritten).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Checkpoint origin (key name) [default: auditledger/<stream>].
    #[arg(long, env = "AUDITLEDGER_ORIGIN")]
    pub origin: Option<String>,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The archive (written by `auditledger archive`) that holds the payloads to let go.
    #[arg(long)]
    pub archive: PathBuf,
    /// Who authorized the purge (name, role, ticket), kept in the authorization entry.
    #[arg(long)]
    pub authorized_by: String,
    /// Verifier key file to check the archive's checkpoint with [default: the one derived
    /// from the data directory's signing key].
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Checkpoint origin (key name) [default: auditledger/<stream>].
    #[arg(long, env = "AUDITLEDGER_ORIGIN")]
    pub origin: Option<String>,
    #[command(flatten)]
    pub config: RetentionConfigArgs,
}

/// `2026-11-22T10:00:00Z`, or a day `2026-11-22` (midnight UTC).
pub fn parse_instant(s: &str) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?} is neither an RFC 3339 time nor a date YYYY-MM-DD"))?;
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .context("midnight exists")?
        .and_utc();
    Ok(Timestamp(midnight.timestamp_micros()))
}

/// A session acting as the operator who runs the command, with the system clock.
async fn open_session(ctx: &Context) -> anyhow::Result<(Session, tokio::task::JoinHandle<()>)> {
    let store = ctx.open_existing().await?;
    Ok(Recorder::on(store, ctx).await?.into_session())
}

async fn close(session: Session, task: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    drop(session);
    task.await.context("writer task failed")
}

/// A refusal is exit status 1 with its message; anything else an error (status 2).
fn refused_or<T>(result: Result<T, OpsError>) -> anyhow::Result<Result<T, String>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(OpsError::Refused(why)) => Ok(Err(why)),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(ctx: &Context, args: RetentionArgs) -> anyhow::Result<u8> {
    match args.command {
        RetentionCommand::Hold(h) => hold(ctx, h.command).await,
        RetentionCommand::Check(a) => check(ctx, a).await,
        RetentionCommand::Plan(a) => plan(ctx, a).await,
    }
}

async fn hold(ctx: &Context, cmd: HoldCommand) -> anyhow::Result<u8> {
    match cmd {
        HoldCommand::Add {
            patient,
            user,
            from,
            to,
            whole_stream,
            reason,
        } => {
            let target = match (patient, user, from, to, whole_stream) {
                (Some(p), None, None, None, false) => HoldTarget::Patient(p),
                (None, Some(u), None, None, false) => HoldTarget::User(u),
                (None, None, Some(f), Some(t), false) => HoldTarget::Time {
                    from: parse_instant(&f)?,
                    to: parse_instant(&t)?,
                },
                (None, None, None, None, true) => HoldTarget::Stream,
                _ => anyhow::bail!(
                    "give exactly one of --patient, --user, --from with --to, or --whole-stream"
                ),
            };
            let (session, task) = open_session(ctx).await?;
            let result = refused_or(ops::add_hold(&session, &target, &reason).await)?;
            close(session, task).await?;
            match result {
                Ok(receipts) => {
                    for r in receipts {
                        println!("legal hold {} placed (ledger entry seq {})", r.seq, r.seq);
                    }
                    Ok(EXIT_OK)
                }
                Err(why) => {
                    eprintln!("REFUSED: {why}");
                    Ok(EXIT_DAMAGED)
                }
            }
        }
        HoldCommand::Release {
            hold,
            reason,
            config,
        } => {
            let config = config.load(&ctx.global.data_dir)?;
            let (session, task) = open_session(ctx).await?;
            let result = refused_or(ops::release_hold(&session, &config, hold, &reason).await)?;
            close(session, task).await?;
            match result {
                Ok(r) => {
                    println!("legal hold {hold} released (ledger entry seq {})", r.seq);
                    Ok(EXIT_OK)
                }
                Err(why) => {
                    eprintln!("REFUSED: {why}");
                    Ok(EXIT_DAMAGED)
                }
            }
        }
        HoldCommand::List { all, json, config } => {
            let config = config.load(&ctx.global.data_dir)?;
            let (session, task) = open_session(ctx).await?;
            let holds = ops::holds(&session, &config).await;
            close(session, task).await?;
            let holds = holds?;
            let shown: Vec<&retention::Hold> =
                holds.iter().filter(|h| all || !h.is_released()).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else if shown.is_empty() {
                println!("no legal hold{}", if all { "" } else { " in force" });
            } else {
                for h in shown {
                    println!("{}", h.describe());
                }
            }
            Ok(EXIT_OK)
        }
    }
}

async fn check(ctx: &Context, args: CheckArgs) -> anyhow::Result<u8> {
    let config = args.config.load(&ctx.global.data_dir)?;
    let as_of = match &args.as_of {
        Some(s) => parse_instant(s)?,
        None => SystemClock.now(),
    };
    let opts = crate::commands::verify::checkpoint_options(
        ctx,
        &args.checkpoint,
        args.public_key.as_deref(),
        None,
    )?;
    let (session, task) = open_session(ctx).await?;
    let total = session.store.head(&ctx.stream).await?.map(|h| h.seq + 1);
    let bar = progress_bar(!args.json && !args.no_progress, total, "verifying");
    let b = bar.clone();
    let result = ops::check(&session, &config, as_of, &opts, move |n| b.set_position(n)).await;
    bar.finish_and_clear();
    close(session, task).await?;
    let (report, receipt) = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    eprintln!("recorded as ledger entry seq {}", receipt.seq);
    Ok(if report.ok { EXIT_OK } else { EXIT_DAMAGED })
}

async fn plan(ctx: &Context, args: PlanArgs) -> anyhow::Result<u8> {
    let config = args.config.load(&ctx.global.data_dir)?;
    let as_of = match &args.as_of {
        Some(s) => parse_instant(s)?,
        None => SystemClock.now(),
    };
    let (session, task) = open_session(ctx).await?;
    let bar = progress_bar(!args.json, None, "planning");
    let b = bar.clone();
    let result = ops::plan(&session, &config, as_of, move |n| b.set_position(n)).await;
    bar.finish_and_clear();
    close(session, task).await?;
    let plan = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.text());
    }
    Ok(EXIT_OK)
}

pub async fn archive(ctx: &Context, args: ArchiveArgs) -> anyhow::Result<u8> {
    use crate::commands::checkpoint::{origin, signer};
    let before = parse_instant(&args.before)?;
    let signer = signer(ctx, &origin(ctx, args.origin.as_deref()))?;
    let recorder = Recorder::on(ctx.open_existing().await?, ctx).await?;
    let bar = progress_bar(true, None, "archiving");
    let b = bar.clone();
    let result = retention::archive::write_archive(
        recorder.store(),
        &ctx.stream,
        before,
        &args.out,
        &signer,
        move |n, total| {
            b.set_length(total);
            b.set_position(n);
        },
    )
    .await;
    bar.finish_and_clear();
    let summary = match refused_or(result)? {
        Ok(s) => s,
        Err(why) => {
            recorder.close().await?;
            eprintln!("REFUSED: {why}");
            return Ok(EXIT_DAMAGED);
        }
    };
    // Copying entries out of the ledger is itself an access to the audit log.
    recorder
        .record(OperatorEvent {
            action: "export",
            resource: serde_json::json!({"type": "AuditLog"}),
            detail: &format!("archive of entries 0 to {} written", summary.entries() - 1),
        })
        .await?;
    recorder.close().await?;
    println!(
        "archived entries 0..={} of stream {} (recorded {} to {}) to {}",
        summary.entries() - 1,
        summary.stream,
        summary.oldest.to_rfc3339(),
        summary.newest.to_rfc3339(),
        summary.path.display()
    );
    println!("sha256 {}", summary.sha256.to_hex());
    println!(
        "signed checkpoint of size {} (root {}) inside the file, also stored in the ledger",
        summary.checkpoint.size, summary.checkpoint.root
    );
    if summary.already_purged > 0 {
        println!(
            "{} of its entries had their payload purged earlier (kept with their hashes)",
            summary.already_purged
        );
    }
    println!(
        "check it offline: auditledger verify --export {} --public-key <verifier key>",
        summary.path.display()
    );
    Ok(EXIT_OK)
}

pub async fn purge(ctx: &Context, args: PurgeArgs) -> anyhow::Result<u8> {
    use crate::commands::checkpoint::{origin, trusted_key};
    let config = args.config.load(&ctx.global.data_dir)?;
    let key = trusted_key(
        ctx,
        args.public_key.as_deref(),
        &origin(ctx, args.origin.as_deref()),
    )?;
    let (session, task) = open_session(ctx).await?;
    let bar = progress_bar(true, None, "purge");
    let b = bar.clone();
    let result = ops::purge(
        &session,
        &config,
        &args.archive,
        &key,
        &args.authorized_by,
        move |step, n, total| {
            b.set_message(step.to_owned());
            b.set_length(total);
            b.set_position(n);
        },
    )
    .await;
    bar.finish_and_clear();
    close(session, task).await?;
    let outcome = match refused_or(result)? {
        Ok(o) => o,
        Err(why) => {
            eprintln!("REFUSED: {why}");
            return Ok(EXIT_DAMAGED);
        }
    };
    let a = &outcome.record;
    println!(
        "purge authorized at ledger entry seq {} by {:?}: entries {}..={}, archive sha256 {}",
        outcome.authorization.seq, a.authorized_by, a.from, a.to, a.archive
    );
    println!(
        "{} payload(s) purged; kept: {} inside their horizon, {} under a legal hold; {} purged earlier",
        outcome.purged,
        outcome.plan.inside_horizon,
        outcome.plan.held.iter().map(|h| h.count).sum::<u64>(),
        outcome.plan.already_purged
    );
    for r in &a.rules {
        println!(
            "  rule {}: {} payload(s), {} years, newest recorded {}",
            r.rule,
            r.count,
            r.years,
            Timestamp(r.newest).to_rfc3339()
        );
    }
    println!("`auditledger verify` still verifies every entry and reports the purge");
    Ok(EXIT_OK)
}
