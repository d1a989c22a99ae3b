//! Rollback and truncation: attacks that leave a chain consistent in itself, so only a signed
//! checkpoint taken before the attack (or the store's own Merkle nodes and checkpoints) can
//! show them. Each runs on a fresh store of 51 entries with a checkpoint of all 51 taken first.

use std::future::Future;
use std::sync::Arc;

use ledger::checkpoint::{self, Checkpoint, CheckpointError, NoteSigner};
use ledger::verify::verify_store;
use ledger::{
    Problem, Seq, Store, StoredCheckpoint, StreamId, Timestamp, VerifyOptions, VerifyReport,
};

use crate::{fill, rehash, Tamper};

const EVENTS: usize = 50; // plus the genesis entry: seqs 0..=50
const SIZE: u64 = EVENTS as u64 + 1;

fn signer(seed: u8) -> NoteSigner {
    NoteSigner::new(
        &checkpoint::default_origin(&StreamId::default()),
        &[seed; 32],
    )
    .expect("a valid name")
}

async fn report(store: &dyn Store, checkpoints: Vec<Checkpoint>) -> VerifyReport {
    let opts = VerifyOptions {
        checkpoints,
        checkpoint_key: Some(signer(1).verifier()),
    };
    verify_store(store, &StreamId::default(), &opts, |_| {})
        .await
        .expect("verify runs")
}

fn expect(r: &VerifyReport, problem: Problem, seq: Option<Seq>, size: Option<u64>, attack: &str) {
    assert!(!r.ok, "{attack}: verify said intact: {r:?}");
    assert_eq!(
        (r.problem, r.first_bad_seq, r.checkpoint_size),
        (Some(problem), seq, size),
        "{attack}: {r:?}"
    );
}

/// Rewrites entries `from..to` as a careful forger does: a changed field, every hash and link
/// recomputed, so the chain still verifies.
async fn rewrite(store: &dyn Store, t: &dyn Tamper, from: Seq, to: Seq) {
    let s = StreamId::default();
    let mut prev = store.get(&s, from - 1).await.unwrap().unwrap().entry_hash;
    for seq in from..to {
        let mut e = store.get(&s, seq).await.unwrap().unwrap();
        e.recorded_at = Timestamp(e.recorded_at.micros() + 1);
        e.prev_hash = prev;
        rehash(&mut e);
        prev = e.entry_hash;
        t.overwrite(&s, seq, &e).await;
    }
}

/// Runs every attack. `fresh` makes an empty store and its tamperer, as for [`crate::tamper`].
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn Tamper>)>,
{
    let s = StreamId::default();
    let origin = checkpoint::default_origin(&s);
    // A fresh ledger and the checkpoint an auditor kept, opened as the auditor would.
    let setup = || async {
        let (store, t) = fresh().await;
        fill(store.clone(), &s, EVENTS, 7).await;
        let cp = checkpoint::at_head(store.as_ref(), &s, &origin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cp.size, SIZE);
        let note = cp.sign(&signer(1));
        let kept = Checkpoint::open(&note, &signer(1).verifier()).expect("own checkpoint opens");
        let r = report(store.as_ref(), vec![kept.clone()]).await;
        assert!(
            r.ok && r.checkpoints_verified == 1,
            "intact before the attack: {r:?}"
        );
        (store, t, kept, note)
    };

    // Appending more is what a ledger does: it still extends the checkpoint.
    {
        let (store, _t, kept, _) = setup().await;
        fill(store.clone(), &s, 20, 6).await;
        let r = report(store.as_ref(), vec![kept]).await;
        assert!(r.ok && r.entries == SIZE + 20, "an extended ledger: {r:?}");
    }

    {
        let attack = "the last entries deleted";
        let (store, t, kept, _) = setup().await;
        for seq in (45..SIZE).rev() {
            t.delete(&s, seq).await;
        }
        let r = report(store.as_ref(), vec![kept]).await;
        expect(&r, Problem::Truncated, Some(45), Some(SIZE), attack);
    }

    {
        let attack = "the tail rewritten with recomputed hashes and links";
        let (store, t, kept, _) = setup().await;
        rewrite(store.as_ref(), t.as_ref(), 40, SIZE).await;
        let chain_only = report(store.as_ref(), vec![]).await;
        assert_ne!(
            chain_only.problem,
            Some(Problem::LinkBroken),
            "{attack}: {chain_only:?}"
        );
        let r = report(store.as_ref(), vec![kept]).await;
        expect(&r, Problem::Rewritten, None, Some(SIZE), attack);
    }

    {
        let attack = "the whole ledger rewritten from entry 5 on, and extended";
        let (store, t, kept, _) = setup().await;
        rewrite(store.as_ref(), t.as_ref(), 5, SIZE).await;
        let mut last = store.get(&s, SIZE - 1).await.unwrap().unwrap();
        for seq in SIZE..SIZE + 10 {
            last.prev_hash = last.entry_hash;
            last.seq = seq;
            last.recorded_at = Timestamp(last.recorded_at.micros() + 1);
            rehash(&mut last);
            t.insert_raw(&last).await;
        }
        let r = report(store.as_ref(), vec![kept]).await;
        expect(&r, Problem::Rewritten, None, Some(SIZE), attack);
    }

    {
        let attack = "the tail rewritten, caught by the stored Merkle nodes alone";
        let (store, t, _kept, _) = setup().await;
        rewrite(store.as_ref(), t.as_ref(), 20, SIZE).await;
        let r = report(store.as_ref(), vec![]).await;
        // Named at the first entry of the first stored node the rewrite (from entry 20) touched.
        let lowest = ledger::merkle::STORED_MIN_LEVEL;
        expect(
            &r,
            Problem::TreeMismatch,
            Some((20 >> lowest) << lowest),
            None,
            attack,
        );
    }

    {
        let attack = "the last entries deleted, caught by the store's own checkpoint";
        let (store, t, _kept, note) = setup().await;
        store
            .put_checkpoint(&s, &StoredCheckpoint { size: SIZE, note })
            .await
            .unwrap();
        for seq in (50..SIZE).rev() {
            t.delete(&s, seq).await;
        }
        let r = report(store.as_ref(), vec![]).await;
        expect(&r, Problem::Truncated, Some(50), Some(SIZE), attack);
    }

    {
        let attack = "a checkpoint with a bad signature";
        let (store, _t, _kept, note) = setup().await;
        let forged = note.replacen(&format!("\n{SIZE}\n"), "\n40\n", 1);
        assert!(
            matches!(
                Checkpoint::open(&forged, &signer(1).verifier()),
                Err(CheckpointError::BadSignature { .. })
            ),
            "{attack}"
        );
        store
            .put_checkpoint(
                &s,
                &StoredCheckpoint {
                    size: 40,
                    note: forged,
                },
            )
            .await
            .unwrap();
        let r = report(store.as_ref(), vec![]).await;
        expect(&r, Problem::BadCheckpoint, None, None, attack);
    }

    {
        let attack = "a checkpoint from another key";
        let (store, _t, kept, _) = setup().await;
        let theirs = kept.sign(&signer(2));
        assert!(
            matches!(
                Checkpoint::open(&theirs, &signer(1).verifier()),
                Err(CheckpointError::UnknownKey { .. })
            ),
            "{attack}"
        );
        store
            .put_checkpoint(
                &s,
                &StoredCheckpoint {
                    size: SIZE,
                    note: theirs,
                },
            )
            .await
            .unwrap();
        let r = report(store.as_ref(), vec![]).await;
        expect(&r, Problem::BadCheckpoint, None, None, attack);
    }
}
