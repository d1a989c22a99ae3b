//! `auditledger key public`: the verifier key an auditor keeps to check checkpoints and proofs.

use clap::{Args, Subcommand};

use crate::commands::checkpoint::{origin, signer};
use crate::context::Context;
use crate::EXIT_OK;

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the checkpoint verifier key of the stream (`<name>+<key id>+<base64 key>`, the
    /// Go/C2SP note form). It is public: give it to auditors, who check checkpoints with it.
    Public {
        /// Key name, the same as the checkpoints' origin [default: auditledger/<stream>].
        #[arg(long, env = "AUDITLEDGER_ORIGIN")]
        origin: Option<String>,
    },
}

pub async fn run(ctx: &Context, args: KeyArgs) -> anyhow::Result<u8> {
    match args.command {
        KeyCommand::Public { origin: o } => {
            let origin = origin(ctx, o.as_deref());
            println!("{}", signer(ctx, &origin)?.verifier());
        }
    }
    Ok(EXIT_OK)
}
