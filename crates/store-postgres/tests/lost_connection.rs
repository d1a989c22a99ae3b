//! A connection lost between batches or in the middle of one: the batch in hand fails cleanly
//! (callers get an error, nothing is half-written), the next batch gets a fresh connection, and
//! the ledger verifies.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{superuser, TestSchema};
use ledger::{AppendError, GroupCommitWriter, Store, StreamId, SystemClock, WriterConfig};
use store_postgres::PostgresOptions;

async fn entries(db: &tokio_postgres::Client, schema: &store_postgres::SchemaName) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {schema}.entries"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn verify_ok(store: &dyn Store, expected: u64) {
    let report = ledger::verify::verify_store(
        store,
        &StreamId::default(),
        &ledger::VerifyOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_between_and_during_batches() {
    let schema = TestSchema::migrated("lost").await;
    // Our own application name, so we terminate only this test's connections.
    let app = schema.name.to_string();
    let store: Arc<dyn Store> = Arc::new(
        schema
            .store_with(PostgresOptions {
                application_name: Some(app.clone()),
                ..Default::default()
            })
            .await,
    );
    let (w, task) = GroupCommitWriter::start(
        store.clone(),
        StreamId::default(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    w.append(store_conformance::prepared(0, 10)).await.unwrap();
    let db = superuser().await;

    // Between batches: every idle pooled connection dies.
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the pool holds at least one connection");
    let receipts = w
        .append(store_conformance::prepared(10, 5))
        .await
        .expect("the next batch after a lost idle connection succeeds on a fresh one");
    assert_eq!(receipts.last().unwrap().seq, 15);

    // During a batch: hold a lock that makes the batch's COPY wait inside its transaction,
    // kill that backend, then let go.
    db.batch_execute(&format!(
        "BEGIN; LOCK TABLE {}.entries IN SHARE MODE",
        schema.name
    ))
    .await
    .unwrap();
    let blocked = {
        let w = w.clone();
        tokio::spawn(async move { w.append(store_conformance::prepared(15, 50)).await })
    };
    let mut pid: Option<i32> = None;
    for _ in 0..200 {
        pid = db
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid = pid.expect("the batch is waiting inside its transaction");
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    // The writer's check of the head waits for nothing: SHARE lets readers through.
    let outcome = tokio::time::timeout(Duration::from_secs(30), blocked)
        .await
        .expect("the failed batch answers")
        .unwrap();
    assert!(
        matches!(outcome, Err(AppendError::Store(_))),
        "the batch on the killed connection fails: {outcome:?}"
    );
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(entries(&db, &schema.name).await, 16, "nothing half-written");

    // The next batch gets a fresh connection.
    let receipts = w
        .append(store_conformance::prepared(15, 50))
        .await
        .expect("the next batch succeeds");
    assert_eq!(receipts.first().unwrap().seq, 16);
    assert_eq!(receipts.last().unwrap().seq, 65);
    drop(w);
    task.await.unwrap();
    assert_eq!(entries(&db, &schema.name).await, 66);
    verify_ok(store.as_ref(), 66).await;
}
