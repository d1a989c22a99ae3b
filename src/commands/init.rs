//! `auditledger init`: the key and the genesis entry.

use std::sync::Arc;

use ledger::writer::open_stream;
use ledger::SystemClock;

use crate::context::Context;
use crate::keys::{
    create_pseudonym_key, create_signing_key, pseudonym_key_path, signing_key_path,
    PSEUDONYM_KEY_ENV, SIGNING_KEY_ENV,
};
use crate::EXIT_OK;

pub async fn run(ctx: &Context) -> anyhow::Result<u8> {
    let dir = &ctx.global.data_dir;
    // PostgreSQL first: a server that cannot be reached, or a schema not migrated yet, fails
    // `init` before it writes any key file. (The embedded store is created below, once the
    // keys are known to be valid.)
    let postgres = match ctx.global.database_url {
        Some(_) => Some(ctx.open_store().await?),
        None => None,
    };
    let key_path = pseudonym_key_path(dir);
    if std::env::var_os(PSEUDONYM_KEY_ENV).is_some() {
        eprintln!("pseudonymization key: from {PSEUDONYM_KEY_ENV} (no key file written)");
    } else if key_path.exists() {
        eprintln!(
            "pseudonymization key: {} exists, kept as it is",
            key_path.display()
        );
    } else {
        let key = create_pseudonym_key(dir)?;
        eprintln!(
            "pseudonymization key: created {} (key id {}, mode 0600). Back it up: pseudonyms can only be recomputed with it.",
            key_path.display(),
            key.id()
        );
    }
    if std::env::var_os(SIGNING_KEY_ENV).is_some() {
        eprintln!("checkpoint signing key: from {SIGNING_KEY_ENV} (no key file written)");
    } else if signing_key_path(dir).exists() {
        eprintln!(
            "checkpoint signing key: {} exists, kept as it is",
            signing_key_path(dir).display()
        );
    } else {
        let path = create_signing_key(dir)?;
        eprintln!(
            "checkpoint signing key: created {} (mode 0600). Give auditors `auditledger key public`.",
            path.display()
        );
    }
    // Validates the keys (environment or file) before any entry is written.
    ctx.pseudonymizer()?;
    crate::keys::load_signing_seed(dir)?;
    let store = match postgres {
        Some(store) => store,
        None => ctx.open_store().await?,
    };
    let (head, alg) = open_stream(store.as_ref(), &ctx.stream, &SystemClock).await?;
    let _: Arc<_> = store.clone();
    println!(
        "ledger ready: {} stream {} ({} entries, head {}, hash {})",
        store.describe(),
        ctx.stream,
        head.seq + 1,
        head.entry_hash,
        alg.name()
    );
    Ok(EXIT_OK)
}
