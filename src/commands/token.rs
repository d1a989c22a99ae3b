//! `auditledger token create|revoke|list`: API tokens in `<data-dir>/auth.db`.
//!
//! Creating and revoking a token are themselves audit events, appended to the ledger
//! (`token_create` / `token_revoke`, source `auditledger`, the token's name in `detail`), so the
//! ledger shows who could write to it and since when. The token itself is printed once, on
//! stdout, and exists nowhere else: only its SHA-256 is stored.

use clap::{Args, Subcommand};
use serde_json::json;

use crate::context::Context;
use crate::recorder::{OperatorEvent, Recorder};
use crate::server::auth::{Role, TokenStore};
use crate::{EXIT_DAMAGED, EXIT_OK};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (store it in the service's secret store). Roles:
    /// service (append only), auditor (read, verify, export), admin (auditor + token
    /// management).
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
        /// A name for the token (1-64 of letters, digits, '.', '_', '-'), e.g. the service
        /// using it. One active token per name.
        #[arg(long)]
        name: String,
    },
    /// Revoke the active token called NAME; servers refuse it within --auth-reload-ms.
    Revoke {
        /// The token's name.
        name: String,
    },
    /// List tokens: name, role, created, revoked (never the tokens).
    List {
        /// One JSON object per token.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, args: TokenArgs) -> anyhow::Result<u8> {
    let dir = ctx.global.data_dir.clone();
    match args.command {
        TokenCommand::Create { role, name } => {
            // Open the ledger first: a token whose creation cannot be recorded is not made.
            let recorder = Recorder::open(ctx).await?;
            let (d, n) = (dir.clone(), name.clone());
            let token = tokio::task::spawn_blocking(move || TokenStore::open(&d)?.create(&n, role))
                .await??;
            let recorded = recorder
                .record(OperatorEvent {
                    action: "token_create",
                    resource: json!({"type": "ApiToken"}),
                    detail: &format!("API token {name} created with role {}", role.as_str()),
                })
                .await;
            let recorded = match recorded {
                Ok(_) => recorder.close().await,
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                // Unrecorded tokens must not exist: take it back before reporting.
                let (d, n) = (dir.clone(), name.clone());
                tokio::task::spawn_blocking(move || TokenStore::open(&d)?.revoke(&n)).await??;
                return Err(e.context("the token was revoked again"));
            }
            println!("{token}");
            eprintln!(
                "created token {name} (role {}): it is printed once above and stored only as a hash",
                role.as_str()
            );
            Ok(EXIT_OK)
        }
        TokenCommand::Revoke { name } => {
            let recorder = Recorder::open(ctx).await?;
            let n = name.clone();
            let d = dir.clone();
            let role = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Role>> {
                let store = TokenStore::open(&d)?;
                let role = store.active_role(&n)?;
                if role.is_some() {
                    store.revoke(&n)?;
                }
                Ok(role)
            })
            .await??;
            let Some(role) = role else {
                eprintln!("no active token named {name}");
                return Ok(EXIT_DAMAGED);
            };
            recorder
                .record(OperatorEvent {
                    action: "token_revoke",
                    resource: json!({"type": "ApiToken"}),
                    detail: &format!("API token {name} with role {} revoked", role.as_str()),
                })
                .await?;
            recorder.close().await?;
            eprintln!("revoked token {name}");
            Ok(EXIT_OK)
        }
        TokenCommand::List { json } => {
            let list =
                tokio::task::spawn_blocking(move || TokenStore::open(&dir)?.list()).await??;
            for t in &list {
                if json {
                    println!("{}", serde_json::to_string(t)?);
                } else {
                    println!(
                        "{:<24} {:<8} created {}{}",
                        t.name,
                        t.role,
                        t.created_at,
                        t.revoked_at
                            .as_deref()
                            .map(|r| format!(", revoked {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            if list.is_empty() && !json {
                eprintln!("no tokens; create one with `auditledger token create --role service --name NAME`");
            }
            Ok(EXIT_OK)
        }
    }
}
