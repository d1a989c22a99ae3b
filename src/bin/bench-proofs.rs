//! Benchmark of the Merkle tree, proofs and checkpoints (issue 5). Prints figures, asserts
//! nothing (timing thresholds do not belong in tests on shared machines):
//!
//! - what keeping the tree costs the append path: the frontier's CPU per entry (in memory) and
//!   its node rows (about one per 16 entries: levels 5 and up), measured as the same chained commits written to
//!   a fresh store with and without those rows, best of runs;
//! - a large ledger's tree built straight into a store through `Store::append` batches (the
//!   entries are chained for real but carry no payload, so building it costs seconds, not the
//!   hours full events would), then inclusion proofs at random seqs: CPU time, store reads;
//! - a checkpoint at that size: the root from O(log n) stored nodes, signed, no pass.
//!
//! `cargo run --release --bin bench-proofs -- --tree-entries 10000000`

/// The product's allocator (see src/main.rs), so figures compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use auditledger::bench::closed_loop_appends;
use clap::Parser;
use ledger::checkpoint::{self, NoteSigner};
use ledger::merkle::Frontier;
use ledger::proof::{inclusion_ranges, prove_inclusion};
use ledger::{
    AppendBatch, HashAlg, Ingest, PreparedEntry, PseudonymKey, Pseudonymizer, Store, StreamId,
    Timestamp,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use store_sqlite::SqliteStore;

#[derive(Parser)]
#[command(about = "Benchmark the Merkle tree: append cost, inclusion proofs, checkpoints.")]
struct Args {
    /// Events appended per append-throughput run.
    #[arg(long, default_value_t = 60_000)]
    events: usize,
    /// Concurrent appenders: a group commit holds appenders x --per-request entries.
    #[arg(long, default_value_t = 32)]
    appenders: usize,
    #[arg(long, default_value_t = 4)]
    per_request: usize,
    /// Runs of each append variant (the best is reported; they alternate).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Entries of the large ledger the proofs are taken on.
    #[arg(long, default_value_t = 10_000_000)]
    tree_entries: u64,
    /// Inclusion proofs timed.
    #[arg(long, default_value_t = 2_000)]
    proofs: usize,
    /// Directory for the benchmark's files (a temporary one by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn event(i: usize) -> Value {
    let action = ["read", "update", "login", "export"][i % 4];
    json!({"occurred_at": format!("2026-11-22T{:02}:{:02}:{:02}.250Z", (i / 3600) % 24, (i / 60) % 60, i % 60),
           "action": action, "outcome": "success",
           "actor": {"user_id": format!("u-{}", 1000 + i % 97), "role": "nurse", "ip": "10.1.4.22", "session_id": format!("s-{}", i / 20)},
           "resource": {"type": "Patient", "id": format!("p-{}", 20000 + i % 1001)},
           "patient_id": format!("p-{}", 20000 + i % 1001), "phi": true,
           "request": {"method": "GET", "path": "/patients/{id}"},
           "source": "ehr-web", "detail": "viewed chart summary"})
}

/// CPU time of this process (user + system), from /proc (Linux; 10 ms resolution, so only
/// differences over many operations are meaningful).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Writes `batches` into a fresh store through `Store::append`, with or without their Merkle
/// node rows, and returns entries/s. The same chained entries either way, so the difference is
/// exactly what the tree's rows cost a commit (the frontier's CPU is measured on its own).
async fn store_append_run(
    dir: &std::path::Path,
    batches: &[AppendBatch],
    with_nodes: bool,
) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let store = SqliteStore::open(dir)?;
    let start = Instant::now();
    for b in batches {
        let batch = AppendBatch {
            entries: b.entries.clone(),
            nodes: if with_nodes {
                b.nodes.clone()
            } else {
                Vec::new()
            },
        };
        store.append(batch).await?;
    }
    let entries: usize = batches.iter().map(|b| b.entries.len()).sum();
    Ok(entries as f64 / start.elapsed().as_secs_f64())
}

