//! [`PostgresStore`]: the `Store` trait on a deadpool of tokio-postgres connections.
//!
//! - **append**: one transaction per batch, and only after its durable commit (with
//!   `synchronous_commit = on`, forced per connection) `Ok`. A small batch is one autocommit
//!   statement (the entries by `INSERT ... SELECT FROM unnest(...)`, the Merkle nodes in its
//!   `WITH` clause: one round trip); a large one is a transaction of a binary
//!   `COPY ... FROM STDIN` and the nodes' `INSERT` (see [`AppendMethod`]). A lost connection
//!   fails the call with `Backend` and the server rolls the transaction back.
//! - **pool**: deadpool with `RecyclingMethod::Verified`: a connection is tested with an empty
//!   query each time it is handed out, so one that died while idle (server restart,
//!   `pg_terminate_backend`, a proxy's idle timeout) is replaced instead of failing the next
//!   batch. The price is one round trip (~0.1 ms locally) per checkout, small beside the
//!   commit's fsync.
//! - **scan**: `COPY (SELECT ... ORDER BY seq) TO STDOUT (FORMAT binary)` inside a
//!   `REPEATABLE READ READ ONLY` transaction on a connection of its own, decoded as it streams
//!   and handed over in chunks of [`SCAN_CHUNK`] through a channel of two chunks, so memory is
//!   constant and the verifier hashes while the server sends.
//! - **purge** (schema 3): one call of the `purge_payloads` function, which runs as the schema's
//!   owner (the writer role has no UPDATE on entries); it and the row trigger on entries
//!   refuse with SQLSTATE `ALP01`, mapped to [`StoreError::Refused`].
//! - **projections** (schema 2): a commit is one transaction: the saved position is moved by a
//!   conditional `UPDATE ... WHERE seq = expected` (or an `INSERT ... ON CONFLICT DO NOTHING`
//!   for a first commit), zero rows meaning another runner got there first; then the read-model
//!   changes, reduced to the last change per row, as one `DELETE ... USING unnest(...)` and
//!   `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE` per [`PUT_CHUNK`] rows. Rows
//!   carry the integer id of their (projection, stream, table) from `read_models` (schema 4),
//!   registered before the transaction when a table is first written and cached for the life
//!   of the store (ids are never removed).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures::{SinkExt, StreamExt};
use ledger::store::SCAN_CHUNK;
use ledger::{
    AppendBatch, Clock, Columns, Digest, Entry, EntryChunks, EntryKind, Head, MerkleNode,
    ReadModelRow, RowChange, RowQuery, SavedProjection, Seq, Store, StoreError, StoredCheckpoint,
    StreamId, SystemClock, Timestamp,
};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::binary::{encode_entries, EntryDecoder, ENTRY_COLUMNS};
use crate::error::{pg_message, PostgresError};
use crate::migrate::check_version;
use crate::schema::{describe_config, SchemaName};

/// SQLSTATE the chain trigger raises (`migrations/postgres/V1__entries.sql`).
const CHAIN_REFUSED: &str = "ALC01";

/// SQLSTATE of a refused purge: the `purge_payloads` function's checks and the row trigger on
/// entries (`migrations/postgres/V3__purge.sql`).
const PURGE_REFUSED: &str = "ALP01";

/// Most read-model rows written by one `INSERT ... unnest` statement of a projection commit.
pub const PUT_CHUNK: usize = 4096;

/// How a batch reaches the tables.
///
/// `Auto`, the default, takes the faster of the two for the batch at hand, by size: what costs
/// a small batch is round trips, what costs a large one is rows.
///
/// - A small batch (what concurrent appenders make: one entry per waiting caller) goes as one
///   autocommit `INSERT ... SELECT FROM unnest(...)` whose `WITH` clause also inserts the batch's
///   Merkle nodes: one round trip, committed by the server at the statement's end (the reply
///   comes after `ReadyForQuery`, so after the durable commit). The same batch by COPY takes
///   five: `BEGIN`, the COPY's start and its end, the nodes' `INSERT`, `COMMIT`.
/// - A large batch (a bulk import) goes by binary COPY in a transaction, because the server
///   parses COPY rows straight from the stream into the heap (in multi-insert batches, which
///   the chain check, a statement trigger, keeps possible), while the INSERT first builds
///   fifteen arrays and unnests them; four extra round trips are nothing beside that.
///
/// Measured with `scripts/bench-postgres` (release build, 2 cores, PostgreSQL 15 on the same
/// host, synthetic clinic events with ~713-byte payloads, `synchronous_commit = on`; three runs
/// on 2026-12-02, docs/PERFORMANCE.md): a lone appender's acknowledgement took 0.54-0.67 ms
/// (p50) with the one-statement INSERT and 0.64-0.82 ms with the COPY transaction (1.3-1.7x
/// the entries/s); with 64 appenders (batches of ~64, bound by the commit) the two were within
/// the run-to-run noise; in requests of 4096 COPY wrote 1.5-1.7x the entries/s of the INSERT.
/// [`AUTO_COPY_FROM`] sits between the two regimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendMethod {
    /// One autocommit INSERT below [`AUTO_COPY_FROM`] entries, COPY in a transaction from there.
    #[default]
    Auto,
    /// `COPY entries (...) FROM STDIN (FORMAT binary)` (rows encoded by [`crate::binary`]) and
    /// the nodes' `INSERT`, in one transaction, whatever the batch's size.
    Copy,
    /// One autocommit `INSERT INTO entries (...) SELECT * FROM unnest($1::text[], ...)` (one
    /// array parameter per column) with the nodes' `INSERT` in its `WITH` clause, whatever the
    /// batch's size. Also what works through poolers or proxies that do not pass COPY through.
    Insert,
}

