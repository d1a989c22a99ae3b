//! Errors of connecting and migrating (the `Store` methods report [`ledger::StoreError`]).

/// Why a PostgreSQL ledger could not be opened or migrated. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error(
        "invalid schema name {0:?}: use 1-63 lower-case letters, digits and '_', starting with a letter or '_', not 'pg_'"
    )]
    InvalidSchema(String),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("schema {schema} on {target} holds no auditledger tables: run `auditledger migrate`")]
    NotMigrated { target: String, schema: String },
    #[error(
        "schema {schema} on {target} is at version {found}, older than version {known} that this auditledger needs: run `auditledger migrate`"
    )]
    SchemaTooOld {
        target: String,
        schema: String,
        found: i32,
        known: i32,
    },
    #[error(
        "schema {schema} on {target} is at version {found}, newer than version {known} that this auditledger knows: upgrade the auditledger binary"
    )]
    SchemaTooNew {
        target: String,
        schema: String,
        found: i32,
        known: i32,
    },
    #[error("migration of schema {schema} on {target} failed: {reason}")]
    Migration {
        target: String,
        schema: String,
        reason: String,
    },
    #[error("database error on {target}: {reason}")]
    Database { target: String, reason: String },
}

/// A tokio-postgres error with the server's message and SQLSTATE when there is one (its
/// `Display` alone says only "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                s.push_str("; ");
                s.push_str(detail);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}
