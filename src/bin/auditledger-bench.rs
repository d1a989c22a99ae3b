//! Benchmark of the embedded store: prints figures, asserts nothing (timing thresholds do not
//! belong in tests on shared machines). Everything runs in one process, on the same rows, so
//! the ratios compare like with like:
//!
//! - baselines: the same rows inserted into a plain SQLite table (same columns, WAL,
//!   synchronous=FULL, the same table layout, no hashing, no triggers), one INSERT + COMMIT per event (the old
//!   approach) and in bulk transactions (the ceiling);
//! - auditledger: 1, 16 and 64 concurrent appenders, each sending one event per request (as a
//!   service does per HTTP request), through the group-commit writer;
//! - verify: entries/s beside a raw read of the same rows and the 2-core SHA-256 speed for
//!   entries of that size.
//!
//! Run with `scripts/bench` (release build).

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use auditledger::bench::{
    closed_loop_appends, machine, print_table, synthetic_rows, Row, SyntheticRows,
};
use clap::Parser;
use ledger::hash::{entry_preimage, PREIMAGE_MAX};
use ledger::verify::verify_store;
use ledger::{
    Entry, GroupCommitWriter, HashAlg, PreparedEntry, Store, StreamId, SystemClock, VerifyOptions,
    WriterConfig,
};
use rayon::prelude::*;
use rusqlite::{params, Connection};
use store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(about = "Benchmark the embedded store against plain SQLite inserts of the same rows.")]
struct Args {
    /// Seconds each append scenario runs.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Events prepared (and reused) for the scenarios.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Entries in the ledger that verify reads.
    #[arg(long, default_value_t = 500_000)]
    verify_entries: usize,
    /// Directory for the benchmark's files (a temporary one by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn plain_table(path: &std::path::Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS plain (stream TEXT NOT NULL, seq INTEGER NOT NULL, recorded_at INTEGER NOT NULL, payload BLOB,
         payload_digest BLOB NOT NULL, prev_hash BLOB NOT NULL, entry_hash BLOB NOT NULL, kind TEXT NOT NULL, occurred_at INTEGER,
         action TEXT, outcome TEXT, actor TEXT, patient TEXT, phi INTEGER NOT NULL, idem BLOB, PRIMARY KEY (stream, seq));",
    )?;
    Ok(c)
}

fn insert_plain(c: &Connection, e: &Entry, seq: u64) -> rusqlite::Result<usize> {
    let k = &e.columns;
    c.prepare_cached(
        "INSERT INTO plain VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        e.stream.as_str(), seq as i64, e.recorded_at.micros(), e.payload, &e.payload_digest.0[..], &e.prev_hash.0[..],
        &e.entry_hash.0[..], k.kind.as_str(), k.occurred_at.map(|t| t.micros()), k.action, k.outcome, k.actor, k.patient, k.phi,
        k.idem.as_ref().map(|d| &d.0[..]),
    ])
}

