//! Migrations: idempotent, safe from two processes at once, and the version check that
//! refuses a schema older or newer than this build.

mod common;

use common::{superuser, TestSchema};
use store_postgres::{migrate, PostgresError, PostgresStore, SCHEMA_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_once() {
    let schema = TestSchema::unmigrated("migrate_twice").await;
    let first = migrate(&schema.url, &schema.name).await.unwrap();
    assert_eq!(first.version, SCHEMA_VERSION);
    assert_eq!(first.applied.len(), SCHEMA_VERSION as usize);
    let second = migrate(&schema.url, &schema.name).await.unwrap();
    assert_eq!(second.version, SCHEMA_VERSION);
    assert!(second.applied.is_empty(), "{second:?}");
    let rows: i64 = superuser()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.refinery_schema_history",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::from(SCHEMA_VERSION));
    PostgresStore::connect(&schema.url, &schema.name)
        .await
        .expect("a migrated schema opens");
}

/// Two migrations of one fresh schema at once (as two servers starting together): the
/// advisory lock makes one wait, so both succeed and the migration is applied exactly once.
/// Separate tasks on separate connections, started together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let schema = TestSchema::unmigrated("migrate_concurrent").await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (url, name) = (schema.url.clone(), schema.name.clone());
            tokio::spawn(async move { migrate(&url, &name).await })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        let report = run
            .await
            .unwrap()
            .expect("every concurrent migration succeeds");
        assert_eq!(report.version, SCHEMA_VERSION);
        applied += report.applied.len();
    }
    assert_eq!(
        applied, SCHEMA_VERSION as usize,
        "each migration applied once"
    );
    PostgresStore::connect(&schema.url, &schema.name)
        .await
        .expect("a migrated schema opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_never_migrated_is_refused() {
    let schema = TestSchema::unmigrated("not_migrated").await;
    let err = PostgresStore::connect(&schema.url, &schema.name)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, PostgresError::NotMigrated { .. }), "{err}");
    assert!(err.to_string().contains("auditledger migrate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_by_connect_and_migrate() {
    let schema = TestSchema::migrated("too_new").await;
    superuser()
        .await
        .batch_execute(&format!(
            "INSERT INTO {0}.refinery_schema_history (version, name, applied_on, checksum)
             SELECT 99, 'future', applied_on, checksum FROM {0}.refinery_schema_history WHERE version = 1",
            schema.name
        ))
        .await
        .unwrap();
    let err = PostgresStore::connect(&schema.url, &schema.name)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, PostgresError::SchemaTooNew { found: 99, .. }),
        "{text}"
    );
    assert!(
        text.contains("99")
            && text.contains(&SCHEMA_VERSION.to_string())
            && text.contains("upgrade"),
        "{text}"
    );
    let err = migrate(&schema.url, &schema.name)
        .await
        .expect_err("refused");
    assert!(matches!(err, PostgresError::SchemaTooNew { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_schema_is_refused() {
    // A history table recording only version 0: what an older build would have left.
    let schema = TestSchema::unmigrated("too_old").await;
    superuser()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA {0};
             CREATE TABLE {0}.refinery_schema_history (version int4 PRIMARY KEY, name text, applied_on text, checksum text);
             INSERT INTO {0}.refinery_schema_history VALUES (0, 'ancient', '', '0');",
            schema.name
        ))
        .await
        .unwrap();
    let err = PostgresStore::connect(&schema.url, &schema.name)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, PostgresError::SchemaTooOld { found: 0, .. }),
        "{text}"
    );
    assert!(
        text.contains("version 0") && text.contains("auditledger migrate"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_schema_names_and_urls_are_refused_before_connecting() {
    assert!(matches!(
        store_postgres::SchemaName::new("x; DROP TABLE y"),
        Err(PostgresError::InvalidSchema(_))
    ));
    let err = PostgresStore::connect("postgres://u:secret@host:notaport/db", &Default::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, PostgresError::InvalidUrl(_)), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
}
