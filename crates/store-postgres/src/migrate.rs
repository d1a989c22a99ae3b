//! Migrations (`migrations/postgres/`, embedded at build time) and the schema-version check.
//!
//! Migrating takes a session advisory lock first, so two processes (two servers starting, or
//! an operator's `auditledger migrate` beside a deploy) never run the same migration twice: the
//! second waits, then finds everything applied. refinery records each applied migration in
//! `<schema>.refinery_schema_history`; that table's highest version is the schema version every
//! connection checks.

use tokio_postgres::{Client, NoTls};

use crate::error::{pg_message, PostgresError};
use crate::schema::{describe_config, SchemaName};
use crate::store::config_from_url;

mod embedded {
    refinery::embed_migrations!("../../migrations/postgres");
}

/// Highest schema version this build knows (the last file in `migrations/postgres/`).
pub const SCHEMA_VERSION: i32 = 4;

/// Advisory lock key held while migrating ("auditldg" in ASCII). Per database, so every
/// schema of one database migrates one at a time; roles are cluster-wide and the migration
/// tolerates a concurrent creator in another database.
const MIGRATION_LOCK: i64 = 0x6175_6469_746c_6467;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The database, without password.
    pub target: String,
    pub schema: SchemaName,
    /// `(version, name)` of each migration applied by this run (empty when up to date).
    pub applied: Vec<(i32, String)>,
    /// The schema version afterwards.
    pub version: i32,
}

/// Creates `schema` if needed and applies every migration it lacks, under an advisory lock.
/// Refuses a schema newer than this build knows.
pub async fn migrate(url: &str, schema: &SchemaName) -> Result<MigrationReport, PostgresError> {
    let config = config_from_url(url, None)?;
    let target = describe_config(&config);
    let (mut client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| PostgresError::Connect {
                target: target.clone(),
                reason: pg_message(&e),
            })?;
    let conn_task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection ended with an error");
        }
    });
    let failed = |reason: String| PostgresError::Migration {
        target: target.clone(),
        schema: schema.to_string(),
        reason,
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| {
            failed(format!(
                "cannot take the migration lock: {}",
                pg_message(&e)
            ))
        })?;
    let outcome = migrate_locked(&mut client, &target, schema).await;
    // Ending the session releases the lock too; unlocking explicitly just frees it sooner.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = conn_task.await;
    outcome
}

async fn migrate_locked(
    client: &mut Client,
    target: &str,
    schema: &SchemaName,
) -> Result<MigrationReport, PostgresError> {
    let failed = |reason: String| PostgresError::Migration {
        target: target.to_owned(),
        schema: schema.to_string(),
        reason,
    };
    if let Some(found) = schema_version(client, target, schema).await? {
        if found > SCHEMA_VERSION {
            return Err(PostgresError::SchemaTooNew {
                target: target.to_owned(),
                schema: schema.to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
        ))
        .await
        .map_err(|e| failed(pg_message(&e)))?;
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let applied: Vec<(i32, String)> = report
        .applied_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_owned()))
        .collect();
    for (version, name) in &applied {
        tracing::info!(version, name = %name, schema = %schema, "applied PostgreSQL migration");
    }
    let version = schema_version(client, target, schema)
        .await?
        .unwrap_or_default();
    Ok(MigrationReport {
        target: target.to_owned(),
        schema: schema.clone(),
        applied,
        version,
    })
}

/// The version `schema` is at (`None`: never migrated), changing nothing.
pub async fn schema_status(url: &str, schema: &SchemaName) -> Result<Option<i32>, PostgresError> {
    let config = config_from_url(url, None)?;
    let target = describe_config(&config);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| PostgresError::Connect {
            target: target.clone(),
            reason: pg_message(&e),
        })?;
    let conn_task = tokio::spawn(connection);
    let version = schema_version(&client, &target, schema).await;
    drop(client);
    let _ = conn_task.await;
    version
}

/// The schema's version, or `None` when it has never been migrated.
pub(crate) async fn schema_version(
    client: &Client,
    target: &str,
    schema: &SchemaName,
) -> Result<Option<i32>, PostgresError> {
    let db = |e: tokio_postgres::Error| PostgresError::Database {
        target: target.to_owned(),
        reason: pg_message(&e),
    };
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.refinery_schema_history")],
        )
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_one(
            &format!("SELECT MAX(version) FROM {schema}.refinery_schema_history"),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    Ok(version)
}

/// Refuses a schema that is missing, older or newer than [`SCHEMA_VERSION`].
pub(crate) async fn check_version(
    client: &Client,
    target: &str,
    schema: &SchemaName,
) -> Result<(), PostgresError> {
    match schema_version(client, target, schema).await? {
        None => Err(PostgresError::NotMigrated {
            target: target.to_owned(),
            schema: schema.to_string(),
        }),
        Some(found) if found < SCHEMA_VERSION => Err(PostgresError::SchemaTooOld {
            target: target.to_owned(),
            schema: schema.to_string(),
            found,
            known: SCHEMA_VERSION,
        }),
        Some(found) if found > SCHEMA_VERSION => Err(PostgresError::SchemaTooNew {
            target: target.to_owned(),
            schema: schema.to_string(),
            found,
            known: SCHEMA_VERSION,
        }),
        Some(_) => Ok(()),
    }
}