/// Builds a ledger of `n` entries (genesis + payload-less events, really chained) with its
/// tree, straight through `Store::append` in large batches.
async fn build_large(store: &dyn Store, n: u64) -> anyhow::Result<Duration> {
    let s = StreamId::default();
    let alg = HashAlg::Sha256;
    let start = Instant::now();
    let ingest = Ingest::new(Pseudonymizer::new(PseudonymKey::from_bytes([9; 32])));
    let template = ingest
        .prepare_batch(&[event(0)], None, 0)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .remove(0);
    let mut frontier = Frontier::empty();
    let mut prev = ledger::Digest::ZERO;
    let mut seq = 0u64;
    const BATCH: u64 = 100_000;
    while seq < n {
        let end = (seq + BATCH).min(n);
        let mut entries = Vec::with_capacity((end - seq) as usize);
        let mut nodes = Vec::new();
        for i in seq..end {
            let at = Timestamp(1_795_000_000_000_000 + i as i64);
            let mut e = if i == 0 {
                PreparedEntry::genesis(&s, alg, at).chain(&s, 0, at, prev, alg)
            } else {
                let mut e = template.clone().chain(&s, i, at, prev, alg);
                // Payload purged (its digest stays in the hash): the tree and proofs only
                // read entry hashes, and 10 million full payloads would take hours to write.
                e.payload = None;
                e.columns.actor = None;
                e.columns.patient = None;
                e
            };
            if i == 0 {
                e.columns.idem = None;
            }
            prev = e.entry_hash;
            frontier.push(&e.entry_hash, &mut nodes);
            entries.push(e);
        }
        store.append(AppendBatch { entries, nodes }).await?;
        seq = end;
    }
    Ok(start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let base = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;

    // Frontier alone, in memory: the per-entry CPU the tree adds to the writer.
    let hashes: Vec<ledger::Digest> = (0..1_000_000u64)
        .map(|i| HashAlg::Sha256.payload_digest(&i.to_be_bytes()))
        .collect();
    let mut f = Frontier::empty();
    let mut nodes = Vec::new();
    let t = Instant::now();
    for h in &hashes {
        f.push(h, &mut nodes);
    }
    let push_ns = t.elapsed().as_nanos() as f64 / hashes.len() as f64;
    println!(
        "frontier push (in memory): {push_ns:.0} ns/entry, {} node rows per 1M entries",
        nodes.len()
    );

    // Append throughput with and without the tree.
    let ingest = Ingest::new(Pseudonymizer::new(PseudonymKey::from_bytes([7; 32])));
    let values: Vec<Value> = (0..args.events).map(event).collect();
    let prepared: Vec<Vec<PreparedEntry>> = values
        .chunks(args.per_request)
        .enumerate()
        .map(|(i, c)| {
            ingest
                .prepare_batch(c, None, i * args.per_request)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    // Chain them once, as the writer would in group commits of `appenders * per_request`.
    let stream = StreamId::default();
    let mut frontier = Frontier::empty();
    let mut prev = ledger::Digest::ZERO;
    let mut seq = 0u64;
    let genesis = PreparedEntry::genesis(&stream, HashAlg::Sha256, ledger::Timestamp(1)).chain(
        &stream,
        0,
        ledger::Timestamp(1),
        prev,
        HashAlg::Sha256,
    );
    prev = genesis.entry_hash;
    frontier.push(&prev, &mut Vec::new());
    let mut batches = vec![AppendBatch {
        entries: vec![genesis],
        nodes: Vec::new(),
    }];
    let flat: Vec<PreparedEntry> = prepared.into_iter().flatten().collect();
    let flat_for_batches = flat.clone();
    for group in flat_for_batches.chunks(args.appenders * args.per_request) {
        let mut batch = AppendBatch::default();
        for p in group {
            seq += 1;
            let e = p
                .clone()
                .chain(&stream, seq, ledger::Timestamp(2), prev, HashAlg::Sha256);
            prev = e.entry_hash;
            frontier.push(&prev, &mut batch.nodes);
            batch.entries.push(e);
        }
        batches.push(batch);
    }
    let (mut with, mut without) = (0f64, 0f64);
    for run in 0..args.runs {
        let dir = base.join(format!("append-{run}"));
        let a = store_append_run(&dir, &batches, true).await?;
        let b = store_append_run(&dir, &batches, false).await?;
        println!("  run {run}: with node rows {a:.0} entries/s, without {b:.0} entries/s");
        with = with.max(a);
        without = without.max(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Per entry: the store's time with node rows plus the frontier's CPU, against without.
    let cost = ((1e9 / with + push_ns) / (1e9 / without) - 1.0) * 100.0;
    println!(
        "tree cost on bare store appends ({} events in commits of {}, best of {}): node rows {:.1}%, frontier {:.1}%, total {cost:.1}%",
        args.events,
        args.appenders * args.per_request,
        args.runs,
        (without / with - 1.0) * 100.0,
        push_ns / (1e9 / without) * 100.0,
    );

    // The same through the real append path: 64 closed-loop appenders (one event per request,
    // each waiting for its receipt) and the group-commit writer, with the node rows written or
    // dropped by the store. The writer pushes the frontier either way; its CPU is added.
    let shared = std::sync::Arc::new(flat);
    let (mut with, mut without) = (0f64, 0f64);
    for run in 0..args.runs {
        for keep in [true, false] {
            let dir = base.join(format!("path-{run}-{keep}"));
            let _ = std::fs::remove_dir_all(&dir);
            let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(NodeRows {
                inner: SqliteStore::open(&dir)?,
                keep,
            });
            let row = closed_loop_appends(
                store,
                StreamId::default(),
                shared.clone(),
                64,
                3.0,
                String::new(),
            )
            .await?;
            println!(
                "  run {run}: 64 appenders {} node rows: {:.0} entries/s (mean batch {:.1})",
                if keep { "with" } else { "without" },
                row.per_sec,
                row.batch.unwrap_or(0.0)
            );
            if keep {
                with = with.max(row.per_sec)
            } else {
                without = without.max(row.per_sec)
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let cost = ((1e9 / with + push_ns) / (1e9 / without) - 1.0) * 100.0;
    println!(
        "tree cost on the append path (64 closed-loop appenders, best of {}): node rows {:.1}%, frontier {:.1}%, total {cost:.1}%",
        args.runs,
        (without / with - 1.0) * 100.0,
        push_ns / (1e9 / without) * 100.0,
    );

    // A large ledger, its proofs and a checkpoint.
    let dir = base.join("large");
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir)?;
    let built = build_large(&store, args.tree_entries).await?;
    let file = std::fs::metadata(dir.join(store_sqlite::DB_FILE)).map_or(0, |m| m.len());
    println!(
        "large ledger: {} entries built in {:.1} s ({:.0} MB)",
        args.tree_entries,
        built.as_secs_f64(),
        file as f64 / 1e6
    );
    let s = StreamId::default();
    let n = args.tree_entries;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let seqs: Vec<u64> = (0..args.proofs).map(|_| rng.gen_range(0..n)).collect();
    // Warm the page cache once, as a running server's would be.
    for &seq in seqs.iter().take(200) {
        prove_inclusion(&store, &s, seq, n).await?;
    }
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    let mut total_parts = 0usize;
    let mut max_parts = 0usize;
    for &seq in &seqs {
        let p = prove_inclusion(&store, &s, seq, n).await?;
        let parts: usize = inclusion_ranges(seq, n)
            .iter()
            .map(|r| r.subtrees().len())
            .sum();
        total_parts += parts;
        max_parts = max_parts.max(parts);
        std::hint::black_box(p);
    }
    let wall = wall0.elapsed().as_secs_f64() / seqs.len() as f64;
    let cpu = cpu_time()
        .zip(cpu0)
        .map(|(b, a)| (b - a).as_secs_f64() / seqs.len() as f64);
    println!(
        "inclusion proof at size {n}: {:.1} us wall, {} CPU per proof; {:.1} subtree hashes on average (max {max_parts}) from 1 node query + <= 4 entry-hash ranges (< 2^STORED_MIN_LEVEL rows) + head + the entry",
        wall * 1e6,
        cpu.map_or("n/a".into(), |c| format!("{:.1} us", c * 1e6)),
        total_parts as f64 / seqs.len() as f64
    );
    let proof = prove_inclusion(&store, &s, n / 3, n).await?;
    let signer = NoteSigner::new(&checkpoint::default_origin(&s), &[3; 32])?;
    let t = Instant::now();
    let cp = checkpoint::at_head(&store, &s, &checkpoint::default_origin(&s))
        .await?
        .context("the ledger has entries")?;
    let note = cp.sign(&signer);
    let cp_time = t.elapsed();
    let t = Instant::now();
    for _ in 0..1000 {
        proof
            .verify(cp.size, &cp.root)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!(
        "checkpoint at size {}: {:.2} ms (root from stored nodes + sign); proof check {:.1} us",
        cp.size,
        cp_time.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    print!("{note}");
    Ok(())
}

/// The embedded store, optionally dropping the Merkle node rows of each append: only to
/// measure what those rows cost the append path (a ledger written this way has no stored tree).
struct NodeRows {
    inner: SqliteStore,
    keep: bool,
}

#[async_trait::async_trait]
impl Store for NodeRows {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn head(&self, s: &StreamId) -> Result<Option<ledger::Head>, ledger::StoreError> {
        self.inner.head(s).await
    }
    async fn append(&self, mut batch: AppendBatch) -> Result<(), ledger::StoreError> {
        if !self.keep {
            batch.nodes.clear();
        }
        self.inner.append(batch).await
    }
    async fn purge_payloads(
        &self,
        s: &StreamId,
        authorization: u64,
        from: u64,
        to: u64,
    ) -> Result<u64, ledger::StoreError> {
        self.inner.purge_payloads(s, authorization, from, to).await
    }
    async fn find_idempotent(
        &self,
        s: &StreamId,
        idem: &[ledger::Digest],
    ) -> Result<Vec<ledger::Entry>, ledger::StoreError> {
        self.inner.find_idempotent(s, idem).await
    }
    async fn get(
        &self,
        s: &StreamId,
        seq: u64,
    ) -> Result<Option<ledger::Entry>, ledger::StoreError> {
        self.inner.get(s, seq).await
    }
    async fn read(
        &self,
        s: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ledger::Entry>, ledger::StoreError> {
        self.inner.read(s, from, limit).await
    }
    fn scan(&self, s: &StreamId, from: u64) -> ledger::EntryChunks {
        self.inner.scan(s, from)
    }
    async fn streams(&self) -> Result<Vec<StreamId>, ledger::StoreError> {
        self.inner.streams().await
    }
    async fn merkle_nodes(
        &self,
        s: &StreamId,
        wanted: &[(u8, u64)],
    ) -> Result<Vec<ledger::MerkleNode>, ledger::StoreError> {
        self.inner.merkle_nodes(s, wanted).await
    }
    async fn merkle_level(
        &self,
        s: &StreamId,
        level: u8,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ledger::MerkleNode>, ledger::StoreError> {
        self.inner.merkle_level(s, level, from, limit).await
    }
    async fn entry_hashes(
        &self,
        s: &StreamId,
        from: u64,
        to: u64,
    ) -> Result<Vec<ledger::Digest>, ledger::StoreError> {
        self.inner.entry_hashes(s, from, to).await
    }
    async fn put_checkpoint(
        &self,
        s: &StreamId,
        c: &ledger::StoredCheckpoint,
    ) -> Result<(), ledger::StoreError> {
        self.inner.put_checkpoint(s, c).await
    }
    async fn checkpoints(
        &self,
        s: &StreamId,
    ) -> Result<Vec<ledger::StoredCheckpoint>, ledger::StoreError> {
        self.inner.checkpoints(s).await
    }
    async fn projection(
        &self,
        name: &str,
        s: &StreamId,
    ) -> Result<Option<ledger::SavedProjection>, ledger::StoreError> {
        self.inner.projection(name, s).await
    }
    async fn commit_projection(
        &self,
        name: &str,
        s: &StreamId,
        expected: Option<u64>,
        saved: &ledger::SavedProjection,
        changes: &[ledger::RowChange],
    ) -> Result<(), ledger::StoreError> {
        self.inner
            .commit_projection(name, s, expected, saved, changes)
            .await
    }
    async fn reset_projection(&self, name: &str, s: &StreamId) -> Result<(), ledger::StoreError> {
        self.inner.reset_projection(name, s).await
    }
    async fn read_model_rows(
        &self,
        name: &str,
        s: &StreamId,
        q: &ledger::RowQuery,
    ) -> Result<Vec<ledger::ReadModelRow>, ledger::StoreError> {
        self.inner.read_model_rows(name, s, q).await
    }
}
