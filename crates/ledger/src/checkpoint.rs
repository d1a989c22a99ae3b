//! Signed checkpoints: a C2SP `tlog-checkpoint` body inside a C2SP `signed-note`, signed with
//! Ed25519 (signature type 0x01), so that an auditor can keep a statement of the ledger outside
//! the database (mail it, print it, put it in a WORM bucket) and any C2SP/Go `note` tool can
//! check it.
//!
//! ```text
//! auditledger/default            origin
//! 20852163                       tree size (entries, genesis included)
//! CsUYapGGPo4dkMgIAUqom/Xa...=   base64 RFC 9162 root over the entry hashes
//! head-entry-hash 3b1f...c9      extension line: hex entry hash of seq size-1
//!
//! — auditledger/default AZ3grlgt...=   base64(key ID (4, big-endian) || Ed25519 signature (64))
//! ```
//!
//! Key ID = `SHA-256(name || 0x0A || 0x01 || public key)[:4]`; the verifier key an auditor keeps
//! is the Go `note` text `<name>+<8 hex key ID>+<base64(0x01 || public key)>`. The key name is
//! the origin (the spec's SHOULD), so one signing seed yields one verifier key per stream.
//!
//! This module parses and checks; it must never accept a note whose signature it has not
//! verified with a key the caller trusts (`verify_strict`, which refuses small-order keys and
//! non-canonical signatures).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::Digest as _;

use crate::types::{Digest, StreamId};

/// Ed25519 signature type byte of C2SP signed-note.
const ED25519_TYPE: u8 = 0x01;
/// The extension line that carries the head entry hash.
pub const HEAD_EXTENSION: &str = "head-entry-hash";
/// A note with more signatures than this is refused (the spec asks for a limit of at least 16).
const MAX_SIGNATURES: usize = 64;

/// Why a checkpoint, note or key was refused. Each variant is one thing an operator can fix or
/// one kind of forgery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a signed note: it contains a control character other than newline")]
    ControlCharacter,
    #[error("not a signed note: no blank line separates the text from the signatures")]
    NoSignatureBlock,
    #[error("not a signed note: it has no signature lines")]
    NoSignatures,
    #[error("not a signed note: it has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("malformed signature line {0:?} (expected \"— <name> <base64>\")")]
    MalformedSignatureLine(String),
    #[error("malformed verifier key: {0}")]
    MalformedKey(String),
    #[error("malformed signing key: {0}")]
    MalformedSigningKey(String),
    #[error("malformed checkpoint body: {0}")]
    MalformedBody(String),
    /// The note carries no signature by the trusted key: it was signed by another key (or by
    /// nobody the verifier knows).
    #[error("not signed by the trusted key {expected}: the note is signed by {found}")]
    UnknownKey { expected: String, found: String },
    /// A signature claims to be by the trusted key but does not verify: the note was altered
    /// after signing, or forged.
    #[error("the signature by {name} does not verify: the checkpoint was altered or forged")]
    BadSignature { name: String },
    #[error("the checkpoint is for origin {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// The default origin (and key name) of a stream's checkpoints.
pub fn default_origin(stream: &StreamId) -> String {
    format!("auditledger/{stream}")
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, ED25519_TYPE]);
    h.update(public.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the key name is empty".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(format!(
            "the key name {name:?} contains a space, a '+' or a control character"
        ));
    }
    Ok(())
}

