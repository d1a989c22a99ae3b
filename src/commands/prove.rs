//! `auditledger prove`: RFC 9162 inclusion and consistency proofs as JSON documents
//! (`docs/CHECKPOINTS.md`), for `auditledger check-proof` or any RFC 9162 verifier.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ledger::checkpoint::Checkpoint;
use ledger::proof::{prove_consistency, prove_inclusion};
use ledger::tree::root_at;
use ledger::{Store, StreamId};

use crate::commands::checkpoint::{
    origin, read_checkpoint, refused_or, trusted_key, write_new, Refused,
};
use crate::context::Context;
use crate::EXIT_OK;

#[derive(Debug, Args)]
pub struct ProveArgs {
    #[command(subcommand)]
    pub command: ProveCommand,

    /// Write the proof to this file instead of stdout (an existing file is not overwritten).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Checkpoint origin [default: auditledger/<stream>].
    #[arg(long, global = true, env = "AUDITLEDGER_ORIGIN")]
    pub origin: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProveCommand {
    /// Prove that entry SEQ is in the tree of a checkpoint (default: the newest stored
    /// checkpoint that covers it).
    Inclusion {
        #[arg(long)]
        seq: u64,
        /// Prove against this checkpoint file (its signature is checked first).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Prove that the tree of the OLD checkpoint is a prefix of the tree of the NEW one.
    Consistency {
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
    },
}

/// The ledger must still have the tree the checkpoint signed, or the proof would not verify
/// (and the ledger was rewritten: say so instead).
async fn check_still_matches(
    store: &dyn Store,
    stream: &StreamId,
    cp: &Checkpoint,
) -> anyhow::Result<()> {
    let have = store.head(stream).await?.map_or(0, |h| h.seq + 1);
    if have < cp.size {
        return Err(Refused(format!(
            "the ledger has {have} entries, fewer than the checkpoint's {}: it was truncated (run `auditledger verify --checkpoint`)",
            cp.size
        ))
        .into());
    }
    if root_at(store, stream, cp.size).await? != cp.root {
        return Err(Refused(format!(
            "the ledger's tree at size {} is not the one the checkpoint signed: it was rewritten (run `auditledger verify --checkpoint`)",
            cp.size
        ))
        .into());
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: ProveArgs) -> anyhow::Result<u8> {
    refused_or(prove(ctx, args).await)
}

async fn prove(ctx: &Context, args: ProveArgs) -> anyhow::Result<u8> {
    let origin = origin(ctx, args.origin.as_deref());
    let key = trusted_key(ctx, None, &origin)?;
    let store = ctx.open_existing().await?;
    let json = match args.command {
        ProveCommand::Inclusion { seq, checkpoint } => {
            let cp = match checkpoint {
                Some(path) => read_checkpoint(&path, &key)?,
                None => {
                    let stored = store.checkpoints(&ctx.stream).await?;
                    let newest = stored.iter().rev().find(|c| c.size > seq).with_context(|| {
                        format!("no stored checkpoint covers entry {seq}: run `auditledger checkpoint` first, or pass --checkpoint FILE")
                    })?;
                    Checkpoint::open(&newest.note, &key).map_err(|e| {
                        Refused(format!(
                            "the stored checkpoint of size {} is refused: {e}",
                            newest.size
                        ))
                    })?
                }
            };
            check_still_matches(store.as_ref(), &ctx.stream, &cp).await?;
            let proof = prove_inclusion(store.as_ref(), &ctx.stream, seq, cp.size).await?;
            serde_json::to_string_pretty(&proof)?
        }
        ProveCommand::Consistency { old, new } => {
            let (old, new) = (read_checkpoint(&old, &key)?, read_checkpoint(&new, &key)?);
            check_still_matches(store.as_ref(), &ctx.stream, &new).await?;
            check_still_matches(store.as_ref(), &ctx.stream, &old).await?;
            let proof = prove_consistency(store.as_ref(), &ctx.stream, old.size, new.size).await?;
            serde_json::to_string_pretty(&proof)?
        }
    };
    match &args.out {
        Some(path) => write_new(path, &format!("{json}\n"))?,
        None => println!("{json}"),
    }
    Ok(EXIT_OK)
}