/// Batches of at least this many entries go by COPY under [`AppendMethod::Auto`].
pub const AUTO_COPY_FROM: usize = 512;

impl AppendMethod {
    fn uses_copy(self, entries: usize) -> bool {
        match self {
            AppendMethod::Auto => entries >= AUTO_COPY_FROM,
            AppendMethod::Copy => true,
            AppendMethod::Insert => false,
        }
    }
}

/// Tuning of a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections held at once (the writer uses one at a time; scans and reads more).
    pub pool_size: usize,
    pub append_method: AppendMethod,
    /// `application_name` of the connections (shown in `pg_stat_activity`); when `None`, the
    /// URL's or else `auditledger`.
    pub application_name: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            append_method: AppendMethod::Auto,
            application_name: None,
        }
    }
}

/// Parses a URL (or key=value string) and adds what every auditledger connection needs: a
/// connect timeout, an application name and `synchronous_commit = on`, so a COMMIT returns only
/// once it is durable whatever the server's default (a receipt is a promise).
pub(crate) fn config_from_url(
    url: &str,
    application_name: Option<&str>,
) -> Result<tokio_postgres::Config, PostgresError> {
    // The parser's message never quotes the input, so it cannot leak a password.
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PostgresError::InvalidUrl(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    match application_name {
        Some(name) => {
            config.application_name(name);
        }
        None if config.get_application_name().is_none() => {
            config.application_name("auditledger");
        }
        None => {}
    }
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_owned(),
    };
    config.options(&options);
    Ok(config)
}

/// Every statement, with the schema written in once at connect time.
struct Sql {
    head: String,
    copy_entries: String,
    insert_batch: String,
    insert_nodes: String,
    purge_payloads: String,
    find_idempotent: String,
    get: String,
    read: String,
    scan_command: String,
    streams: String,
    merkle_nodes: String,
    merkle_level: String,
    entry_hashes: String,
    put_checkpoint: String,
    checkpoints: String,
    projection: String,
    insert_position: String,
    update_position: String,
    put_rows: String,
    delete_rows: String,
    reset_position: String,
    reset_rows: String,
    model_id: String,
    register_model: String,
    rows_never_analyzed: String,
    analyze_rows: String,
}

/// A commit of at least this many row changes checks that `read_model_rows` has planner
/// statistics (see [`PostgresStore::commit_projection`]).
const ANALYZE_AFTER_CHANGES: usize = 10_000;

