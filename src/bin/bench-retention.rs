//! Benchmark of retention (issue 9): the retention check beside `verify` alone, and the archive
//! and purge of a million payloads. Prints figures, asserts no timing; exits 1 when verify or
//! the check finds the ledger not ok (a correctness failure, not a slow run).
//!
//! 1. Fill: `--events` (default 10 million) synthetic events recorded from 2019-01-01 to
//!    2026-11-20 by a manual clock advanced between large requests through the group-commit
//!    writer (one `recorded_at` per request), the volume growing over the years so that about
//!    1/8 of the entries are past a six-year horizon at the as-of date 2026-11-21; several
//!    sources, mostly PHI reads. A signed checkpoint of the head is stored, as in production.
//! 2. The retention projection catches up from zero (reported apart: a scheduled check runs on
//!    a caught-up projection, which then has a handful of entries to apply).
//! 3. `verify_store` alone and `ops::check` (verify, then holds, gaps and sources read, the
//!    evaluation and its `retention_check` entry appended), alternated for `--rounds` rounds
//!    (the order swapped every round), best and median of each, and the ratio check/verify.
//! 4. `write_archive` of the entries recorded before the date that puts `--purge` entries in it
//!    (at most a tenth of the ledger), `ops::purge` of their payloads at the as-of date (one
//!    patient under a legal hold keeps a few), then `verify_store` and the check again.
//!
//! Run with `scripts/bench-retention` (release build). On the embedded store by default, in
//! `--data-dir` (kept) or a temporary directory; `--database-url` runs it on PostgreSQL in a
//! fresh schema, dropped at the end.

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditledger::bench::{machine, BenchSchema};
use clap::Parser;
use ledger::checkpoint::{self, NoteSigner};
use ledger::event::ParseOptions;
use ledger::verify::{verify_store, VerifyOptions};
use ledger::{
    GroupCommitWriter, Ingest, ManualClock, PhiPolicy, PseudonymKey, Pseudonymizer, Store,
    StoredCheckpoint, StreamId, Timestamp, VerifyReport, WriterConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use retention::ops::{self, HoldTarget, Session};
use retention::RetentionConfig;
use serde_json::{json, Value};
use store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(about = "Benchmark the retention check beside verify, and archive + purge.")]
struct Args {
    /// Events in the ledger.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Payloads to archive and purge (at most a tenth of the events, all past six years).
    #[arg(long, default_value_t = 1_000_000)]
    purge: u64,
    /// Rounds of verify and check, alternated.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the embedded ledger (and the archive) is written; it must not hold a ledger yet
    /// (the run purges) [default: a temporary directory, removed afterwards].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run on PostgreSQL instead (a fresh schema, dropped at the end; the archive goes to
    /// --data-dir or a temporary directory).
    #[arg(long, hide_env_values = true)]
    database_url: Option<String>,
    /// Keep the PostgreSQL schema instead of dropping it.
    #[arg(long)]
    keep_schema: bool,
}

const USERS: u64 = 2_000;
const PATIENTS: u64 = 500_000;
const HELD_PATIENT: &str = "p-litigation";
const CHUNK: u64 = 20_000;
/// Fraction of the entries past six years at the as-of date.
const PAST_HORIZON: f64 = 0.125;

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).expect("a valid time")
}

/// When the checks and the purge run.
fn as_of() -> Timestamp {
    at("2026-11-21T12:00:00Z")
}

/// When the entries were recorded: from `start` to `end`, the volume growing linearly over the
/// years (density 1 + a x) with `a` chosen so that a fraction [`PAST_HORIZON`] of them is
/// recorded before `as_of` minus six years.
struct Schedule {
    start: i64,
    end: i64,
    a: f64,
}

impl Schedule {
    fn new() -> Schedule {
        let start = at("2019-01-01T00:00:00Z").micros();
        let end = at("2026-11-20T00:00:00Z").micros();
        let cut = at("2020-11-21T12:00:00Z").micros();
        let x = (cut - start) as f64 / (end - start) as f64;
        let f = PAST_HORIZON;
        // F(x) = (x + a x^2 / 2) / (1 + a / 2) = f.
        let a = 2.0 * (x - f) / (f - x * x);
        Schedule { start, end, a }
    }

