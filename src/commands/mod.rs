//! One module per command, each with a `run` taking its arguments and returning the exit status.

pub mod append;
pub mod demo;
pub mod export;
pub mod init;
pub mod show;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::context::Context;

pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context::new(cli.global)?;
    match cli.command {
        Command::Init => init::run(&ctx).await,
        Command::Append(args) => append::run(&ctx, args).await,
        Command::Verify(args) => verify::run(&ctx, args).await,
        Command::Export(args) => export::run(&ctx, args).await,
        Command::Show(args) => show::show(&ctx, args).await,
        Command::Tail(args) => show::tail(&ctx, args).await,
        Command::Demo(args) => demo::run(&ctx, args).await,
    }
}
