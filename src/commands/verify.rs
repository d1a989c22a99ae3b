//! `auditledger verify`: of the store, or of an export file with no store at all.

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::export::ExportReader;
use ledger::store::SCAN_CHUNK;
use ledger::verify::{verify_store, Verifier};
use ledger::{VerifyOptions, VerifyReport};

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::{EXIT_DAMAGED, EXIT_OK};

/// A progress bar on stderr when it is a terminal (and the caller wants one).
pub fn progress_bar(enabled: bool, total: Option<u64>, what: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        format!("{what} {{bar:40}} {{pos}}/{{len}} entries ({{per_sec}}, eta {{eta}})")
    } else {
        format!("{what} {{spinner}} {{pos}} entries ({{per_sec}})")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

pub async fn run(ctx: &Context, args: VerifyArgs) -> anyhow::Result<u8> {
    crate::commands::checkpoint::refused_or(verify(ctx, args).await)
}

/// The checkpoints to hold the ledger to (each opened with the trusted key: a bad signature or
/// another key's checkpoint is refused before anything is verified) and the key for the
/// store's own checkpoints, when one is available. Shared with `retention check`.
pub fn checkpoint_options(
    ctx: &Context,
    checkpoint: &[PathBuf],
    public_key: Option<&Path>,
    origin: Option<&str>,
) -> anyhow::Result<VerifyOptions> {
    use crate::commands::checkpoint::{read_checkpoint, trusted_key};
    let origin = crate::commands::checkpoint::origin(ctx, origin);
    let key = trusted_key(ctx, public_key, &origin);
    let checkpoints = if checkpoint.is_empty() {
        Vec::new()
    } else {
        let key = key.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        checkpoint
            .iter()
            .map(|path| read_checkpoint(path, key))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    Ok(VerifyOptions {
        checkpoints,
        checkpoint_key: key.ok(),
    })
}

async fn verify(ctx: &Context, args: VerifyArgs) -> anyhow::Result<u8> {
    let show_progress = !args.json && !args.no_progress;
    let opts = checkpoint_options(
        ctx,
        &args.checkpoint,
        args.public_key.as_deref(),
        args.origin.as_deref(),
    )?;
    let report = match &args.export {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let bar = progress_bar(show_progress, None, "verifying export");
            let path = path.clone();
            let b = bar.clone();
            let mut checkpoints = opts.checkpoints.clone();
            let key = opts.checkpoint_key.clone();
            let report = tokio::task::spawn_blocking(move || -> anyhow::Result<VerifyReport> {
                let mut reader = ExportReader::open(BufReader::with_capacity(1 << 20, file))
                    .with_context(|| format!("{} is not an auditledger export", path.display()))?;
                if let Some(note) = &reader.header().checkpoint {
                    // An archive: its entries must be exactly what its signed checkpoint covers.
                    let key = key.with_context(|| {
                        format!(
                            "{} carries a signed checkpoint: give the signer's --public-key to check it",
                            path.display()
                        )
                    })?;
                    let cp = ledger::checkpoint::Checkpoint::open(note, &key).map_err(|e| {
                        anyhow::Error::new(crate::commands::checkpoint::Refused(format!(
                            "the checkpoint in {} is refused: {e}",
                            path.display()
                        )))
                    })?;
                    checkpoints.push(cp);
                }
                let mut v = Verifier::new(reader.header().stream.clone());
                v.expect_checkpoints(checkpoints);
                if reader.header().checkpoint.is_some() {
                    // An archive may hold entries purged by an earlier purge, whose
                    // authorization lies past the archive's end: counted, their hashes
                    // verified. A full export holds its authorizations, so there a missing
                    // payload must be covered by one.
                    v.accept_purges_authorized_elsewhere();
                }
                let mut chunk = Vec::with_capacity(SCAN_CHUNK);
                loop {
                    let next = reader.next_entry()?;
                    let end = next.is_none();
                    chunk.extend(next);
                    if chunk.len() == SCAN_CHUNK || (end && !chunk.is_empty()) {
                        let go_on = v.push(&chunk);
                        chunk.clear();
                        b.set_position(v.entries());
                        if !go_on {
                            break;
                        }
                    }
                    if end {
                        break;
                    }
                }
                Ok(v.finish())
            })
            .await??;
            bar.finish_and_clear();
            report
        }
        None => {
            let store = ctx.open_existing().await?;
            let total = store.head(&ctx.stream).await?.map(|h| h.seq + 1);
            if total.is_none() {
                anyhow::bail!(
                    "stream {} has no entries in {}",
                    ctx.stream,
                    store.describe()
                );
            }
            let bar = progress_bar(show_progress, total, "verifying");
            let b = bar.clone();
            let report = verify_store(store.as_ref(), &ctx.stream, &opts, move |n| {
                b.set_position(n)
            })
            .await?;
            bar.finish_and_clear();
            report
        }
    };
    print_report(&report, args.json)?;
    Ok(if report.ok { EXIT_OK } else { EXIT_DAMAGED })
}

/// How many payloads were purged, and under which authorization (an intact ledger with
/// purged payloads says so: the chain verifies, the payloads are gone by decision).
fn print_purges(report: &VerifyReport) {
    if report.payloads_purged == 0 {
        return;
    }
    println!(
        "{} payload(s) purged; their entries' hashes and links verified",
        report.payloads_purged
    );
    for t in &report.purges {
        let a = &t.authorization;
        println!(
            "  {} purged under the authorization at seq {} ({}): entries {}..={}, archive sha256:{}, authorized by {:?}",
            t.purged,
            t.seq,
            t.recorded_at.to_rfc3339(),
            a.from,
            a.to,
            a.archive,
            a.authorized_by
        );
    }
    let attributed: u64 = report.purges.iter().map(|t| t.purged).sum();
    if attributed < report.payloads_purged {
        println!(
            "  {} purged before this archive was written (their authorization lies past its end)",
            report.payloads_purged - attributed
        );
    }
}

pub fn print_report(report: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else if report.ok {
        match (report.head_seq, report.head_hash) {
            (Some(seq), Some(hash)) => println!(
                "intact: stream {}, {} entries verified, head seq {seq}, head hash {hash}, extends {} checkpoint(s)",
                report.stream, report.entries, report.checkpoints_verified
            ),
            _ => println!("intact: stream {} has no entries", report.stream),
        }
        print_purges(report);
    } else if report.first_bad_seq.is_none() {
        // Rewrites and bad stored checkpoints name no single entry: the checkpoint commits to
        // the whole prefix.
        println!(
            "DAMAGED: stream {}: {}{} ({})",
            report.stream,
            report.problem.map(|p| p.as_str()).unwrap_or("unknown"),
            report
                .checkpoint_size
                .map(|s| format!(" at checkpoint size {s}"))
                .unwrap_or_default(),
            report.detail.as_deref().unwrap_or("")
        );
    } else {
        println!(
            "DAMAGED: stream {}, first bad entry seq {}: {} ({})",
            report.stream,
            report
                .first_bad_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into()),
            report.problem.map(|p| p.as_str()).unwrap_or("unknown"),
            report.detail.as_deref().unwrap_or("")
        );
        println!("{} entries before it verified", report.entries);
    }
    Ok(())
}