    /// The time by which a fraction `u` of the entries is recorded.
    fn time(&self, u: f64) -> Timestamp {
        let a = self.a;
        let x = ((1.0 + 2.0 * a * u * (1.0 + a / 2.0)).sqrt() - 1.0) / a;
        Timestamp(self.start + (x * (self.end - self.start) as f64) as i64)
    }
}

/// The `i`-th of `n` events: deterministic; it occurred up to two minutes before `recorded`.
fn event(i: u64, recorded: Timestamp, rng: &mut StdRng) -> Value {
    let occurred = Timestamp(recorded.micros() - rng.gen_range(0..120_000_000));
    let when = occurred.to_rfc3339();
    let u = rng.gen_range(0..USERS);
    let user = format!("u-{u}");
    let role = ["nurse", "physician", "front_desk", "billing", "lab_tech"][(u % 5) as usize];
    let ip = format!("10.{}.{}.{}", u % 7, u % 251, u % 13);
    let patient = if i % 100_003 == 41 {
        HELD_PATIENT.to_owned()
    } else {
        format!("p-{}", rng.gen_range(0..PATIENTS))
    };
    let actor = json!({"user_id": user, "role": role, "ip": ip});
    match rng.gen_range(0..100) {
        0..=49 => json!({"occurred_at": when, "action": "read", "outcome": "success",
            "actor": actor, "resource": {"type": "Patient", "id": patient},
            "patient_id": patient, "phi": true, "source": "ehr-web",
            "request": {"method": "GET", "path": "/patients/{id}"}, "detail": "viewed chart summary"}),
        50..=59 => json!({"occurred_at": when, "action": "update", "outcome": "success",
            "actor": actor, "resource": {"type": "Observation", "id": format!("o-{i}")},
            "patient_id": patient, "phi": true, "source": "cgm-coverage"}),
        60..=67 => json!({"occurred_at": when, "action": "create", "outcome": "success",
            "actor": {"user_id": "svc-lab", "role": "service"},
            "resource": {"type": "DiagnosticReport", "id": format!("dr-{i}")},
            "patient_id": patient, "phi": true, "source": "lab-interface"}),
        68..=73 => json!({"occurred_at": when, "action": "read", "outcome": "success",
            "actor": actor, "resource": {"type": "MedicationRequest", "id": format!("mr-{i}")},
            "patient_id": patient, "phi": true, "source": "pharmacy"}),
        74..=76 => json!({"occurred_at": when, "action": "export", "outcome": "success",
            "actor": actor, "resource": {"type": "Patient", "id": patient},
            "patient_id": patient, "phi": true, "source": "ehr-web", "detail": "exported worklist"}),
        77..=78 => json!({"occurred_at": when, "action": "read", "outcome": "denied",
            "actor": actor, "resource": {"type": "MedicalRecord", "id": format!("n-{i}")},
            "patient_id": patient, "phi": true, "source": "ehr-web"}),
        79..=83 => json!({"occurred_at": when, "action": "read", "outcome": "success",
            "actor": {"user_id": format!("pt-{}", rng.gen_range(0..PATIENTS)), "role": "patient"},
            "resource": {"type": "Patient", "id": patient}, "patient_id": patient, "phi": true,
            "source": "patient-portal"}),
        84..=95 => json!({"occurred_at": when, "action": "login", "outcome": "success",
            "actor": actor, "source": "sso"}),
        96..=98 => json!({"occurred_at": when, "action": "login", "outcome": "failure",
            "actor": actor, "source": "sso"}),
        _ => json!({"occurred_at": when, "action": "role_change", "outcome": "success",
            "actor": {"user_id": "u-admin", "role": "admin"}, "resource": {"type": "Practitioner"},
            "source": "ehr-admin", "detail": "role updated"}),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

/// Bytes in the files under `dir` (the embedded store's size on disk).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Thousands separated by spaces, as in docs/PERFORMANCE.md.
fn n(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn verify_line(what: &str, r: &VerifyReport, took: Duration) -> String {
    format!(
        "{what}: {} entries in {:.2} s = {} entries/s, {} ({} checkpoint(s) verified, {} payloads purged)",
        r.entries,
        secs(took),
        n(r.entries as f64 / secs(took)),
        if r.ok { "ok" } else { "NOT OK" },
        r.checkpoints_verified,
        r.payloads_purged
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.events >= 10_000, "--events must be at least 10 000");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    println!("auditledger retention benchmark — {}", machine());
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let code = match args.database_url.clone() {
        None => {
            let store: Arc<dyn Store> = {
                let dir = dir.clone();
                Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&dir)).await??)
            };
            run(&args, store, &dir, Some(&dir)).await?
        }
        Some(url) => {
            let schema = BenchSchema::create(&url, "bench_retention").await?;
            let outcome = match schema.store().await {
                Ok(store) => run(&args, store, &dir, None).await,
                Err(e) => Err(e),
            };
            schema.finish(args.keep_schema).await?;
            outcome?
        }
    };
    // The temporary directory is removed before exiting with the status.
    drop(tmp);
    std::process::exit(code)
}