impl Sql {
    fn new(s: &SchemaName) -> Sql {
        Sql {
            head: format!("SELECT seq, entry_hash, recorded_at FROM {s}.entries WHERE stream = $1 ORDER BY seq DESC LIMIT 1"),
            copy_entries: format!("COPY {s}.entries ({ENTRY_COLUMNS}) FROM STDIN (FORMAT binary)"),
            // A data-modifying WITH runs whether or not the main statement reads it; both
            // inserts are one statement, so one implicit transaction.
            insert_batch: format!(
                "WITH nodes AS (INSERT INTO {s}.merkle_nodes (stream, level, idx, hash) SELECT $16, * FROM unnest($17::int2[], $18::int8[], $19::bytea[])) \
                 INSERT INTO {s}.entries ({ENTRY_COLUMNS}) SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::bytea[])"
            ),
            insert_nodes: format!("INSERT INTO {s}.merkle_nodes (stream, level, idx, hash) SELECT $1, * FROM unnest($2::int2[], $3::int8[], $4::bytea[])"),
            // The one privileged function of schema 3: the writer has no UPDATE on entries.
            purge_payloads: format!("SELECT {s}.purge_payloads($1, $2, $3, $4)"),
            find_idempotent: format!("SELECT {ENTRY_COLUMNS} FROM {s}.entries WHERE stream = $1 AND idem = ANY($2::bytea[])"),
            get: format!("SELECT {ENTRY_COLUMNS} FROM {s}.entries WHERE stream = $1 AND seq = $2"),
            // A bounded range, not `seq >= $2 ... LIMIT $3`: without planner statistics (a
            // table autovacuum has not analyzed yet) PostgreSQL estimated the open range at a
            // few thousand rows and answered every read with a bitmap scan of the rest of the
            // table and a sort of it spilled to disk: a projection catching up over 1 M entries
            // sorted the remaining table once per chunk (scripts/bench-phi --database-url). A
            // range as wide as the limit is an index range scan whatever the statistics say.
            read: format!("SELECT {ENTRY_COLUMNS} FROM {s}.entries WHERE stream = $1 AND seq >= $2 AND seq < $3 ORDER BY seq"),
            // COPY takes no bind parameters: the server quotes the values itself (%L).
            scan_command: format!("SELECT format('COPY (SELECT {ENTRY_COLUMNS} FROM {s}.entries WHERE stream = %L AND seq >= %s ORDER BY seq) TO STDOUT (FORMAT binary)', $1::text, $2::int8)"),
            // A skip scan over the primary key: one index probe per stream, not a table scan.
            streams: format!(
                "WITH RECURSIVE s(stream) AS (
                     SELECT min(stream) FROM {s}.entries
                     UNION ALL
                     SELECT (SELECT min(e.stream) FROM {s}.entries e WHERE e.stream > s.stream) FROM s WHERE s.stream IS NOT NULL)
                 SELECT stream FROM s WHERE stream IS NOT NULL"
            ),
            merkle_nodes: format!(
                "SELECT m.level, m.idx, m.hash FROM unnest($2::int2[], $3::int8[]) AS w(level, idx)
                 JOIN {s}.merkle_nodes m ON m.stream = $1 AND m.level = w.level AND m.idx = w.idx"
            ),
            merkle_level: format!("SELECT idx, hash FROM {s}.merkle_nodes WHERE stream = $1 AND level = $2 AND idx >= $3 ORDER BY idx LIMIT $4"),
            entry_hashes: format!("SELECT entry_hash FROM {s}.entries WHERE stream = $1 AND seq >= $2 AND seq < $3 ORDER BY seq"),
            put_checkpoint: format!("INSERT INTO {s}.checkpoints (stream, size, note) VALUES ($1, $2, $3) ON CONFLICT (stream, size) DO NOTHING"),
            checkpoints: format!("SELECT size, note FROM {s}.checkpoints WHERE stream = $1 ORDER BY size"),
            projection: format!("SELECT seq, entry_hash, state FROM {s}.projection_positions WHERE projection = $1 AND stream = $2"),
            // DO NOTHING rather than a unique-violation error: no row written means another
            // runner saved a position first (a concurrent insert is waited for).
            insert_position: format!(
                "INSERT INTO {s}.projection_positions (projection, stream, seq, entry_hash, state, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (projection, stream) DO NOTHING"
            ),
            // Under READ COMMITTED a concurrent commit holds the row; once it commits, this
            // re-checks `seq` on the new row and updates nothing.
            update_position: format!(
                "UPDATE {s}.projection_positions SET seq = $3, entry_hash = $4, state = $5, updated_at = $6
                 WHERE projection = $1 AND stream = $2 AND seq = $7"
            ),
            put_rows: format!(
                "INSERT INTO {s}.read_model_rows (model, key, ord, at, value)
                 SELECT u.model, u.key, u.ord, u.at, u.value::jsonb
                 FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[], $5::text[]) AS u(model, key, ord, at, value)
                 ON CONFLICT (model, key, ord) DO UPDATE SET at = EXCLUDED.at, value = EXCLUDED.value"
            ),
            delete_rows: format!(
                "DELETE FROM {s}.read_model_rows r
                 USING unnest($1::int4[], $2::text[], $3::int8[]) AS d(model, key, ord)
                 WHERE r.model = d.model AND r.key = d.key AND r.ord = d.ord"
            ),
            reset_position: format!("DELETE FROM {s}.projection_positions WHERE projection = $1 AND stream = $2"),
            reset_rows: format!(
                "DELETE FROM {s}.read_model_rows WHERE model IN (SELECT id FROM {s}.read_models WHERE projection = $1 AND stream = $2)"
            ),
            model_id: format!("SELECT id FROM {s}.read_models WHERE projection = $1 AND stream = $2 AND tbl = $3"),
            // Nothing returned: another runner registered the table first (its insert is
            // waited for), and the id is read by `model_id`.
            register_model: format!(
                "INSERT INTO {s}.read_models (projection, stream, tbl) VALUES ($1, $2, $3)
                 ON CONFLICT (projection, stream, tbl) DO NOTHING RETURNING id"
            ),
            rows_never_analyzed: format!(
                "SELECT COALESCE(last_analyze, last_autoanalyze) IS NULL FROM pg_stat_user_tables WHERE relid = '{s}.read_model_rows'::regclass"
            ),
            analyze_rows: format!("ANALYZE {s}.read_model_rows"),
        }
    }
}

/// The ledger in one schema of a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    schema: SchemaName,
    /// `postgres://user@host:port/db`, never with a password.
    target: String,
    method: AppendMethod,
    sql: std::sync::Arc<Sql>,
    /// Read-model ids by (projection, stream, table): registered ids never change.
    models: std::sync::Arc<std::sync::Mutex<HashMap<ModelName, i32>>>,
}

/// A read model's (projection, stream, table).
type ModelName = (String, String, String);

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(pg_message(&e))
}

/// Uniqueness of `(stream, seq)` or `(stream, idem)`, or the chain trigger: another writer got
/// there first. Anything else (a lost connection included) is a backend failure.
fn append_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || c.code() == CHAIN_REFUSED => {
            StoreError::Conflict(pg_message(&e))
        }
        _ => backend(e),
    }
}

/// The purge function's or the entries trigger's refusal is the store's rule (`Refused`, nothing
/// changed); anything else is a backend failure.
fn purge_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if c.code() == PURGE_REFUSED => StoreError::Refused(
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| pg_message(&e)),
        ),
        _ => backend(e),
    }
}

/// A value read back that does not fit its type.
fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(pg_message(&e))
}

