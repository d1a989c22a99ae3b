//! The store conformance suite: every `Store` implementation runs these, so the embedded and
//! PostgreSQL stores are held to the same behaviour and the same tamper coverage (the shape of
//! akd's `run_test_cases_for_storage_impl`).
//!
//! - [`behaviour`]: genesis, append, read, conflicts, atomicity, idempotency, concurrent writers.
//! - [`tamper`]: each kind of damage an attacker with database access can do, done through the
//!   store's own [`Tamper`] (which bypasses the append-only protections as such an attacker
//!   would), and the verifier must name it at the right `seq`.
//! - [`projection`]: projections' saved positions (optimistic concurrency) and read-model rows
//!   (upserts, deletes, range reads), committed together or not at all.
//! - [`phi_access`]: the `phi-access` projection and its readers, against known answers.
//! - [`purge`]: purging old payloads under a purge authorization, the one change a store lets
//!   through, and the rule the database itself enforces on it (through [`DirectSql`]).
//! - [`retention`]: retention end to end with a controllable clock: holds, the check and
//!   each violation it names, the plan, archive and purge.
//! - [`rollback`]: truncation and rewrites that keep the chain consistent, caught by a signed
//!   checkpoint taken before the attack (and by the store's own Merkle nodes and checkpoints).

use std::sync::Arc;

use async_trait::async_trait;
use ledger::{
    Clock, Digest, Entry, GroupCommitWriter, HashAlg, Ingest, PreparedEntry, PseudonymKey,
    Pseudonymizer, Seq, Store, StreamId, SystemClock, Timestamp, WriterConfig,
};
use serde_json::{json, Value};

pub mod behaviour;
pub mod phi_access;
pub mod projection;
pub mod purge;
pub mod retention;
pub mod rollback;
pub mod runner;
pub mod tamper;

/// Raw writes that bypass the store's append-only protections, as an attacker with superuser
/// access to the database would do them. Implemented by each store's tests.
#[async_trait]
pub trait Tamper: Send + Sync {
    /// Replaces every stored field of the row at `(stream, seq)` with those of `row`
    /// (`row.seq` may differ: the row then moves to `row.seq`).
    async fn overwrite(&self, stream: &StreamId, seq: Seq, row: &Entry);
    /// Deletes the row.
    async fn delete(&self, stream: &StreamId, seq: Seq);
    /// Inserts a row as given.
    async fn insert_raw(&self, row: &Entry);
    /// Adds `delta` to the seq of every row with seq >= `from` (highest first when moving up).
    async fn renumber(&self, stream: &StreamId, from: Seq, delta: i64);
}

/// A connection straight to the store's database with every protection left on: what an
/// operator, or an attacker, with ordinary write access to the database can do (unlike
/// [`Tamper`], which turns the protections off as only the owner of the file or a superuser
/// could). Statements name tables unqualified (a PostgreSQL implementation sets its
/// `search_path` to the ledger's schema) and write booleans as `true`/`false`, which both
/// databases read.
#[async_trait]
pub trait DirectSql: Send + Sync {
    /// Runs one statement and returns the rows it changed, or the database's error message.
    async fn execute(&self, sql: &str) -> Result<u64, String>;
}

/// The pseudonymizer every suite uses.
pub fn test_pseudonymizer() -> Pseudonymizer {
    Pseudonymizer::new(PseudonymKey::from_bytes([42; 32]))
}

/// A valid event whose fields vary with `i`.
pub fn event(i: usize) -> Value {
    let action = ["read", "update", "login", "export"][i % 4];
    json!({"occurred_at": format!("2026-11-22T{:02}:{:02}:{:02}.250Z", (i / 3600) % 24, (i / 60) % 60, i % 60),
           "action": action, "outcome": "success",
           "actor": {"user_id": format!("u-{}", 1000 + i % 17), "role": "nurse", "ip": "10.1.4.22", "session_id": format!("s-{i}")},
           "resource": {"type": "Patient", "id": format!("p-{}", 20000 + i % 101)},
           "patient_id": format!("p-{}", 20000 + i % 101), "phi": true,
           "source": "ehr-web", "detail": "viewed chart summary"})
}

/// Prepared entries for events `from..from+n`.
pub fn prepared(from: usize, n: usize) -> Vec<PreparedEntry> {
    let ingest = Ingest::new(test_pseudonymizer());
    let values: Vec<Value> = (from..from + n).map(event).collect();
    ingest
        .prepare_batch(&values, None, from)
        .expect("test events are valid")
}

/// A group-commit writer on `stream` with the system clock and default settings, and its task.
pub async fn start_writer(
    store: &Arc<dyn Store>,
    stream: &StreamId,
) -> (GroupCommitWriter, tokio::task::JoinHandle<()>) {
    GroupCommitWriter::start(
        store.clone(),
        stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .expect("writer starts")
}

/// Opens a writer on `stream` and appends `n` events in requests of `per_request`.
pub async fn fill(
    store: Arc<dyn Store>,
    stream: &StreamId,
    n: usize,
    per_request: usize,
) -> Vec<ledger::Receipt> {
    let (w, task) = GroupCommitWriter::start(
        store,
        stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .expect("writer starts");
    let mut receipts = Vec::new();
    let mut i = 0;
    while i < n {
        let k = per_request.min(n - i);
        receipts.extend(w.append(prepared(i, k)).await.expect("append succeeds"));
        i += k;
    }
    drop(w);
    task.await.expect("writer task ends cleanly");
    receipts
}

/// Recomputes `e`'s entry hash after a field was changed (what a careful forger does).
pub fn rehash(e: &mut Entry) {
    e.entry_hash = HashAlg::Sha256.entry_hash(
        &e.stream,
        e.seq,
        e.recorded_at,
        &e.prev_hash,
        &e.payload_digest,
    );
}

/// A clock fixed at a known instant, for entries built by hand.
pub fn fixed_now() -> Timestamp {
    ledger::ManualClock::new(Timestamp(1_795_000_000_000_000)).now()
}

/// The digest nobody committed to.
pub fn bogus_digest() -> Digest {
    Digest([0xee; 32])
}
