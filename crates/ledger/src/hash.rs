//! The one seam where the hash algorithm is chosen, and the fixed binary layout that an entry
//! hash is computed over. A verifier in any language needs only this layout (documented in
//! `docs/FORMAT.md`) and a SHA-256 implementation; no CBOR library.

use sha2::Digest as _;

use crate::types::{Digest, Seq, StreamId, Timestamp};

/// Domain tag at the start of every entry-hash preimage, so an entry hash can never be
/// mistaken for a digest of anything else.
pub const ENTRY_DOMAIN_TAG: &[u8] = b"auditledger/entry";

/// Version of the entry layout. Bumped only with a new layout; verifiers refuse unknown ones.
pub const FORMAT_VERSION: u8 = 1;

/// The hash algorithm of a stream, fixed by its genesis entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlg {
    /// SHA-256 (FIPS 180-4), checkable with `sha256sum`.
    #[default]
    Sha256,
}

impl HashAlg {
    /// The byte written into every entry-hash preimage.
    pub fn id(self) -> u8 {
        match self {
            HashAlg::Sha256 => 1,
        }
    }

    /// The name recorded in the genesis payload.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlg> {
        match name {
            "sha256" => Some(HashAlg::Sha256),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            HashAlg::Sha256 => Digest(sha2::Sha256::digest(data).into()),
        }
    }

    /// `payload_digest`: the digest of the payload bytes exactly as stored.
    pub fn payload_digest(self, payload: &[u8]) -> Digest {
        self.digest(payload)
    }

    /// `entry_hash = H(entry_preimage(...))`.
    pub fn entry_hash(
        self,
        stream: &StreamId,
        seq: Seq,
        recorded_at: Timestamp,
        prev_hash: &Digest,
        payload_digest: &Digest,
    ) -> Digest {
        let mut buf = [0u8; PREIMAGE_MAX];
        let len = entry_preimage(
            &mut buf,
            self,
            stream,
            seq,
            recorded_at,
            prev_hash,
            payload_digest,
        );
        self.digest(&buf[..len])
    }
}

/// Size of the largest preimage: the tag, two bytes, a stream name of at most 64 bytes, two
/// integers and two 32-byte digests, each variable field with a 4-byte length.
pub const PREIMAGE_MAX: usize = 4 + ENTRY_DOMAIN_TAG.len() + 2 + 4 + 64 + 8 + 8 + 4 + 32 + 4 + 32;

/// Writes the entry-hash preimage into `buf` and returns its length:
///
/// ```text
/// u32be(len(tag)) || tag            tag = "auditledger/entry"
/// u8 format_version                 1
/// u8 hash_alg                       1 = SHA-256
/// u32be(len(stream)) || stream      UTF-8
/// u64be seq
/// i64be recorded_at                 microseconds since the Unix epoch, UTC
/// u32be(32) || prev_hash            32 zero bytes for the genesis entry
/// u32be(32) || payload_digest
/// ```
pub fn entry_preimage(
    buf: &mut [u8; PREIMAGE_MAX],
    alg: HashAlg,
    stream: &StreamId,
    seq: Seq,
    recorded_at: Timestamp,
    prev_hash: &Digest,
    payload_digest: &Digest,
) -> usize {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&(ENTRY_DOMAIN_TAG.len() as u32).to_be_bytes());
    put(ENTRY_DOMAIN_TAG);
    put(&[FORMAT_VERSION, alg.id()]);
    put(&(stream.as_str().len() as u32).to_be_bytes());
    put(stream.as_str().as_bytes());
    put(&seq.to_be_bytes());
    put(&recorded_at.0.to_be_bytes());
    put(&32u32.to_be_bytes());
    put(&prev_hash.0);
    put(&32u32.to_be_bytes());
    put(&payload_digest.0);
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-4 example "abc".
        assert_eq!(
            HashAlg::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn preimage_covers_every_field() {
        let s = StreamId::new("default").unwrap();
        let base =
            HashAlg::Sha256.entry_hash(&s, 1, Timestamp(5), &Digest([1; 32]), &Digest([2; 32]));
        let other = StreamId::new("other").unwrap();
        let variants = [
            HashAlg::Sha256.entry_hash(&other, 1, Timestamp(5), &Digest([1; 32]), &Digest([2; 32])),
            HashAlg::Sha256.entry_hash(&s, 2, Timestamp(5), &Digest([1; 32]), &Digest([2; 32])),
            HashAlg::Sha256.entry_hash(&s, 1, Timestamp(6), &Digest([1; 32]), &Digest([2; 32])),
            HashAlg::Sha256.entry_hash(&s, 1, Timestamp(5), &Digest([3; 32]), &Digest([2; 32])),
            HashAlg::Sha256.entry_hash(&s, 1, Timestamp(5), &Digest([1; 32]), &Digest([3; 32])),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }
}