/// One INSERT + COMMIT per event from `threads` threads (each its own connection), for `secs`.
fn plain_per_event(
    path: &std::path::Path,
    rows: &[Entry],
    threads: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    plain_table(path)?;
    let next = std::sync::atomic::AtomicU64::new(1_000_000_000);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let next = &next;
                s.spawn(move || -> u64 {
                    let c = plain_table(path).expect("open");
                    c.busy_timeout(Duration::from_secs(30)).expect("timeout");
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let row = &rows[(seq as usize + t) % rows.len()];
                        insert_plain(&c, row, seq).expect("insert");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// The same rows in bulk transactions of 4096 (the ceiling of plain SQLite inserts).
fn plain_bulk(path: &std::path::Path, rows: &[Entry]) -> anyhow::Result<f64> {
    let mut c = plain_table(path)?;
    let start = Instant::now();
    for (chunk_no, chunk) in rows.chunks(4096).enumerate() {
        let tx = c.transaction()?;
        for (i, e) in chunk.iter().enumerate() {
            insert_plain(&tx, e, 2_000_000_000 + (chunk_no * 4096 + i) as u64)?;
        }
        tx.commit()?;
    }
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    println!(
        "auditledger embedded-store benchmark — {} — files in {}",
        machine(),
        dir.display()
    );

    // The same events for everyone.
    let stream = StreamId::default();
    let SyntheticRows {
        prepared,
        rows,
        prepare_rate,
        mean_payload,
    } = synthetic_rows(args.events, &stream)?;
    println!(
        "{} synthetic clinic events, mean payload {mean_payload:.0} bytes; validate + pseudonymize + encode + digest: {prepare_rate:.0} events/s (all cores, done by the callers)",
        rows.len()
    );

    // Baselines and auditledger, appends.
    let secs = args.seconds;
    let bulk = plain_bulk(&dir.join("plain-bulk.db"), &rows).context("plain bulk inserts")?;
    let mut table = vec![Row {
        name: "plain SQLite, bulk transactions of 4096 (ceiling)".into(),
        per_sec: bulk,
        p50_ms: None,
        p99_ms: None,
        batch: Some(4096.0),
    }];
    for threads in [1, 16, 64] {
        let rate = plain_per_event(
            &dir.join(format!("plain-{threads}.db")),
            &rows,
            threads,
            secs.min(3.0),
        )?;
        table.push(Row {
            name: format!(
                "plain SQLite, INSERT+COMMIT per event, {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            ),
            per_sec: rate,
            p50_ms: None,
            p99_ms: None,
            batch: Some(1.0),
        });
    }
    let per_event_64 = table.last().map(|r| r.per_sec).unwrap_or(1.0);
    let ledger_dir = dir.join("ledger");
    let shared = Arc::new(prepared.clone());
    for appenders in [1, 16, 64] {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&ledger_dir)?);
        let name = format!(
            "auditledger, {appenders} appender{}",
            if appenders == 1 { "" } else { "s" }
        );
        let stream = StreamId::new(&format!("bench-{appenders}"))?;
        table
            .push(closed_loop_appends(store, stream, shared.clone(), appenders, secs, name).await?);
    }
    print_table(
        "Appends, each event acknowledged only after its transaction committed (synchronous=FULL)",
        &table,
        bulk,
        "the bulk-insert ceiling",
    );
    let ours_64 = table.last().map(|r| r.per_sec).unwrap_or(0.0);
    println!(
        "  64 appenders: {:.2}x plain bulk inserts, {:.1}x plain INSERT+COMMIT per event from 64 threads",
        ours_64 / bulk,
        ours_64 / per_event_64
    );

    // Verify: a ledger of `verify_entries` entries, written in large requests.
    let vdir = dir.join("verify");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&vdir)?);
    let vstream = StreamId::new("verify")?;
    let (writer, task) = GroupCommitWriter::start(
        store.clone(),
        vstream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    let mut written = 0;
    while written < args.verify_entries {
        let n = 4096.min(args.verify_entries - written);
        let batch: Vec<PreparedEntry> = (0..n)
            .map(|i| prepared[(written + i) % prepared.len()].clone())
            .collect();
        writer.append(batch).await?;
        written += n;
    }
    drop(writer);
    task.await?;
    let total = args.verify_entries as f64 + 1.0;

    // Ceiling 1: a raw read of the same rows.
    let db = vdir.join(store_sqlite::DB_FILE);
    let t = Instant::now();
    let raw_bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let c = Connection::open(&db)?;
        let mut s = c.prepare("SELECT stream, seq, recorded_at, payload, payload_digest, prev_hash, entry_hash, kind, occurred_at, action, outcome, actor, patient, phi, idem FROM entries WHERE stream = 'verify' ORDER BY seq")?;
        let mut rows = s.query([])?;
        let mut bytes = 0usize;
        // Every column, as bytes, as any reader of the same rows must.
        while let Some(r) = rows.next()? {
            for i in 0..15 {
                bytes += match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Blob(b) => b.len(),
                    rusqlite::types::ValueRef::Text(t) => t.len(),
                    rusqlite::types::ValueRef::Integer(_) | rusqlite::types::ValueRef::Real(_) => 8,
                    rusqlite::types::ValueRef::Null => 0,
                };
            }
        }
        Ok(bytes)
    })
    .await??;
    let raw_read = total / t.elapsed().as_secs_f64();
    // Ceiling 2: SHA-256 of each entry's payload and preimage, on 2 cores.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    let t = Instant::now();
    let sample: Vec<&Entry> = rows.iter().collect();
    let hashed: usize = pool.install(|| {
        sample
            .par_iter()
            .map(|e| {
                let d = HashAlg::Sha256.payload_digest(e.payload.as_deref().unwrap_or_default());
                let mut buf = [0u8; PREIMAGE_MAX];
                let n = entry_preimage(
                    &mut buf,
                    HashAlg::Sha256,
                    &e.stream,
                    e.seq,
                    e.recorded_at,
                    &e.prev_hash,
                    &d,
                );
                HashAlg::Sha256.digest(&buf[..n]).0[0] as usize
            })
            .sum()
    });
    std::hint::black_box(hashed);
    let sha_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
    // auditledger verify.
    let t = Instant::now();
    let report = verify_store(store.as_ref(), &vstream, &VerifyOptions::default(), |_| {}).await?;
    let verify_rate = report.entries as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(report.ok, "the benchmark ledger must verify: {report:?}");
    let ceiling = raw_read.min(sha_rate);
    let vrows = vec![
        Row {
            name: "raw read of the same rows, every column (SQLite)".into(),
            per_sec: raw_read,
            p50_ms: None,
            p99_ms: None,
            batch: None,
        },
        Row {
            name: "SHA-256 of payload + preimage, 2 cores".into(),
            per_sec: sha_rate,
            p50_ms: None,
            p99_ms: None,
            batch: None,
        },
        Row {
            name: "auditledger verify (everything recomputed)".into(),
            per_sec: verify_rate,
            p50_ms: None,
            p99_ms: None,
            batch: None,
        },
    ];
    print_table(
        &format!(
            "Verify, {} entries ({:.0} MB read)",
            report.entries,
            raw_bytes as f64 / 1e6
        ),
        &vrows,
        ceiling,
        "the slower ceiling",
    );
    Ok(())
}
