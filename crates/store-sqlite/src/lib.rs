//! The embedded default store: two SQLite files in the data directory, the ledger
//! (`ledger.db`) and the projections' read models (`projections.db`).
//!
//! - WAL journal with `synchronous = FULL`: a commit is on disk (the WAL is fsynced) before
//!   `append` returns, so a receipt is never given for an entry a crash could lose.
//! - The schema (`migrations/sqlite/`) refuses UPDATE and DELETE on entries and refuses an
//!   insert that does not continue the chain, so even a buggy or second writer cannot fork it.
//! - Schema 3 lets exactly one UPDATE through: a purge of old payloads (`purge_payloads`), and
//!   only for entries recorded six years or more before a purge authorization after them; the
//!   triggers check every row, whoever runs the UPDATE.
//! - Projections' positions and read-model rows (`migrations/sqlite-projections/`) are
//!   ordinary tables in a file of their own: derived data, updated and deleted in place, each
//!   commit one transaction on that file's writer connection. SQLite has one writer per file,
//!   so with the read models in the ledger file a projection's commit (up to a second of row
//!   changes) held up every append; in their own file it never does (ledger schema 4 moved
//!   them out). That file commits with `synchronous = NORMAL`: a crash may lose its last
//!   commits, never half of one, and the runner then re-applies those entries from the saved
//!   position, which commits atomically with the rows.
//! - Writes to each file go through one connection; reads use their own, and a scan opens a
//!   connection of its own inside one read transaction (a consistent snapshot while appends go
//!   on).
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ledger::record::PURGE_ACTION;
use ledger::store::SCAN_CHUNK;
use ledger::{
    AppendBatch, Clock, Columns, Digest, Entry, EntryChunks, EntryKind, Head, MerkleNode,
    ReadModelRow, RowChange, RowQuery, SavedProjection, Seq, Store, StoreError, StoredCheckpoint,
    StreamId, SystemClock, Timestamp,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

mod embedded {
    refinery::embed_migrations!("../../migrations/sqlite");
}

mod embedded_projections {
    refinery::embed_migrations!("../../migrations/sqlite-projections");
}

/// File name of the ledger inside the data directory.
pub const DB_FILE: &str = "ledger.db";

/// File name of the projections' positions and read models inside the data directory.
pub const PROJECTIONS_FILE: &str = "projections.db";

/// Highest schema version of the ledger file this build knows.
pub const SCHEMA_VERSION: i32 = 4;

/// Highest schema version of the projections file this build knows.
pub const PROJECTIONS_SCHEMA_VERSION: i32 = 3;

const COLUMNS: &str = "stream, seq, recorded_at, payload, payload_digest, prev_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, idem";

/// A connection shared by the calls of a store (one writer or one reader of one file).
type Shared = Arc<Mutex<Connection>>;

pub struct SqliteStore {
    path: PathBuf,
    writer: Shared,
    reader: Shared,
    projections_writer: Shared,
    projections_reader: Shared,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Maps an insert failure: uniqueness and chain-continuity refusals mean another writer got
/// there first.
fn insert_error(e: rusqlite::Error) -> StoreError {
    let text = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(err, _)
            if err.code == rusqlite::ErrorCode::ConstraintViolation
                || text.contains("does not continue the chain") =>
        {
            StoreError::Conflict(text)
        }
        _ => StoreError::Backend(text),
    }
}

/// Maps a purge failure: the triggers' refusal (schema 3) is the store's rule, not a fault.
fn purge_error(e: rusqlite::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("purge refused") {
        StoreError::Refused(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Sequence numbers are SQLite integers (i64); a `Seq` beyond `i64::MAX` cannot exist in the
/// table.
fn seq_param(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// How a file's commits reach the disk.
#[derive(Clone, Copy)]
enum Durability {
    /// fsync the WAL at every commit: the ledger gives receipts, and NORMAL could lose the last
    /// commits on power loss after their receipts were given.
    EveryCommit,
    /// fsync at checkpoints only: a crash may lose the last commits whole (never part of one).
    /// For derived data whose position commits with it, so what was lost is re-derived.
    Checkpoints,
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::EveryCommit => "FULL",
        Durability::Checkpoints => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // 32 MiB of page cache (the default is 2 MiB): read-model rows are keyed by pseudonyms,
    // so their index inserts land on random pages, and a small cache rereads them per row.
    conn.pragma_update(None, "cache_size", -32_768)?;
    if let Durability::Checkpoints = durability {
        for (pragma, value) in PROJECTIONS_PRAGMAS {
            conn.pragma_update(None, pragma, value)?;
        }
    }
    Ok(())
}

/// Settings of the projections file's writer. A projection's commit holds tens of thousands of
/// rows (`phi-access` commits 65 536 entries at a time while behind): with 32 MiB of cache the
/// pages it dirties overflow into the write-ahead log before the commit (and are read back),
/// and with the default automatic checkpoint (1 000 pages) every commit is followed by a
/// checkpoint that copies each page it wrote back into the file, so a page written by
/// successive commits is copied once per commit. The cache is an upper bound, taken as used; the
/// log is cut back to `journal_size_limit` after a checkpoint, so a burst does not leave a
/// large file behind. Measured in docs/PERFORMANCE.md (session 13).
const PROJECTIONS_PRAGMAS: [(&str, i64); 3] = [
    // 256 MiB (negative: KiB).
    ("cache_size", -262_144),
    // Pages (4 KiB): 64 MiB of log between checkpoints.
    ("wal_autocheckpoint", 16_384),
    // Bytes.
    ("journal_size_limit", 64 << 20),
];

/// Opens (creating if needed) the database file at `path`, applies `migrations` and checks that
/// the file is at `version`: the writer and a read-only reader.
fn open_file(
    path: &Path,
    migrations: refinery::Runner,
    version: i32,
    durability: Durability,
) -> Result<(Connection, Connection), StoreError> {
    let mut writer = Connection::open(path)
        .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
    configure(&writer, durability).map_err(backend)?;
    let report = migrations
        .run(&mut writer)
        .map_err(|e| StoreError::Corrupt(format!("cannot migrate {}: {e}", path.display())))?;
    for m in report.applied_migrations() {
        tracing::info!(
            file = %path.display(),
            version = m.version(),
            name = m.name(),
            "applied embedded-store migration"
        );
    }
    let found: i32 = writer
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if found != version {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {found}, this build knows {version}: use a matching auditledger",
            path.display()
        )));
    }
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    reader
        .busy_timeout(Duration::from_secs(30))
        .map_err(backend)?;
    Ok((writer, reader))
}

/// Runs `f` on `conn` on the blocking pool.
async fn on<T: Send + 'static>(
    conn: &Shared,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().map_err(|_| backend("connection poisoned"))?;
        f(&mut conn)
    })
    .await
    .map_err(backend)?
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger and the projections file in `data_dir`, applying
    /// migrations.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        let (writer, reader) = open_file(
            &path,
            embedded::migrations::runner(),
            SCHEMA_VERSION,
            Durability::EveryCommit,
        )?;
        let (projections_writer, projections_reader) = open_file(
            &data_dir.join(PROJECTIONS_FILE),
            embedded_projections::migrations::runner(),
            PROJECTIONS_SCHEMA_VERSION,
            Durability::Checkpoints,
        )?;
        let shared = |c| Arc::new(Mutex::new(c));
        Ok(SqliteStore {
            path,
            writer: shared(writer),
            reader: shared(reader),
            projections_writer: shared(projections_writer),
            projections_reader: shared(projections_reader),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        on(&self.reader, move |c| f(c)).await
    }

    /// Runs `f` on the ledger's writer connection on the blocking pool.
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        on(&self.writer, f).await
    }
}

