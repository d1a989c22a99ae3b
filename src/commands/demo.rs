//! `auditledger demo`: a synthetic clinic day, appended and verified, explained.

use std::sync::Arc;
use std::time::Instant;

use ledger::verify::verify_store;
use ledger::{GroupCommitWriter, Ingest, SystemClock, VerifyOptions, WriterConfig};
use tokio::sync::Mutex;

use crate::cli::DemoArgs;
use crate::context::Context;
use crate::keys::{
    create_pseudonym_key, create_signing_key, pseudonym_key_path, signing_key_path,
    PSEUDONYM_KEY_ENV, SIGNING_KEY_ENV,
};
use crate::synthetic::clinic_day;
use crate::{EXIT_DAMAGED, EXIT_OK};

pub async fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<u8> {
    let dir = &ctx.global.data_dir;
    println!(
        "auditledger demo: a synthetic clinic day in {}",
        dir.display()
    );
    if std::env::var_os(PSEUDONYM_KEY_ENV).is_none() && !pseudonym_key_path(dir).exists() {
        let key = create_pseudonym_key(dir)?;
        println!(
            "  created the pseudonymization key {} (key id {})",
            pseudonym_key_path(dir).display(),
            key.id()
        );
    }
    // As `init` would: the checkpoint signing key too, so `auditledger checkpoint` works next.
    if std::env::var_os(SIGNING_KEY_ENV).is_none() && !signing_key_path(dir).exists() {
        let path = create_signing_key(dir)?;
        println!("  created the checkpoint signing key {}", path.display());
    }
    let ingest = Arc::new(Ingest::new(ctx.pseudonymizer()?));
    let store = ctx.open_store().await?;
    let (writer, task) = GroupCommitWriter::start(
        store.clone(),
        ctx.stream.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await?;
    let before = store.head(&ctx.stream).await?.map(|h| h.seq).unwrap_or(0);

    let (events, day) = clinic_day(args.seed, args.events);
    println!(
        "\n1. Generated {} events of 2026-11-22: {} logins, {} failed logins (of which {} in a brute-force burst from one address at 02:13), \
{} PHI chart reads, {} chart updates, {} worklist exports, {} refused PHI reads, {} role change, {} coverage-service events.",
        day.events, day.logins, day.failed_logins, day.brute_force_attempts, day.phi_reads, day.updates, day.exports, day.denied, day.role_changes, day.service_events
    );

    // Services send small requests (1 to 8 events) concurrently; the writer group-commits them.
    let mut requests = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let n = 1 + (i * 7919) % 8;
        requests.push(events[i..(i + n).min(events.len())].to_vec());
        i += n;
    }
    let queue = Arc::new(Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.appenders.max(1) {
        let (queue, writer, ingest) = (queue.clone(), writer.clone(), ingest.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().await.next() else {
                    return Ok::<u64, anyhow::Error>(0);
                };
                let prepared = ingest
                    .prepare_batch(&batch, None, 0)
                    .map_err(|e| anyhow::anyhow!("{}", e[0]))?;
                writer.append(prepared).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed();
    let stats = writer.stats();
    let (batches, entries) = (
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        stats.entries.load(std::sync::atomic::Ordering::Relaxed),
    );
    drop(writer);
    task.await?;
    println!(
        "\n2. Appended them through {} concurrent appenders in {:.2} s ({:.0} events/s): every identifier was pseudonymized with \
the keyed hash, each entry chained to the one before, and {} group commits (mean {:.1} entries each) made them durable before any \
receipt was given. Seq {}..={}.",
        args.appenders,
        elapsed.as_secs_f64(),
        entries as f64 / elapsed.as_secs_f64(),
        batches,
        entries as f64 / batches.max(1) as f64,
        before + 1,
        before + entries
    );

    let started = Instant::now();
    let report = verify_store(
        store.as_ref(),
        &ctx.stream,
        &VerifyOptions::default(),
        |_| {},
    )
    .await?;
    println!(
        "\n3. Verified the whole stream in {:.2} s: {} ({} entries, head seq {}, head hash {}).",
        started.elapsed().as_secs_f64(),
        if report.ok {
            "intact".to_string()
        } else {
            format!(
                "DAMAGED at seq {:?}: {:?}",
                report.first_bad_seq, report.problem
            )
        },
        report.entries,
        report.head_seq.unwrap_or(0),
        report.head_hash.map(|h| h.to_hex()).unwrap_or_default()
    );

    if let Some(sample) = store
        .read(&ctx.stream, before + 1, 64)
        .await?
        .into_iter()
        .find(|e| e.columns.phi)
    {
        println!(
            "\n4. One entry as stored (`auditledger show {}`): identifiers are pseudonyms '<key id>:<keyed BLAKE3>', never raw ids:\n{}",
            sample.seq,
            serde_json::to_string_pretty(&sample.to_json())?
        );
    }
    println!(
        "\nNext: `auditledger verify`, `auditledger tail -n 5`, `auditledger checkpoint --out cp.txt`, \
`auditledger export --out day.cbor` then `auditledger verify --export day.cbor` (all with --data-dir {}).",
        dir.display()
    );
    Ok(if report.ok { EXIT_OK } else { EXIT_DAMAGED })
}
