//! `auditledger migrate`: create or upgrade the PostgreSQL schema.

use clap::Args;
use store_postgres::{migrate, schema_status, SCHEMA_VERSION};

use crate::context::Context;
use crate::{EXIT_DAMAGED, EXIT_OK};

pub const LONG_ABOUT: &str = "Create or upgrade the ledger's PostgreSQL schema (--database-url / DATABASE_URL, \
--database-schema): the entries, merkle_nodes and checkpoints tables, the triggers that make them \
append-only and refuse a forked chain, and the NOLOGIN group roles auditledger_writer (INSERT, SELECT) \
and auditledger_auditor (SELECT).\n\n\
Each migration is applied once and recorded in <schema>.refinery_schema_history. Safe to run again (it \
then changes nothing) and from several processes at once (they take turns on an advisory lock). Run it \
as the schema's owner (a role that may create schemas, tables and roles), not as the service's role. \
Other commands refuse a schema older or newer than they know.\n\n\
The embedded store needs no migrate: it upgrades itself when opened.\n\n\
See docs/POSTGRES.md for creating login roles and granting them.\n\n\
Exit status: 0 up to date; 1 (with --check) migrations are pending; 2 error.";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Change nothing: print the schema's version and exit 1 if migrations are pending (for
    /// deploy pipelines).
    #[arg(long)]
    pub check: bool,
}

pub async fn run(ctx: &Context, args: MigrateArgs) -> anyhow::Result<u8> {
    let Some(url) = &ctx.global.database_url else {
        anyhow::bail!(
            "migrate applies to PostgreSQL: pass --database-url or set DATABASE_URL (the embedded store needs no migration)"
        );
    };
    let schema = ctx.database_schema()?;
    if args.check {
        let found = schema_status(url.expose(), &schema).await?;
        let version = found.map_or_else(|| "none (never migrated)".to_owned(), |v| v.to_string());
        println!(
            "{url} schema {schema}: version {version}, this auditledger knows {SCHEMA_VERSION}"
        );
        return Ok(match found {
            Some(v) if v == SCHEMA_VERSION => EXIT_OK,
            Some(v) if v > SCHEMA_VERSION => {
                anyhow::bail!("schema {schema} is newer ({v}) than this auditledger knows ({SCHEMA_VERSION}): upgrade the binary")
            }
            _ => EXIT_DAMAGED,
        });
    }
    let report = migrate(url.expose(), &schema).await?;
    for (version, name) in &report.applied {
        eprintln!("applied migration V{version}__{name}");
    }
    println!(
        "{} schema {}: at version {} ({})",
        report.target,
        report.schema,
        report.version,
        if report.applied.is_empty() {
            "already up to date".to_owned()
        } else {
            format!("{} migration(s) applied", report.applied.len())
        }
    );
    Ok(EXIT_OK)
}
