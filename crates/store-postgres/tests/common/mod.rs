//! What every PostgreSQL test needs: the database URL, a fresh schema of its own (dropped at
//! the end, even when the test panics) and a superuser connection. An unreachable database
//! fails the test with a message saying how to get one; it never skips.

#![allow(dead_code)] // each test file uses a different part

use std::sync::atomic::{AtomicU32, Ordering};

use store_postgres::{PostgresOptions, PostgresStore, SchemaName};
use tokio_postgres::{Client, NoTls};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A superuser connection (the test database's owner), or a panic naming what to do.
pub async fn superuser() -> Client {
    let url = database_url();
    let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {} ({e}). Database tests never skip: start one with \
             `eval \"$(scripts/start-postgres.sh)\"` or set DATABASE_URL.",
            store_postgres::describe_url(&url)
        ),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A schema name no other test (in this or another process) uses.
pub fn unique_schema(tag: &str) -> SchemaName {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    SchemaName::new(&format!("t_{tag}_{}_{n}_{nanos}", std::process::id()))
        .expect("test schema names are valid")
}

/// A schema that is dropped (with everything in it) when this guard goes out of scope.
pub struct TestSchema {
    pub name: SchemaName,
    pub url: String,
}

impl TestSchema {
    /// A new, empty, migrated schema.
    pub async fn migrated(tag: &str) -> TestSchema {
        let t = TestSchema::unmigrated(tag).await;
        store_postgres::migrate(&t.url, &t.name)
            .await
            .unwrap_or_else(|e| panic!("migrating {}: {e}", t.name));
        t
    }

    /// A name reserved for this test (nothing created yet; dropped at the end if created).
    pub async fn unmigrated(tag: &str) -> TestSchema {
        // Fails loudly here when PostgreSQL is unreachable.
        drop(superuser().await);
        TestSchema {
            name: unique_schema(tag),
            url: database_url(),
        }
    }

    pub async fn store(&self) -> PostgresStore {
        self.store_with(PostgresOptions::default()).await
    }

    pub async fn store_with(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect_with(&self.url, &self.name, options)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread
        // with a runtime of its own.
        let name = self.name.clone();
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}