/// Sequence numbers are `bigint`; a `Seq` beyond `i64::MAX` cannot exist in the table.
fn seq_param(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn digest(row: &Row, idx: usize, name: &str) -> Result<Digest, StoreError> {
    let b: &[u8] = row.try_get(idx).map_err(corrupt)?;
    Digest::from_slice(b).ok_or_else(|| StoreError::Corrupt(format!("{name} is not 32 bytes")))
}

fn entry_from_row(row: &Row) -> Result<Entry, StoreError> {
    let stream: &str = row.try_get(0).map_err(corrupt)?;
    let seq: i64 = row.try_get(1).map_err(corrupt)?;
    let kind: &str = row.try_get(7).map_err(corrupt)?;
    let idem: Option<&[u8]> = row.try_get(14).map_err(corrupt)?;
    Ok(Entry {
        stream: StreamId::new(stream).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))?,
        recorded_at: Timestamp(row.try_get(2).map_err(corrupt)?),
        payload: row.try_get(3).map_err(corrupt)?,
        payload_digest: digest(row, 4, "payload_digest")?,
        prev_hash: digest(row, 5, "prev_hash")?,
        entry_hash: digest(row, 6, "entry_hash")?,
        columns: Columns {
            kind: EntryKind::parse(kind).ok_or_else(|| {
                StoreError::Corrupt(format!("entry {seq} has unknown kind {kind:?}"))
            })?,
            occurred_at: row
                .try_get::<_, Option<i64>>(8)
                .map_err(corrupt)?
                .map(Timestamp),
            action: row.try_get(9).map_err(corrupt)?,
            outcome: row.try_get(10).map_err(corrupt)?,
            actor: row.try_get(11).map_err(corrupt)?,
            patient: row.try_get(12).map_err(corrupt)?,
            phi: row.try_get(13).map_err(corrupt)?,
            // As the embedded store: a wrong-sized digest shows up as a mismatch in verify.
            idem: idem.map(|b| Digest::from_slice(b).unwrap_or(Digest::ZERO)),
        },
    })
}

impl PostgresStore {
    /// The id of the read model `(projection, stream, table)`: from the cache, else from
    /// `read_models`, else (with `register`) a new one, committed on its own before any
    /// projection transaction uses it, so a cached id always exists in the database. `None`:
    /// never registered, so the model has no rows.
    async fn model_id(
        &self,
        client: &deadpool_postgres::Client,
        projection: &str,
        stream: &str,
        table: &str,
        register: bool,
    ) -> Result<Option<i32>, StoreError> {
        let name = (projection.to_owned(), stream.to_owned(), table.to_owned());
        if let Some(id) = self.models_cache().get(&name) {
            return Ok(Some(*id));
        }
        let params: [&(dyn ToSql + Sync); 3] = [&projection, &stream, &table];
        // Looked up first: an insert that meets the registration draws an id all the same.
        // Then registered; when another runner registered it meanwhile, looked up again.
        let mut steps = vec![&self.sql.model_id];
        if register {
            steps.extend([&self.sql.register_model, &self.sql.model_id]);
        }
        let mut id = None;
        for sql in steps {
            let stmt = client.prepare_cached(sql).await.map_err(backend)?;
            id = client.query_opt(&stmt, &params).await.map_err(backend)?;
            if id.is_some() {
                break;
            }
        }
        let Some(row) = id else {
            return Ok(None);
        };
        let id: i32 = row.try_get(0).map_err(corrupt)?;
        self.models_cache().insert(name, id);
        Ok(Some(id))
    }

    fn models_cache(&self) -> std::sync::MutexGuard<'_, HashMap<ModelName, i32>> {
        // The map is only ever inserted into: a panic elsewhere cannot leave it inconsistent.
        self.models
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives `read_model_rows` planner statistics once, after a large commit, when it has none.
    ///
    /// Without statistics PostgreSQL rates a key read ("one patient's month": `key = $4`, a
    /// range of `at`) the same through either index, and may walk the by-time index over the
    /// whole range, checking the key of every entry: measured with `scripts/bench-phi
    /// --database-url` at 1 M entries, the disclosures report took 31 s instead of
    /// milliseconds. autovacuum analyzes the table in time on a default server, but not where
    /// it is off (as on the machine of that run). A role that may not analyze the table (the
    /// writer) gets a warning from the server, not an error, and the check is repeated by the
    /// next large commit. Best effort: a failure here never fails the commit that preceded it.
    async fn analyze_rows_if_never(&self, client: &deadpool_postgres::Client) {
        let never: Result<bool, tokio_postgres::Error> = async {
            let stmt = client.prepare_cached(&self.sql.rows_never_analyzed).await?;
            Ok(client
                .query_opt(&stmt, &[])
                .await?
                .is_some_and(|r| r.get::<_, bool>(0)))
        }
        .await;
        match never {
            Ok(true) => {
                if let Err(e) = client.batch_execute(&self.sql.analyze_rows).await {
                    tracing::warn!(error = %e, "cannot analyze read_model_rows");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the statistics of read_model_rows"),
        }
    }

    /// Connects to the ledger in `schema` with default options. Refuses a schema that was
    /// never migrated, or whose version is older or newer than this build's.
    pub async fn connect(url: &str, schema: &SchemaName) -> Result<PostgresStore, PostgresError> {
        PostgresStore::connect_with(url, schema, PostgresOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        schema: &SchemaName,
        options: PostgresOptions,
    ) -> Result<PostgresStore, PostgresError> {
        let config = config_from_url(url, options.application_name.as_deref())?;
        let target = describe_config(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| PostgresError::Connect {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        let client = pool.get().await.map_err(|e| PostgresError::Connect {
            target: target.clone(),
            reason: pool_message(&e),
        })?;
        check_version(&client, &target, schema).await?;
        drop(client);
        Ok(PostgresStore {
            pool,
            schema: schema.clone(),
            target,
            method: options.append_method,
            sql: std::sync::Arc::new(Sql::new(schema)),
            models: Default::default(),
        })
    }

    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    pub fn append_method(&self) -> AppendMethod {
        self.method
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot get a connection to {}: {}",
                self.target,
                pool_message(&e)
            ))
        })
    }
}

fn pool_message(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => pg_message(e),
        other => other.to_string(),
    }
}

