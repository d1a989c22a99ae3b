//! Benchmark of the phi-access projection and the reports: prints figures, asserts nothing.
//!
//! 1. Fill: `--events` (default 10 million) synthetic events spread over six years (staff of
//!    500 reading the charts of 200 000 patients; logins, failed logins, exports, role
//!    changes), appended through the group-commit writer of the embedded store (or, with
//!    `--database-url`, of PostgreSQL in a fresh schema) in large requests: the store's peak
//!    append rate on this machine.
//! 2. Projection: the phi-access projection catches up from the first entry, in entries/s,
//!    beside the peak append rate (it must keep up).
//! 3. Reports, each beside a full scan of the same data in the same run:
//!    - the accounting of disclosures for one patient over six years (index read, each cited
//!      entry re-verified, inclusion proofs against the signed checkpoint) vs a scan of every
//!      entry decoding its payload and picking that patient's accesses;
//!    - the compliance report for one month (aggregates, unusual patterns, the month's chain
//!      verified and anchored) vs a scan of every entry computing the month's totals.
//! 4. Live: `--appenders` (default 64) closed-loop appenders append more of the same events,
//!    one per request, for `--live-seconds` while the projection follows the head, as in
//!    `serve`: the append rate, what the projection applied meanwhile, its lag (sampled every
//!    50 ms) and how long it needed to drain once the load stopped.
//!
//! Run with `scripts/bench-phi` (release build). `--data-dir` keeps the filled ledger between
//! runs (a second run skips the fill when the ledger already has the events).

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditledger::bench::{closed_loop_appends, follow_under_load, machine, BenchSchema};
use auditledger::reports::{self, DisclosureQuery, Sources};
use chrono::{Datelike, NaiveDate};
use clap::Parser;
use ledger::checkpoint::{self, NoteSigner};
use ledger::projection::Runner;
use ledger::{
    GroupCommitWriter, Ingest, Payload, PseudonymKey, Pseudonymizer, Store, StoreError,
    StoredCheckpoint, StreamId, SystemClock, Timestamp, WriterConfig,
};
use phi_access::projection::PhiAccessProjection;
use phi_access::{AnalyticsConfig, SiteCalendar};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value};
use store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(about = "Benchmark the phi-access projection and the reports on a large ledger.")]
struct Args {
    /// Events in the ledger.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Where the ledger is built [default: a temporary directory, removed afterwards].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Entries the projection applies between commits while it catches up [default: the
    /// projection's own, phi_access::projection::COMMIT_EVERY].
    #[arg(long)]
    commit_every: Option<usize>,
    /// Seconds of the live scenario (appenders while the projection follows); 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    live_seconds: f64,
    /// Closed-loop appenders in the live scenario.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Run on PostgreSQL instead of the embedded store (a fresh schema, dropped at the end;
    /// e.g. postgres://postgres@127.0.0.1:5432/test).
    #[arg(long)]
    database_url: Option<String>,
    /// Keep the PostgreSQL schema instead of dropping it.
    #[arg(long)]
    keep_schema: bool,
    /// Use this PostgreSQL schema, created if missing and kept at the end: a second run on a
    /// kept schema (see --keep-schema for its name) skips the fill, like --data-dir.
    #[arg(long, requires = "database_url")]
    schema: Option<String>,
}

const USERS: u64 = 500;
const PATIENTS: u64 = 200_000;
const TARGET: &str = "p-bench-target";
const ROLES: [&str; 5] = ["nurse", "physician", "front_desk", "billing", "admin"];
const CHUNK: u64 = 20_000;
/// Events prepared for the live scenario (appended in turn, again from the first when used up).
const LIVE_EVENTS: u64 = 400_000;

/// The `i`-th of `n` events over six years ending 2026-10-31: deterministic.
fn event(i: u64, n: u64, rng: &mut StdRng) -> Value {
    let start = chrono::NaiveDate::from_ymd_opt(2020, 11, 1).unwrap();
    let span_secs = 6 * 365 * 86_400i64;
    let offset = (i as i64 * span_secs) / n as i64;
    event_on(start + chrono::Duration::seconds(offset), i, rng)
}

