//! Pseudonyms: raw identifiers (user, IP, session, resource and patient ids) are replaced by a
//! keyed BLAKE3 hash under a secret key before anything is stored or logged.
//!
//! A keyed hash, unlike the unkeyed SHA-256 of the old system, cannot be reversed by hashing
//! every possible MRN: without the key nobody can compute a pseudonym. The same key always gives
//! the same pseudonym, so analytics can group by user or patient, and an auditor who asks about
//! one patient gives the raw id to the server, which pseudonymizes it and queries.
//!
//! Text form: `<key id>:<64 hex digits>` (the key id says which key made it, so keys can be
//! rotated) or `sha256:<64 hex digits>` for identifiers imported from the legacy system.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::types::Digest;

/// Context string of the key-id derivation (BLAKE3 `derive_key` wants a hard-coded, globally
/// unique one).
const KEY_ID_CONTEXT: &str = "auditledger 2026-11 pseudonym key id";
/// Context of the idempotency-key derivation.
const IDEMPOTENCY_CONTEXT: &str = "auditledger 2026-11 idempotency key";

/// Eight hex digits naming a pseudonymization key, derived from the key itself (one-way), so a
/// key id reveals nothing about the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// The 32-byte secret pseudonymization key. Its `Debug` prints only the key id: a key must
/// never reach a log.
#[derive(Clone)]
pub struct PseudonymKey {
    key: [u8; 32],
    id: KeyId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a pseudonymization key is 64 hex digits (32 bytes); got {0} characters")]
    BadLength(usize),
    #[error("a pseudonymization key is 64 hex digits; found a character that is not hex")]
    NotHex,
}

impl PseudonymKey {
    pub fn from_bytes(key: [u8; 32]) -> PseudonymKey {
        let derived = blake3::derive_key(KEY_ID_CONTEXT, &key);
        let mut id = [0u8; 4];
        id.copy_from_slice(&derived[..4]);
        PseudonymKey { key, id: KeyId(id) }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> PseudonymKey {
        PseudonymKey::from_bytes(rand::random())
    }

    /// Parses the key file / environment form: 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<PseudonymKey, KeyError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(KeyError::BadLength(text.len()));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(|_| KeyError::NotHex)?;
        Ok(PseudonymKey::from_bytes(key))
    }

    /// The key file form. Only `init` writes it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymKey(id {}, secret hidden)", self.id)
    }
}

/// A pseudonymized identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pseudonym {
    /// Keyed BLAKE3 under the key named by the id.
    Keyed { key_id: KeyId, digest: [u8; 32] },
    /// Unkeyed SHA-256 hex, as the legacy Python system wrote it.
    LegacySha256 { digest: [u8; 32] },
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pseudonym::Keyed { key_id, digest } => write!(f, "{key_id}:{}", hex::encode(digest)),
            Pseudonym::LegacySha256 { digest } => write!(f, "sha256:{}", hex::encode(digest)),
        }
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({self})")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a pseudonym: expected '<8 hex key id>:<64 hex>' or 'sha256:<64 hex>'")]
pub struct InvalidPseudonym;

impl FromStr for Pseudonym {
    type Err = InvalidPseudonym;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, hex_digest) = s.split_once(':').ok_or(InvalidPseudonym)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| InvalidPseudonym)?;
        if prefix == "sha256" {
            return Ok(Pseudonym::LegacySha256 { digest });
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(prefix, &mut id).map_err(|_| InvalidPseudonym)?;
        Ok(Pseudonym::Keyed {
            key_id: KeyId(id),
            digest,
        })
    }
}