/// Writes the batch's entries by binary COPY into the open transaction.
async fn copy_entries(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    entries: &[Entry],
) -> Result<(), StoreError> {
    let mut buf = BytesMut::new();
    encode_entries(entries, &mut buf);
    // Prepared once per connection: a COPY given as text is parsed by a round trip each time.
    let stmt = tx.prepare_cached(sql).await.map_err(backend)?;
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&stmt)
        .await
        .map_err(append_error)?;
    futures::pin_mut!(sink);
    sink.send(buf.freeze()).await.map_err(append_error)?;
    // `finish` ends the COPY; the server checks uniqueness and the chain here.
    sink.finish().await.map_err(append_error)?;
    Ok(())
}

/// The Merkle nodes as the array parameters of an `INSERT ... unnest`: level, index, hash.
fn node_columns(nodes: &[MerkleNode]) -> (Vec<i16>, Vec<i64>, Vec<&[u8]>) {
    (
        nodes.iter().map(|n| i16::from(n.level)).collect(),
        nodes.iter().map(|n| seq_param(n.index)).collect(),
        nodes.iter().map(|n| &n.hash.0[..]).collect(),
    )
}

/// Writes the batch (entries and Merkle nodes) by one autocommit statement: it returns once
/// the server has committed it, durably (`synchronous_commit = on`).
async fn insert_batch(
    client: &Object,
    sql: &str,
    stream: &str,
    entries: &[Entry],
    nodes: &[MerkleNode],
) -> Result<(), StoreError> {
    let streams: Vec<&str> = entries.iter().map(|e| e.stream.as_str()).collect();
    let seq: Vec<i64> = entries.iter().map(|e| seq_param(e.seq)).collect();
    let recorded_at: Vec<i64> = entries.iter().map(|e| e.recorded_at.micros()).collect();
    let payload: Vec<Option<&[u8]>> = entries.iter().map(|e| e.payload.as_deref()).collect();
    let payload_digest: Vec<&[u8]> = entries.iter().map(|e| &e.payload_digest.0[..]).collect();
    let prev_hash: Vec<&[u8]> = entries.iter().map(|e| &e.prev_hash.0[..]).collect();
    let entry_hash: Vec<&[u8]> = entries.iter().map(|e| &e.entry_hash.0[..]).collect();
    let kind: Vec<&str> = entries.iter().map(|e| e.columns.kind.as_str()).collect();
    let occurred_at: Vec<Option<i64>> = entries
        .iter()
        .map(|e| e.columns.occurred_at.map(Timestamp::micros))
        .collect();
    let text = |f: fn(&Columns) -> &Option<String>| -> Vec<Option<&str>> {
        entries.iter().map(|e| f(&e.columns).as_deref()).collect()
    };
    let action = text(|c| &c.action);
    let outcome = text(|c| &c.outcome);
    let actor = text(|c| &c.actor);
    let patient = text(|c| &c.patient);
    let phi: Vec<bool> = entries.iter().map(|e| e.columns.phi).collect();
    let idem: Vec<Option<&[u8]>> = entries
        .iter()
        .map(|e| e.columns.idem.as_ref().map(|d| &d.0[..]))
        .collect();
    let (node_level, node_idx, node_hash) = node_columns(nodes);
    let stmt = client.prepare_cached(sql).await.map_err(backend)?;
    client
        .execute(
            &stmt,
            &[
                &streams,
                &seq,
                &recorded_at,
                &payload,
                &payload_digest,
                &prev_hash,
                &entry_hash,
                &kind,
                &occurred_at,
                &action,
                &outcome,
                &actor,
                &patient,
                &phi,
                &idem,
                &stream,
                &node_level,
                &node_idx,
                &node_hash,
            ],
        )
        .await
        .map_err(append_error)?;
    Ok(())
}

/// A range read of `read_model_rows` for `q`, with only the conditions `q` has (PostgreSQL
/// refuses a parameter no condition uses), in `(at, key, ord)` order or its reverse, run as an
/// unnamed statement planned for its values (see `read_model_rows`).
fn read_model_sql(schema: &SchemaName, q: &RowQuery) -> String {
    let mut sql =
        format!("SELECT key, ord, at, value::text FROM {schema}.read_model_rows WHERE model = $1");
    let mut n = 1;
    for (present, condition) in [
        (q.key.is_some(), "key ="),
        (q.from.is_some(), "at >="),
        (q.to.is_some(), "at <"),
    ] {
        if present {
            n += 1;
            sql.push_str(&format!(" AND {condition} ${n}"));
        }
    }
    sql.push_str(if q.newest_first {
        " ORDER BY at DESC, key DESC, ord DESC"
    } else {
        " ORDER BY at, key, ord"
    });
    sql.push_str(&format!(" LIMIT ${}", n + 1));
    sql
}

/// Which row of a read model a change is about.
fn change_key(c: &RowChange) -> (&str, &str, i64) {
    match c {
        RowChange::Put(r) => (&r.table, &r.key, r.ord),
        RowChange::Delete { table, key, ord } => (table, key, *ord),
    }
}

/// The changes that decide the outcome: each change touches only its own row, so applying
/// `changes` in order leaves every row as its last change says. Keeping only those (in their
/// order) lets the puts and the deletes each go in one statement, where a row may appear
/// only once (`ON CONFLICT DO UPDATE` refuses to touch a row twice).
fn last_change_per_row(changes: &[RowChange]) -> Vec<&RowChange> {
    let mut last: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert(change_key(c), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &changes[i]).collect()
}

