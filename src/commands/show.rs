//! `auditledger show` and `auditledger tail`: entries as JSON, pseudonyms only.

use std::io::Write;

use anyhow::Context as _;

use crate::cli::{ShowArgs, TailArgs};
use crate::context::Context;
use crate::{EXIT_DAMAGED, EXIT_OK};

pub async fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<u8> {
    let store = ctx.open_existing().await?;
    let entries = store.read(&ctx.stream, args.seq, args.count.max(1)).await?;
    if entries.first().map(|e| e.seq) != Some(args.seq) {
        eprintln!("stream {} has no entry {}", ctx.stream, args.seq);
        return Ok(EXIT_DAMAGED);
    }
    let mut out = std::io::stdout().lock();
    for e in entries {
        serde_json::to_writer_pretty(&mut out, &e.to_json())?;
        out.write_all(b"\n")?;
    }
    Ok(EXIT_OK)
}

pub async fn tail(ctx: &Context, args: TailArgs) -> anyhow::Result<u8> {
    let store = ctx.open_existing().await?;
    let head = store
        .head(&ctx.stream)
        .await?
        .with_context(|| format!("stream {} has no entries", ctx.stream))?;
    let from = (head.seq + 1).saturating_sub(args.count);
    let entries = store.read(&ctx.stream, from, args.count as usize).await?;
    let mut out = std::io::stdout().lock();
    for e in entries {
        serde_json::to_writer(&mut out, &e.to_json())?;
        out.write_all(b"\n")?;
    }
    Ok(EXIT_OK)
}