/// A key that signs notes under a name.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// From the 32-byte Ed25519 seed (the secret kept in `keys/signing.key`).
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, CheckpointError> {
        check_name(name).map_err(CheckpointError::MalformedSigningKey)?;
        let key = SigningKey::from_bytes(seed);
        Ok(NoteSigner {
            name: name.to_owned(),
            id: key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// From Go's `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>` text.
    pub fn from_go_private_key(text: &str) -> Result<NoteSigner, CheckpointError> {
        let bad = |why: &str| CheckpointError::MalformedSigningKey(why.into());
        let rest = text
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (name, id, key) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected PRIVATE+KEY+<name>+<id>+<key>")),
        };
        let bytes = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ED25519_TYPE, seed)) => seed.try_into().map_err(|_| bad("not 32 bytes"))?,
            _ => return Err(bad("not an Ed25519 key")),
        };
        let signer = NoteSigner::new(name, &seed)?;
        if format!("{:08x}", signer.id) != id {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(signer)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key an auditor keeps.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) into a signed note.
    pub fn sign(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("{text}\n\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }
}

/// A trusted public key, by name and key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>`.
    pub fn parse(text: &str) -> Result<NoteVerifier, CheckpointError> {
        let bad = |why: String| CheckpointError::MalformedKey(why);
        let text = text.trim();
        // The base64 part may itself contain '+': split at the first two only.
        let mut parts = text.splitn(3, '+');
        let (name, id, key) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected <name>+<key id>+<key>".into())),
        };
        check_name(name).map_err(bad)?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("the key ID {id:?} is not 8 hex digits")));
        }
        let id = u32::from_str_radix(id, 16).map_err(|e| bad(e.to_string()))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not base64".into()))?;
        let public: [u8; 32] = match bytes.split_first() {
            Some((&ED25519_TYPE, k)) => k
                .try_into()
                .map_err(|_| bad("the Ed25519 key is not 32 bytes".into()))?,
            Some((t, _)) => return Err(bad(format!("unsupported signature type 0x{t:02x}"))),
            None => return Err(bad("the key is empty".into())),
        };
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| bad("not a valid Ed25519 public key".into()))?;
        if key.is_weak() {
            return Err(bad("a small-order Ed25519 key cannot be trusted".into()));
        }
        if key_id(name, &key) != id {
            return Err(bad("the key ID does not match the name and key".into()));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens a signed note: returns its text once a signature by this key verifies.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        let parsed = SignedNote::parse(note)?;
        let mut found = Vec::new();
        let mut verified = false;
        for sig in &parsed.signatures {
            if sig.name != self.name || sig.key_id != self.id {
                // The spec: signatures from unknown keys are ignored.
                found.push(format!("{} (key ID {:08x})", sig.name, sig.key_id));
                continue;
            }
            let Ok(bytes) = <[u8; 64]>::try_from(sig.signature.as_slice()) else {
                return Err(CheckpointError::BadSignature {
                    name: sig.name.clone(),
                });
            };
            if self
                .key
                .verify_strict(parsed.text.as_bytes(), &Signature::from_bytes(&bytes))
                .is_err()
            {
                // The spec allows rejecting the whole note; a known key's bad signature is
                // exactly the forgery this exists to catch.
                return Err(CheckpointError::BadSignature {
                    name: sig.name.clone(),
                });
            }
            verified = true;
        }
        if !verified {
            return Err(CheckpointError::UnknownKey {
                expected: format!("{} (key ID {:08x})", self.name, self.id),
                found: found.join(", "),
            });
        }
        Ok(parsed.text)
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ED25519_TYPE);
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(bytes))
    }
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// A signed note split into its text and signatures; nothing in it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote<'a> {
    /// The signed text, final newline included.
    pub text: &'a str,
    pub signatures: Vec<NoteSignature>,
}

impl<'a> SignedNote<'a> {
    pub fn parse(note: &'a str) -> Result<SignedNote<'a>, CheckpointError> {
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(CheckpointError::ControlCharacter);
        }
        // The text ends at the last blank line.
        let split = note
            .rfind("\n\n")
            .ok_or(CheckpointError::NoSignatureBlock)?;
        let text = &note[..split + 1];
        let block = &note[split + 2..];
        if block.is_empty() {
            return Err(CheckpointError::NoSignatures);
        }
        let Some(block) = block.strip_suffix('\n') else {
            return Err(CheckpointError::MalformedSignatureLine(block.into()));
        };
        let mut signatures = Vec::new();
        for line in block.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(CheckpointError::TooManySignatures);
            }
            let bad = || CheckpointError::MalformedSignatureLine(line.into());
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(bad)?;
            let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
            check_name(name).map_err(|_| bad())?;
            let blob = BASE64.decode(b64).map_err(|_| bad())?;
            if blob.len() < 5 {
                return Err(bad());
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]),
                signature: blob[4..].to_vec(),
            });
        }
        Ok(SignedNote { text, signatures })
    }
}

