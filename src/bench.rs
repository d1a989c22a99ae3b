//! What the benchmark programs (`src/bin/*bench*.rs`) share, so that every figure is measured
//! and printed the same way: the machine line, latency percentiles, the result table, and the
//! closed-loop appenders (each sends one event, waits for its receipt, sends the next: the
//! shape of a service that audits each request).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::projection::{Projection, Runner};
use ledger::{GroupCommitWriter, PreparedEntry, Store, StreamId, SystemClock, WriterConfig};

/// "N cores, CPU model", for the first line of every benchmark's output.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

/// The `p` quantile of sorted latencies, in milliseconds (0 when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One line of a result table.
pub struct Row {
    pub name: String,
    pub per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub batch: Option<f64>,
}

impl Row {
    /// A row with only a rate.
    pub fn rate(name: impl Into<String>, per_sec: f64) -> Row {
        Row {
            name: name.into(),
            per_sec,
            p50_ms: None,
            p99_ms: None,
            batch: None,
        }
    }
}

/// Prints `rows` as a Markdown table, each rate also as a ratio to `reference`.
pub fn print_table(title: &str, rows: &[Row], reference: f64, reference_name: &str) {
    println!("\n{title} (ratio to {reference_name})");
    println!(
        "| {:<52} | {:>10} | {:>6} | {:>7} | {:>7} | {:>7} |",
        "", "entries/s", "ratio", "p50 ms", "p99 ms", "batch"
    );
    println!(
        "|{:-<54}|{:->12}|{:->8}|{:->9}|{:->9}|{:->9}|",
        "", "", "", "", "", ""
    );
    let opt = |v: Option<f64>, prec: usize| {
        v.map(|x| format!("{x:.prec$}"))
            .unwrap_or_else(|| "-".into())
    };
    for r in rows {
        println!(
            "| {:<52} | {:>10.0} | {:>6.3} | {:>7} | {:>7} | {:>7} |",
            r.name,
            r.per_sec,
            r.per_sec / reference,
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            opt(r.batch, 1)
        );
    }
}