/// The canonical text of an IP address (what ingest pseudonymizes), or `None` when `raw` is not
/// one.
pub fn canonical_ip(raw: &str) -> Option<String> {
    raw.trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// Turns raw identifiers into pseudonyms.
#[derive(Clone, Debug)]
pub struct Pseudonymizer {
    key: PseudonymKey,
}

impl Pseudonymizer {
    pub fn new(key: PseudonymKey) -> Pseudonymizer {
        Pseudonymizer { key }
    }

    pub fn key_id(&self) -> KeyId {
        self.key.id
    }

    /// `blake3::keyed_hash(key, raw)`.
    pub fn pseudonymize(&self, raw: &str) -> Pseudonym {
        Pseudonym::Keyed {
            key_id: self.key.id,
            digest: *blake3::keyed_hash(&self.key.key, raw.as_bytes()).as_bytes(),
        }
    }

    /// The pseudonym of an IP address exactly as ingest makes it: the address is parsed and
    /// written in its canonical form first, so `2001:DB8::1`, ` 2001:db8:0::1 ` and
    /// `2001:db8::1` are one address. `None` when `raw` is not an IP address.
    pub fn pseudonymize_ip(&self, raw: &str) -> Option<Pseudonym> {
        canonical_ip(raw).map(|ip| self.pseudonymize(&ip))
    }

    /// The legacy system's unkeyed `sha256(raw).hexdigest()`, for matching imported rows.
    pub fn legacy_sha256(raw: &str) -> Pseudonym {
        Pseudonym::LegacySha256 {
            digest: sha2::Sha256::digest(raw.as_bytes()).into(),
        }
    }

    /// A legacy row already holds the SHA-256 hex; wrap it (64 hex digits, any case).
    pub fn legacy_from_hex(hex_digest: &str) -> Option<Pseudonym> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).ok()?;
        Some(Pseudonym::LegacySha256 { digest })
    }

    /// The stored form of a client's idempotency key for the `index`-th event of a request.
    /// Keyed, because a client may put anything in its key.
    pub fn idempotency_digest(&self, client_key: &str, index: u32) -> Digest {
        let mut h =
            blake3::Hasher::new_keyed(&blake3::derive_key(IDEMPOTENCY_CONTEXT, &self.key.key));
        h.update(&(client_key.len() as u64).to_be_bytes());
        h.update(client_key.as_bytes());
        h.update(&index.to_be_bytes());
        Digest(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_ip_is_pseudonymized_in_its_canonical_form() {
        let p = Pseudonymizer::new(PseudonymKey::from_bytes([3; 32]));
        let one = p.pseudonymize_ip("2001:db8::1").unwrap();
        assert_eq!(p.pseudonymize_ip(" 2001:DB8:0::1 "), Some(one));
        assert_eq!(
            p.pseudonymize_ip("2001:db8::1"),
            Some(p.pseudonymize("2001:db8::1"))
        );
        assert_eq!(
            p.pseudonymize_ip("10.1.4.22"),
            Some(p.pseudonymize("10.1.4.22"))
        );
        assert_eq!(p.pseudonymize_ip("10.1.4"), None);
        assert_eq!(p.pseudonymize_ip("not an address"), None);
    }

    use super::*;

    fn key(byte: u8) -> PseudonymKey {
        PseudonymKey::from_bytes([byte; 32])
    }

    #[test]
    fn same_key_same_pseudonym_other_key_other() {
        let a = Pseudonymizer::new(key(1));
        let b = Pseudonymizer::new(key(2));
        assert_eq!(a.pseudonymize("p-20931"), a.pseudonymize("p-20931"));
        assert_ne!(a.pseudonymize("p-20931"), a.pseudonymize("p-20932"));
        assert_ne!(a.pseudonymize("p-20931"), b.pseudonymize("p-20931"));
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn keyed_is_blake3_keyed_hash() {
        let p = Pseudonymizer::new(key(7));
        let expected = blake3::keyed_hash(&[7; 32], b"u-1042");
        match p.pseudonymize("u-1042") {
            Pseudonym::Keyed { digest, .. } => assert_eq!(&digest, expected.as_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn legacy_is_plain_sha256_hex() {
        // Python: hashlib.sha256(b"abc").hexdigest()
        assert_eq!(
            Pseudonymizer::legacy_sha256("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn text_form_round_trips() {
        let p = Pseudonymizer::new(key(3)).pseudonymize("10.1.4.22");
        assert_eq!(p.to_string().parse::<Pseudonym>().unwrap(), p);
        let l = Pseudonymizer::legacy_sha256("p-1");
        assert_eq!(l.to_string().parse::<Pseudonym>().unwrap(), l);
        assert!("nope".parse::<Pseudonym>().is_err());
    }

    #[test]
    fn key_parsing_and_debug_hide_the_secret() {
        let k = key(0xab);
        let parsed = PseudonymKey::from_hex(&format!("  {}\n", k.to_hex())).unwrap();
        assert_eq!(parsed.id(), k.id());
        assert!(!format!("{k:?}").contains("abab"));
        assert_eq!(
            PseudonymKey::from_hex("abc").unwrap_err(),
            KeyError::BadLength(3)
        );
        assert_eq!(
            PseudonymKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            KeyError::NotHex
        );
    }
}
