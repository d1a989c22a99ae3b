//! `docs/FORMAT.md` carries a worked example (key, event, CBOR payload, digests, preimages,
//! entry hashes). This test recomputes every value with the code and compares it with the page,
//! so the specification an auditor reads cannot drift from what the ledger writes.
//!
//! `FORMAT_EXAMPLE_PRINT=1 cargo test -p auditledger-ledger --test format_doc -- --nocapture`
//! prints the values (used to write the page).

use std::collections::BTreeMap;

use ledger::hash::{entry_preimage, PREIMAGE_MAX};
use ledger::{
    Digest, HashAlg, Ingest, PreparedEntry, PseudonymKey, Pseudonymizer, StreamId, Timestamp,
};

fn example() -> BTreeMap<&'static str, String> {
    let key_bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key = PseudonymKey::from_bytes(key_bytes);
    let p = Pseudonymizer::new(key.clone());
    let stream = StreamId::default();
    let alg = HashAlg::Sha256;
    let event: serde_json::Value = serde_json::from_str(EVENT_JSON).unwrap();

    let genesis_at = Timestamp::parse_rfc3339("2026-11-22T14:00:00Z").unwrap();
    let genesis = PreparedEntry::genesis(&stream, alg, genesis_at);
    let g_payload = genesis.payload.clone();
    let g = genesis.chain(&stream, 0, genesis_at, Digest::ZERO, alg);

    let recorded_at = Timestamp::parse_rfc3339("2026-11-22T14:03:11.312Z").unwrap();
    let prepared = Ingest::new(p.clone()).prepare(&event, None).unwrap();
    let e_payload = prepared.payload.clone();
    let e = prepared.chain(&stream, 1, recorded_at, g.entry_hash, alg);

    let preimage = |seq, at, prev: &Digest, digest: &Digest| {
        let mut buf = [0u8; PREIMAGE_MAX];
        let n = entry_preimage(&mut buf, alg, &stream, seq, at, prev, digest);
        hex::encode(&buf[..n])
    };
    let mut m = BTreeMap::new();
    m.insert("key", hex::encode(key_bytes));
    m.insert("key_id", key.id().to_hex());
    m.insert("user_pseudonym", p.pseudonymize("u-1042").to_string());
    m.insert("ip_pseudonym", p.pseudonymize("10.1.4.22").to_string());
    m.insert("session_pseudonym", p.pseudonymize("s-88f1").to_string());
    m.insert("patient_pseudonym", p.pseudonymize("p-20931").to_string());
    m.insert(
        "legacy_patient",
        Pseudonymizer::legacy_sha256("p-20931").to_string(),
    );
    m.insert("genesis_payload", hex::encode(&g_payload));
    m.insert("genesis_payload_digest", g.payload_digest.to_hex());
    m.insert("genesis_recorded_at", g.recorded_at.micros().to_string());
    m.insert(
        "genesis_preimage",
        preimage(0, genesis_at, &Digest::ZERO, &g.payload_digest),
    );
    m.insert("genesis_entry_hash", g.entry_hash.to_hex());
    m.insert("event_payload", hex::encode(&e_payload));
    m.insert("event_payload_digest", e.payload_digest.to_hex());
    m.insert("event_recorded_at", e.recorded_at.micros().to_string());
    m.insert(
        "event_preimage",
        preimage(1, recorded_at, &g.entry_hash, &e.payload_digest),
    );
    m.insert("event_entry_hash", e.entry_hash.to_hex());
    m.insert(
        "merkle_root_2",
        ledger::merkle::root_of(&[g.entry_hash, e.entry_hash]).to_hex(),
    );
    m
}

const EVENT_JSON: &str = r#"{"occurred_at": "2026-11-22T14:03:11.250Z",
 "action": "read", "outcome": "success",
 "actor": {"user_id": "u-1042", "role": "nurse", "ip": "10.1.4.22",
           "session_id": "s-88f1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
 "resource": {"type": "Patient", "id": "p-20931"},
 "patient_id": "p-20931", "phi": true,
 "request": {"method": "GET", "path": "/patients/{id}"},
 "source": "ehr-web", "detail": "viewed chart summary"}"#;

/// Values on the page: a line `<!-- example:NAME -->` followed by a fenced block whose
/// non-blank lines, concatenated without whitespace, are the value.
fn values_on_page(page: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- example:")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "example {name} must be followed by a fenced block"
        );
        let mut value = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            value.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        out.insert(name.to_owned(), value);
    }
    out
}

#[test]
fn the_worked_example_in_format_md_matches_the_code() {
    let computed = example();
    if std::env::var_os("FORMAT_EXAMPLE_PRINT").is_some() {
        for (k, v) in &computed {
            println!("<!-- example:{k} -->\n```text");
            for chunk in v.as_bytes().chunks(64) {
                println!("{}", std::str::from_utf8(chunk).unwrap());
            }
            println!("```\n");
        }
    }
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md"))
            .expect("docs/FORMAT.md exists");
    let on_page = values_on_page(&page);
    for (name, value) in &computed {
        assert_eq!(
            on_page.get(*name),
            Some(value),
            "docs/FORMAT.md example:{name} differs from the code"
        );
    }
    // The event JSON on the page is the one hashed here.
    assert!(page.contains(r#""patient_id": "p-20931", "phi": true,"#));
}

#[test]
fn the_example_checks_with_plain_sha256() {
    let m = example();
    // payload_digest = SHA-256(payload bytes), entry_hash = SHA-256(preimage): nothing else.
    for (payload, digest) in [
        ("genesis_payload", "genesis_payload_digest"),
        ("event_payload", "event_payload_digest"),
    ] {
        assert_eq!(
            HashAlg::Sha256
                .digest(&hex::decode(&m[payload]).unwrap())
                .to_hex(),
            m[digest]
        );
    }
    for (pre, hash) in [
        ("genesis_preimage", "genesis_entry_hash"),
        ("event_preimage", "event_entry_hash"),
    ] {
        assert_eq!(
            HashAlg::Sha256
                .digest(&hex::decode(&m[pre]).unwrap())
                .to_hex(),
            m[hash]
        );
    }
    assert_eq!(
        ledger::payload::check_canonical(&hex::decode(&m["event_payload"]).unwrap()),
        Ok(())
    );
}
