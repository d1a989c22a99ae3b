//! `auditledger check-proof`: checks a proof with only the verifier key, the checkpoint(s) and
//! the proof file. It opens no store: this is the auditor's side, trusting nothing the server
//! says beyond what the signature covers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use ledger::proof::{ConsistencyProof, InclusionProof};
use ledger::Digest;
use serde_json::Value;

use crate::commands::checkpoint::{read_checkpoint, read_verifier, refused_or, Refused};
use crate::EXIT_OK;

#[derive(Debug, Args)]
pub struct CheckProofArgs {
    /// File holding the verifier key (the output of `auditledger key public`).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,

    /// The proof file (from `auditledger prove`).
    #[arg(long, value_name = "FILE")]
    pub proof: PathBuf,

    /// For an inclusion proof: the checkpoint the entry is proven to be in.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["old", "new"])]
    pub checkpoint: Option<PathBuf>,

    /// For a consistency proof: the older checkpoint.
    #[arg(long, value_name = "FILE", requires = "new")]
    pub old: Option<PathBuf>,

    /// For a consistency proof: the newer checkpoint.
    #[arg(long, value_name = "FILE", requires = "old")]
    pub new: Option<PathBuf>,

    /// For an inclusion proof: require the proven entry to have this hash (hex), e.g. the
    /// `entry_hash` of a receipt the auditor holds.
    #[arg(long, value_name = "HEX")]
    pub entry_hash: Option<String>,
}

pub async fn run(args: CheckProofArgs) -> anyhow::Result<u8> {
    refused_or(check(args))
}

fn check(args: CheckProofArgs) -> anyhow::Result<u8> {
    let key = read_verifier(&args.public_key)?;
    let text = std::fs::read_to_string(&args.proof)
        .with_context(|| format!("cannot read {}", args.proof.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.proof.display()))?;
    let refuse = |what: String| anyhow::Error::new(Refused(what));
    match value.get("kind").and_then(Value::as_str) {
        Some("inclusion") => {
            let proof: InclusionProof = serde_json::from_value(value)
                .with_context(|| format!("{} is not an inclusion proof", args.proof.display()))?;
            let path = args
                .checkpoint
                .context("an inclusion proof is checked against --checkpoint FILE")?;
            let cp = read_checkpoint(&path, &key)?;
            if let Some(want) = &args.entry_hash {
                let want = Digest::from_hex(want).context("--entry-hash is not 64 hex digits")?;
                if want != proof.entry_hash {
                    return Err(refuse(format!(
                        "the proof is for entry hash {}, not {want}",
                        proof.entry_hash
                    )));
                }
            }
            proof
                .verify(cp.size, &cp.root)
                .map_err(|e| refuse(format!("inclusion proof refused: {e}")))?;
            println!(
                "valid: entry {} (hash {}) is in {} at tree size {} (root {})",
                proof.seq, proof.entry_hash, cp.origin, cp.size, cp.root
            );
        }
        Some("consistency") => {
            let proof: ConsistencyProof = serde_json::from_value(value)
                .with_context(|| format!("{} is not a consistency proof", args.proof.display()))?;
            let (Some(old), Some(new)) = (args.old, args.new) else {
                anyhow::bail!("a consistency proof is checked against --old FILE --new FILE");
            };
            let (old, new) = (read_checkpoint(&old, &key)?, read_checkpoint(&new, &key)?);
            proof
                .verify((old.size, &old.root), (new.size, &new.root))
                .map_err(|e| refuse(format!("consistency proof refused: {e}")))?;
            println!(
                "valid: {} at tree size {} extends tree size {}: nothing before entry {} was changed or removed",
                new.origin, new.size, old.size, old.size
            );
        }
        other => anyhow::bail!(
            "{} has kind {other:?}; expected \"inclusion\" or \"consistency\"",
            args.proof.display()
        ),
    }
    Ok(EXIT_OK)
}
