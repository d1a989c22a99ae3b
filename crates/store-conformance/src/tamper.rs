//! Every kind of tampering, each on a fresh ledger of 40 entries, each caught and named at the
//! right `seq` by `verify`.

use std::future::Future;
use std::sync::Arc;

use ledger::verify::verify_store;
use ledger::{
    PreparedEntry, Problem, Seq, Store, StreamId, Timestamp, VerifyOptions, VerifyReport,
};

use crate::{bogus_digest, fill, rehash, Tamper};

const ENTRIES: usize = 39; // plus the genesis entry: seqs 0..=39

async fn report(store: &dyn Store, s: &StreamId) -> VerifyReport {
    verify_store(store, s, &VerifyOptions::default(), |_| {})
        .await
        .expect("verify runs")
}

fn expect(r: &VerifyReport, seq: Seq, problem: Problem, attack: &str) {
    assert!(!r.ok, "{attack}: verify said intact: {r:?}");
    assert_eq!(
        (r.first_bad_seq, r.problem),
        (Some(seq), Some(problem)),
        "{attack}: {r:?}"
    );
}

/// Runs every attack. `fresh` makes an empty store and its tamperer (a new schema, database or
/// file per call, so attacks do not see each other).
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Store>, Arc<dyn Tamper>)>,
{
    let s = StreamId::default();
    macro_rules! attack {
        ($name:literal, |$store:ident, $t:ident| $body:block, $seq:expr, $problem:expr) => {{
            let ($store, $t) = fresh().await;
            fill($store.clone(), &s, ENTRIES, 7).await;
            assert!(report($store.as_ref(), &s).await.ok, "{}: ledger intact before the attack", $name);
            $body
            expect(&report($store.as_ref(), &s).await, $seq, $problem, $name);
        }};
    }

    attack!(
        "a payload byte changed",
        |store, t| {
            let mut e = store.get(&s, 17).await.unwrap().unwrap();
            e.payload.as_mut().unwrap()[20] ^= 0x01;
            t.overwrite(&s, 17, &e).await;
        },
        17,
        Problem::PayloadModified
    );

    attack!(
        "a payload changed with its digest and entry hash recomputed",
        |store, t| {
            let mut e = store.get(&s, 12).await.unwrap().unwrap();
            let mut p = ledger::Payload::decode(e.payload.as_ref().unwrap()).unwrap();
            if let ledger::Payload::Event(ev) = &mut p {
                ev.outcome = "denied".into();
            }
            let prepared = PreparedEntry::new(&p, ledger::HashAlg::Sha256);
            e.payload = Some(prepared.payload);
            e.payload_digest = prepared.payload_digest;
            e.columns = prepared.columns;
            rehash(&mut e);
            t.overwrite(&s, 12, &e).await;
        },
        12,
        Problem::LinkBroken
    );

    attack!(
        "a payload and its digest changed, hash left",
        |store, t| {
            let mut e = store.get(&s, 9).await.unwrap().unwrap();
            let mut p = ledger::Payload::decode(e.payload.as_ref().unwrap()).unwrap();
            if let ledger::Payload::Event(ev) = &mut p {
                ev.detail = Some("nothing to see".into());
            }
            let prepared = PreparedEntry::new(&p, ledger::HashAlg::Sha256);
            e.payload = Some(prepared.payload);
            e.payload_digest = prepared.payload_digest;
            e.columns = prepared.columns;
            t.overwrite(&s, 9, &e).await;
        },
        9,
        Problem::HashMismatch
    );

    attack!(
        "a row deleted in the middle",
        |_store, t| {
            t.delete(&s, 21).await;
        },
        21,
        Problem::Gap
    );

    attack!(
        "a row deleted and the rest renumbered",
        |_store, t| {
            t.delete(&s, 21).await;
            t.renumber(&s, 22, -1).await;
        },
        21,
        Problem::Reordered
    );

    attack!(
        "two rows swapped",
        |store, t| {
            let mut a = store.get(&s, 30).await.unwrap().unwrap();
            let mut b = store.get(&s, 31).await.unwrap().unwrap();
            t.delete(&s, 30).await;
            t.delete(&s, 31).await;
            std::mem::swap(&mut a.seq, &mut b.seq);
            t.insert_raw(&a).await;
            t.insert_raw(&b).await;
        },
        30,
        Problem::Reordered
    );

    attack!(
        "a forged row inserted with a valid hash and link",
        |store, t| {
            let prev = store.get(&s, 14).await.unwrap().unwrap();
            let mut forged = store.get(&s, 15).await.unwrap().unwrap();
            forged.prev_hash = prev.entry_hash;
            forged.recorded_at = Timestamp(forged.recorded_at.micros() + 1);
            rehash(&mut forged);
            t.renumber(&s, 15, 1).await;
            t.insert_raw(&forged).await;
        },
        15,
        Problem::ForgedEntry
    );

    attack!(
        "a forged row appended with a made-up hash",
        |store, t| {
            let mut forged = store.get(&s, 39).await.unwrap().unwrap();
            forged.seq = 40;
            forged.prev_hash = forged.entry_hash;
            forged.entry_hash = bogus_digest();
            t.insert_raw(&forged).await;
            let _ = store;
        },
        40,
        Problem::HashMismatch
    );

    attack!(
        "an extracted column changed, payload untouched",
        |store, t| {
            let mut e = store.get(&s, 25).await.unwrap().unwrap();
            let forged = if e.columns.action.as_deref() == Some("delete") {
                "read"
            } else {
                "delete"
            };
            e.columns.action = Some(forged.into());
            t.overwrite(&s, 25, &e).await;
        },
        25,
        Problem::ColumnMismatch
    );

    attack!(
        "the patient column pointed at someone else",
        |store, t| {
            let mut e = store.get(&s, 26).await.unwrap().unwrap();
            e.columns.patient = Some(
                crate::test_pseudonymizer()
                    .pseudonymize("p-99999")
                    .to_string(),
            );
            t.overwrite(&s, 26, &e).await;
        },
        26,
        Problem::ColumnMismatch
    );

    attack!(
        "recorded_at changed",
        |store, t| {
            let mut e = store.get(&s, 33).await.unwrap().unwrap();
            e.recorded_at = Timestamp(e.recorded_at.micros() - 3_600_000_000);
            t.overwrite(&s, 33, &e).await;
        },
        33,
        Problem::HashMismatch
    );

    attack!(
        "the genesis entry replaced",
        |store, t| {
            let mut g = store.get(&s, 0).await.unwrap().unwrap();
            g.prev_hash = bogus_digest();
            rehash(&mut g);
            t.overwrite(&s, 0, &g).await;
        },
        0,
        Problem::BadGenesis
    );
}
