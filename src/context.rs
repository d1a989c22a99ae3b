//! What every command needs: the store, the stream, and (for commands that pseudonymize) the
//! key. Opening them is the only place that knows which store backs the ledger.

use std::sync::Arc;

use anyhow::Context as _;
use ledger::{Pseudonymizer, Store, StreamId};
use store_sqlite::SqliteStore;

use crate::cli::GlobalArgs;
use crate::keys::{load_pseudonym_key, KeySource};

pub struct Context {
    pub global: GlobalArgs,
    pub stream: StreamId,
}

impl Context {
    pub fn new(global: GlobalArgs) -> anyhow::Result<Context> {
        let stream = StreamId::new(&global.stream)?;
        Ok(Context { global, stream })
    }

    /// Opens the store: PostgreSQL when a database URL is given (its schema must be migrated
    /// to this build's version), else the embedded one (created when needed).
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Some(url) = &self.global.database_url {
            let store = self.open_postgres(url).await?;
            tracing::debug!(store = %store.describe(), "store opened");
            return Ok(Arc::new(store));
        }
        let dir = self.global.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
            .await?
            .with_context(|| {
                format!(
                    "cannot open the embedded ledger in {}",
                    self.global.data_dir.display()
                )
            })?;
        tracing::debug!(store = %store.describe(), "store opened");
        Ok(Arc::new(store))
    }

    /// The PostgreSQL schema named by `--database-schema`.
    pub fn database_schema(&self) -> anyhow::Result<store_postgres::SchemaName> {
        Ok(store_postgres::SchemaName::new(
            &self.global.database_schema,
        )?)
    }

    async fn open_postgres(
        &self,
        url: &store_postgres::DatabaseUrl,
    ) -> anyhow::Result<store_postgres::PostgresStore> {
        let schema = self.database_schema()?;
        // The error names the server without its password, and what to do.
        Ok(store_postgres::PostgresStore::connect(url.expose(), &schema).await?)
    }

    /// Opens the store and requires the stream to exist (for read-only commands).
    pub async fn open_existing(&self) -> anyhow::Result<Arc<dyn Store>> {
        if self.global.database_url.is_some() {
            // Connecting refuses a schema that was never migrated.
            return self.open_store().await;
        }
        if !self.global.data_dir.join(store_sqlite::DB_FILE).exists() {
            anyhow::bail!(
                "no ledger in {}: run `auditledger init` (or pass --data-dir)",
                self.global.data_dir.display()
            );
        }
        self.open_store().await
    }

    pub fn pseudonymizer(&self) -> anyhow::Result<Pseudonymizer> {
        let (key, source) = load_pseudonym_key(&self.global.data_dir)?;
        match source {
            KeySource::Environment => {
                tracing::debug!(key_id = %key.id(), "pseudonymization key from the environment")
            }
            KeySource::File(path) => {
                tracing::debug!(key_id = %key.id(), path = %path.display(), "pseudonymization key from file")
            }
        }
        Ok(Pseudonymizer::new(key))
    }
}
