//! The auditledger core: what an entry is, how it is chained, and how a chain is verified.
//!
//! This crate owns the format (see `docs/FORMAT.md`) and every rule that decides whether a
//! ledger is intact. It must never know about SQL, HTTP or files other than the export format:
//! stores and the server are adapters behind [`Store`], so that the code an auditor has to read
//! to trust a verification is this crate alone.
//!
//! - [`types`]: small value types (`StreamId`, `Seq`, `Timestamp`, `Digest`).
//! - [`hash`]: the one seam where the hash algorithm is chosen, and the entry-hash preimage.
//! - [`event`]: the JSON event contract, parsed and validated into typed values.
//! - [`phi`]: detection (and optional redaction) of PHI-looking free text.
//! - [`pseudonym`]: keyed BLAKE3 pseudonyms and the legacy unkeyed SHA-256 mode.
//! - [`payload`]: the canonical CBOR payload of an entry.
//! - [`entry`]: stored entries, extracted columns, receipts and chaining.
//! - [`merkle`]: the RFC 9162 Merkle tree: hashing, the append frontier.
//! - [`proof`]: RFC 9162 inclusion and consistency proofs: producing and checking them.
//! - [`checkpoint`]: signed checkpoints (C2SP tlog-checkpoint in a C2SP signed note).
//! - [`tree`]: reading subtree hashes, roots and proofs from a store in O(log n) reads.
//! - [`store`]: the `Store` trait every backend implements.
//! - [`writer`]: the single-writer group-commit append path.
//! - [`verify`]: full verification, in parallel, in constant memory.
//! - [`evidence`]: verifying only what a report rests on: a segment, entries anchored to a
//!   signed checkpoint.
//! - [`record`]: structured records the ledger writes about itself (purge authorizations,
//!   legal holds, retention checks).
//! - [`export`]: the CBOR-sequence export file and its reader.
//! - [`clock`]: the ledger clock (replaceable in tests).

pub mod checkpoint;
pub mod clock;
pub mod entry;
pub mod event;
pub mod evidence;
pub mod export;
pub mod hash;
pub mod ingest;
pub mod merkle;
pub mod payload;
pub mod phi;
pub mod projection;
pub mod proof;
pub mod pseudonym;
pub mod readmodel;
pub mod record;
pub mod store;
pub mod tree;
pub mod types;
pub mod verify;
pub mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::{Columns, Entry, EntryKind, PreparedEntry, Receipt};
pub use event::{Action, ActionClass, AuditEvent, EventError, FieldError, Outcome, ParseOptions};
pub use hash::HashAlg;
pub use ingest::{IdentifierMode, Ingest};
pub use merkle::{Frontier, MerkleNode};
pub use payload::{Genesis, Payload, StoredEvent};
pub use phi::{PhiPolicy, PhiScanner};
pub use pseudonym::{KeyId, Pseudonym, PseudonymKey, Pseudonymizer};
pub use readmodel::{ReadModelRow, RowChange, RowQuery, SavedProjection};
pub use store::{AppendBatch, EntryChunks, Head, Store, StoreError, StoredCheckpoint};
pub use types::{Digest, Seq, StreamId, Timestamp};
pub use verify::{Problem, VerifyOptions, VerifyReport};
pub use writer::{AppendError, GroupCommitWriter, WriterConfig};
