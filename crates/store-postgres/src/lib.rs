//! The PostgreSQL store of auditledger: the production backend behind [`ledger::Store`].
//!
//! - [`schema`]: the validated name of the PostgreSQL schema that holds one ledger, and the
//!   password-free description of a connection URL.
//! - [`migrate`]: applying `migrations/postgres/` under an advisory lock, and the version check
//!   every connection makes (a schema older or newer than this build is refused).
//! - [`binary`]: the binary COPY row format, written for appends and read for scans.
//! - [`store`]: [`PostgresStore`], the `Store` implementation: group-committed batches by binary
//!   COPY in one transaction, scans streamed by `COPY ... TO STDOUT` in a snapshot.
//!
//! What the database itself guarantees (see `docs/POSTGRES.md`): entries, Merkle nodes and
//! checkpoints are append-only (triggers refuse UPDATE, DELETE and TRUNCATE; the one UPDATE of
//! entries let through removes an old payload under a purge authorization); `(stream, seq)`
//! and `(stream, idem)` are unique; an entry that does not continue the chain is refused. So
//! even a buggy or second writer cannot fork a stream; this crate only maps those refusals to
//! [`ledger::StoreError::Conflict`] so the writer re-reads the head and retries.

pub mod binary;
pub mod error;
pub mod migrate;
pub mod schema;
pub mod store;

pub use error::PostgresError;
pub use migrate::{migrate, schema_status, MigrationReport, SCHEMA_VERSION};
pub use schema::{describe_url, DatabaseUrl, SchemaName, DEFAULT_SCHEMA};
pub use store::{AppendMethod, PostgresOptions, PostgresStore, AUTO_COPY_FROM};
