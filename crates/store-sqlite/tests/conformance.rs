//! The embedded store against the shared conformance and tamper suites, on real SQLite files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ledger::{Entry, Seq, Store, StreamId};
use rusqlite::{params, Connection};
use store_conformance::{DirectSql, Tamper};
use store_sqlite::SqliteStore;

/// An attacker with write access to the file: drops the protective triggers, then edits rows.
struct SqliteTamper {
    conn: Mutex<Connection>,
}

impl SqliteTamper {
    fn open(path: PathBuf) -> SqliteTamper {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(
            "DROP TRIGGER entries_update_only_purges; DROP TRIGGER entries_purge_authorized;
             DROP TRIGGER entries_no_delete; DROP TRIGGER entries_continue_chain;",
        )
        .unwrap();
        SqliteTamper {
            conn: Mutex::new(conn),
        }
    }
}

#[async_trait]
impl Tamper for SqliteTamper {
    async fn overwrite(&self, stream: &StreamId, seq: Seq, e: &Entry) {
        // Replacing a row whole is what an attacker with the file does; the effect on every
        // stored field is the same as an UPDATE of each column.
        self.delete(stream, seq).await;
        self.insert_raw(e).await;
    }

    async fn delete(&self, stream: &StreamId, seq: Seq) {
        let n = self
            .conn
            .lock()
            .unwrap()
            .execute(
                "DELETE FROM entries WHERE stream = ?1 AND seq = ?2",
                params![stream.as_str(), seq as i64],
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    async fn insert_raw(&self, e: &Entry) {
        let c = &e.columns;
        self.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO entries (stream, seq, recorded_at, payload, payload_digest, prev_hash, entry_hash, kind, occurred_at,
                 action, outcome, actor, patient, phi, idem) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    e.stream.as_str(), e.seq as i64, e.recorded_at.micros(), e.payload, &e.payload_digest.0[..],
                    &e.prev_hash.0[..], &e.entry_hash.0[..], c.kind.as_str(), c.occurred_at.map(|t| t.micros()),
                    c.action, c.outcome, c.actor, c.patient, c.phi, c.idem.as_ref().map(|d| &d.0[..]),
                ],
            )
            .unwrap();
    }

    async fn renumber(&self, stream: &StreamId, from: Seq, delta: i64) {
        // Through a far-away range, so the primary key never sees two rows at one seq.
        const AWAY: i64 = 1_000_000_000;
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "UPDATE entries SET seq = seq + ?3 + ?4 WHERE stream = ?1 AND seq >= ?2",
            params![stream.as_str(), from as i64, delta, AWAY],
        )
        .unwrap();
        conn.execute(
            "UPDATE entries SET seq = seq - ?2 WHERE stream = ?1 AND seq >= ?2",
            params![stream.as_str(), AWAY],
        )
        .unwrap();
    }
}

/// A second connection to the file with every trigger in place: what any program that can
/// write the file does without going through the store.
struct SqliteDirect {
    conn: Mutex<Connection>,
}

#[async_trait]
impl DirectSql for SqliteDirect {
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        let conn = self.conn.lock().unwrap();
        conn.execute(sql, [])
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }
}