/// Event `i` of the mix, on `day` (UTC).
fn event_on(day: NaiveDate, i: u64, rng: &mut StdRng) -> Value {
    // Working hours mostly: 12:00-23:00 UTC is 7:00-18:00 in New York.
    let at = day.and_hms_opt(0, 0, 0).unwrap().and_utc()
        + chrono::Duration::seconds(12 * 3600 + rng.gen_range(0..11 * 3600));
    let when = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let u = rng.gen_range(0..USERS);
    let user = format!("u-{u}");
    let role = ROLES[(u % 5) as usize];
    let ip = format!("10.{}.{}.{}", u % 7, u % 251, u % 13);
    // One patient in ~250 000 events is the one whose accounting is asked for.
    let patient = if i % 250_000 == 17 {
        TARGET.to_owned()
    } else {
        format!("p-{}", rng.gen_range(0..PATIENTS))
    };
    let roll = rng.gen_range(0..100);
    match roll {
        0..=69 => json!({"occurred_at": when, "action": "read", "outcome": "success",
            "actor": {"user_id": user, "role": role, "ip": ip},
            "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
            "source": "ehr-web", "detail": "viewed chart summary"}),
        70..=79 => json!({"occurred_at": when, "action": "update", "outcome": "success",
            "actor": {"user_id": user, "role": role, "ip": ip},
            "resource": {"type": "Observation", "id": format!("o-{i}")}, "patient_id": patient, "phi": true,
            "source": "cgm-coverage"}),
        80..=81 => json!({"occurred_at": when, "action": "export", "outcome": "success",
            "actor": {"user_id": user, "role": role, "ip": ip},
            "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
            "source": "ehr-web", "detail": "exported worklist"}),
        82..=83 => json!({"occurred_at": when, "action": "read", "outcome": "denied",
            "actor": {"user_id": user, "role": role, "ip": ip},
            "resource": {"type": "MedicalRecord", "id": format!("n-{i}")}, "patient_id": patient, "phi": true,
            "source": "ehr-web"}),
        84..=96 => json!({"occurred_at": when, "action": "login", "outcome": "success",
            "actor": {"user_id": user, "ip": ip}, "source": "ehr-web"}),
        97..=98 => json!({"occurred_at": when, "action": "login", "outcome": "failure",
            "actor": {"user_id": user, "ip": ip}, "source": "ehr-web"}),
        _ => json!({"occurred_at": when, "action": "role_change", "outcome": "success",
            "actor": {"user_id": "u-admin", "role": "admin"}, "resource": {"type": "Practitioner"},
            "source": "ehr-admin", "detail": "role updated"}),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("auditledger phi-access benchmark — {}", machine());
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    match args.database_url.clone() {
        None => {
            let store: Arc<dyn Store> =
                Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&dir)).await??);
            run(&args, store, "the embedded store").await
        }
        Some(url) => {
            let schema = match &args.schema {
                Some(name) => BenchSchema::named(&url, name).await?,
                None => BenchSchema::create(&url, "bench_phi").await?,
            };
            let outcome = match schema.store().await {
                Ok(store) => run(&args, store, "PostgreSQL").await,
                Err(e) => Err(e),
            };
            schema
                .finish(args.keep_schema || args.schema.is_some())
                .await?;
            outcome
        }
    }
}

