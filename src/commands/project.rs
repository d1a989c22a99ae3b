//! `auditledger project NAME`: run a projection over the verified stream from its saved
//! position: catch up (or `--rebuild` from the first entry), optionally keep following the head.
//! `auditledger serve` runs the same projections continuously.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ledger::projection::{Projection, ProjectionError, Runner};
use ledger::{GroupCommitWriter, Store, SystemClock, WriterConfig};
use phi_access::projection::PhiAccessProjection;
use retention::RetentionProjection;
use security::SecurityProjection;
use serde_json::json;

use crate::analytics::AnalyticsArgs;
use crate::commands::retention::RetentionConfigArgs;
use crate::commands::verify::progress_bar;
use crate::context::Context;
use crate::rules::RulesArgs;
use crate::{EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProjectionName {
    /// Security-event detection and the block list (docs/SECURITY.md).
    Security,
    /// PHI accesses by patient and user, and the aggregates the reports use
    /// (docs/PHI-ACCESS.md).
    PhiAccess,
    /// Legal holds, audit coverage per source, retention checks and purge authorizations
    /// (docs/RETENTION.md). Its coverage gaps depend on the `[coverage]` settings: rebuild
    /// after changing them.
    Retention,
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// The projection to run.
    #[arg(value_enum)]
    pub name: ProjectionName,

    /// Forget the saved position and read model and rebuild it from the first entry. Entries
    /// the projection recorded before (detections) are found by their digest, not appended
    /// again.
    #[arg(long)]
    pub rebuild: bool,

    /// After catching up, keep following the head until interrupted (Ctrl-C).
    #[arg(long)]
    pub follow: bool,

    /// With --follow: how often to look for new entries, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub poll_ms: u64,

    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub rules: RulesArgs,

    #[command(flatten)]
    pub analytics: AnalyticsArgs,

    #[command(flatten)]
    pub retention: RetentionConfigArgs,
}

/// Opens the writer a runner appends its own entries with.
pub async fn open_writer(
    store: Arc<dyn Store>,
    ctx: &Context,
) -> anyhow::Result<(GroupCommitWriter, tokio::task::JoinHandle<()>)> {
    GroupCommitWriter::start(
        store,
        ctx.stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .with_context(|| format!("cannot open stream {}", ctx.stream))
}

pub async fn run(ctx: &Context, args: ProjectArgs) -> anyhow::Result<u8> {
    let store = ctx.open_existing().await?;
    match args.name {
        ProjectionName::Security => {
            let config = args.rules.load(&ctx.global.data_dir)?;
            run_projection(ctx, store, SecurityProjection::new(config), &args).await
        }
        ProjectionName::PhiAccess => {
            let config = args.analytics.load(&ctx.global.data_dir)?;
            run_projection(ctx, store, PhiAccessProjection::new(config), &args).await
        }
        ProjectionName::Retention => {
            let config = args.retention.load(&ctx.global.data_dir)?;
            let projection = RetentionProjection::new(config.coverage);
            run_projection(ctx, store, projection, &args).await
        }
    }
}

async fn run_projection<P: Projection>(
    ctx: &Context,
    store: Arc<dyn Store>,
    projection: P,
    args: &ProjectArgs,
) -> anyhow::Result<u8> {
    let name = projection.name();
    let (writer, writer_task) = open_writer(store.clone(), ctx).await?;
    let mut runner = if args.rebuild {
        Runner::rebuild(store.clone(), writer, projection).await?
    } else {
        Runner::open(store.clone(), writer, projection).await?
    };
    let from = runner.next_seq();
    let started = Instant::now();
    let bar = progress_bar(!args.json, None, &format!("projecting {name}"));
    let mut result = Ok(0);
    // Its own entries land past the head it started from: go again until nothing is new.
    loop {
        let bar = bar.clone();
        let pass = runner
            .catch_up(move |position, head| {
                bar.set_length(head);
                bar.set_position(position);
            })
            .await;
        match (pass, &mut result) {
            (Ok(0), _) => break,
            (Ok(n), Ok(total)) => *total += n,
            (Err(e), _) => {
                result = Err(e);
                break;
            }
            (Ok(_), Err(_)) => unreachable!("the loop stops at the first error"),
        }
    }
    bar.finish_and_clear();
    let code = match result {
        Ok(applied) => {
            let elapsed = started.elapsed().as_secs_f64();
            let stats = runner.stats();
            let summary = json!({
                "projection": name,
                "ok": true,
                "rebuilt": args.rebuild,
                "from_seq": from,
                "applied": applied,
                "position": runner.next_seq().checked_sub(1),
                "head_seq": stats.head.load(Ordering::Relaxed).checked_sub(1),
                "own_entries": stats.own_entries.load(Ordering::Relaxed),
                "row_writes": stats.row_writes.load(Ordering::Relaxed),
                "seconds": elapsed,
                "phase_seconds": stats.phases(),
            });
            if args.json {
                println!("{summary}");
            } else {
                println!(
                    "projection {name}: applied {applied} entries ({:.0}/s); position seq {}; {} entries of its own appended to the ledger (each recorded once)",
                    applied as f64 / elapsed.max(1e-9),
                    runner.next_seq().saturating_sub(1),
                    stats.own_entries.load(Ordering::Relaxed),
                );
                println!(
                    "  {} read-model row writes; {}",
                    stats.row_writes.load(Ordering::Relaxed),
                    stats.phases()
                );
            }
            EXIT_OK
        }
        Err(e) => report(name, e, args.json)?,
    };
    if code == EXIT_OK && args.follow {
        eprintln!(
            "following the head of stream {} (Ctrl-C to stop)",
            ctx.stream
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop_tx.send(true);
        });
        if let Err(e) = runner
            .follow(Duration::from_millis(args.poll_ms.max(1)), stop_rx)
            .await
        {
            let code = report(name, e, args.json)?;
            drop(runner);
            writer_task.await?;
            return Ok(code);
        }
    }
    drop(runner);
    writer_task.await.context("the writer task failed")?;
    Ok(code)
}

/// Damage is a finding (exit 1); everything else is an error.
fn report(name: &str, e: ProjectionError, json: bool) -> anyhow::Result<u8> {
    match e {
        ProjectionError::Damaged {
            seq,
            problem,
            detail,
        } => {
            if json {
                println!(
                    "{}",
                    json!({"projection": name, "ok": false, "first_bad_seq": seq,
                           "problem": problem.as_str(), "detail": detail})
                );
            }
            eprintln!(
                "projection {name} stopped before entry {seq}, which failed verification ({}): {detail}; run `auditledger verify`",
                problem.as_str()
            );
            Ok(EXIT_DAMAGED)
        }
        e => Err(e).with_context(|| format!("projection {name} failed")),
    }
}
