//! `auditledger checkpoint`: sign the stream's current tree head as a C2SP checkpoint, store it
//! in the ledger and hand it out (stdout or a file an operator can ship off-site). Also the
//! key plumbing the checkpoint and proof commands share.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use ledger::checkpoint::{self, Checkpoint, NoteSigner, NoteVerifier};
use ledger::StoredCheckpoint;

use crate::context::Context;
use crate::keys::load_signing_seed;
use crate::{EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Also write the signed checkpoint to this file (an existing file is not overwritten).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Origin line and key name of the checkpoint [default: auditledger/<stream>].
    #[arg(long, env = "AUDITLEDGER_ORIGIN")]
    pub origin: Option<String>,
}

/// The origin (and key name) of this stream's checkpoints.
pub fn origin(ctx: &Context, origin: Option<&str>) -> String {
    origin.map_or_else(|| checkpoint::default_origin(&ctx.stream), str::to_owned)
}

/// The signer for this stream, from the data directory's signing key.
pub fn signer(ctx: &Context, origin: &str) -> anyhow::Result<NoteSigner> {
    let seed = load_signing_seed(&ctx.global.data_dir)?;
    NoteSigner::new(origin, &seed).context("cannot make the checkpoint signer")
}

/// The key checkpoints are checked with: the verifier key in `public_key` (a file holding the
/// `auditledger key public` text, as an auditor keeps it), else the one derived from the data
/// directory's signing key.
pub fn trusted_key(
    ctx: &Context,
    public_key: Option<&Path>,
    origin: &str,
) -> anyhow::Result<NoteVerifier> {
    match public_key {
        Some(path) => read_verifier(path),
        None => Ok(signer(ctx, origin)?.verifier()),
    }
}

pub fn read_verifier(path: &Path) -> anyhow::Result<NoteVerifier> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    NoteVerifier::parse(&text)
        .with_context(|| format!("{} is not an auditledger verifier key", path.display()))
}

/// Reads a checkpoint file and opens it with `key`; a refusal says which file and why.
pub fn read_checkpoint(path: &Path, key: &NoteVerifier) -> anyhow::Result<Checkpoint> {
    let note = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    Checkpoint::open(&note, key).map_err(|e| {
        anyhow::Error::new(Refused(format!(
            "checkpoint {} refused: {e}",
            path.display()
        )))
    })
}

/// A checkpoint or proof the caller gave was refused: exit status 1 (input refused), not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Maps a refusal to exit status 1 with its message; other errors go on as errors (status 2).
pub fn refused_or(result: anyhow::Result<u8>) -> anyhow::Result<u8> {
    match result {
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("REFUSED: {e}");
            Ok(EXIT_DAMAGED)
        }
        other => other,
    }
}

/// Signs the checkpoint of `stream` at its head and stores it in the ledger: the root comes
/// from the stored tree (O(log n) reads), never from a pass over the ledger. `None` for a
/// stream with no entries. Shared by this command and the server's periodic checkpoints.
pub async fn take(
    store: &dyn ledger::Store,
    stream: &ledger::StreamId,
    signer: &NoteSigner,
) -> anyhow::Result<Option<(Checkpoint, String)>> {
    let Some(cp) = checkpoint::at_head(store, stream, signer.name()).await? else {
        return Ok(None);
    };
    let note = cp.sign(signer);
    store
        .put_checkpoint(
            stream,
            &StoredCheckpoint {
                size: cp.size,
                note: note.clone(),
            },
        )
        .await?;
    Ok(Some((cp, note)))
}

pub async fn run(ctx: &Context, args: CheckpointArgs) -> anyhow::Result<u8> {
    let origin = origin(ctx, args.origin.as_deref());
    let signer = signer(ctx, &origin)?;
    let store = ctx.open_existing().await?;
    let (cp, note) = take(store.as_ref(), &ctx.stream, &signer)
        .await?
        .with_context(|| format!("stream {} has no entries", ctx.stream))?;
    if let Some(path) = &args.out {
        write_new(path, &note)?;
        eprintln!(
            "checkpoint of stream {} at size {} written to {} (keep a copy outside the database)",
            ctx.stream,
            cp.size,
            path.display()
        );
    }
    print!("{note}");
    Ok(EXIT_OK)
}

/// Writes a file that must not exist yet (a checkpoint or proof is evidence: never clobber).
pub fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is not overwritten)",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