/// The steps of `ops::check`, each timed: catch-up of the projection, verification, the reads
/// of holds, gaps and sources, the evaluation, and one entry appended (an ordinary event in
/// place of the check's record, which only `ops` may write).
async fn check_phases(
    s: &Session,
    config: &RetentionConfig,
    opts: &VerifyOptions,
) -> anyhow::Result<[Duration; 5]> {
    let (store, stream) = (s.store.as_ref(), &s.stream);
    let t = Instant::now();
    ops::catch_up(s, config, |_, _| {}).await?;
    let catch_up = t.elapsed();
    let t = Instant::now();
    let report = verify_store(store, stream, opts, |_| {}).await?;
    let verify = t.elapsed();
    let t = Instant::now();
    let holds = retention::read::hold_set(store, stream).await?;
    let since = Timestamp(as_of().micros() - config.coverage.window());
    let gaps = retention::read::gaps(store, stream, since).await?;
    let sources = retention::read::sources(store, stream).await?;
    let reads = t.elapsed();
    let t = Instant::now();
    let outcome = retention::evaluate(&retention::CheckInput {
        as_of: as_of(),
        config,
        verify: &report,
        holds: &holds,
        gaps: &gaps,
        sources: &sources,
    });
    let evaluation = t.elapsed();
    anyhow::ensure!(outcome.ok, "the check phase by phase: {}", outcome.text());
    let t = Instant::now();
    let body = json!({"occurred_at": s.now().to_rfc3339(), "action": "read", "outcome": "success",
        "actor": s.actor, "resource": {"type": "AuditLog"}, "source": "auditledger",
        "detail": "benchmark: the check's append, timed"});
    let prepared = s.ingest.prepare(&body, None)?;
    s.writer.append(vec![prepared]).await?;
    let append = t.elapsed();
    Ok([catch_up, verify, reads, evaluation, append])
}

