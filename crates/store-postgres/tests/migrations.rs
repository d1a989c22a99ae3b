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

/// A schema a version-1 build migrated and filled: this build refuses it until migrated, the
/// migration applies versions 2 and 3 only, and the ledger then verifies and runs projections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_upgraded() {
    use std::sync::Arc;

    use ledger::{Store, StreamId};

    // A ledger to copy entries from (the store cannot write a version-1 schema).
    let source = TestSchema::migrated("upgrade_source").await;
    let stream = StreamId::default();
    let store: Arc<dyn Store> = Arc::new(source.store().await);
    store_conformance::fill(store.clone(), &stream, 100, 7).await;
    drop(store);

    // What a version-1 build leaves: its one migration, run by refinery as `migrate` runs it.
    let (schema, db) = schema_at_version("upgrade", 1).await;
    db.batch_execute(&format!(
        "INSERT INTO {0}.entries SELECT * FROM {1}.entries ORDER BY stream, seq;
         INSERT INTO {0}.merkle_nodes SELECT * FROM {1}.merkle_nodes;
         RESET search_path",
        schema.name, source.name
    ))
    .await
    .unwrap();

    let err = PostgresStore::connect(&schema.url, &schema.name)
        .await
        .err()
        .expect("a version-1 schema is refused before migrating");
    assert!(
        matches!(err, PostgresError::SchemaTooOld { found: 1, .. }),
        "{err}"
    );
    let report = migrate(&schema.url, &schema.name).await.unwrap();
    assert_eq!(report.version, SCHEMA_VERSION);
    assert_eq!(
        report.applied,
        [
            (2, "projections".to_owned()),
            (3, "purge".to_owned()),
            (4, "read_model_ids".to_owned())
        ]
    );

    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    let verified = ledger::verify::verify_store(
        store.as_ref(),
        &stream,
        &ledger::VerifyOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.entries, 101);
    store_conformance::projection::run_all(store.clone()).await;
    // The new tables got their grants; entries kept theirs.
    for (table, privilege, granted) in [
        ("read_model_rows", "UPDATE", true),
        ("read_models", "INSERT", true),
        ("read_models", "UPDATE", false),
        ("projection_positions", "DELETE", true),
        ("entries", "UPDATE", false),
        ("entries", "INSERT", true),
    ] {
        let has: bool = db
            .query_one(
                "SELECT has_table_privilege('auditledger_writer', $1, $2)",
                &[&format!("{}.{table}", schema.name), &privilege],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(has, granted, "writer {privilege} on {table}");
    }
    // The purge function (schema 3): the writer may call it, nobody else but the owner.
    for (role, granted) in [("auditledger_writer", true), ("auditledger_auditor", false)] {
        let has: bool = db
            .query_one(
                "SELECT has_function_privilege($1, $2, 'EXECUTE')",
                &[
                    &role,
                    &format!(
                        "{}.purge_payloads(text, bigint, bigint, bigint)",
                        schema.name
                    ),
                ],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(has, granted, "{role} executes purge_payloads");
    }
    // Appending continues the old chain.
    store_conformance::fill(store.clone(), &stream, 3, 3).await;
    assert_eq!(store.head(&stream).await.unwrap().unwrap().seq, 103);
}

/// A schema-3 database with read models: schema 4 moves their rows to integer model ids and
/// keeps every row and position, so the projection resumes where it was instead of rebuilding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_keeps_its_read_models() {
    use ledger::{RowQuery, Store, StreamId};

    let (schema, db) = schema_at_version("upgrade_v3", 3).await;
    // Two projections, two streams, three tables; a position saved with them.
    db.batch_execute(&format!(
        "INSERT INTO {0}.read_model_rows VALUES
             ('phi-access', 'default', 'patient', '2026-01/p1', 7, 100, '{{\"a\": 1}}'),
             ('phi-access', 'default', 'patient', '2026-01/p1', 9, 90, '{{\"a\": 2}}'),
             ('phi-access', 'default', 'day', '2026-01-01', 0, 50, '{{\"n\": 3}}'),
             ('phi-access', 'tenant_b', 'patient', '2026-01/p1', 4, 10, '{{\"b\": 1}}'),
             ('security', 'default', 'patient', 'x', 1, 1, '{{}}');
         INSERT INTO {0}.projection_positions VALUES
             ('phi-access', 'default', 9, decode(repeat('ab', 32), 'hex'), '\\x01', 0);
         RESET search_path",
        schema.name
    ))
    .await
    .unwrap();

    let report = migrate(&schema.url, &schema.name).await.unwrap();
    assert_eq!(report.applied, [(4, "read_model_ids".to_owned())]);
    let store = schema.store().await;
    let stream = StreamId::default();
    let position = store.projection("phi-access", &stream).await.unwrap();
    assert_eq!(position.map(|p| p.seq), Some(9), "the position is kept");
    let patient = store
        .read_model_rows(
            "phi-access",
            &stream,
            &RowQuery::key("patient", "2026-01/p1", 10),
        )
        .await
        .unwrap();
    let got: Vec<(i64, i64, &str)> = patient
        .iter()
        .map(|r| {
            assert_eq!(r.table, "patient");
            (r.ord, r.at.micros(), r.value.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [(9, 90, r#"{"a": 2}"#), (7, 100, r#"{"a": 1}"#)],
        "one model's rows, by time, nobody else's"
    );
    for (projection, stream, table, rows) in [
        ("phi-access", "default", "day", 1),
        ("phi-access", "tenant_b", "patient", 1),
        ("security", "default", "patient", 1),
        ("security", "default", "day", 0),
    ] {
        let found = store
            .read_model_rows(
                projection,
                &StreamId::new(stream).unwrap(),
                &RowQuery::table(table, 10),
            )
            .await
            .unwrap();
        assert_eq!(found.len(), rows, "{projection}/{stream}/{table}");
    }
    // A reset forgets one projection's rows of one stream only.
    store.reset_projection("phi-access", &stream).await.unwrap();
    let left: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {}.read_model_rows", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2);
}

/// The migrations of the schema versions older builds left, in order.
const OLDER_MIGRATIONS: [(&str, &str); 3] = [
    (
        "V1__entries",
        include_str!("../../../migrations/postgres/V1__entries.sql"),
    ),
    (
        "V2__projections",
        include_str!("../../../migrations/postgres/V2__projections.sql"),
    ),
    (
        "V3__purge",
        include_str!("../../../migrations/postgres/V3__purge.sql"),
    ),
];

/// A new schema migrated to `version` only, as a build of that version's `migrate` leaves it
/// (refinery's history included), and a superuser connection whose `search_path` is that
/// schema (callers `RESET search_path` when done with it).
async fn schema_at_version(tag: &str, version: usize) -> (TestSchema, tokio_postgres::Client) {
    let schema = TestSchema::unmigrated(tag).await;
    let mut db = superuser().await;
    db.batch_execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0}",
        schema.name
    ))
    .await
    .unwrap();
    let migrations: Vec<refinery::Migration> = OLDER_MIGRATIONS[..version]
        .iter()
        .map(|(name, sql)| refinery::Migration::unapplied(name, sql).unwrap())
        .collect();
    refinery::Runner::new(&migrations)
        .run_async(&mut db)
        .await
        .unwrap_or_else(|e| panic!("the migrations up to version {version}: {e}"));
    (schema, db)
}