/// What a checkpoint states: at `size` entries, the stream's Merkle root and head entry hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Digest,
    /// The entry hash of `seq = size - 1`.
    pub head: Digest,
}

impl Checkpoint {
    /// The note text (origin, size, base64 root, head extension line), newline-terminated.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{HEAD_EXTENSION} {}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.0),
            self.head.to_hex()
        )
    }

    /// The signed note an auditor keeps.
    pub fn sign(&self, signer: &NoteSigner) -> String {
        signer.sign(&self.body())
    }

    /// Parses a checkpoint body. Strict: exactly the lines this format writes, so two texts
    /// never state the same checkpoint.
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: String| CheckpointError::MalformedBody(why);
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text does not end in a newline".into()))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, rest @ ..] = lines.as_slice() else {
            return Err(bad("expected origin, tree size and root hash lines".into()));
        };
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (*size == "0" || !size.starts_with('0'));
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| size_ok)
            .ok_or_else(|| bad(format!("the tree size {size:?} is not a decimal number")))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|b| Digest::from_slice(&b))
            .ok_or_else(|| bad(format!("the root hash {root:?} is not base64 of 32 bytes")))?;
        let head = match rest {
            [line] => line
                .strip_prefix(HEAD_EXTENSION)
                .and_then(|h| h.strip_prefix(' '))
                .filter(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(Digest::from_hex)
                .ok_or_else(|| {
                    bad(format!(
                        "expected \"{HEAD_EXTENSION} <64 lowercase hex>\", found {line:?}"
                    ))
                })?,
            [] => return Err(bad(format!("the {HEAD_EXTENSION} line is missing"))),
            _ => return Err(bad("unexpected extension lines".into())),
        };
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size,
            root,
            head,
        })
    }

    /// Verifies the note's signature with `verifier`, then parses the body and checks the
    /// origin is the verifier's name (the key signs for exactly one origin).
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, CheckpointError> {
        let checkpoint = Checkpoint::parse_body(verifier.open(note)?)?;
        if checkpoint.origin != verifier.name() {
            return Err(CheckpointError::WrongOrigin {
                expected: verifier.name().to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }

    /// Parses the body of a note without checking any signature: only for notes that came from
    /// the store itself and are compared with the recomputed tree anyway.
    pub fn parse_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::parse_body(SignedNote::parse(note)?.text)
    }
}

/// The checkpoint of `stream` at its head, from the stored tree: O(log n) reads, no pass over
/// the ledger. `None` for a stream with no entries.
pub async fn at_head(
    store: &dyn crate::store::Store,
    stream: &StreamId,
    origin: &str,
) -> Result<Option<Checkpoint>, crate::store::StoreError> {
    let Some(head) = store.head(stream).await? else {
        return Ok(None);
    };
    let size = head.seq + 1;
    Ok(Some(Checkpoint {
        origin: origin.to_owned(),
        size,
        root: crate::tree::root_at(store, stream, size).await?,
        head: head.entry_hash,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // From golang.org/x/mod/sumdb/note (note.go's package example and note_test.go).
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reproduces_the_go_note_example_byte_for_byte() {
        let signer = NoteSigner::from_go_private_key(PETER_SKEY).unwrap();
        assert_eq!(signer.verifier().to_string(), PETER_VKEY);
        assert_eq!(signer.sign(PETER_TEXT), PETER_NOTE);
        let v = NoteVerifier::parse(PETER_VKEY).unwrap();
        assert_eq!(v.open(PETER_NOTE).unwrap(), PETER_TEXT);
    }

    #[test]
    fn altered_notes_and_other_keys_are_refused() {
        let v = NoteVerifier::parse(PETER_VKEY).unwrap();
        let altered = PETER_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            v.open(&altered),
            Err(CheckpointError::BadSignature {
                name: "PeterNeumann".into()
            })
        );
        let enoch = NoteVerifier::parse(ENOCH_VKEY).unwrap();
        assert!(matches!(
            enoch.open(PETER_NOTE),
            Err(CheckpointError::UnknownKey { .. })
        ));
        assert_eq!(
            v.open(&PETER_NOTE.replace("\n\n", "\n")),
            Err(CheckpointError::NoSignatureBlock)
        );
        assert_eq!(
            v.open(&PETER_NOTE.replace("\u{2014} ", "- ")).unwrap_err(),
            CheckpointError::MalformedSignatureLine(
                "- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".into()
            )
        );
        assert_eq!(
            v.open(&PETER_NOTE.replace("problem,", "problem,\r")),
            Err(CheckpointError::ControlCharacter)
        );
    }

    #[test]
    fn verifier_keys_are_checked() {
        for bad in [
            "",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhpcMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(
                matches!(
                    NoteVerifier::parse(bad),
                    Err(CheckpointError::MalformedKey(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn checkpoint_round_trip_and_strict_body() {
        let stream = StreamId::default();
        let signer = NoteSigner::new(&default_origin(&stream), &[7; 32]).unwrap();
        let cp = Checkpoint {
            origin: default_origin(&stream),
            size: 20852163,
            root: Digest([3; 32]),
            head: Digest([9; 32]),
        };
        let note = cp.sign(&signer);
        assert!(note.starts_with("auditledger/default\n20852163\nAwMD"));
        assert_eq!(Checkpoint::open(&note, &signer.verifier()).unwrap(), cp);
        assert_eq!(Checkpoint::parse_unverified(&note).unwrap(), cp);

        // Another key's signature over the same statement is not ours.
        let other = NoteSigner::new(&default_origin(&stream), &[8; 32]).unwrap();
        assert!(matches!(
            Checkpoint::open(&cp.sign(&other), &signer.verifier()),
            Err(CheckpointError::UnknownKey { .. })
        ));
        // A body edited after signing.
        let edited = note.replacen("20852163", "20852162", 1);
        assert!(matches!(
            Checkpoint::open(&edited, &signer.verifier()),
            Err(CheckpointError::BadSignature { .. })
        ));
        // A different origin signed with the same seed is refused for this origin.
        let other_origin = NoteSigner::new("auditledger/other", &[7; 32]).unwrap();
        let mut moved = cp.clone();
        moved.origin = "auditledger/other".into();
        assert!(matches!(
            Checkpoint::open(&moved.sign(&other_origin), &signer.verifier()),
            Err(CheckpointError::UnknownKey { .. })
        ));

        for body in [
            "o\n012\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\nhead-entry-hash 0909090909090909090909090909090909090909090909090909090909090909\n",
            "o\n12\nAwMD\nhead-entry-hash 0909090909090909090909090909090909090909090909090909090909090909\n",
            "o\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
            "o\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\nhead-entry-hash 09\n",
            "o\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\nhead-entry-hash 0909090909090909090909090909090909090909090909090909090909090909\nmore\n",
            "\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\nhead-entry-hash 0909090909090909090909090909090909090909090909090909090909090909\n",
        ] {
            assert!(
                matches!(Checkpoint::parse_body(body), Err(CheckpointError::MalformedBody(_))),
                "{body:?}"
            );
        }
        let good = "o\n12\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\nhead-entry-hash 0909090909090909090909090909090909090909090909090909090909090909\n";
        assert_eq!(Checkpoint::parse_body(good).unwrap().size, 12);
    }
}