/// The four steps on `store` (`which` names it in the output).
async fn run(args: &Args, store: Arc<dyn Store>, which: &str) -> anyhow::Result<()> {
    let stream = StreamId::default();
    let pseudonymizer = Pseudonymizer::new(PseudonymKey::from_bytes([7; 32]));
    let signer = NoteSigner::new(&checkpoint::default_origin(&stream), &[9; 32])?;
    let (writer, writer_task) = GroupCommitWriter::start(
        store.clone(),
        stream.clone(),
        Arc::new(SystemClock),
        WriterConfig {
            max_batch: CHUNK as usize,
            ..WriterConfig::default()
        },
    )
    .await?;

    // 1. Fill.
    let have = store.head(&stream).await?.map_or(0, |h| h.seq);
    if have < args.events {
        let mut ingest = Ingest::new(pseudonymizer.clone());
        ingest.alg = writer.hash_alg();
        let started = Instant::now();
        let mut next = have;
        while next < args.events {
            let end = (next + CHUNK).min(args.events);
            let prepared: Vec<_> = (next..end)
                .into_par_iter()
                .map(|i| {
                    let mut rng = StdRng::seed_from_u64(i);
                    ingest
                        .prepare(&event(i, args.events, &mut rng), None)
                        .expect("synthetic events are valid")
                })
                .collect();
            writer.append(prepared).await?;
            next = end;
            if next % 1_000_000 < CHUNK {
                eprintln!(
                    "  filled {next} ({:.0} events/s)",
                    (next - have) as f64 / secs(started.elapsed())
                );
            }
        }
        let rate = (args.events - have) as f64 / secs(started.elapsed());
        println!(
            "fill: {} events over six years through the group-commit writer (requests of {CHUNK}): {rate:.0} events/s ({which}'s peak append rate here, preparing included)",
            args.events - have
        );
        let cp = checkpoint::at_head(store.as_ref(), &stream, signer.name())
            .await?
            .expect("the ledger has entries");
        store
            .put_checkpoint(
                &stream,
                &StoredCheckpoint {
                    size: cp.size,
                    note: cp.sign(&signer),
                },
            )
            .await?;
    }
    let size = store.head(&stream).await?.map_or(0, |h| h.seq + 1);
    println!("ledger: {size} entries in {}", store.describe());

    // 2. Projection.
    let config = AnalyticsConfig::default();
    let mut runner = Runner::rebuild(
        store.clone(),
        writer.clone(),
        PhiAccessProjection::new(config.clone()),
    )
    .await?;
    if let Some(n) = args.commit_every {
        runner.set_commit_every(n);
    }
    let started = Instant::now();
    let applied = runner.catch_up(|_, _| {}).await?;
    let took = started.elapsed();
    println!(
        "projection phi-access from zero: {applied} entries in {:.1} s = {:.0} entries/s (one core applies; decoding on all)",
        secs(took),
        applied as f64 / secs(took)
    );
    let stats = runner.stats();
    let rows = stats.row_writes.load(Ordering::Relaxed);
    println!(
        "  {rows} read-model row writes ({:.2} per entry); {}",
        rows as f64 / applied.max(1) as f64,
        stats.phases()
    );
    drop(runner);

    // 3a. Disclosures for one patient over six years.
    let key = signer.verifier();
    let src = Sources {
        store: store.as_ref(),
        stream: &stream,
        config: &config,
        checkpoint_key: Some(&key),
    };
    let q = DisclosureQuery {
        raw_patient: TARGET,
        from: Timestamp::parse_rfc3339("2020-11-01T00:00:00Z").unwrap(),
        to: Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap(),
        verify_range: false,
    };
    let started = Instant::now();
    let report = reports::disclosures(&src, &pseudonymizer, &q).await?;
    let indexed = started.elapsed();
    let target = pseudonymizer.pseudonymize(TARGET).to_string();
    let started = Instant::now();
    let scanned = scan_patient(store.as_ref(), &stream, &target).await?;
    let scan = started.elapsed();
    println!(
        "disclosures, one patient over six years: {} accesses, {} ({:.3} s: index read, {} entries re-verified, inclusion proofs) vs full scan {:.1} s ({scanned} accesses found) = {:.0}x faster",
        report.lines.len(),
        if report.integrity.ok { "verified" } else { "NOT verified" },
        secs(indexed),
        report.integrity.entries_verified,
        secs(scan),
        secs(scan) / secs(indexed).max(1e-9)
    );

    // 3b. Compliance report for one month.
    let cal = SiteCalendar::new(&config);
    let (from, to) = (
        NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
        NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
    );
    let started = Instant::now();
    let hipaa = reports::hipaa(&src, from, to, |_| {}).await?;
    let month = started.elapsed();
    let started = Instant::now();
    let phi = scan_month(store.as_ref(), &stream, &config, &cal, from, to).await?;
    let scan = started.elapsed();
    println!(
        "compliance report, one month ({from} to {to}): {} PHI accesses, integrity {} over {} entries ({:.2} s) vs full scan {:.1} s ({phi} PHI accesses) = {:.1}x faster",
        hipaa.phi_access.total,
        if hipaa.integrity.ok { "verified" } else { "NOT verified" },
        hipaa.integrity.entries_verified,
        secs(month),
        secs(scan),
        secs(scan) / secs(month).max(1e-9)
    );
    let _ = from.year();

    // 4. Live: appenders alone, then with the projection following. Events of today, as a
    // live service sends them (dated ahead of the ledger's clock they would all stay open).
    if args.live_seconds > 0.0 {
        let mut ingest = Ingest::new(pseudonymizer.clone());
        ingest.alg = writer.hash_alg();
        let today = chrono::Utc::now().date_naive();
        let prepared: Arc<Vec<_>> = Arc::new(
            (0..LIVE_EVENTS)
                .into_par_iter()
                .map(|i| {
                    let mut rng = StdRng::seed_from_u64(args.events + i);
                    ingest
                        .prepare(&event_on(today, args.events + i, &mut rng), None)
                        .expect("synthetic events are valid")
                })
                .collect(),
        );
        let alone = closed_loop_appends(
            store.clone(),
            stream.clone(),
            prepared.clone(),
            args.appenders,
            args.live_seconds,
            String::new(),
        )
        .await?;
        println!(
            "live, no projection running: {} appenders appended {:.0} entries/s (p50 {:.2} ms, p99 {:.2} ms)",
            args.appenders,
            alone.per_sec,
            alone.p50_ms.unwrap_or(0.0),
            alone.p99_ms.unwrap_or(0.0)
        );
        let mut runner = Runner::open(
            store.clone(),
            writer.clone(),
            PhiAccessProjection::new(config.clone()),
        )
        .await?;
        // Those entries first, so that the next load starts with the projection at the head.
        runner.catch_up(|_, _| {}).await?;
        let (runner, lag) = follow_under_load(
            store.clone(),
            &writer,
            runner,
            prepared,
            args.appenders,
            args.live_seconds,
        )
        .await?;
        drop(runner);
        lag.print(&format!("{which}, phi-access following"));
        println!(
            "  appends with the projection following: {:.2}x the rate without it",
            lag.append_rate() / alone.per_sec.max(1.0)
        );
    }
    drop(writer);
    writer_task.await?;
    Ok(())
}

/// The baseline: every entry read and decoded, the patient's accesses picked out.
async fn scan_patient(
    store: &dyn Store,
    stream: &StreamId,
    patient: &str,
) -> Result<u64, StoreError> {
    let mut chunks = store.scan(stream, 0);
    let mut found = 0;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        found += chunk
            .par_iter()
            .filter(|e| {
                matches!(e.decode_payload(), Some(Ok(Payload::Event(ev))) if ev.patient_id.as_deref() == Some(patient))
            })
            .count() as u64;
    }
    Ok(found)
}

/// The baseline: every entry read and decoded, the month's PHI accesses counted.
async fn scan_month(
    store: &dyn Store,
    stream: &StreamId,
    config: &AnalyticsConfig,
    cal: &SiteCalendar,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<u64, StoreError> {
    let mut chunks = store.scan(stream, 0);
    let mut found = 0;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        found += chunk
            .par_iter()
            .filter(|e| match e.decode_payload() {
                Some(Ok(Payload::Event(ev))) => {
                    let day = cal.date(Timestamp(ev.occurred_at));
                    day >= from && day < to && phi_access::model::is_phi_access(&ev, config)
                }
                _ => false,
            })
            .count() as u64;
    }
    Ok(found)
}
