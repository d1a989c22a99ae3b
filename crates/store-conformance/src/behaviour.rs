//! What every store must do, as the writer and verifier rely on it.

use std::sync::Arc;

use ledger::merkle::root_of;
use ledger::tree::{root_at, subtree_hashes};
use ledger::verify::verify_store;
use ledger::{
    AppendBatch, Digest, GroupCommitWriter, Store, StoreError, StoredCheckpoint, StreamId,
    SystemClock, VerifyOptions, WriterConfig,
};

use crate::{fill, prepared};

/// Runs every behaviour check against `store` (which must be empty).
pub async fn run_all(store: Arc<dyn Store>) {
    genesis_and_head(store.clone()).await;
    append_read_and_scan(store.clone()).await;
    conflicting_batch_writes_nothing(store.clone()).await;
    idempotent_retry_returns_first_receipt(store.clone()).await;
    concurrent_appenders_make_one_chain(store.clone()).await;
    streams_are_independent(store.clone()).await;
    merkle_tree_and_checkpoints(store.clone()).await;
}

/// The stored tree gives the same roots as the entries themselves, at every size.
pub async fn merkle_tree_and_checkpoints(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-merkle").unwrap();
    fill(store.clone(), &s, 200, 13).await;
    let leaves = store.entry_hashes(&s, 0, 201).await.unwrap();
    assert_eq!(leaves.len(), 201);
    for size in [1u64, 2, 15, 16, 17, 64, 100, 128, 199, 201] {
        assert_eq!(
            root_at(store.as_ref(), &s, size).await.unwrap(),
            root_of(&leaves[..size as usize]),
            "size {size}"
        );
    }
    let nodes = subtree_hashes(store.as_ref(), &s, &[(4, 0), (7, 0), (5, 5)])
        .await
        .unwrap();
    assert_eq!(nodes[&(7, 0)], root_of(&leaves[..128]));
    assert_eq!(nodes[&(5, 5)], root_of(&leaves[160..192]));
    let lowest = ledger::merkle::STORED_MIN_LEVEL;
    let stored = store.merkle_level(&s, lowest, 0, 100).await.unwrap();
    assert_eq!(stored.len(), 201 >> lowest);

    // Real signed checkpoints, as `auditledger checkpoint` stores them.
    let signer =
        ledger::checkpoint::NoteSigner::new(&ledger::checkpoint::default_origin(&s), &[9; 32])
            .unwrap();
    let note_at = |size: u64| {
        ledger::checkpoint::Checkpoint {
            origin: ledger::checkpoint::default_origin(&s),
            size,
            root: root_of(&leaves[..size as usize]),
            head: leaves[size as usize - 1],
        }
        .sign(&signer)
    };
    let first = StoredCheckpoint {
        size: 100,
        note: note_at(100),
    };
    store.put_checkpoint(&s, &first).await.unwrap();
    store.put_checkpoint(&s, &first).await.unwrap();
    store
        .put_checkpoint(
            &s,
            &StoredCheckpoint {
                size: 201,
                note: note_at(201),
            },
        )
        .await
        .unwrap();
    let all = store.checkpoints(&s).await.unwrap();
    assert_eq!(all.iter().map(|c| c.size).collect::<Vec<_>>(), [100, 201]);
    assert_eq!(all[0], first);
    // The ledger extends its stored checkpoints.
    verify_ok(store.as_ref(), &s, 201).await;
}

async fn verify_ok(store: &dyn Store, stream: &StreamId, entries: u64) {
    let r = verify_store(store, stream, &VerifyOptions::default(), |_| {})
        .await
        .expect("verify runs");
    assert!(r.ok, "{r:?}");
    assert_eq!(r.entries, entries, "{r:?}");
}

pub async fn genesis_and_head(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-genesis").unwrap();
    assert!(
        store.head(&s).await.unwrap().is_none(),
        "a new stream has no head"
    );
    let receipts = fill(store.clone(), &s, 3, 3).await;
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let head = store.head(&s).await.unwrap().unwrap();
    assert_eq!((head.seq, head.entry_hash), (3, receipts[2].entry_hash));
    let genesis = store.get(&s, 0).await.unwrap().unwrap();
    assert_eq!(genesis.prev_hash, Digest::ZERO);
    verify_ok(store.as_ref(), &s, 4).await;
}

pub async fn append_read_and_scan(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-read").unwrap();
    let n = ledger::store::SCAN_CHUNK * 2 + 17;
    fill(store.clone(), &s, n, 500).await;
    let page = store.read(&s, 10, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );
    let e = store.get(&s, 10).await.unwrap().unwrap();
    assert_eq!(e, page[0], "get and read agree, every column round-trips");
    assert!(store.get(&s, n as u64 + 5).await.unwrap().is_none());
    let mut chunks = store.scan(&s, 0);
    let mut next = 0u64;
    while let Some(chunk) = chunks.recv().await {
        for e in chunk.unwrap() {
            assert_eq!(e.seq, next);
            next += 1;
        }
    }
    assert_eq!(next, n as u64 + 1);
    verify_ok(store.as_ref(), &s, n as u64 + 1).await;
}

