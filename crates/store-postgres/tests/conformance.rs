//! The PostgreSQL store against the shared conformance and tamper suites, plus what only a
//! database server has: append-only triggers refusing even the owner, roles, migrations.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{superuser, TestSchema};
use ledger::{Entry, Seq, Store, StreamId};
use store_conformance::{DirectSql, Tamper};
use store_postgres::{PostgresStore, SchemaName};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// An attacker with superuser access: turns the protective triggers off for its session
/// (`session_replication_role = replica` skips ordinary triggers), then edits rows.
struct PostgresTamper {
    client: Client,
    schema: SchemaName,
}

impl PostgresTamper {
    async fn open(schema: &SchemaName) -> PostgresTamper {
        let client = superuser().await;
        client
            .batch_execute("SET session_replication_role = replica")
            .await
            .unwrap();
        PostgresTamper {
            client,
            schema: schema.clone(),
        }
    }

    fn row_params(e: &Entry) -> Vec<Box<dyn ToSql + Sync + Send>> {
        let c = &e.columns;
        vec![
            Box::new(e.stream.as_str().to_owned()),
            Box::new(e.seq as i64),
            Box::new(e.recorded_at.micros()),
            Box::new(e.payload.clone()),
            Box::new(e.payload_digest.0.to_vec()),
            Box::new(e.prev_hash.0.to_vec()),
            Box::new(e.entry_hash.0.to_vec()),
            Box::new(c.kind.as_str().to_owned()),
            Box::new(c.occurred_at.map(|t| t.micros())),
            Box::new(c.action.clone()),
            Box::new(c.outcome.clone()),
            Box::new(c.actor.clone()),
            Box::new(c.patient.clone()),
            Box::new(c.phi),
            Box::new(c.idem.map(|d| d.0.to_vec())),
        ]
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> u64 {
        self.client
            .execute(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }
}

#[async_trait]
impl Tamper for PostgresTamper {
    async fn overwrite(&self, stream: &StreamId, seq: Seq, e: &Entry) {
        let row = PostgresTamper::row_params(e);
        let mut params: Vec<&(dyn ToSql + Sync)> = row.iter().map(|b| b.as_ref() as _).collect();
        let at = seq as i64;
        params.push(&at);
        let n = self
            .exec(
                &format!(
                    "UPDATE {}.entries SET stream = $1, seq = $2, recorded_at = $3, payload = $4, payload_digest = $5,
                     prev_hash = $6, entry_hash = $7, kind = $8, occurred_at = $9, action = $10, outcome = $11,
                     actor = $12, patient = $13, phi = $14, idem = $15
                     WHERE stream = $1 AND seq = $16",
                    self.schema
                ),
                &params,
            )
            .await;
        assert_eq!(n, 1, "overwrite of {stream}/{seq}");
    }

    async fn delete(&self, stream: &StreamId, seq: Seq) {
        let n = self
            .exec(
                &format!(
                    "DELETE FROM {}.entries WHERE stream = $1 AND seq = $2",
                    self.schema
                ),
                &[&stream.as_str(), &(seq as i64)],
            )
            .await;
        assert_eq!(n, 1);
    }

    async fn insert_raw(&self, e: &Entry) {
        let row = PostgresTamper::row_params(e);
        let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(|b| b.as_ref() as _).collect();
        self.exec(
            &format!(
                "INSERT INTO {}.entries ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                self.schema,
                store_postgres::binary::ENTRY_COLUMNS
            ),
            &params,
        )
        .await;
    }

    async fn renumber(&self, stream: &StreamId, from: Seq, delta: i64) {
        // Through a far-away range, so the primary key never sees two rows at one seq.
        const AWAY: i64 = 1_000_000_000;
        let shifted = delta + AWAY;
        self.exec(
            &format!(
                "UPDATE {}.entries SET seq = seq + $3 WHERE stream = $1 AND seq >= $2",
                self.schema
            ),
            &[&stream.as_str(), &(from as i64), &shifted],
        )
        .await;
        self.exec(
            &format!(
                "UPDATE {}.entries SET seq = seq - $2 WHERE stream = $1 AND seq >= $2",
                self.schema
            ),
            &[&stream.as_str(), &AWAY],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour() {
    let schema = TestSchema::migrated("behaviour").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    store_conformance::behaviour::run_all(store).await;
}

/// The default (`Auto`) takes the INSERT for small batches and COPY for large ones; each
/// method forced on every batch size must behave the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_with_each_append_method_forced() {
    for (label, method) in [
        ("behaviour_insert", store_postgres::AppendMethod::Insert),
        ("behaviour_copy", store_postgres::AppendMethod::Copy),
    ] {
        let schema = TestSchema::migrated(label).await;
        let store: Arc<dyn Store> = Arc::new(
            schema
                .store_with(store_postgres::PostgresOptions {
                    append_method: method,
                    ..Default::default()
                })
                .await,
        );
        store_conformance::behaviour::run_all(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections() {
    let schema = TestSchema::migrated("projections").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    store_conformance::projection::run_all(store).await;
}

/// A fresh migrated schema and an attacker on it; the schema is dropped with `schemas`.
async fn attackable(
    label: &str,
    schemas: Arc<Mutex<Vec<TestSchema>>>,
) -> (Arc<dyn Store>, Arc<dyn Tamper>) {
    let schema = TestSchema::migrated(label).await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    let tamper: Arc<dyn Tamper> = Arc::new(PostgresTamper::open(&schema.name).await);
    schemas.lock().unwrap().push(schema);
    (store, tamper)
}

/// A superuser session on the ledger's schema with every trigger on: the database owner (or
/// anyone who got its password) working on the tables directly.
struct PostgresDirect {
    client: Client,
}

#[async_trait]
impl DirectSql for PostgresDirect {
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        self.client.execute(sql, &[]).await.map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })
    }
}

/// A fresh migrated schema and a direct session on it; the schema is dropped with `schemas`.
async fn purgeable(schemas: Arc<Mutex<Vec<TestSchema>>>) -> (Arc<dyn Store>, Arc<dyn DirectSql>) {
    let schema = TestSchema::migrated("purge").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    let client = superuser().await;
    client
        .batch_execute(&format!("SET search_path TO {}", schema.name))
        .await
        .unwrap();
    schemas.lock().unwrap().push(schema);
    (store, Arc::new(PostgresDirect { client }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_follow_the_rule() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::purge::run_all(|| purgeable(schemas.clone())).await;
}

/// The writer role purges through `purge_payloads()` and only through it: the function's
/// checks and the trigger hold for it, it still has no UPDATE, DELETE or TRUNCATE on entries,
/// and a temporary table of its own named `entries` does not stand in for the ledger's (in the
/// function, the purge trigger or the chain trigger). The
/// auditor may not call the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_purges_only_through_the_function() {
    use store_conformance::purge::{
        purge_ledger, purged, snapshot, AUTHORIZATION, INSIDE_FLOOR, PURGED_COLUMNS, RECENT,
    };

    let schema = TestSchema::migrated("purge_roles").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    let stream = StreamId::default();
    purge_ledger(store.clone(), &stream).await;
    let before = snapshot(store.as_ref(), &stream).await;
    let s = &schema.name;
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_owned());

    let w = superuser().await;
    w.batch_execute("SET ROLE auditledger_writer")
        .await
        .unwrap();
    let call = format!("SELECT {s}.purge_payloads($1, $2, $3, $4)");
    let n: i64 = w
        .query_one(&call, &[&"default", &(AUTHORIZATION as i64), &1i64, &5i64])
        .await
        .expect("the writer purges an eligible range")
        .get(0);
    assert_eq!(n, 5);
    let err = w
        .query_one(
            &call,
            &[
                &"default",
                &(AUTHORIZATION as i64),
                &(INSIDE_FLOOR as i64),
                &(INSIDE_FLOOR as i64),
            ],
        )
        .await
        .expect_err("inside the floor");
    assert_eq!(code(err).as_deref(), Some("ALP01"));
    for sql in [
        format!("UPDATE {s}.entries SET {PURGED_COLUMNS} WHERE stream = 'default' AND seq = 6"),
        format!("DELETE FROM {s}.entries WHERE seq = 6"),
        format!("TRUNCATE {s}.entries"),
    ] {
        let err = w.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(code(err).as_deref(), Some("42501"), "{sql}");
    }
    // A look-alike table in the writer's own temporary schema, holding a forged authorization
    // recorded far in the future: the function still reads the ledger's table.
    w.batch_execute(&format!(
        "CREATE TEMP TABLE entries (LIKE {s}.entries);
         INSERT INTO pg_temp.entries (stream, seq, recorded_at, payload_digest, prev_hash, entry_hash, kind, action, phi)
         SELECT stream, 1000, 9000000000000000000, payload_digest, prev_hash, entry_hash, kind, 'retention_purge', false
         FROM {s}.entries WHERE stream = 'default' AND seq = 1;"
    ))
    .await
    .unwrap();
    let err = w
        .query_one(
            &call,
            &[
                &"default",
                &1000i64,
                &(*RECENT.start() as i64),
                &(*RECENT.end() as i64),
            ],
        )
        .await
        .expect_err("a forged authorization in pg_temp");
    assert_eq!(code(err).as_deref(), Some("ALP01"));
    // Nor for the chain trigger: a fork linked to a forged predecessor in pg_temp is refused.
    let cols = store_postgres::binary::ENTRY_COLUMNS;
    let head = store_conformance::purge::HEAD;
    w.batch_execute(&format!(
        "INSERT INTO pg_temp.entries (stream, seq, recorded_at, payload_digest, prev_hash, entry_hash, kind, phi)
         SELECT stream, seq, recorded_at, payload_digest, prev_hash, decode(repeat('ee', 32), 'hex'), kind, false
         FROM {s}.entries WHERE stream = 'default' AND seq = {head};"
    ))
    .await
    .unwrap();
    let fork = format!(
        "INSERT INTO {s}.entries ({cols})
         SELECT stream, seq + 1, recorded_at, payload, payload_digest, decode(repeat('ee', 32), 'hex'), entry_hash, kind,
                occurred_at, action, outcome, actor, patient, phi, NULL
         FROM {s}.entries WHERE stream = 'default' AND seq = {head}"
    );
    let err = w
        .batch_execute(&fork)
        .await
        .expect_err("a fork via pg_temp");
    assert_eq!(code(err).as_deref(), Some("ALC01"));

    let a = superuser().await;
    a.batch_execute("SET ROLE auditledger_auditor")
        .await
        .unwrap();
    let err = a
        .query_one(&call, &[&"default", &(AUTHORIZATION as i64), &6i64, &7i64])
        .await
        .expect_err("the auditor may not purge");
    assert_eq!(code(err).as_deref(), Some("42501"));

    let after = snapshot(store.as_ref(), &stream).await;
    for (b, e) in before.iter().zip(&after) {
        if (1..=5).contains(&b.seq) {
            assert_eq!(e, &purged(b), "entry {}", b.seq);
        } else {
            assert_eq!(e, b, "entry {}", b.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_and_named() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::tamper::run_all(|| attackable("tamper", schemas.clone())).await;
}

/// Truncation and rewrites that keep the chain consistent, caught by checkpoints (issue 5's
/// attacks, on this store as on the embedded one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_are_caught_by_checkpoints() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::rollback::run_all(|| attackable("rollback", schemas.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_projection_is_exactly_once() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::runner::run_all(|| attackable("runner", schemas.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phi_access_projection_is_exact() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::phi_access::run_all(|| attackable("phi_access", schemas.clone())).await;
}

/// Even the owner (a superuser) cannot change a row while the triggers are on (the one UPDATE
/// of entries schema 3 lets through, a purge under its rule, is `purges_follow_the_rule`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_update_delete_and_truncate() {
    let schema = TestSchema::migrated("append_only").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    store_conformance::fill(store.clone(), &StreamId::default(), 40, 5).await;
    let db = superuser().await;
    let s = &schema.name;
    for sql in [
        format!("UPDATE {s}.entries SET action = 'x' WHERE seq = 1"),
        format!("DELETE FROM {s}.entries WHERE seq = 3"),
        format!("DELETE FROM {s}.entries WHERE false"),
        format!("TRUNCATE {s}.entries"),
        format!("UPDATE {s}.merkle_nodes SET idx = idx + 1"),
        format!("DELETE FROM {s}.merkle_nodes"),
        format!("TRUNCATE {s}.merkle_nodes"),
        format!("UPDATE {s}.checkpoints SET note = ''"),
        format!("DELETE FROM {s}.checkpoints"),
        format!("TRUNCATE {s}.checkpoints"),
    ] {
        let err = db.batch_execute(&sql).await.expect_err(&sql);
        let msg = err
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(
            msg.contains("append-only") || msg.contains("purge refused"),
            "{sql}: {err:?}"
        );
    }
    let count: i64 = db
        .query_one(&format!("SELECT count(*) FROM {s}.entries"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 41);
    let nodes: i64 = db
        .query_one(&format!("SELECT count(*) FROM {s}.merkle_nodes"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(nodes >= 1, "a tree of 41 leaves stores its level-5 node");
}

/// A fork written straight into the table, bypassing the writer, is refused by the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_a_fork() {
    let schema = TestSchema::migrated("fork").await;
    let store: Arc<dyn Store> = Arc::new(schema.store().await);
    let s = StreamId::default();
    store_conformance::fill(store.clone(), &s, 5, 5).await;
    let db = superuser().await;
    let cols = store_postgres::binary::ENTRY_COLUMNS;
    let n = &schema.name;
    // Seq 6 pointing at a hash that is not entry 5's.
    let bad_link = format!(
        "INSERT INTO {n}.entries ({cols}) SELECT stream, 6, recorded_at, payload, payload_digest, entry_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, NULL FROM {n}.entries WHERE seq = 4"
    );
    // Seq 7 with no seq 6 before it.
    let gap = format!(
        "INSERT INTO {n}.entries ({cols}) SELECT stream, 7, recorded_at, payload, payload_digest, entry_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, NULL FROM {n}.entries WHERE seq = 5"
    );
    // A second genesis of a new stream with a non-zero prev_hash.
    let bad_genesis = format!(
        "INSERT INTO {n}.entries ({cols}) SELECT 'other', 0, recorded_at, payload, payload_digest, entry_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, NULL FROM {n}.entries WHERE seq = 0"
    );
    for sql in [bad_link, gap, bad_genesis] {
        let err = db.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("ALC01"),
            "{sql}: {err:?}"
        );
    }
    // A second entry at an existing seq is refused by the primary key.
    let twice = format!(
        "INSERT INTO {n}.entries ({cols}) SELECT stream, seq, recorded_at, payload, payload_digest, prev_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, NULL FROM {n}.entries WHERE seq = 5"
    );
    let err = db.batch_execute(&twice).await.expect_err("duplicate seq");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err:?}");
    assert_eq!(store.head(&s).await.unwrap().unwrap().seq, 5);
}

async fn login_as(role: &str, password: &str) -> Client {
    let mut config: tokio_postgres::Config = common::database_url().parse().unwrap();
    config.user(role).password(password);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("log in as {role}: {e:?}"));
    tokio::spawn(connection);
    client
}

/// What an operator does (docs/POSTGRES.md): a LOGIN role in the writer group can append and
/// read through the store, and cannot UPDATE, DELETE or TRUNCATE; an auditor can only read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_auditor_roles() {
    let schema = TestSchema::migrated("roles").await;
    let db = superuser().await;
    let writer = format!("{}_w", schema.name);
    let auditor = format!("{}_a", schema.name);
    db.batch_execute(&format!(
        "CREATE ROLE {writer} LOGIN PASSWORD 'pw' IN ROLE auditledger_writer;
         CREATE ROLE {auditor} LOGIN PASSWORD 'pw' IN ROLE auditledger_auditor;"
    ))
    .await
    .unwrap();
    let (schema_name, writer2, auditor2) = (schema.name.clone(), writer.clone(), auditor.clone());
    let result = async move {
        let (writer, auditor) = (writer2, auditor2);
        // Through the store, as the service would run.
        let mut url: tokio_postgres::Config = common::database_url().parse().unwrap();
        url.user(&writer).password("pw");
        let host = match &url.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        let writer_url = format!(
            "host={host} port={} user={writer} password=pw dbname={}",
            url.get_ports().first().copied().unwrap_or(5432),
            url.get_dbname().unwrap_or("test")
        );
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect(&writer_url, &schema_name)
                .await
                .expect("the writer role connects"),
        );
        assert!(!store.describe().contains("pw"), "{}", store.describe());
        let receipts = store_conformance::fill(store.clone(), &StreamId::default(), 10, 3).await;
        assert_eq!(receipts.len(), 10);
        let report = ledger::verify::verify_store(
            store.as_ref(),
            &StreamId::default(),
            &ledger::VerifyOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
        assert!(report.ok, "{report:?}");

        let s = &schema_name;
        let w = login_as(&writer, "pw").await;
        let n: i64 = w
            .query_one(&format!("SELECT count(*) FROM {s}.entries"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 11);
        w.execute(
            &format!("INSERT INTO {s}.checkpoints (stream, size, note) VALUES ('default', 1, 'n')"),
            &[],
        )
        .await
        .expect("the writer inserts");
        for sql in [
            format!("UPDATE {s}.entries SET action = 'x' WHERE seq = 1"),
            format!("DELETE FROM {s}.entries WHERE seq = 3"),
            format!("TRUNCATE {s}.entries"),
            format!("UPDATE {s}.checkpoints SET note = 'x'"),
            format!("DELETE FROM {s}.merkle_nodes"),
            format!("TRUNCATE {s}.checkpoints"),
        ] {
            let err = w.batch_execute(&sql).await.expect_err(&sql);
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{sql}: {err:?}"
            );
        }

        let a = login_as(&auditor, "pw").await;
        let n: i64 = a
            .query_one(&format!("SELECT count(*) FROM {s}.entries"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 11);
        for sql in [
            format!("INSERT INTO {s}.checkpoints (stream, size, note) VALUES ('default', 2, 'n')"),
            format!("UPDATE {s}.entries SET action = 'x' WHERE seq = 1"),
            format!("DELETE FROM {s}.entries WHERE seq = 3"),
            format!("TRUNCATE {s}.entries"),
        ] {
            let err = a.batch_execute(&sql).await.expect_err(&sql);
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{sql}: {err:?}"
            );
        }
    };
    // Catch the panic so the cluster-wide roles are dropped either way.
    let outcome = tokio::spawn(result).await;
    db.batch_execute(&format!(
        "DROP OWNED BY {writer}, {auditor}; DROP ROLE {writer}; DROP ROLE {auditor};"
    ))
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The writer runs projections (schema 2 grants it UPDATE and DELETE on the read-model tables,
/// which are rebuildable), and still cannot change an entry; the auditor reads read models and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_runs_projections_but_cannot_change_entries() {
    use ledger::{ReadModelRow, RowChange, RowQuery, StoreError};
    use store_conformance::projection::{at, delete, saved};

    let put = |key: &str, micros: i64, value: &str| {
        RowChange::Put(ReadModelRow {
            table: "t".into(),
            key: key.into(),
            ord: 0,
            at: at(micros),
            value: value.into(),
        })
    };

    let schema = TestSchema::migrated("roles_projection").await;
    let db = superuser().await;
    let writer = format!("{}_w", schema.name);
    let auditor = format!("{}_a", schema.name);
    db.batch_execute(&format!(
        "CREATE ROLE {writer} LOGIN PASSWORD 'pw' IN ROLE auditledger_writer;
         CREATE ROLE {auditor} LOGIN PASSWORD 'pw' IN ROLE auditledger_auditor;"
    ))
    .await
    .unwrap();
    let (schema_name, writer2, auditor2) = (schema.name.clone(), writer.clone(), auditor.clone());
    let result = async move {
        let (writer, auditor) = (writer2, auditor2);
        let s = &schema_name;
        let stream = StreamId::default();
        let store: Arc<dyn Store> = Arc::new(
            PostgresStore::connect(&url_as(&writer, "pw"), s)
                .await
                .expect("the writer role connects"),
        );
        store_conformance::fill(store.clone(), &stream, 10, 5).await;

        // Through the store: insert, upsert (UPDATE), delete, move the position, reset.
        store
            .commit_projection(
                "p",
                &stream,
                None,
                &saved(4),
                &[put("a", 1, r#"{"n": 1}"#), put("b", 2, r#"{"n": 1}"#)],
            )
            .await
            .expect("the writer commits a first position and rows");
        store
            .commit_projection(
                "p",
                &stream,
                Some(4),
                &saved(10),
                &[put("a", 3, r#"{"n": 2}"#), delete("t", "b", 0)],
            )
            .await
            .expect("the writer updates and deletes rows and moves the position");
        let rows = store
            .read_model_rows("p", &stream, &RowQuery::table("t", 10))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "a");
        assert!(matches!(
            store
                .commit_projection("p", &stream, Some(4), &saved(11), &[] as &[RowChange])
                .await,
            Err(StoreError::Conflict(_))
        ));
        store.reset_projection("p", &stream).await.expect("reset");
        assert_eq!(store.projection("p", &stream).await.unwrap(), None);
        store
            .commit_projection("p", &stream, None, &saved(10), &[put("c", 4, "{}")])
            .await
            .unwrap();

        // Directly, as the writer: the read-model tables yes, entries no.
        let w = login_as(&writer, "pw").await;
        for sql in [
            format!("UPDATE {s}.read_model_rows SET at = at + 1"),
            format!("UPDATE {s}.projection_positions SET updated_at = 0"),
            format!("DELETE FROM {s}.read_model_rows WHERE key = 'nothing'"),
        ] {
            w.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        for sql in [
            format!("UPDATE {s}.entries SET action = 'x' WHERE seq = 1"),
            format!("DELETE FROM {s}.entries WHERE seq = 3"),
            format!("TRUNCATE {s}.entries"),
            format!("DELETE FROM {s}.merkle_nodes"),
            format!("UPDATE {s}.checkpoints SET note = 'x'"),
            // TRUNCATE is not needed to reset (DELETE is) and not granted.
            format!("TRUNCATE {s}.read_model_rows"),
            // A registered read model's id is never changed or removed (stores cache it).
            format!("UPDATE {s}.read_models SET tbl = 'x'"),
            format!("DELETE FROM {s}.read_models"),
        ] {
            let err = w.batch_execute(&sql).await.expect_err(&sql);
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{sql}: {err:?}"
            );
        }

        // The auditor reads the read models and changes nothing.
        let a = login_as(&auditor, "pw").await;
        let n: i64 = a
            .query_one(&format!("SELECT count(*) FROM {s}.read_model_rows"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        a.query_one(
            &format!("SELECT seq FROM {s}.projection_positions WHERE projection = 'p'"),
            &[],
        )
        .await
        .expect("the auditor reads positions");
        for sql in [
            format!("INSERT INTO {s}.read_model_rows VALUES (1, 'x', 0, 0, '{{}}')"),
            format!("INSERT INTO {s}.read_models (projection, stream, tbl) VALUES ('p', 'default', 'u')"),
            format!("UPDATE {s}.read_model_rows SET at = 0"),
            format!("DELETE FROM {s}.read_model_rows"),
            format!("DELETE FROM {s}.projection_positions"),
        ] {
            let err = a.batch_execute(&sql).await.expect_err(&sql);
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{sql}: {err:?}"
            );
        }
        let report = ledger::verify::verify_store(
            store.as_ref(),
            &stream,
            &ledger::VerifyOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.entries, 11);
    };
    // Catch the panic so the cluster-wide roles are dropped either way.
    let outcome = tokio::spawn(result).await;
    db.batch_execute(&format!(
        "DROP OWNED BY {writer}, {auditor}; DROP ROLE {writer}; DROP ROLE {auditor};"
    ))
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A key=value connection string for `role` on the test database.
fn url_as(role: &str, password: &str) -> String {
    let url: tokio_postgres::Config = common::database_url().parse().unwrap();
    let host = match &url.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    format!(
        "host={host} port={} user={role} password={password} dbname={}",
        url.get_ports().first().copied().unwrap_or(5432),
        url.get_dbname().unwrap_or("test")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_checks_and_purges() {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    store_conformance::retention::run_all(|| attackable("retention", schemas.clone())).await;
}

/// A migrated schema whose `read_model_rows` autovacuum leaves alone (the test decides when the
/// table has statistics), its store, and a superuser session.
async fn unvacuumed_read_models(tag: &str) -> (TestSchema, PostgresStore, Client) {
    let schema = TestSchema::migrated(tag).await;
    let store = schema.store().await;
    let db = superuser().await;
    db.batch_execute(&format!(
        "ALTER TABLE {}.read_model_rows SET (autovacuum_enabled = false)",
        schema.name
    ))
    .await
    .unwrap();
    (schema, store, db)
}

/// Rows `first..first + n` of table `t`, spread over 5 000 keys (`k00000`...), one per instant.
fn rows_over_5000_keys(first: usize, n: usize) -> Vec<ledger::RowChange> {
    (first..first + n)
        .map(|i| {
            ledger::RowChange::Put(ledger::ReadModelRow {
                table: "t".into(),
                key: format!("k{:05}", i % 5_000),
                ord: i as i64,
                at: store_conformance::projection::at(i as i64),
                value: "{}".into(),
            })
        })
        .collect()
}

/// The id of table `t` of projection `p` over the default stream.
async fn model_of_t(db: &Client, s: &SchemaName) -> i32 {
    db.query_one(
        &format!("SELECT id FROM {s}.read_models WHERE projection = 'p' AND stream = 'default' AND tbl = 't'"),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The plan PostgreSQL gives `statement` (`EXPLAIN` prefixed), one line per plan node.
async fn explain(db: &Client, statement: &str) -> String {
    let lines: Vec<String> = db
        .query(&format!("EXPLAIN {statement}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.join("\n")
}

/// After a large commit into a read-model table without planner statistics (autovacuum off, as
/// on some servers, or not yet run), the store analyzes it, so that one key's range is read
/// through the by-key index. Without statistics PostgreSQL may walk the by-time index over the
/// whole range instead (measured: the disclosures report, 31 s instead of 0.15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_gives_the_read_models_statistics() {
    use store_conformance::projection::{at, saved};

    let (schema, store, db) = unvacuumed_read_models("analyze").await;
    let s = &schema.name;
    let analyzed = || async {
        db.query_one(
            &format!("SELECT COALESCE(last_analyze, last_autoanalyze) IS NOT NULL FROM pg_stat_user_tables WHERE relid = '{s}.read_model_rows'::regclass"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    };
    let stream = StreamId::default();
    store
        .commit_projection("p", &stream, None, &saved(1), &rows_over_5000_keys(0, 100))
        .await
        .unwrap();
    assert!(!analyzed().await, "a small commit leaves it to autovacuum");
    store
        .commit_projection(
            "p",
            &stream,
            Some(1),
            &saved(2),
            &rows_over_5000_keys(100, 20_000),
        )
        .await
        .unwrap();
    assert!(
        analyzed().await,
        "a large commit analyzes a table that never was"
    );
    // One key over the whole time range: the case the by-time index serves worst (the key's
    // rows come from the primary key, sorted by time; see migrations/postgres/V4).
    let (from, to) = (at(0).micros(), at(1_000_000).micros());
    let model = model_of_t(&db, s).await;
    let plan = explain(
        &db,
        &format!("SELECT * FROM {s}.read_model_rows WHERE model = {model} AND key = 'k00042' AND at >= {from} AND at < {to} ORDER BY at, key, ord LIMIT 10000"),
    )
    .await;
    assert!(plan.contains("read_model_rows_pkey"), "{plan}");
}

/// A key read over a time range is planned for its values at every call, never with a
/// prepared statement's generic plan. The statistics here are made as wrong as they were at
/// 10 M entries (far too few distinct keys), where the generic plan walks the by-time index
/// across the whole range and the disclosures report took 107-115 s instead of 0.64 s. The
/// test first shows that trap (a generic plan takes the by-time index, a plan for the values
/// the primary key), then reads through the store more often than PostgreSQL's five custom
/// plans before it goes generic, and checks in the server's index statistics that every read
/// used the primary key and none the by-time index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reads_never_take_a_generic_plan() {
    use ledger::RowQuery;
    use store_conformance::projection::{at, saved};

    let (schema, store, db) = unvacuumed_read_models("generic").await;
    let s = &schema.name;
    let stream = StreamId::default();
    store
        .commit_projection(
            "p",
            &stream,
            None,
            &saved(1),
            &rows_over_5000_keys(0, 20_000),
        )
        .await
        .unwrap();
    db.batch_execute(&format!(
        "ALTER TABLE {s}.read_model_rows ALTER COLUMN key SET (n_distinct = 50);
         ANALYZE {s}.read_model_rows"
    ))
    .await
    .unwrap();
    let model = model_of_t(&db, s).await;
    let (from, to) = (at(0).micros(), at(1_000_000).micros());

    // The trap: the same statement, prepared, planned generically and for its values.
    db.batch_execute(&format!(
        "PREPARE key_range(int4, text, int8, int8, int8) AS
         SELECT key, ord, at, value::text FROM {s}.read_model_rows
         WHERE model = $1 AND key = $2 AND at >= $3 AND at < $4 ORDER BY at, key, ord LIMIT $5"
    ))
    .await
    .unwrap();
    let plan = |mode: &'static str| {
        let db = &db;
        async move {
            db.batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await
                .unwrap();
            explain(
                db,
                &format!("EXECUTE key_range({model}, 'k00042', {from}, {to}, 10000)"),
            )
            .await
        }
    };
    let generic = plan("force_generic_plan").await;
    assert!(generic.contains("read_model_rows_at"), "{generic}");
    let custom = plan("force_custom_plan").await;
    assert!(custom.contains("read_model_rows_pkey"), "{custom}");

    let scans = || async {
        db.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        let row = db
            .query_one(
                &format!(
                    "SELECT COALESCE(sum(idx_scan) FILTER (WHERE indexrelname = 'read_model_rows_pkey'), 0)::int8,
                            COALESCE(sum(idx_scan) FILTER (WHERE indexrelname = 'read_model_rows_at'), 0)::int8
                     FROM pg_stat_user_indexes WHERE relid = '{s}.read_model_rows'::regclass"
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    let (by_key_before, by_time_before) = scans().await;
    let reads = 12;
    for k in 0..reads {
        let key = format!("k{:05}", k * 7);
        let query = RowQuery {
            from: Some(at(0)),
            to: Some(at(1_000_000)),
            ..RowQuery::key("t", &key, 10_000)
        };
        let found = store.read_model_rows("p", &stream, &query).await.unwrap();
        assert_eq!(found.len(), 4, "{key}");
    }
    // Each backend reports its counts to the statistics a little after it goes idle.
    let mut waited = 0;
    let (by_key, by_time) = loop {
        let (by_key, by_time) = scans().await;
        if by_key - by_key_before >= reads || waited >= 300 {
            break (by_key, by_time);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    };
    assert!(
        by_key - by_key_before >= reads,
        "the {reads} reads reached the statistics: {} primary-key scans",
        by_key - by_key_before
    );
    assert_eq!(
        by_time - by_time_before,
        0,
        "no read walked the by-time index"
    );
}

/// Reading entries in `seq` order (a projection's `read`, verify's `scan`) walks the primary
/// key and never sorts: measured at 1 M entries, a projection's reads sorted the rest of the
/// table to disk once per chunk while the table had no statistics. Here the store connects with
/// the smallest `work_mem` and no temporary files allowed, so any sort of these entries fails
/// the read; both plans are tried, before and after the table has statistics.
#[tokio::test]
async fn ordered_entry_reads_never_sort() {
    let schema = TestSchema::migrated("ordered").await;
    let s = &schema.name;
    let db = superuser().await;
    db.batch_execute(&format!(
        "ALTER TABLE {s}.entries SET (autovacuum_enabled = false)"
    ))
    .await
    .unwrap();
    let stream = StreamId::default();
    let n = 3_000; // a few hundred kB of rows: far beyond 64 kB of work_mem
    store_conformance::fill(Arc::new(schema.store().await), &stream, n, 500).await;
    let separator = if schema.url.contains('?') { '&' } else { '?' };
    let strict_url = format!(
        "{}{separator}options=-c%20work_mem%3D64kB%20-c%20temp_file_limit%3D0",
        schema.url
    );
    let strict = PostgresStore::connect(&strict_url, s).await.unwrap();
    for statistics in ["none", "analyzed"] {
        let page = strict
            .read(&stream, 100, 2_500)
            .await
            .unwrap_or_else(|e| panic!("read with {statistics} statistics: {e}"));
        let seqs: Vec<Seq> = page.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (100..2_600).collect::<Vec<Seq>>());
        let mut chunks = strict.scan(&stream, 0);
        let mut next = 0;
        while let Some(chunk) = chunks.recv().await {
            for e in chunk.unwrap_or_else(|e| panic!("scan with {statistics} statistics: {e}")) {
                assert_eq!(e.seq, next);
                next += 1;
            }
        }
        assert_eq!(next, n as Seq + 1, "the genesis entry and every event");
        db.batch_execute(&format!("ANALYZE {s}.entries"))
            .await
            .unwrap();
    }
}

/// Two stores (two processes' caches) writing a new read-model table at once register it once:
/// one commit wins the position, the other is a conflict, and the rows sit under one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_commits_register_one_read_model() {
    use ledger::{ReadModelRow, RowChange, RowQuery, StoreError};
    use store_conformance::projection::{at, saved};

    let schema = TestSchema::migrated("register").await;
    let stream = StreamId::default();
    let (a, b) = (schema.store().await, schema.store().await);
    async fn commit(store: &PostgresStore, n: i64) -> Result<(), StoreError> {
        let changes = [RowChange::Put(ReadModelRow {
            table: "t".into(),
            key: "k".into(),
            ord: n,
            at: at(n),
            value: "{}".into(),
        })];
        store
            .commit_projection("p", &StreamId::default(), None, &saved(1), &changes)
            .await
    }
    let (ra, rb) = tokio::join!(commit(&a, 1), commit(&b, 2));
    assert!(
        matches!(
            (&ra, &rb),
            (Ok(()), Err(StoreError::Conflict(_))) | (Err(StoreError::Conflict(_)), Ok(()))
        ),
        "{ra:?} {rb:?}"
    );
    let registered: i64 = superuser()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {}.read_models", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 1);
    let rows = schema
        .store()
        .await
        .read_model_rows("p", &stream, &RowQuery::table("t", 10))
        .await
        .unwrap();
    let winner = if ra.is_ok() { 1 } else { 2 };
    assert_eq!(rows.iter().map(|r| r.ord).collect::<Vec<_>>(), [winner]);
}
