//! `auditledger security`: the security projection's read model (security events, the block
//! list) and lifting a block, which is itself recorded in the ledger.

use clap::{Args, Subcommand};
use ledger::projection::{ProjectionError, Runner};
use ledger::{Clock as _, Store, StreamId, SystemClock};
use security::projection::{BLOCKED_IP, BLOCK_LIFTED, NAME};
use security::{read, SecurityProjection, Severity};
use serde_json::json;

use crate::context::Context;
use crate::recorder::{OperatorEvent, Recorder};
use crate::rules::{parse_since, RulesArgs};
use crate::{EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, Args)]
pub struct SecurityArgs {
    #[command(subcommand)]
    pub command: SecurityCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// List blocked IP pseudonyms and until when (blocks in force, unless --all).
    Blocklist {
        /// Also list expired blocks that were never lifted.
        #[arg(long)]
        all: bool,
        /// One JSON object per block.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// List security events (detections), newest first.
    Events {
        /// From this time: RFC 3339 (2026-11-22T00:00:00Z) or back from now (15m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// This severity or worse: low, medium, high, critical.
        #[arg(long, default_value = "low", value_parser = parse_severity)]
        severity: Severity,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// Is this IP blocked? Exit status 0 not blocked, 1 blocked. The IP is pseudonymized here
    /// and never stored or printed.
    Check {
        /// The raw IP address, as services see it.
        #[arg(long)]
        ip: String,
    },
    /// Lift the block on an IP before it expires. Recorded in the ledger as a `block_lifted`
    /// event (who, which IP pseudonym, why); the block list reflects it once the projection
    /// has applied that entry, which this command does before it returns.
    Unblock {
        /// The raw IP address (pseudonymized; never stored or printed).
        #[arg(long)]
        ip: String,
        /// Why the block is lifted (kept in the ledger; must not contain PHI).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        rules: RulesArgs,
    },
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("{s:?} is not one of low, medium, high, critical"))
}

pub async fn run(ctx: &Context, args: SecurityArgs) -> anyhow::Result<u8> {
    let now = SystemClock.now();
    match args.command {
        SecurityCommand::Blocklist { all, json, limit } => {
            let store = ctx.open_existing().await?;
            note_lag(store.as_ref(), &ctx.stream).await?;
            let blocks = read::blocks(store.as_ref(), &ctx.stream, now, all, limit).await?;
            for b in &blocks {
                if json {
                    println!("{b}");
                } else {
                    println!(
                        "{}  until {}  ({}, evidence seq {}..={})",
                        text(b, "ip"),
                        text(b, "until"),
                        text(b, "rule"),
                        b["first_seq"],
                        b["last_seq"]
                    );
                }
            }
            if blocks.is_empty() && !json {
                eprintln!("no blocks in force");
            }
            Ok(EXIT_OK)
        }
        SecurityCommand::Events {
            since,
            severity,
            limit,
            json,
        } => {
            let since = since
                .map(|s| parse_since(&s, now))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let store = ctx.open_existing().await?;
            note_lag(store.as_ref(), &ctx.stream).await?;
            let events =
                read::events(store.as_ref(), &ctx.stream, since, None, severity, limit).await?;
            for e in &events {
                if json {
                    println!("{e}");
                } else {
                    println!(
                        "{}  {:<8} {:<20} {}  [evidence seq {}..={}, recorded as seq {}]",
                        text(e, "window_to"),
                        text(e, "severity"),
                        text(e, "rule"),
                        text(e, "summary"),
                        e["first_seq"],
                        e["last_seq"],
                        e["ledger_seq"]
                    );
                }
            }
            if events.is_empty() && !json {
                eprintln!("no security events");
            }
            Ok(EXIT_OK)
        }
        SecurityCommand::Check { ip } => {
            let pseudonym = ip_pseudonym(ctx, &ip)?;
            let store = ctx.open_existing().await?;
            note_lag(store.as_ref(), &ctx.stream).await?;
            match read::block_of(store.as_ref(), &ctx.stream, &pseudonym, now).await? {
                Some(b) => {
                    println!(
                        "{}",
                        json!({"blocked": true, "until": b["until"], "ip": pseudonym})
                    );
                    Ok(EXIT_DAMAGED)
                }
                None => {
                    println!("{}", json!({"blocked": false, "ip": pseudonym}));
                    Ok(EXIT_OK)
                }
            }
        }
        SecurityCommand::Unblock { ip, reason, rules } => {
            let config = rules.load(&ctx.global.data_dir)?;
            let pseudonym = ip_pseudonym(ctx, &ip)?;
            let ip = ledger::pseudonym::canonical_ip(&ip).expect("ip_pseudonym parsed it");
            let recorder = Recorder::open(ctx).await?;
            let store = recorder.store();
            if read::block_of(store.as_ref(), &ctx.stream, &pseudonym, now)
                .await?
                .is_none()
            {
                eprintln!("no block in force on IP {pseudonym}; nothing recorded");
                recorder.close().await?;
                return Ok(EXIT_DAMAGED);
            }
            recorder
                .record(OperatorEvent {
                    action: BLOCK_LIFTED,
                    resource: json!({"type": BLOCKED_IP, "id": ip}),
                    detail: &reason,
                })
                .await?;
            // Apply it now, unless a server's projection is at it already.
            let runner = Runner::open(
                store.clone(),
                recorder.writer().clone(),
                SecurityProjection::new(config),
            )
            .await;
            let applied = match runner {
                Ok(mut runner) => runner.catch_up(|_, _| {}).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match applied {
                Ok(()) | Err(ProjectionError::Moved(_)) => {}
                Err(e) => return Err(anyhow::Error::new(e).context(
                    "the block was lifted in the ledger, but the projection could not apply it yet",
                )),
            }
            recorder.close().await?;
            eprintln!("lifted the block on IP {pseudonym}");
            Ok(EXIT_OK)
        }
    }
}

/// The IP's pseudonym as ingest makes it (parsed, canonical form); the raw address is never
/// echoed in the error.
fn ip_pseudonym(ctx: &Context, ip: &str) -> anyhow::Result<String> {
    ctx.pseudonymizer()?
        .pseudonymize_ip(ip)
        .map(|p| p.to_string())
        .ok_or_else(|| anyhow::anyhow!("--ip must be an IPv4 or IPv6 address"))
}

fn text<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|s| s.as_str()).unwrap_or("-")
}

/// Says on stderr when the read model is behind the ledger (no projection running).
async fn note_lag(store: &dyn Store, stream: &StreamId) -> anyhow::Result<()> {
    let head = store.head(stream).await?.map(|h| h.seq);
    let position = store.projection(NAME, stream).await?.map(|p| p.seq);
    match (head, position) {
        (Some(head), Some(p)) if p < head => eprintln!(
            "note: the security projection is at seq {p}, the ledger at {head}: run `auditledger project security` (or `serve`) to bring it up to date"
        ),
        (Some(_), None) => eprintln!(
            "note: the security projection has not run on this ledger yet: run `auditledger project security`"
        ),
        _ => {}
    }
    Ok(())
}