pub async fn conflicting_batch_writes_nothing(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-conflict").unwrap();
    fill(store.clone(), &s, 5, 5).await;
    let head = store.head(&s).await.unwrap().unwrap();
    // Chain three new entries, then a fourth that re-uses seq 2 (a fork).
    let mut batch = Vec::new();
    let mut prev = head.entry_hash;
    for (i, p) in prepared(100, 3).into_iter().enumerate() {
        let e = p.chain(
            &s,
            head.seq + 1 + i as u64,
            head.recorded_at,
            prev,
            ledger::HashAlg::Sha256,
        );
        prev = e.entry_hash;
        batch.push(e);
    }
    let fork = prepared(200, 1).remove(0).chain(
        &s,
        2,
        head.recorded_at,
        store.get(&s, 1).await.unwrap().unwrap().entry_hash,
        ledger::HashAlg::Sha256,
    );
    batch.push(fork);
    match store
        .append(AppendBatch {
            entries: batch,
            nodes: Vec::new(),
        })
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a fork must be refused as a conflict, got {other:?}"),
    }
    assert_eq!(
        store.head(&s).await.unwrap().unwrap(),
        head,
        "nothing of the batch was written"
    );

    // An entry that does not continue the chain is refused too.
    let stray = prepared(300, 1).remove(0).chain(
        &s,
        head.seq + 1,
        head.recorded_at,
        Digest([9; 32]),
        ledger::HashAlg::Sha256,
    );
    assert!(
        matches!(
            store
                .append(AppendBatch {
                    entries: vec![stray],
                    nodes: Vec::new()
                })
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a broken link is refused"
    );
    verify_ok(store.as_ref(), &s, 6).await;
}

pub async fn idempotent_retry_returns_first_receipt(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-idem").unwrap();
    let (w, task) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let ingest = ledger::Ingest::new(crate::test_pseudonymizer());
    let values: Vec<_> = (0..3).map(crate::event).collect();
    let first = w
        .append(ingest.prepare_batch(&values, Some("req-1"), 0).unwrap())
        .await
        .unwrap();
    let retry = w
        .append(ingest.prepare_batch(&values, Some("req-1"), 0).unwrap())
        .await
        .unwrap();
    assert_eq!(first, retry, "a retry returns the original receipts");
    // The same key for different content is refused.
    let other: Vec<_> = (5..8).map(crate::event).collect();
    assert_eq!(
        w.append(ingest.prepare_batch(&other, Some("req-1"), 0).unwrap())
            .await,
        Err(ledger::AppendError::IdempotencyMismatch)
    );
    // One digest twice in one request is refused, not retried until contention.
    let mut twice = ingest
        .prepare_batch(&values[..1], Some("req-3"), 0)
        .unwrap();
    twice.push(twice[0].clone());
    assert_eq!(
        w.append(twice).await,
        Err(ledger::AppendError::IdempotencyMismatch)
    );
    // Two identical requests in flight at once: one write.
    let (a, b) = tokio::join!(
        w.append(ingest.prepare_batch(&other, Some("req-2"), 0).unwrap()),
        w.append(ingest.prepare_batch(&other, Some("req-2"), 0).unwrap())
    );
    assert_eq!(a.unwrap(), b.unwrap());
    drop(w);
    task.await.unwrap();
    verify_ok(store.as_ref(), &s, 7).await;
}

pub async fn concurrent_appenders_make_one_chain(store: Arc<dyn Store>) {
    let s = StreamId::new("conf-concurrent").unwrap();
    // Two writers on one stream (as two processes would have): they race for the head.
    let (w1, t1) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let (w2, t2) = GroupCommitWriter::start(
        store.clone(),
        s.clone(),
        Arc::new(SystemClock),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let w = if i % 2 == 0 { w1.clone() } else { w2.clone() };
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..20 {
                let r = w
                    .append(prepared(i * 100 + j, 1 + j % 3))
                    .await
                    .expect("append");
                seqs.extend(r.into_iter().map(|r| r.seq));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    drop((w1, w2));
    t1.await.unwrap();
    t2.await.unwrap();
    all.sort_unstable();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(
        all, expected,
        "every acknowledged entry has its own seq, no gap"
    );
    verify_ok(store.as_ref(), &s, all.len() as u64 + 1).await;
}

pub async fn streams_are_independent(store: Arc<dyn Store>) {
    let a = StreamId::new("conf-tenant-a").unwrap();
    let b = StreamId::new("conf-tenant-b").unwrap();
    fill(store.clone(), &a, 4, 2).await;
    fill(store.clone(), &b, 2, 2).await;
    let streams = store.streams().await.unwrap();
    assert!(streams.contains(&a) && streams.contains(&b), "{streams:?}");
    verify_ok(store.as_ref(), &a, 5).await;
    verify_ok(store.as_ref(), &b, 3).await;
}