/// Applies `changes` to the read model of `(name, stream)` in the open transaction.
async fn apply_changes(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    models: &HashMap<&str, i32>,
    changes: &[RowChange],
) -> Result<(), StoreError> {
    let model = |table: &str| {
        models
            .get(table)
            .copied()
            .ok_or_else(|| StoreError::Backend(format!("read model table {table:?} has no id")))
    };
    let (puts, deletes): (Vec<&RowChange>, Vec<&RowChange>) = last_change_per_row(changes)
        .into_iter()
        .partition(|c| matches!(c, RowChange::Put(_)));
    if !deletes.is_empty() {
        let (tbl, key, ord) = split_keys(&deletes);
        let ids = tbl
            .iter()
            .map(|t| model(t))
            .collect::<Result<Vec<i32>, _>>()?;
        let stmt = tx.prepare_cached(&sql.delete_rows).await.map_err(backend)?;
        tx.execute(&stmt, &[&ids, &key, &ord])
            .await
            .map_err(projection_error)?;
    }
    if !puts.is_empty() {
        let stmt = tx.prepare_cached(&sql.put_rows).await.map_err(backend)?;
        for chunk in puts.chunks(PUT_CHUNK) {
            let rows: Vec<&ReadModelRow> = chunk
                .iter()
                .filter_map(|c| match c {
                    RowChange::Put(r) => Some(r),
                    RowChange::Delete { .. } => None,
                })
                .collect();
            let ids = rows
                .iter()
                .map(|r| model(&r.table))
                .collect::<Result<Vec<i32>, _>>()?;
            let key: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
            let ord: Vec<i64> = rows.iter().map(|r| r.ord).collect();
            let at: Vec<i64> = rows.iter().map(|r| r.at.micros()).collect();
            let value: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
            tx.execute(&stmt, &[&ids, &key, &ord, &at, &value])
                .await
                .map_err(projection_error)?;
        }
    }
    Ok(())
}

/// The `(table, key, ord)` columns of `changes`, as three arrays.
fn split_keys<'a>(changes: &[&'a RowChange]) -> (Vec<&'a str>, Vec<&'a str>, Vec<i64>) {
    let mut tbl = Vec::with_capacity(changes.len());
    let mut key = Vec::with_capacity(changes.len());
    let mut ord = Vec::with_capacity(changes.len());
    for c in changes {
        let (t, k, o) = change_key(c);
        tbl.push(t);
        key.push(k);
        ord.push(o);
    }
    (tbl, key, ord)
}