/// `appenders` closed-loop appenders on `stream` for `secs` seconds through one
/// group-commit writer: entries/s, acknowledge latency p50/p99, mean batch size.
pub async fn closed_loop_appends(
    store: Arc<dyn Store>,
    stream: StreamId,
    prepared: Arc<Vec<PreparedEntry>>,
    appenders: usize,
    secs: f64,
    name: String,
) -> anyhow::Result<Row> {
    let (writer, task) = GroupCommitWriter::start(
        store,
        stream,
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let (w, prepared) = (writer.clone(), prepared.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = a;
            while Instant::now() < deadline {
                let item = prepared[i % prepared.len()].clone();
                let t = Instant::now();
                w.append(vec![item]).await?;
                latencies.push(t.elapsed());
                i += appenders;
            }
            Ok::<_, ledger::AppendError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = writer.stats();
    let batches = stats.batches.load(Ordering::Relaxed).max(1) as f64;
    let entries = stats.entries.load(Ordering::Relaxed) as f64;
    drop(writer);
    task.await?;
    latencies.sort_unstable();
    Ok(Row {
        name,
        per_sec: entries / elapsed,
        p50_ms: Some(percentile(&latencies, 0.50)),
        p99_ms: Some(percentile(&latencies, 0.99)),
        batch: Some(entries / batches),
    })
}

/// What a projection did while closed-loop appenders loaded its store ([`follow_under_load`]).
pub struct LagFigures {
    pub appenders: usize,
    /// Entries the appenders appended, and over how long.
    pub appended: u64,
    pub load_secs: f64,
    /// Entries the projection applied while the load lasted.
    pub applied: u64,
    /// Entries between the projection's position and the head, sampled every 50 ms.
    pub lag_p50: u64,
    pub lag_p99: u64,
    pub lag_max: u64,
    /// From the end of the load until the projection had every entry.
    pub drain_secs: f64,
}

impl LagFigures {
    pub fn append_rate(&self) -> f64 {
        self.appended as f64 / self.load_secs
    }

    pub fn apply_rate(&self) -> f64 {
        self.applied as f64 / self.load_secs
    }

    /// Two lines: the rates, then the lag.
    pub fn print(&self, label: &str) {
        println!(
            "lag on {label}: {} appenders for {:.1} s appended {} entries ({:.0}/s); the projection applied {} meanwhile ({:.0}/s, {:.2}x the append rate)",
            self.appenders,
            self.load_secs,
            self.appended,
            self.append_rate(),
            self.applied,
            self.apply_rate(),
            self.apply_rate() / self.append_rate().max(1.0),
        );
        println!(
            "  lag (entries behind the head, sampled every 50 ms): p50 {}, p99 {}, max {} (max = {:.0} ms of appends); drained {:.0} ms after the load stopped",
            self.lag_p50,
            self.lag_p99,
            self.lag_max,
            self.lag_max as f64 / self.append_rate().max(1.0) * 1e3,
            self.drain_secs * 1e3
        );
    }
}

/// `appenders` closed-loop appenders append `prepared` (cycling) through `writer` for `secs`
/// seconds while `runner` follows the head as in `serve` ([`Runner::keep_up`]: the lag is
/// what readers of the read model see, so it includes what the runner holds between
/// commits); then waits until it has committed every entry. Returns the runner (for its own figures) and what was measured.
pub async fn follow_under_load<P: Projection + Send + Sync + 'static>(
    store: Arc<dyn Store>,
    writer: &GroupCommitWriter,
    mut runner: Runner<P>,
    prepared: Arc<Vec<PreparedEntry>>,
    appenders: usize,
    secs: f64,
) -> anyhow::Result<(Runner<P>, LagFigures)> {
    let stream = writer.stream().clone();
    let stats = runner.stats();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if runner.keep_up().await? == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            runner.commit_pending().await?;
            Ok::<_, anyhow::Error>(runner)
        })
    };
    let appended_before = writer.stats().entries.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let (w, prepared) = (writer.clone(), prepared.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = a;
            while Instant::now() < deadline {
                w.append(vec![prepared[i % prepared.len()].clone()]).await?;
                i += appenders;
            }
            Ok::<_, ledger::AppendError>(())
        }));
    }
    let position_at_start = stats.position.load(Ordering::Relaxed);
    let mut lags = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let head = store.head(&stream).await?.map_or(0, |h| h.seq + 1);
        lags.push(head.saturating_sub(stats.position.load(Ordering::Relaxed)));
    }
    for t in tasks {
        t.await??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let appended = writer.stats().entries.load(Ordering::Relaxed) - appended_before;
    let applied = stats.position.load(Ordering::Relaxed) - position_at_start;
    let head = store.head(&stream).await?.map_or(0, |h| h.seq + 1);
    let drain = Instant::now();
    while stats.position.load(Ordering::Relaxed) < head {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_secs = drain.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let runner = follower.await??;
    lags.sort_unstable();
    let pct = |p: f64| {
        lags.get(((lags.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok((
        runner,
        LagFigures {
            appenders,
            appended,
            load_secs,
            applied,
            lag_p50: pct(0.5),
            lag_p99: pct(0.99),
            lag_max: lags.last().copied().unwrap_or(0),
            drain_secs,
        },
    ))
}

/// The benchmarks' rows: a synthetic clinic day of about `n` events, prepared (validated,
/// pseudonymized, encoded, digested) and chained on `stream` from seq 1, with the prepare rate
/// (events/s) and the mean payload size (bytes), so every benchmark writes the same rows.
pub struct SyntheticRows {
    pub prepared: Vec<PreparedEntry>,
    pub rows: Vec<ledger::Entry>,
    pub prepare_rate: f64,
    pub mean_payload: f64,
}

pub fn synthetic_rows(n: usize, stream: &StreamId) -> anyhow::Result<SyntheticRows> {
    let ingest = ledger::Ingest::new(ledger::Pseudonymizer::new(
        ledger::PseudonymKey::from_bytes([7; 32]),
    ));
    let (events, _) = crate::synthetic::clinic_day(1, n);
    let t = Instant::now();
    let prepared = ingest
        .prepare_batch(&events, None, 0)
        .map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    let prepare_rate = prepared.len() as f64 / t.elapsed().as_secs_f64();
    let mut prev = ledger::Digest::ZERO;
    let rows: Vec<ledger::Entry> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let e = p.clone().chain(
                stream,
                i as u64 + 1,
                ledger::Timestamp(1),
                prev,
                ledger::HashAlg::Sha256,
            );
            prev = e.entry_hash;
            e
        })
        .collect();
    let mean_payload = rows
        .iter()
        .map(|e| e.payload.as_ref().map_or(0, Vec::len))
        .sum::<usize>() as f64
        / rows.len().max(1) as f64;
    Ok(SyntheticRows {
        prepared,
        rows,
        prepare_rate,
        mean_payload,
    })
}

/// A fresh PostgreSQL schema for one benchmark run (`<prefix>_<process id>`), migrated when
/// created and dropped by [`BenchSchema::finish`] unless kept.
pub struct BenchSchema {
    url: String,
    pub name: store_postgres::SchemaName,
}

impl BenchSchema {
    /// A fresh schema, named by `prefix` and the process id.
    pub async fn create(url: &str, prefix: &str) -> anyhow::Result<BenchSchema> {
        BenchSchema::named(url, &format!("{prefix}_{}", std::process::id())).await
    }

    /// The schema `name`, created if missing, migrated to the current version.
    pub async fn named(url: &str, name: &str) -> anyhow::Result<BenchSchema> {
        use anyhow::Context as _;
        let name = store_postgres::SchemaName::new(name)?;
        store_postgres::migrate(url, &name)
            .await
            .with_context(|| format!("cannot prepare {}", store_postgres::describe_url(url)))?;
        Ok(BenchSchema {
            url: url.to_owned(),
            name,
        })
    }

    /// A store on the schema.
    pub async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(Arc::new(
            store_postgres::PostgresStore::connect(&self.url, &self.name).await?,
        ))
    }

    /// Drops the schema, or says it was kept.
    pub async fn finish(self, keep: bool) -> anyhow::Result<()> {
        if keep {
            println!("kept schema {}", self.name);
            return Ok(());
        }
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await?;
        Ok(())
    }
}