fn blob32(row: &Row, idx: usize, name: &str) -> rusqlite::Result<Digest> {
    // Borrowed, not copied into a Vec first: this runs for every column of every row a
    // verification reads.
    let bytes = row.get_ref(idx)?.as_blob()?;
    Digest::from_slice(bytes).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            format!("{name} is not 32 bytes").into(),
        )
    })
}

/// One row of `COLUMNS` as an entry of `stream` (every query filters on it; a row of another
/// stream would be a store bug and is reported as corrupt).
fn entry_from_row(row: &Row, stream: &StreamId) -> rusqlite::Result<Entry> {
    let conversion = |idx, why: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, why.into())
    };
    if row.get_ref(0)?.as_str()? != stream.as_str() {
        return Err(conversion(
            0,
            format!("row of another stream in a read of {stream}"),
        ));
    }
    let kind = row.get_ref(7)?.as_str()?;
    let idem = row.get_ref(14)?.as_blob_or_null()?;
    Ok(Entry {
        stream: stream.clone(),
        seq: row.get::<_, i64>(1)? as Seq,
        recorded_at: Timestamp(row.get(2)?),
        payload: row.get(3)?,
        payload_digest: blob32(row, 4, "payload_digest")?,
        prev_hash: blob32(row, 5, "prev_hash")?,
        entry_hash: blob32(row, 6, "entry_hash")?,
        columns: Columns {
            kind: EntryKind::parse(kind)
                .ok_or_else(|| conversion(7, format!("unknown entry kind {kind:?}")))?,
            occurred_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
            action: row.get(9)?,
            outcome: row.get(10)?,
            actor: row.get(11)?,
            patient: row.get(12)?,
            phi: row.get(13)?,
            // A wrong-sized digest cannot match any payload's; keep it visible to the verifier
            // as a mismatch rather than failing the read.
            idem: idem.map(|b| Digest::from_slice(b).unwrap_or(Digest::ZERO)),
        },
    })
}