/// A projection commit's failure: a unique violation means another runner saved first.
fn projection_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(pg_message(&e)),
        _ => backend(e),
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        format!("{} (schema {})", self.target, self.schema)
    }

    async fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.head)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&stmt, &[&stream.as_str()])
            .await
            .map_err(backend)?;
        row.map(|r| {
            let seq: i64 = r.try_get(0).map_err(corrupt)?;
            Ok(Head {
                seq: u64::try_from(seq)
                    .map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))?,
                entry_hash: digest(&r, 1, "entry_hash")?,
                recorded_at: Timestamp(r.try_get(2).map_err(corrupt)?),
            })
        })
        .transpose()
    }

    async fn append(&self, batch: AppendBatch) -> Result<(), StoreError> {
        let Some(first) = batch.entries.first() else {
            return if batch.nodes.is_empty() {
                Ok(())
            } else {
                Err(StoreError::Backend(
                    "a batch of Merkle nodes without entries names no stream".into(),
                ))
            };
        };
        let stream = first.stream.as_str();
        let mut client = self.client().await?;
        if !self.method.uses_copy(batch.entries.len()) {
            // An error from this one statement is as ambiguous as one from COMMIT (the
            // connection may die after the commit); the writer re-reads the head to find out.
            return insert_batch(
                &client,
                &self.sql.insert_batch,
                stream,
                &batch.entries,
                &batch.nodes,
            )
            .await;
        }
        let tx = client.transaction().await.map_err(backend)?;
        copy_entries(&tx, &self.sql.copy_entries, &batch.entries).await?;
        if !batch.nodes.is_empty() {
            let (level, idx, hash) = node_columns(&batch.nodes);
            let stmt = tx
                .prepare_cached(&self.sql.insert_nodes)
                .await
                .map_err(backend)?;
            tx.execute(&stmt, &[&stream, &level, &idx, &hash])
                .await
                .map_err(append_error)?;
        }
        // An error before this point drops `tx`, which rolls back: all or nothing. An error
        // from COMMIT itself is ambiguous; the writer re-reads the head to find out.
        tx.commit().await.map_err(backend)
    }

    async fn purge_payloads(
        &self,
        stream: &StreamId,
        authorization: Seq,
        from: Seq,
        to: Seq,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.purge_payloads)
            .await
            .map_err(backend)?;
        // One statement, so one transaction: a refused row leaves the whole range in place.
        let row = client
            .query_one(
                &stmt,
                &[
                    &stream.as_str(),
                    &seq_param(authorization),
                    &seq_param(from),
                    &seq_param(to),
                ],
            )
            .await
            .map_err(purge_error)?;
        let removed: i64 = row.try_get(0).map_err(corrupt)?;
        u64::try_from(removed)
            .map_err(|_| StoreError::Corrupt(format!("purge_payloads returned {removed}")))
    }

    async fn find_idempotent(
        &self,
        stream: &StreamId,
        idem: &[Digest],
    ) -> Result<Vec<Entry>, StoreError> {
        if idem.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&[u8]> = idem.iter().map(|d| &d.0[..]).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.find_idempotent)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&stream.as_str(), &keys])
            .await
            .map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn get(&self, stream: &StreamId, seq: Seq) -> Result<Option<Entry>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.get)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&stmt, &[&stream.as_str(), &seq_param(seq)])
            .await
            .map_err(backend)?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn read(
        &self,
        stream: &StreamId,
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // Sequence numbers are dense, so the `limit` entries from `from` are those below
        // `from + limit` (fewer only where the ledger lost entries, which its readers detect).
        let end = seq_param(from.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.read)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&stream.as_str(), &seq_param(from), &end])
            .await
            .map_err(backend)?;
        rows.iter().map(entry_from_row).collect()
    }

    fn scan(&self, stream: &StreamId, from: Seq) -> EntryChunks {
        // Two chunks in flight: the verifier hashes one while the next is decoded.
        let (tx, rx) = mpsc::channel(2);
        let pool = self.pool.clone();
        let sql = self.sql.clone();
        let target = self.target.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let client = match pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx
                        .send(Err(StoreError::Backend(format!(
                            "cannot get a connection to {target}: {}",
                            pool_message(&e)
                        ))))
                        .await;
                    return;
                }
            };
            scan_task(client, &sql.scan_command, &stream, from, tx).await;
        });
        rx
    }

    async fn streams(&self) -> Result<Vec<StreamId>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.streams)
            .await
            .map_err(backend)?;
        let rows = client.query(&stmt, &[]).await.map_err(backend)?;
        rows.iter()
            .map(|r| {
                let name: &str = r.try_get(0).map_err(corrupt)?;
                StreamId::new(name).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn merkle_nodes(
        &self,
        stream: &StreamId,
        wanted: &[(u8, u64)],
    ) -> Result<Vec<MerkleNode>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let level: Vec<i16> = wanted.iter().map(|(l, _)| i16::from(*l)).collect();
        let idx: Vec<i64> = wanted.iter().map(|(_, i)| seq_param(*i)).collect();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.merkle_nodes)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&stream.as_str(), &level, &idx])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let level: i16 = r.try_get(0).map_err(corrupt)?;
                let index: i64 = r.try_get(1).map_err(corrupt)?;
                Ok(MerkleNode {
                    level: u8::try_from(level)
                        .map_err(|_| StoreError::Corrupt(format!("Merkle level {level}")))?,
                    index: u64::try_from(index)
                        .map_err(|_| StoreError::Corrupt(format!("Merkle index {index}")))?,
                    hash: digest(r, 2, "hash")?,
                })
            })
            .collect()
    }

    async fn merkle_level(
        &self,
        stream: &StreamId,
        level: u8,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<MerkleNode>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.merkle_level)
            .await
            .map_err(backend)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &stream.as_str(),
                    &i16::from(level),
                    &seq_param(from_index),
                    &limit,
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let index: i64 = r.try_get(0).map_err(corrupt)?;
                Ok(MerkleNode {
                    level,
                    index: u64::try_from(index)
                        .map_err(|_| StoreError::Corrupt(format!("Merkle index {index}")))?,
                    hash: digest(r, 1, "hash")?,
                })
            })
            .collect()
    }

    async fn entry_hashes(
        &self,
        stream: &StreamId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Digest>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.entry_hashes)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&stream.as_str(), &seq_param(from), &seq_param(to)])
            .await
            .map_err(backend)?;
        rows.iter().map(|r| digest(r, 0, "entry_hash")).collect()
    }

    async fn put_checkpoint(
        &self,
        stream: &StreamId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.put_checkpoint)
            .await
            .map_err(backend)?;
        client
            .execute(
                &stmt,
                &[
                    &stream.as_str(),
                    &seq_param(checkpoint.size),
                    &checkpoint.note,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn checkpoints(&self, stream: &StreamId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.checkpoints)
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&stream.as_str()])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let size: i64 = r.try_get(0).map_err(corrupt)?;
                Ok(StoredCheckpoint {
                    size: u64::try_from(size)
                        .map_err(|_| StoreError::Corrupt(format!("checkpoint size {size}")))?,
                    note: r.try_get(1).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn projection(
        &self,
        name: &str,
        stream: &StreamId,
    ) -> Result<Option<SavedProjection>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.projection)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&stmt, &[&name, &stream.as_str()])
            .await
            .map_err(backend)?;
        row.map(|r| {
            let seq: i64 = r.try_get(0).map_err(corrupt)?;
            Ok(SavedProjection {
                seq: u64::try_from(seq)
                    .map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))?,
                entry_hash: digest(&r, 1, "entry_hash")?,
                state: r.try_get(2).map_err(corrupt)?,
            })
        })
        .transpose()
    }

    async fn commit_projection(
        &self,
        name: &str,
        stream: &StreamId,
        expected: Option<Seq>,
        saved: &SavedProjection,
        changes: &[RowChange],
    ) -> Result<(), StoreError> {
        let stream = stream.as_str();
        let seq = seq_param(saved.seq);
        let hash = &saved.entry_hash.0[..];
        let state = &saved.state[..];
        let updated_at = SystemClock.now().micros();
        let mut client = self.client().await?;
        let mut models: HashMap<&str, i32> = HashMap::new();
        for c in changes {
            let table = change_key(c).0;
            if !models.contains_key(table) {
                let id = self.model_id(&client, name, stream, table, true).await?;
                // Registering returns an id or finds the winner's: never nothing.
                let id = id.ok_or_else(|| {
                    StoreError::Backend(format!("read model table {table:?} was not registered"))
                })?;
                models.insert(table, id);
            }
        }
        let tx = client.transaction().await.map_err(backend)?;
        let moved = match expected {
            None => {
                let stmt = tx
                    .prepare_cached(&self.sql.insert_position)
                    .await
                    .map_err(backend)?;
                tx.execute(&stmt, &[&name, &stream, &seq, &hash, &state, &updated_at])
                    .await
            }
            Some(at) => {
                let stmt = tx
                    .prepare_cached(&self.sql.update_position)
                    .await
                    .map_err(backend)?;
                tx.execute(
                    &stmt,
                    &[
                        &name,
                        &stream,
                        &seq,
                        &hash,
                        &state,
                        &updated_at,
                        &seq_param(at),
                    ],
                )
                .await
            }
        }
        .map_err(projection_error)?;
        if moved != 1 {
            // Dropping `tx` rolls back (nothing was written anyway).
            return Err(StoreError::Conflict(match expected {
                None => {
                    format!("projection {name} of stream {stream} has a saved position already")
                }
                Some(at) => format!("projection {name} of stream {stream} is no longer at {at}"),
            }));
        }
        apply_changes(&tx, &self.sql, &models, changes).await?;
        // An error before this point drops `tx`, which rolls back: all or nothing.
        tx.commit().await.map_err(backend)?;
        if changes.len() >= ANALYZE_AFTER_CHANGES {
            self.analyze_rows_if_never(&client).await;
        }
        Ok(())
    }

    async fn reset_projection(&self, name: &str, stream: &StreamId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        for sql in [&self.sql.reset_position, &self.sql.reset_rows] {
            let stmt = tx.prepare_cached(sql).await.map_err(backend)?;
            tx.execute(&stmt, &[&name, &stream.as_str()])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn read_model_rows(
        &self,
        name: &str,
        stream: &StreamId,
        query: &RowQuery,
    ) -> Result<Vec<ReadModelRow>, StoreError> {
        let from = query.from.map(Timestamp::micros);
        let to = query.to.map(Timestamp::micros);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let Some(model) = self
            .model_id(&client, name, stream.as_str(), &query.table, false)
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&model, Type::INT4)];
        if let Some(key) = &query.key {
            params.push((key, Type::TEXT));
        }
        if let Some(from) = &from {
            params.push((from, Type::INT8));
        }
        if let Some(to) = &to {
            params.push((to, Type::INT8));
        }
        params.push((&limit, Type::INT8));
        // An unnamed statement, planned for these values at each call (one round trip, as a
        // cached statement's). A prepared statement switches to a generic plan after five
        // calls, and for a key and a time range that plan is the wrong one: the statistics
        // underestimate how many distinct keys there are, so the generic plan walks the
        // `(model, at, key, ord)` index across the whole range, checking each row's key, where
        // the primary key finds the key's few rows at once. On 10 M entries that made each key
        // read of the accounting of disclosures take 0.6-0.9 s instead of under a millisecond.
        let rows = client
            .query_typed(&read_model_sql(&self.schema, query), &params)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(ReadModelRow {
                    table: query.table.clone(),
                    key: r.try_get(0).map_err(corrupt)?,
                    ord: r.try_get(1).map_err(corrupt)?,
                    at: Timestamp(r.try_get(2).map_err(corrupt)?),
                    value: r.try_get(3).map_err(corrupt)?,
                })
            })
            .collect()
    }
}

