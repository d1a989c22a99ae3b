//! The `auditledger` binary: command line, configuration and wiring of the store, the writer
//! and the commands. The ledger's rules live in `crates/ledger`; this crate only connects them.

pub mod analytics;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod context;
pub mod keys;
pub mod logging;
pub mod recorder;
pub mod reports;
pub mod rules;
pub mod server;
pub mod synthetic;

use std::process::ExitCode;

use clap::Parser;

/// Exit status: the ledger (or input) is sound and the command did its job.
pub const EXIT_OK: u8 = 0;
/// Exit status: the ledger is damaged, or the input was refused.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit status: usage error, I/O error, or a store that cannot be reached.
pub const EXIT_ERROR: u8 = 2;

/// Parses the command line, runs the command, maps the outcome to an exit status.
pub fn run() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    if let Err(e) = logging::init(&cli.global) {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_ERROR);
    }
    if !matches!(cli.command, cli::Command::Serve(_)) {
        quiet_on_broken_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `auditledger tail | head` must stop quietly when `head` has read enough, as Unix tools do.
/// Rust ignores SIGPIPE, so a write to a closed pipe would make `println!` panic instead; the
/// command-line tools restore the default disposition. `serve` keeps ignoring it: a client that
/// goes away must never take the server down.
fn quiet_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal disposition to its default before any other thread is started
    // (the runtime is built after this); no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