fn corrupt(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        other => backend(other),
    }
}

/// A read of `read_model_rows` for `q`: the conditions `q` has, in `(at, key, ord)` order or
/// its reverse. Always seven parameters (`?1` projection, `?2` stream, `?3` table, `?4` key,
/// `?5` from, `?6` to, `?7` limit); a condition left out leaves its parameter unused, so one
/// parameter list fits every variant, and each variant is one cached statement. The table's
/// integer id (projections-file schema 3) is looked up once per statement; a table never
/// written has none, and no rows.
///
/// One key's rows are read through the primary key and sorted (projections-file schema 2 has no
/// by-key-and-time index). SQLite keeps no statistics here, and left to itself it served "one
/// key over a time range" from the by-time index, filtering every row of the range: 10.4 s
/// instead of 15 ms for one patient's six years at 1 M entries. `+at` (an expression, not the
/// column) keeps the time terms and the order from selecting that index.
fn read_model_sql(q: &RowQuery) -> String {
    let mut sql = String::from(
        "SELECT key, ord, at, value FROM read_model_rows
         WHERE model = (SELECT id FROM read_models WHERE projection = ?1 AND stream = ?2 AND tbl = ?3)",
    );
    let at = if q.key.is_some() {
        sql.push_str(" AND key = ?4");
        "+at"
    } else {
        "at"
    };
    if q.from.is_some() {
        sql.push_str(&format!(" AND {at} >= ?5"));
    }
    if q.to.is_some() {
        sql.push_str(&format!(" AND {at} < ?6"));
    }
    sql.push_str(&if q.newest_first {
        format!(" ORDER BY {at} DESC, key DESC, ord DESC LIMIT ?7")
    } else {
        format!(" ORDER BY {at}, key, ord LIMIT ?7")
    });
    sql
}

/// The integer id of `table` of projection `name` over `stream` (projections-file schema 3),
/// registered in `tx` if this is the table's first row. Ids are never deleted or reused.
fn model_id_in(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    stream: &str,
    table: &str,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO read_models (projection, stream, tbl) VALUES (?1, ?2, ?3)
         ON CONFLICT (projection, stream, tbl) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![name, stream, table]))
    .and_then(|_| {
        tx.prepare_cached(
            "SELECT id FROM read_models WHERE projection = ?1 AND stream = ?2 AND tbl = ?3",
        )?
        .query_row(params![name, stream, table], |r| r.get(0))
    })
    .map_err(backend)
}

