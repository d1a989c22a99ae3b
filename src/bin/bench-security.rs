//! Benchmark of the security projection: prints figures, asserts nothing.
//!
//! 1. Rule evaluation: the detector over a synthetic stream of `--events` (default 10 million)
//!    clinic events (the `demo` mix: logins, failed logins and a brute-force burst, PHI reads,
//!    updates, exports, refusals, a role change), in events/s; beside it, the whole projection
//!    step per entry (CBOR decode + rules + detections) on the first day.
//! 2. Lag: 64 closed-loop appenders (as in the PostgreSQL benchmark) append for `--seconds`
//!    while the projection follows the head through the same writer, as in `serve`; the lag
//!    (entries between the projection and the head) is sampled every 50 ms, then the time the
//!    projection needs to drain once the load stops. On PostgreSQL (DATABASE_URL, a fresh
//!    schema) and on the embedded store.
//!
//! Run with `scripts/bench-security` (release build).

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use auditledger::bench::{follow_under_load, machine, synthetic_rows, BenchSchema, SyntheticRows};
use clap::Parser;
use ledger::payload::{Payload, StoredEvent};
use ledger::projection::{Effects, Projection, Runner, VerifiedEntry};
use ledger::{Digest, GroupCommitWriter, Store, StreamId, SystemClock, Timestamp, WriterConfig};
use security::{Detector, Observation, RulesConfig, SecurityProjection};

#[derive(Parser)]
#[command(about = "Benchmark the security projection: rule evaluation and lag behind appends.")]
struct Args {
    /// PostgreSQL for the lag scenario (a fresh schema is created and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Events the rules evaluate.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Events of one synthetic day; the stream is made of such days, one after another.
    #[arg(long, default_value_t = 250_000)]
    day: usize,
    /// Seconds the append load of the lag scenario runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent appenders in the lag scenario.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Skip the lag scenario on PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
}

const DAY_MICROS: i64 = 86_400 * 1_000_000;
/// Distinct synthetic days; the stream repeats them, each shifted to its own date.
const SEEDS: u64 = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("auditledger security projection benchmark — {}", machine());
    rules(&args)?;
    lag_embedded(&args).await?;
    if !args.no_postgres {
        lag_postgres(&args).await?;
    }
    Ok(())
}

/// The synthetic days as the projection sees them: pseudonymized, encoded, decoded.
/// One synthetic day: the payloads as stored, and decoded.
type Day = (Vec<Vec<u8>>, Vec<StoredEvent>);

fn days(args: &Args) -> anyhow::Result<Vec<Day>> {
    let stream = StreamId::new("bench")?;
    (0..SEEDS)
        .map(|seed| {
            let SyntheticRows { prepared, .. } = synthetic_rows_seeded(args.day, &stream, seed)?;
            let payloads: Vec<Vec<u8>> = prepared.into_iter().map(|p| p.payload).collect();
            let events = payloads
                .iter()
                .map(|b| match Payload::decode(b) {
                    Ok(Payload::Event(e)) => Ok(e),
                    _ => Err(anyhow::anyhow!("a synthetic payload is not an event")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((payloads, events))
        })
        .collect()
}

fn synthetic_rows_seeded(n: usize, stream: &StreamId, seed: u64) -> anyhow::Result<SyntheticRows> {
    // `synthetic_rows` uses seed 1; other days come from other seeds of the same generator.
    if seed == 0 {
        return synthetic_rows(n, stream);
    }
    let ingest = ledger::Ingest::new(ledger::Pseudonymizer::new(
        ledger::PseudonymKey::from_bytes([7; 32]),
    ));
    let (events, _) = auditledger::synthetic::clinic_day(seed + 1, n);
    let prepared = ingest
        .prepare_batch(&events, None, 0)
        .map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    Ok(SyntheticRows {
        prepared,
        rows: Vec::new(),
        prepare_rate: 0.0,
        mean_payload: 0.0,
    })
}

fn rules(args: &Args) -> anyhow::Result<()> {
    let t = Instant::now();
    let days = days(args)?;
    println!(
        "{} synthetic days of {} events prepared in {:.1} s",
        days.len(),
        args.day,
        t.elapsed().as_secs_f64()
    );

    // The rules alone, over `events` events: day k is day (k mod SEEDS), k days later.
    let mut detector = Detector::new(RulesConfig::default());
    let mut detections = std::collections::BTreeMap::<&str, u64>::new();
    let started = Instant::now();
    let mut seq = 0u64;
    'outer: for k in 0.. {
        let (_, events) = &days[k % days.len()];
        let shift = k as i64 * DAY_MICROS;
        for e in events {
            if seq as usize >= args.events {
                break 'outer;
            }
            seq += 1;
            let Some(mut o) = Observation::from_event(seq, e) else {
                continue;
            };
            o.at = Timestamp(o.at.0 + shift);
            for d in detector.observe(&o) {
                *detections.entry(d.rule.name()).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "rule evaluation: {seq} events in {elapsed:.2} s = {:.0} events/s (one core); detections: {detections:?}",
        seq as f64 / elapsed
    );
    let state = security::detector::encode_state(&detector.snapshot());
    println!(
        "  detector state after the stream: {} bytes (saved with every projection commit)",
        state.len()
    );

    // The projection step per entry on the first day: decode the CBOR payload, apply.
    let (payloads, _) = &days[0];
    let mut projection = SecurityProjection::new(RulesConfig::default());
    let mut effects = Effects::default();
    let started = Instant::now();
    for (i, bytes) in payloads.iter().enumerate() {
        let event = match Payload::decode(bytes) {
            Ok(Payload::Event(e)) => Some(e),
            _ => None,
        };
        projection.apply(
            &VerifiedEntry {
                seq: i as u64 + 1,
                entry_hash: Digest::ZERO,
                recorded_at: Timestamp(0),
                event: event.as_ref(),
            },
            &mut effects,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "projection step (CBOR decode + rules + effects), one day: {} entries in {elapsed:.2} s = {:.0} entries/s (one core; the runner decodes on every core); {} detections",
        payloads.len(),
        payloads.len() as f64 / elapsed,
        effects.own.len()
    );
    Ok(())
}

async fn lag_embedded(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(store_sqlite::SqliteStore::open(dir.path())?);
    lag(args, store, "embedded SQLite").await
}

async fn lag_postgres(args: &Args) -> anyhow::Result<()> {
    let schema = BenchSchema::create(&args.database_url, "bench_security").await?;
    let outcome = match schema.store().await {
        Ok(store) => lag(args, store, "PostgreSQL").await,
        Err(e) => Err(e),
    };
    schema.finish(false).await?;
    outcome
}

/// Appenders for `seconds` with the projection following through the same writer.
async fn lag(args: &Args, store: Arc<dyn Store>, label: &str) -> anyhow::Result<()> {
    let stream = StreamId::new("lag")?;
    let SyntheticRows { prepared, .. } = synthetic_rows(200_000, &stream)?;
    let prepared = Arc::new(prepared);
    let (writer, writer_task) = GroupCommitWriter::start(
        store.clone(),
        stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    let runner = Runner::open(
        store.clone(),
        writer.clone(),
        SecurityProjection::new(RulesConfig::default()),
    )
    .await?;
    let (runner, lag) = follow_under_load(
        store.clone(),
        &writer,
        runner,
        prepared,
        args.appenders,
        args.seconds,
    )
    .await?;
    let own = runner.stats().own_entries.load(Ordering::Relaxed);
    drop(runner);
    drop(writer);
    writer_task.await?;
    println!();
    lag.print(label);
    println!("  the projection recorded {own} detections");
    Ok(())
}
