//! `auditledger serve`: the HTTP service over whichever store the context opens.

use std::io::Write;

use ledger::event::ParseOptions;
use ledger::{Ingest, VerifyOptions};

use crate::context::Context;
pub use crate::server::config::ServeArgs;
use crate::server::config::Settings;
use crate::server::{serve, ServeInputs};
use crate::EXIT_OK;

pub async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<u8> {
    let mut settings = Settings::resolve(&args)?;
    // Refuses to start on a bad retention file, like the rules and analytics files below.
    settings.retention_config = crate::commands::retention::RetentionConfigArgs {
        retention: settings.retention.clone(),
    }
    .load(&ctx.global.data_dir)?;
    let mut ingest = Ingest::new(ctx.pseudonymizer()?);
    ingest.parse = ParseOptions {
        phi_policy: settings.phi_policy,
        ..ParseOptions::default()
    };
    let store = ctx.open_store().await?;
    // Stored checkpoints are checked with the data directory's key when there is one, as
    // `auditledger verify` does, so POST /v1/verify answers exactly what the command would.
    let origin = crate::commands::checkpoint::origin(ctx, None);
    let verify_options = VerifyOptions {
        checkpoints: Vec::new(),
        checkpoint_key: crate::commands::checkpoint::trusted_key(ctx, None, &origin).ok(),
    };
    let signer = match crate::commands::checkpoint::signer(ctx, &origin) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no checkpoint signer");
            None
        }
    };
    let security_rules = crate::rules::RulesArgs {
        rules: settings.rules.clone(),
    }
    .load(&ctx.global.data_dir)?;
    let analytics = crate::analytics::AnalyticsArgs {
        analytics: settings.analytics.clone(),
    }
    .load(&ctx.global.data_dir)?;
    let inputs = ServeInputs {
        security_rules,
        analytics,
        signer,
        settings,
        store,
        stream: ctx.stream.clone(),
        ingest,
        data_dir: ctx.global.data_dir.clone(),
        verify_options,
    };
    serve(
        inputs,
        |addr| {
            // On stdout, flushed: scripts and tests read the port from here when given :0.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "listening on http://{addr}");
            let _ = out.flush();
        },
        std::future::pending(),
    )
    .await?;
    eprintln!("auditledger serve: stopped; every acknowledged event is committed");
    Ok(EXIT_OK)
}