/// Writes the saved position if it is still `expected`, then applies `changes` in order, all
/// in `tx`. The caller commits; an error leaves `tx` to be dropped, which rolls it back.
fn commit_projection_in(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    stream: &str,
    expected: Option<Seq>,
    saved: &SavedProjection,
    changes: &[RowChange],
    updated_at: i64,
) -> Result<(), StoreError> {
    let moved = match expected {
        // DO NOTHING rather than a unique-violation error: no row written means another
        // runner saved a position first.
        None => tx
            .prepare_cached(
                "INSERT INTO projection_positions (projection, stream, seq, entry_hash, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (projection, stream) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name,
                    stream,
                    saved.seq as i64,
                    &saved.entry_hash.0[..],
                    &saved.state[..],
                    updated_at
                ])
            }),
        Some(at) => tx
            .prepare_cached(
                "UPDATE projection_positions SET seq = ?3, entry_hash = ?4, state = ?5, updated_at = ?6
                 WHERE projection = ?1 AND stream = ?2 AND seq = ?7",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name,
                    stream,
                    saved.seq as i64,
                    &saved.entry_hash.0[..],
                    &saved.state[..],
                    updated_at,
                    at as i64
                ])
            }),
    }
    .map_err(backend)?;
    if moved != 1 {
        return Err(StoreError::Conflict(match expected {
            None => format!("projection {name} of stream {stream} has a saved position already"),
            Some(at) => format!("projection {name} of stream {stream} is no longer at {at}"),
        }));
    }
    let mut put = tx
        .prepare_cached(
            "INSERT INTO read_model_rows (model, key, ord, at, value) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (model, key, ord) DO UPDATE SET at = excluded.at, value = excluded.value",
        )
        .map_err(backend)?;
    let mut delete = tx
        .prepare_cached("DELETE FROM read_model_rows WHERE model = ?1 AND key = ?2 AND ord = ?3")
        .map_err(backend)?;
    // A commit writes a handful of tables: their ids, looked up once each.
    let mut models: Vec<(&str, i64)> = Vec::new();
    // In key order: read-model keys are pseudonyms, random, so rows in arrival order land on
    // random pages of the primary key; sorted, neighbouring rows share pages (measured with
    // scripts/bench-phi, 4M entries: the phi-access projection 1.23x faster). The sort is
    // stable, so changes to one row keep their order.
    let mut order: Vec<&RowChange> = changes.iter().collect();
    order.sort_by(|a, b| row_id(a).cmp(&row_id(b)));
    for change in order {
        let (table, key, ord) = row_id(change);
        let model = match models.iter().find(|(t, _)| *t == table) {
            Some(&(_, id)) => id,
            None => {
                let id = model_id_in(tx, name, stream, table)?;
                models.push((table, id));
                id
            }
        };
        match change {
            RowChange::Put(r) => put.execute(params![model, key, ord, r.at.micros(), r.value]),
            RowChange::Delete { .. } => delete.execute(params![model, key, ord]),
        }
        .map_err(backend)?;
    }
    Ok(())
}

