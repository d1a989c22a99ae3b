//! One module per command, each with a `run` taking its arguments and returning the exit status.

pub mod append;
pub mod check_proof;
pub mod checkpoint;
pub mod demo;
pub mod export;
pub mod init;
pub mod key;
pub mod migrate;
pub mod project;
pub mod prove;
pub mod report;
pub mod retention;
pub mod security;
pub mod serve;
pub mod show;
pub mod token;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::context::Context;

pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context::new(cli.global)?;
    match cli.command {
        Command::Init => init::run(&ctx).await,
        Command::Migrate(args) => migrate::run(&ctx, args).await,
        Command::Append(args) => append::run(&ctx, args).await,
        Command::Verify(args) => verify::run(&ctx, args).await,
        Command::Export(args) => export::run(&ctx, args).await,
        Command::Show(args) => show::show(&ctx, args).await,
        Command::Tail(args) => show::tail(&ctx, args).await,
        Command::Demo(args) => demo::run(&ctx, args).await,
        Command::Key(args) => key::run(&ctx, args).await,
        Command::Checkpoint(args) => checkpoint::run(&ctx, args).await,
        Command::Prove(args) => prove::run(&ctx, args).await,
        Command::CheckProof(args) => check_proof::run(args).await,
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Token(args) => token::run(&ctx, args).await,
        Command::Project(args) => project::run(&ctx, args).await,
        Command::Security(args) => security::run(&ctx, args).await,
        Command::Report(args) => report::run(&ctx, args).await,
        Command::Retention(args) => retention::run(&ctx, args).await,
        Command::Archive(args) => retention::archive(&ctx, args).await,
        Command::Purge(args) => retention::purge(&ctx, args).await,
    }
}