/// Runs the benchmark on `store`; returns the exit status (1 when verify or the check was not
/// ok).
async fn run(
    args: &Args,
    store: Arc<dyn Store>,
    dir: &Path,
    sqlite_dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let stream = StreamId::default();
    anyhow::ensure!(
        store.head(&stream).await?.is_none(),
        "{} already holds a ledger: the benchmark purges payloads, so give it an empty data directory",
        store.describe()
    );
    let archive_path = dir.join("bench-retention-archive.cbor");
    anyhow::ensure!(
        !archive_path.exists(),
        "{} exists already",
        archive_path.display()
    );
    let schedule = Schedule::new();
    let clock = Arc::new(ManualClock::new(Timestamp(schedule.start)));
    let pseudonymizer = Pseudonymizer::new(PseudonymKey::from_bytes([7; 32]));
    let signer = NoteSigner::new(&checkpoint::default_origin(&stream), &[9; 32])?;
    let config = RetentionConfig::default();
    let (writer, writer_task) = GroupCommitWriter::start(
        store.clone(),
        stream.clone(),
        clock.clone(),
        WriterConfig {
            max_batch: CHUNK as usize,
            ..WriterConfig::default()
        },
    )
    .await?;
    let mut ingest = Ingest::new(pseudonymizer.clone());
    ingest.parse = ParseOptions {
        phi_policy: PhiPolicy::Redact,
        ..ParseOptions::default()
    };
    ingest.alg = writer.hash_alg();
    let session = Session {
        store: store.clone(),
        stream: stream.clone(),
        writer: writer.clone(),
        ingest: ingest.clone(),
        clock: clock.clone(),
        actor: json!({"user_id": "officer-1", "role": "privacy_officer"}),
    };
    let mut failures: Vec<String> = Vec::new();
    let mut summary: Vec<(String, String)> = Vec::new();

    // 1. Fill.
    let events = args.events;
    let started = Instant::now();
    let mut next = 0u64;
    while next < events {
        let end = (next + CHUNK).min(events);
        let recorded = schedule.time(end as f64 / events as f64);
        let prepared: Vec<_> = (next..end)
            .into_par_iter()
            .map(|i| {
                let mut rng = StdRng::seed_from_u64(i);
                ingest
                    .prepare(&event(i, recorded, &mut rng), None)
                    .expect("synthetic events are valid")
            })
            .collect();
        clock.set(recorded);
        writer.append(prepared).await?;
        next = end;
        if next % 1_000_000 < CHUNK {
            eprintln!(
                "  filled {next} ({:.0} events/s)",
                next as f64 / secs(started.elapsed())
            );
        }
    }
    let fill = started.elapsed();
    let fill_rate = events as f64 / secs(fill);
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
    let cut = Timestamp(at("2020-11-21T12:00:00Z").micros());
    let past = retention::archive::entries_before(store.as_ref(), &stream, cut).await?;
    let size_note = sqlite_dir.map_or(String::new(), |d| format!(", {}", gb(dir_bytes(d))));
    println!(
        "fill: {events} events recorded 2019-01-01 to 2026-11-20 through the group-commit writer (requests of {CHUNK}, one recorded_at each): {:.1} s = {} events/s; {past} entries ({:.1}%) recorded before 2020-11-21T12:00Z (past six years at as-of {}){size_note}",
        secs(fill),
        n(fill_rate),
        past as f64 * 100.0 / (events + 1) as f64,
        as_of().to_rfc3339()
    );
    summary.push((
        format!(
            "fill, {} events from 2019-01-01 to 2026-11-20 (group-commit writer, requests of {}, preparing included)",
            n(events as f64),
            n(CHUNK as f64)
        ),
        format!(
            "{} events/s ({:.0} s){size_note}",
            n(fill_rate),
            secs(fill)
        ),
    ));

    // A litigation hold on one patient (a few of whose entries are in the purged range).
    clock.set(Timestamp(schedule.end + 3_600_000_000));
    let held = ops::add_hold(
        &session,
        &HoldTarget::Patient(HELD_PATIENT.into()),
        "matter bench-1",
    )
    .await?;
    println!(
        "legal hold on one patient: entries {:?}",
        held.iter().map(|r| r.seq).collect::<Vec<_>>()
    );

    // 2. The retention projection from zero.
    let started = Instant::now();
    ops::catch_up(&session, &config, |_, _| {}).await?;
    let took = started.elapsed();
    let head = store.head(&stream).await?.map_or(0, |h| h.seq + 1);
    println!(
        "retention projection from zero: {head} entries in {:.1} s = {} entries/s (each entry verified, then holds and coverage applied; a scheduled check finds it caught up)",
        secs(took),
        n(head as f64 / secs(took))
    );
    summary.push((
        format!(
            "retention projection from zero, {} entries (not part of a scheduled check, which finds it caught up)",
            n(head as f64)
        ),
        format!(
            "{} entries/s ({:.0} s)",
            n(head as f64 / secs(took)),
            secs(took)
        ),
    ));

    // 3. verify alone vs the check, alternated.
    clock.set(as_of());
    let opts = VerifyOptions {
        checkpoints: Vec::new(),
        checkpoint_key: Some(signer.verifier()),
    };
    let (mut verify_rates, mut check_rates) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_check in order {
            if is_check {
                let started = Instant::now();
                let (r, receipt) = ops::check(&session, &config, as_of(), &opts, |_| {}).await?;
                let took = started.elapsed();
                let rate = r.entries as f64 / secs(took);
                println!(
                    "  round {}: check  {} entries in {:.2} s = {} entries/s, {} ({} violation(s)), recorded at {}",
                    round + 1,
                    r.entries,
                    secs(took),
                    n(rate),
                    if r.ok { "COMPLIANT" } else { "VIOLATION" },
                    r.violations.len(),
                    receipt.seq
                );
                if !r.ok {
                    failures.push(format!("check (round {}): {}", round + 1, r.text()));
                }
                check_rates.push(rate);
            } else {
                let started = Instant::now();
                let r = verify_store(store.as_ref(), &stream, &opts, |_| {}).await?;
                let took = started.elapsed();
                println!("  round {}: {}", round + 1, verify_line("verify", &r, took));
                if !r.ok {
                    failures.push(format!("verify (round {}): {r:?}", round + 1));
                }
                verify_rates.push(r.entries as f64 / secs(took));
            }
        }
    }
    // Where the check's time goes: the calls `ops::check` makes, timed one by one.
    let phases = check_phases(&session, &config, &opts).await?;
    println!(
        "check phase by phase: catch-up {:.3} s, verify {:.2} s, holds/gaps/sources read {:.3} s, evaluation {:.3} s, one entry appended {:.3} s",
        secs(phases[0]),
        secs(phases[1]),
        secs(phases[2]),
        secs(phases[3]),
        secs(phases[4])
    );
    let (vb, cb) = (best(&verify_rates), best(&check_rates));
    let (vm, cm) = (median(&verify_rates), median(&check_rates));
    println!(
        "verify alone: best {} entries/s, median {}; check: best {} entries/s, median {}; check time / verify time: {:.3} (best of {}), {:.3} (medians) [target <= 1.20]",
        n(vb),
        n(vm),
        n(cb),
        n(cm),
        vb / cb,
        args.rounds,
        vm / cm
    );
    summary.push((
        format!(
            "`verify_store` alone, {} entries (best of {}, alternated with the check)",
            n(head as f64),
            args.rounds
        ),
        format!(
            "{} entries/s ({:.1} s; median {} entries/s)",
            n(vb),
            head as f64 / vb,
            n(vm)
        ),
    ));
    summary.push((
        format!(
            "retention check (`ops::check`: verify + holds, gaps, sources + evaluation + its entry), best of {}",
            args.rounds
        ),
        format!(
            "{} entries/s ({:.1} s; median {} entries/s)",
            n(cb),
            head as f64 / cb,
            n(cm)
        ),
    ));
    summary.push((
        "check time / verify time (target ≤ 1.20)".into(),
        format!("**{:.3}** best, {:.3} medians", vb / cb, vm / cm),
    ));

    // 4. Archive, purge, verify and check again.
    let target = args.purge.min(events / 10);
    let before = Timestamp(schedule.time(target as f64 / events as f64).micros() + 1);
    let started = Instant::now();
    let archive = retention::archive::write_archive(
        store.clone(),
        &stream,
        before,
        &archive_path,
        &signer,
        |_, _| {},
    )
    .await?;
    let took = started.elapsed();
    let bytes = std::fs::metadata(&archive_path)?.len();
    println!(
        "archive: entries 0..{} (recorded {} to {}) written and verified in {:.1} s = {} entries/s, {} ({:.0} MB/s)",
        archive.entries(),
        archive.oldest.to_rfc3339(),
        archive.newest.to_rfc3339(),
        secs(took),
        n(archive.entries() as f64 / secs(took)),
        gb(bytes),
        bytes as f64 / 1e6 / secs(took)
    );
    summary.push((
        format!(
            "archive of the {} entries recorded before {} (`write_archive`: verified, written, signed checkpoint)",
            n(archive.entries() as f64),
            before.to_rfc3339()
        ),
        format!(
            "{:.1} s = {} entries/s, {} ({:.0} MB/s)",
            secs(took),
            n(archive.entries() as f64 / secs(took)),
            gb(bytes),
            bytes as f64 / 1e6 / secs(took)
        ),
    ));

    clock.set(as_of());
    let mut read_done: Option<Instant> = None;
    let started = Instant::now();
    let outcome = ops::purge(
        &session,
        &config,
        &archive_path,
        &signer.verifier(),
        "privacy officer, bench ticket 1",
        |step, done, total| {
            if step == "reading the archive" && done == total {
                read_done = Some(Instant::now());
            }
        },
    )
    .await?;
    let took = started.elapsed();
    let reading = read_done.map_or(took, |t| t - started);
    let purging = took - reading;
    let held_count: u64 = outcome.plan.held.iter().map(|h| h.count).sum();
    println!(
        "purge: {} payloads purged in {:.1} s = {} payloads/s ({:.1} s opening, verifying and reading the archive beside the ledger and planning; {:.1} s authorization + purge transactions of up to {} = {} payloads/s); kept {held_count} under the hold, {} never eligible; authorization at entry {}",
        outcome.purged,
        secs(took),
        n(outcome.purged as f64 / secs(took)),
        secs(reading),
        secs(purging),
        ops::PURGE_BATCH,
        n(outcome.purged as f64 / secs(purging)),
        outcome.plan.never_eligible,
        outcome.authorization.seq
    );
    summary.push((
        format!(
            "purge of {} payloads in one `ops::purge` (archive checked, plan, authorization, transactions of {})",
            n(outcome.purged as f64),
            n(ops::PURGE_BATCH as f64)
        ),
        format!(
            "**{:.1} s** = {} payloads/s ({:.1} s checking the archive against the ledger, {:.1} s removing payloads = {} payloads/s)",
            secs(took),
            n(outcome.purged as f64 / secs(took)),
            secs(reading),
            secs(purging),
            n(outcome.purged as f64 / secs(purging))
        ),
    ));

    let started = Instant::now();
    let v = verify_store(store.as_ref(), &stream, &opts, |_| {}).await?;
    let took = started.elapsed();
    println!("{}", verify_line("verify after the purge", &v, took));
    if !v.ok || v.payloads_purged != outcome.purged {
        failures.push(format!(
            "verify after the purge: ok {}, payloads_purged {} (purged {}): {:?}",
            v.ok, v.payloads_purged, outcome.purged, v.detail
        ));
    }
    summary.push((
        "`verify_store` after the purge".into(),
        format!(
            "{}, {} payloads purged reported; {} entries/s ({:.1} s)",
            if v.ok { "ok" } else { "NOT OK" },
            n(v.payloads_purged as f64),
            n(v.entries as f64 / secs(took)),
            secs(took)
        ),
    ));
    let started = Instant::now();
    let (r, _) = ops::check(&session, &config, as_of(), &opts, |_| {}).await?;
    let took = started.elapsed();
    println!(
        "check after the purge: {} in {:.2} s = {} entries/s ({} payloads purged, {} violation(s))",
        if r.ok { "COMPLIANT" } else { "VIOLATION" },
        secs(took),
        n(r.entries as f64 / secs(took)),
        r.payloads_purged,
        r.violations.len()
    );
    if !r.ok {
        failures.push(format!("check after the purge: {}", r.text()));
    }
    summary.push((
        "retention check after the purge".into(),
        format!(
            "{}; {} entries/s ({:.1} s)",
            if r.ok { "compliant" } else { "VIOLATION" },
            n(r.entries as f64 / secs(took)),
            secs(took)
        ),
    ));

    drop(session);
    drop(writer);
    writer_task.await?;

    println!("\nSummary ({}, {})", store.describe(), machine());
    println!("| what | figure |");
    println!("| --- | --- |");
    for (what, figure) in &summary {
        println!("| {what} | {figure} |");
    }
    if failures.is_empty() {
        Ok(0)
    } else {
        for f in &failures {
            eprintln!("NOT OK: {f}");
        }
        Ok(1)
    }
}