/// The row a change is about.
fn row_id(c: &RowChange) -> (&str, &str, i64) {
    match c {
        RowChange::Put(r) => (&r.table, &r.key, r.ord),
        RowChange::Delete { table, key, ord } => (table, key, *ord),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn head(&self, stream: &StreamId) -> Result<Option<Head>, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |c| {
            c.prepare_cached("SELECT seq, entry_hash, recorded_at FROM entries WHERE stream = ?1 ORDER BY seq DESC LIMIT 1")
                .and_then(|mut s| {
                    s.query_row([stream.as_str()], |r| {
                        Ok(Head {
                            seq: r.get::<_, i64>(0)? as Seq,
                            entry_hash: blob32(r, 1, "entry_hash")?,
                            recorded_at: Timestamp(r.get(2)?),
                        })
                    })
                    .optional()
                })
                .map_err(corrupt)
        })
        .await
    }

    async fn append(&self, batch: AppendBatch) -> Result<(), StoreError> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| backend("writer connection poisoned"))?;
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            {
                let mut insert = tx
                    .prepare_cached(&format!("INSERT INTO entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"))
                    .map_err(backend)?;
                for e in &batch.entries {
                    let c = &e.columns;
                    insert
                        .execute(params![
                            e.stream.as_str(),
                            e.seq as i64,
                            e.recorded_at.micros(),
                            e.payload,
                            &e.payload_digest.0[..],
                            &e.prev_hash.0[..],
                            &e.entry_hash.0[..],
                            c.kind.as_str(),
                            c.occurred_at.map(|t| t.micros()),
                            c.action,
                            c.outcome,
                            c.actor,
                            c.patient,
                            c.phi,
                            c.idem.as_ref().map(|d| &d.0[..]),
                        ])
                        .map_err(insert_error)?;
                }
                let mut node = tx
                    .prepare_cached("INSERT INTO merkle_nodes (stream, level, idx, hash) VALUES (?1, ?2, ?3, ?4)")
                    .map_err(backend)?;
                let stream = batch.entries.first().map(|e| e.stream.as_str()).unwrap_or_default();
                for n in &batch.nodes {
                    node.execute(params![stream, n.level, n.index as i64, &n.hash.0[..]]).map_err(insert_error)?;
                }
            }
            // Dropping the transaction on an error above rolls it back: all or nothing.
            tx.commit().map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    async fn purge_payloads(
        &self,
        stream: &StreamId,
        authorization: Seq,
        from: Seq,
        to: Seq,
    ) -> Result<u64, StoreError> {
        let stream = stream.clone();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            let action: Option<Option<String>> = tx
                .prepare_cached("SELECT action FROM entries WHERE stream = ?1 AND seq = ?2")
                .and_then(|mut s| {
                    s.query_row(params![stream.as_str(), seq_param(authorization)], |r| {
                        r.get(0)
                    })
                    .optional()
                })
                .map_err(backend)?;
            match action {
                None => {
                    return Err(StoreError::Refused(format!(
                        "stream {stream} has no entry {authorization}"
                    )))
                }
                Some(a) if a.as_deref() != Some(PURGE_ACTION) => {
                    return Err(StoreError::Refused(format!(
                        "entry {authorization} of stream {stream} is not a purge authorization"
                    )))
                }
                Some(_) => {}
            }
            if authorization <= to {
                return Err(StoreError::Refused(format!(
                    "the authorization (entry {authorization}) must come after the purged range (up to {to})"
                )));
            }
            // The triggers (schema 3) check every row: recorded at least six years before a purge
            // authorization after it, nothing but the payload and its columns changed.
            let removed = tx
                .prepare_cached(
                    "UPDATE entries SET payload = NULL, occurred_at = NULL, action = NULL, outcome = NULL,
                     actor = NULL, patient = NULL, phi = 0, idem = NULL
                     WHERE stream = ?1 AND seq BETWEEN ?2 AND ?3 AND payload IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.execute(params![stream.as_str(), seq_param(from), seq_param(to)])
                })
                .map_err(purge_error)?;
            // Dropping the transaction on an error above rolls it back: a refused row leaves
            // every payload of the range in place.
            tx.commit().map_err(backend)?;
            Ok(removed as u64)
        })
        .await
    }

    async fn find_idempotent(
        &self,
        stream: &StreamId,
        idem: &[Digest],
    ) -> Result<Vec<Entry>, StoreError> {
        let stream = stream.clone();
        let idem = idem.to_vec();
        self.with_reader(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM entries WHERE stream = ?1 AND idem = ?2"
                ))
                .map_err(backend)?;
            let mut out = Vec::new();
            for d in &idem {
                if let Some(e) = stmt
                    .query_row(params![stream.as_str(), &d.0[..]], |r| {
                        entry_from_row(r, &stream)
                    })
                    .optional()
                    .map_err(corrupt)?
                {
                    out.push(e);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get(&self, stream: &StreamId, seq: Seq) -> Result<Option<Entry>, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE stream = ?1 AND seq = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![stream.as_str(), seq as i64], |r| {
                    entry_from_row(r, &stream)
                })
                .optional()
            })
            .map_err(corrupt)
        })
        .await
    }

    async fn read(
        &self,
        stream: &StreamId,
        from: Seq,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let stream = stream.clone();
        let end = i64::try_from(from.saturating_add(limit as u64)).unwrap_or(i64::MAX);
        self.with_reader(move |c| {
            let mut s = c
                .prepare_cached(&format!("SELECT {COLUMNS} FROM entries WHERE stream = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq"))
                .map_err(backend)?;
            let rows = s
                .query_map(params![stream.as_str(), from as i64, end], |r| entry_from_row(r, &stream))
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
        })
        .await
    }

    fn scan(&self, stream: &StreamId, from: Seq) -> EntryChunks {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let path = self.path.clone();
        let stream = stream.clone();
        std::thread::spawn(move || {
            let run = || -> Result<(), StoreError> {
                let mut conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(backend)?;
                conn.busy_timeout(Duration::from_secs(30))
                    .map_err(backend)?;
                // One read transaction: the scan sees one snapshot even while appends go on.
                let txn = conn.transaction().map_err(backend)?;
                let mut stmt = txn
                    .prepare(&format!("SELECT {COLUMNS} FROM entries WHERE stream = ?1 AND seq >= ?2 ORDER BY seq"))
                    .map_err(backend)?;
                let mut rows = stmt
                    .query(params![stream.as_str(), from as i64])
                    .map_err(backend)?;
                let mut chunk = Vec::with_capacity(SCAN_CHUNK);
                while let Some(row) = rows.next().map_err(backend)? {
                    chunk.push(entry_from_row(row, &stream).map_err(corrupt)?);
                    if chunk.len() == SCAN_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                        if tx.blocking_send(Ok(full)).is_err() {
                            return Ok(()); // the consumer stopped early
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(chunk));
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }

    async fn streams(&self) -> Result<Vec<StreamId>, StoreError> {
        self.with_reader(|c| {
            // Skip-scan over the primary key: one index probe per stream, not a table scan.
            let mut s = c
                .prepare_cached(
                    "WITH RECURSIVE s(name) AS (
                        SELECT MIN(stream) FROM entries
                        UNION ALL
                        SELECT (SELECT MIN(stream) FROM entries WHERE stream > s.name) FROM s WHERE s.name IS NOT NULL)
                     SELECT name FROM s WHERE name IS NOT NULL",
                )
                .map_err(backend)?;
            let names = s.query_map([], |r| r.get::<_, String>(0)).map_err(backend)?;
            names
                .map(|n| {
                    let n = n.map_err(backend)?;
                    StreamId::new(&n).map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect()
        })
        .await
    }

    async fn merkle_nodes(
        &self,
        stream: &StreamId,
        wanted: &[(u8, u64)],
    ) -> Result<Vec<MerkleNode>, StoreError> {
        let stream = stream.clone();
        let wanted = wanted.to_vec();
        self.with_reader(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT hash FROM merkle_nodes WHERE stream = ?1 AND level = ?2 AND idx = ?3",
                )
                .map_err(backend)?;
            let mut out = Vec::with_capacity(wanted.len());
            for (level, index) in wanted {
                let hash = s
                    .query_row(params![stream.as_str(), level, index as i64], |r| {
                        blob32(r, 0, "hash")
                    })
                    .optional()
                    .map_err(corrupt)?;
                if let Some(hash) = hash {
                    out.push(MerkleNode { level, index, hash });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn merkle_level(
        &self,
        stream: &StreamId,
        level: u8,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<MerkleNode>, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |c| {
            let mut s = c
                .prepare_cached("SELECT idx, hash FROM merkle_nodes WHERE stream = ?1 AND level = ?2 AND idx >= ?3 ORDER BY idx LIMIT ?4")
                .map_err(backend)?;
            let rows = s
                .query_map(params![stream.as_str(), level, from_index as i64, limit as i64], |r| {
                    Ok(MerkleNode { level, index: r.get::<_, i64>(0)? as u64, hash: blob32(r, 1, "hash")? })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
        })
        .await
    }

    async fn entry_hashes(
        &self,
        stream: &StreamId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Digest>, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |c| {
            let mut s = c
                .prepare_cached("SELECT entry_hash FROM entries WHERE stream = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq")
                .map_err(backend)?;
            let rows = s
                .query_map(params![stream.as_str(), from as i64, to as i64], |r| blob32(r, 0, "entry_hash"))
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
        })
        .await
    }

    async fn put_checkpoint(
        &self,
        stream: &StreamId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let conn = self.writer.clone();
        let stream = stream.clone();
        let checkpoint = checkpoint.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| backend("writer connection poisoned"))?;
            conn.execute(
                "INSERT INTO checkpoints (stream, size, note) VALUES (?1, ?2, ?3) ON CONFLICT (stream, size) DO NOTHING",
                params![stream.as_str(), checkpoint.size as i64, checkpoint.note],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    async fn checkpoints(&self, stream: &StreamId) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let stream = stream.clone();
        self.with_reader(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT size, note FROM checkpoints WHERE stream = ?1 ORDER BY size",
                )
                .map_err(backend)?;
            let rows = s
                .query_map([stream.as_str()], |r| {
                    Ok(StoredCheckpoint {
                        size: r.get::<_, i64>(0)? as u64,
                        note: r.get(1)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
        })
        .await
    }

    async fn projection(
        &self,
        name: &str,
        stream: &StreamId,
    ) -> Result<Option<SavedProjection>, StoreError> {
        let name = name.to_owned();
        let stream = stream.clone();
        on(&self.projections_reader, move |c| {
            c.prepare_cached(
                "SELECT seq, entry_hash, state FROM projection_positions WHERE projection = ?1 AND stream = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![name, stream.as_str()], |r| {
                    Ok(SavedProjection {
                        seq: r.get::<_, i64>(0)? as Seq,
                        entry_hash: blob32(r, 1, "entry_hash")?,
                        state: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(corrupt)
        })
        .await
    }

    async fn commit_projection(
        &self,
        name: &str,
        stream: &StreamId,
        expected: Option<Seq>,
        saved: &SavedProjection,
        changes: &[RowChange],
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        let stream = stream.clone();
        let saved = saved.clone();
        let changes = changes.to_vec();
        let updated_at = SystemClock.now().micros();
        on(&self.projections_writer, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            commit_projection_in(
                &tx,
                &name,
                stream.as_str(),
                expected,
                &saved,
                &changes,
                updated_at,
            )?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn reset_projection(&self, name: &str, stream: &StreamId) -> Result<(), StoreError> {
        let name = name.to_owned();
        let stream = stream.clone();
        on(&self.projections_writer, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            for sql in [
                "DELETE FROM projection_positions WHERE projection = ?1 AND stream = ?2",
                "DELETE FROM read_model_rows
                 WHERE model IN (SELECT id FROM read_models WHERE projection = ?1 AND stream = ?2)",
            ] {
                tx.prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![name, stream.as_str()]))
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn read_model_rows(
        &self,
        name: &str,
        stream: &StreamId,
        query: &RowQuery,
    ) -> Result<Vec<ReadModelRow>, StoreError> {
        let name = name.to_owned();
        let stream = stream.clone();
        let query = query.clone();
        on(&self.projections_reader, move |c| {
            let mut s = c.prepare_cached(&read_model_sql(&query)).map_err(backend)?;
            let rows = s
                .query_map(
                    params![
                        name,
                        stream.as_str(),
                        query.table,
                        query.key,
                        query.from.map(Timestamp::micros),
                        query.to.map(Timestamp::micros),
                        i64::try_from(query.limit).unwrap_or(i64::MAX),
                    ],
                    |r| {
                        Ok(ReadModelRow {
                            table: query.table.clone(),
                            key: r.get(0)?,
                            ord: r.get(1)?,
                            at: Timestamp(r.get(2)?),
                            value: r.get(3)?,
                        })
                    },
                )
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of every read-model query shape on a migrated projections file: one key's rows
    /// come from the primary key, all rows over time from the by-time index, each searched
    /// for one table's id.
    #[test]
    fn read_model_queries_use_the_index_their_shape_needs() {
        let mut conn = Connection::open_in_memory().unwrap();
        embedded_projections::migrations::runner()
            .run(&mut conn)
            .unwrap();
        for key in [None, Some("k".to_owned())] {
            for (from, to) in [(None, None), (Some(Timestamp(1)), Some(Timestamp(9)))] {
                for newest_first in [false, true] {
                    let q = RowQuery {
                        table: "t".into(),
                        key: key.clone(),
                        from,
                        to,
                        limit: 10,
                        newest_first,
                    };
                    let sql = read_model_sql(&q);
                    let plan: Vec<String> = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .unwrap()
                        .query_map(params!["p", "default", "t", "k", 1i64, 9i64, 10i64], |r| {
                            r.get::<_, String>(3)
                        })
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let plan = plan.join("\n");
                    let index = if key.is_some() {
                        "SEARCH read_model_rows USING PRIMARY KEY (model=? AND key=?)"
                    } else {
                        "SEARCH read_model_rows USING INDEX read_model_rows_at (model=?"
                    };
                    assert!(plan.contains(index), "{sql}:\n{plan}");
                }
            }
        }
    }
}