/// A fresh ledger file and a direct connection to it; the directory lives as long as `dirs`.
async fn purgeable(
    dirs: Arc<Mutex<Vec<tempfile::TempDir>>>,
) -> (Arc<dyn Store>, Arc<dyn DirectSql>) {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let conn = Connection::open(dir.path().join(store_sqlite::DB_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    dirs.lock().unwrap().push(dir);
    (
        store,
        Arc::new(SqliteDirect {
            conn: Mutex::new(conn),
        }),
    )
}

/// A fresh ledger file and an attacker on it; the directory lives as long as `dirs`.
async fn attackable(dirs: Arc<Mutex<Vec<tempfile::TempDir>>>) -> (Arc<dyn Store>, Arc<dyn Tamper>) {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let tamper: Arc<dyn Tamper> =
        Arc::new(SqliteTamper::open(dir.path().join(store_sqlite::DB_FILE)));
    dirs.lock().unwrap().push(dir);
    (store, tamper)
}

fn fresh_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour() {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store_conformance::behaviour::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections() {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store_conformance::projection::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_and_named() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::tamper::run_all(|| attackable(dirs.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_are_caught_by_checkpoints() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::rollback::run_all(|| attackable(dirs.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_projection_is_exactly_once() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::runner::run_all(|| attackable(dirs.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_follow_the_rule() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::purge::run_all(|| purgeable(dirs.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phi_access_projection_is_exact() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::phi_access::run_all(|| attackable(dirs.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_update_and_delete() {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store_conformance::fill(store, &StreamId::default(), 3, 3).await;
    let conn = Connection::open(dir.path().join(store_sqlite::DB_FILE)).unwrap();
    let update = conn
        .execute("UPDATE entries SET action = 'x' WHERE seq = 1", [])
        .unwrap_err();
    // Schema 3 lets one UPDATE through, a purge under its rule (see `purges_follow_the_rule`).
    assert!(update.to_string().contains("purge refused"), "{update}");
    let delete = conn
        .execute("DELETE FROM entries WHERE seq = 3", [])
        .unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    let delete_all = conn.execute("DELETE FROM entries", []).unwrap_err();
    assert!(
        delete_all.to_string().contains("append-only"),
        "{delete_all}"
    );
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 4);
}

#[tokio::test]
async fn reopening_keeps_the_ledger_and_refuses_a_newer_schema() {
    let dir = fresh_dir();
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        store_conformance::fill(store, &StreamId::default(), 2, 2).await;
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        store.head(&StreamId::default()).await.unwrap().unwrap().seq,
        2
    );
    drop(store);
    let conn = Connection::open(dir.path().join(store_sqlite::DB_FILE)).unwrap();
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         SELECT 99, 'future', applied_on, checksum FROM refinery_schema_history WHERE version = 1",
        [],
    )
    .unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(err.contains("99") || err.contains("migrat"), "{err}");
}

/// The ledger's migrations up to schema `upto`, as the builds of those schemas shipped them.
fn ledger_migrations(upto: usize) -> Vec<refinery::Migration> {
    let all = [
        (
            "V1__entries",
            include_str!("../../../migrations/sqlite/V1__entries.sql"),
        ),
        (
            "V2__projections",
            include_str!("../../../migrations/sqlite/V2__projections.sql"),
        ),
        (
            "V3__purge",
            include_str!("../../../migrations/sqlite/V3__purge.sql"),
        ),
    ];
    all[..upto]
        .iter()
        .map(|(name, sql)| refinery::Migration::unapplied(name, sql).unwrap())
        .collect()
}

/// A data directory whose ledger file a build of schema `schema` created (its migrations run by
/// refinery as `open` runs them) holding `n` events (copied from a ledger this build wrote: the
/// store cannot write an older file). `extra_sql` then runs on the file.
async fn older_ledger(schema: usize, n: usize, extra_sql: &str) -> tempfile::TempDir {
    let source = fresh_dir();
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(source.path()).unwrap());
        store_conformance::fill(store, &StreamId::default(), n, 7).await;
    }
    let dir = fresh_dir();
    let mut conn = Connection::open(dir.path().join(store_sqlite::DB_FILE)).unwrap();
    refinery::Runner::new(&ledger_migrations(schema))
        .run(&mut conn)
        .unwrap();
    conn.execute(
        "ATTACH DATABASE ?1 AS source",
        [source.path().join(store_sqlite::DB_FILE).to_str().unwrap()],
    )
    .unwrap();
    conn.execute_batch(
        "INSERT INTO entries SELECT * FROM source.entries ORDER BY stream, seq;
         INSERT INTO merkle_nodes SELECT * FROM source.merkle_nodes;
         DETACH DATABASE source;",
    )
    .unwrap();
    conn.execute_batch(extra_sql).unwrap();
    dir
}

/// Verifies `stream` whole, requires it to pass, and gives the number of entries verified.
async fn verified_entries(store: &dyn Store, stream: &StreamId) -> u64 {
    let report =
        ledger::verify::verify_store(store, stream, &ledger::VerifyOptions::default(), |_| {})
            .await
            .unwrap();
    assert!(report.ok, "{report:?}");
    report.entries
}

/// How many of the read-model tables the ledger file at `path` has.
fn read_model_tables_in(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('read_model_rows', 'projection_positions')",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// A ledger file a version-1 build created and filled: opening it applies versions 2 to 4, and
/// the ledger then verifies, appends and runs projections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_ledger_is_upgraded_on_open() {
    let stream = StreamId::default();
    let dir = older_ledger(1, 100, "").await;
    let path = dir.path().join(store_sqlite::DB_FILE);
    assert_eq!(read_model_tables_in(&path), 0, "a version-1 file");

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("upgraded"));
    let versions: Vec<i32> = {
        let conn = Connection::open(&path).unwrap();
        let mut s = conn
            .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
            .unwrap();
        let v = s.query_map([], |r| r.get(0)).unwrap();
        v.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(versions, [1, 2, 3, store_sqlite::SCHEMA_VERSION]);
    assert_eq!(verified_entries(store.as_ref(), &stream).await, 101);
    store_conformance::projection::run_all(store.clone()).await;
    store_conformance::fill(store.clone(), &stream, 3, 3).await;
    assert_eq!(store.head(&stream).await.unwrap().unwrap().seq, 103);
    // Opening again changes nothing.
    drop(store);
    SqliteStore::open(dir.path()).expect("reopens");
}

/// The read-model tables are derived data: ordinary UPDATE and DELETE work on them (the
/// entries stay append-only, as `the_database_refuses_update_and_delete` shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_are_not_append_only() {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let stream = StreamId::default();
    store
        .commit_projection(
            "p",
            &stream,
            None,
            &store_conformance::projection::saved(1),
            &[store_conformance::projection::delete("t", "k", 0)],
        )
        .await
        .unwrap();
    let conn = Connection::open(dir.path().join(store_sqlite::PROJECTIONS_FILE)).unwrap();
    conn.execute_batch(
        "INSERT INTO read_model_rows VALUES (1, 'k', 0, 0, '{}');
         UPDATE read_model_rows SET at = 1;
         UPDATE projection_positions SET updated_at = 0;
         DELETE FROM read_model_rows;
         DELETE FROM projection_positions;",
    )
    .unwrap();
    assert_eq!(store.projection("p", &stream).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_checks_and_purges() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    store_conformance::retention::run_all(|| attackable(dirs.clone())).await;
}

/// The ledger and the read models are separate files, each with its own writer: an append goes
/// through while another connection holds the projections file's write lock (a projection's
/// commit in progress), and a projection commits while the ledger's is held. In one file either
/// would wait for the lock (the busy timeout is 30 s) and then fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_projection_commits_do_not_wait_for_each_other() {
    let dir = fresh_dir();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let stream = StreamId::default();
    store_conformance::fill(store.clone(), &stream, 2, 2).await;

    let projections = Connection::open(dir.path().join(store_sqlite::PROJECTIONS_FILE)).unwrap();
    projections.execute_batch("BEGIN IMMEDIATE").unwrap();
    store_conformance::fill(store.clone(), &stream, 3, 3).await;
    assert_eq!(store.head(&stream).await.unwrap().unwrap().seq, 5);
    projections.execute_batch("ROLLBACK").unwrap();

    let ledger = Connection::open(dir.path().join(store_sqlite::DB_FILE)).unwrap();
    ledger.execute_batch("BEGIN IMMEDIATE").unwrap();
    let saved = store_conformance::projection::saved(5);
    let row = store_conformance::projection::put("t", "k", 0, 1, serde_json::json!({"n": 1}));
    store
        .commit_projection("p", &stream, None, &saved, &[row])
        .await
        .unwrap();
    assert_eq!(store.projection("p", &stream).await.unwrap(), Some(saved));
    ledger.execute_batch("ROLLBACK").unwrap();
}

/// A ledger of schema 3 kept its read models in the ledger file. Opening it drops them (ledger
/// schema 4) and starts the projections file empty: derived data, rebuilt by the runners. The
/// entries are untouched and verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_ledger_leaves_its_read_models_behind() {
    let stream = StreamId::default();
    let dir = older_ledger(
        3,
        40,
        "INSERT INTO projection_positions VALUES ('p', 'default', 40, zeroblob(32), x'', 0);
         INSERT INTO read_model_rows VALUES ('p', 'default', 't', 'k', 0, 0, '{}');",
    )
    .await;
    let path = dir.path().join(store_sqlite::DB_FILE);
    assert_eq!(read_model_tables_in(&path), 2, "a version-3 file");

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("upgraded"));
    assert_eq!(
        read_model_tables_in(&path),
        0,
        "the ledger file no longer holds read models"
    );
    assert_eq!(store.projection("p", &stream).await.unwrap(), None);
    assert_eq!(verified_entries(store.as_ref(), &stream).await, 41);
    store_conformance::projection::run_all(store).await;
}

/// A projections file of schema 1 (three indexes on read-model rows, keyed by text): opening it
/// drops the by-key-and-time index (schema 2), moves the rows to integer table ids (schema 3),
/// and keeps every row and position, so nothing is rebuilt; the upgraded file takes new rows
/// and resets one projection without touching another's.
#[tokio::test]
async fn a_version_1_projections_file_keeps_its_rows() {
    use ledger::RowQuery;

    let dir = fresh_dir();
    drop(SqliteStore::open(dir.path()).unwrap()); // a current ledger file
    let path = dir.path().join(store_sqlite::PROJECTIONS_FILE);
    std::fs::remove_file(&path).unwrap();
    let mut conn = Connection::open(&path).unwrap();
    let v1 = refinery::Migration::unapplied(
        "V1__projections",
        include_str!("../../../migrations/sqlite-projections/V1__projections.sql"),
    )
    .unwrap();
    refinery::Runner::new(&[v1]).run(&mut conn).unwrap();
    conn.execute_batch(
        "INSERT INTO projection_positions VALUES ('p', 'default', 0, zeroblob(32), x'', 0);
         INSERT INTO read_model_rows VALUES
             ('p', 'default', 't', 'k', 1, 20, '{\"a\": 1}'),
             ('p', 'default', 't', 'k', 2, 10, '{\"a\": 2}'),
             ('p', 'default', 't', 'other', 3, 15, '{}'),
             ('p', 'default', 'u', 'k', 4, 5, '{\"u\": 4}'),
             ('q', 'default', 't', 'k', 5, 1, '{\"q\": 5}');",
    )
    .unwrap();
    let indexes = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'read_model_rows_key_at'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(indexes(&conn), 1, "a schema-1 file");
    drop(conn);

    let store = SqliteStore::open(dir.path()).expect("upgraded");
    assert_eq!(indexes(&Connection::open(&path).unwrap()), 0);
    let stream = StreamId::default();
    assert_eq!(
        store.projection("p", &stream).await.unwrap().map(|p| p.seq),
        Some(0)
    );
    let rows = |projection: &'static str, query: RowQuery| {
        let store = &store;
        let stream = &stream;
        async move {
            let rows = store
                .read_model_rows(projection, stream, &query)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    (
                        r.table.clone(),
                        r.key.clone(),
                        r.ord,
                        r.at.micros(),
                        r.value.clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let row = |t: &str, k: &str, ord: i64, at: i64, v: &str| {
        (t.to_owned(), k.to_owned(), ord, at, v.to_owned())
    };
    assert_eq!(
        rows("p", RowQuery::key("t", "k", 10)).await,
        [
            row("t", "k", 2, 10, r#"{"a": 2}"#),
            row("t", "k", 1, 20, r#"{"a": 1}"#)
        ],
        "one key's rows by time"
    );
    assert_eq!(
        rows("p", RowQuery::table("t", 10)).await,
        [
            row("t", "k", 2, 10, r#"{"a": 2}"#),
            row("t", "other", 3, 15, "{}"),
            row("t", "k", 1, 20, r#"{"a": 1}"#)
        ],
        "a table's rows by time"
    );
    assert_eq!(
        rows("p", RowQuery::table("u", 10)).await,
        [row("u", "k", 4, 5, r#"{"u": 4}"#)]
    );
    assert_eq!(
        rows("q", RowQuery::table("t", 10)).await,
        [row("t", "k", 5, 1, r#"{"q": 5}"#)]
    );

    // A table first written after the upgrade gets an id of its own.
    let saved = store_conformance::projection::saved(1);
    let new_row = store_conformance::projection::put("v", "k", 6, 7, serde_json::json!({"v": 6}));
    store
        .commit_projection("p", &stream, Some(0), &saved, &[new_row])
        .await
        .unwrap();
    let got = rows("p", RowQuery::table("v", 10)).await;
    let got: Vec<(&str, &str, i64, &str)> = got
        .iter()
        .map(|(t, k, ord, _, v)| (t.as_str(), k.as_str(), *ord, v.as_str()))
        .collect();
    assert_eq!(got, [("v", "k", 6, r#"{"v":6}"#)]);
    store.reset_projection("p", &stream).await.unwrap();
    for table in ["t", "u", "v"] {
        assert_eq!(rows("p", RowQuery::table(table, 10)).await, []);
    }
    assert_eq!(
        rows("q", RowQuery::table("t", 10)).await,
        [row("t", "k", 5, 1, r#"{"q": 5}"#)],
        "another projection's rows stay"
    );
}