/// Streams one scan into `out`. A failure is sent as the last item. When the consumer stops
/// listening early (verify found damage), the connection is discarded rather than returned
/// to the pool, so nobody waits behind the rest of the COPY draining.
async fn scan_task(
    mut client: Object,
    scan_command: &str,
    stream: &StreamId,
    from: Seq,
    out: mpsc::Sender<Result<Vec<Entry>, StoreError>>,
) {
    let mut abandoned = false;
    let result = async {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        // The scan must walk the primary key in order. Left to its estimates, PostgreSQL reads
        // a whole stream by a sequential scan (or, without statistics, a bitmap scan) and sorts
        // it: a temporary file the size of the table before the first row arrives. With sorts
        // priced out for this transaction only, the plan is the index scan, in constant space.
        tx.batch_execute("SET LOCAL enable_sort = off")
            .await
            .map_err(backend)?;
        let command: String = tx
            .query_one(scan_command, &[&stream.as_str(), &seq_param(from)])
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(corrupt)?;
        let copy = tx.copy_out(command.as_str()).await.map_err(backend)?;
        futures::pin_mut!(copy);
        let mut decoder = EntryDecoder::new();
        let mut chunk = Vec::with_capacity(SCAN_CHUNK);
        while let Some(bytes) = copy.next().await {
            decoder.push(&bytes.map_err(backend)?);
            while let Some(entry) = decoder.next_entry()? {
                chunk.push(entry);
                if chunk.len() == SCAN_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                    if out.send(Ok(full)).await.is_err() {
                        abandoned = true;
                        return Ok(());
                    }
                }
            }
        }
        if !decoder.finished() {
            return Err(StoreError::Backend(
                "the COPY stream ended before its trailer".into(),
            ));
        }
        if !chunk.is_empty() && out.send(Ok(chunk)).await.is_err() {
            abandoned = true;
            return Ok(());
        }
        tx.commit().await.map_err(backend)
    }
    .await;
    if let Err(e) = result {
        abandoned = true;
        let _ = out.send(Err(e)).await;
    }
    if abandoned {
        // Dropping the detached client closes its connection.
        drop(Object::take(client));
    }
}
