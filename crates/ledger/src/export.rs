//! The export file: the ledger as a CBOR sequence (RFC 8742), readable with any CBOR library.
//!
//! The first item is a header map `{"format": "auditledger-export", "stream": <name>,
//! "version": 1}`; every following item is one entry map with the fields the entry hash covers
//! (`seq`, `payload`, `prev_hash`, `entry_hash`, `recorded_at`, `payload_digest`, keys in
//! canonical order). Columns are not exported: they are recomputed from the payload.
//!
//! An archive (`auditledger archive`) is an export of the first entries of a stream whose
//! header also holds `"checkpoint"`: the signed checkpoint of exactly those entries. An entry
//! purged by an earlier purge is exported with a null payload (its hashes still chain).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::entry::{Columns, Entry};
use crate::payload::Payload;
use crate::types::{Digest, Seq, StreamId, Timestamp};

pub const EXPORT_FORMAT: &str = "auditledger-export";
pub const EXPORT_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub stream: StreamId,
    pub version: u8,
    /// An archive carries the signed checkpoint (signed-note text) of the entries it holds,
    /// so it verifies offline against the signer's public key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ExportEntry {
    seq: u64,
    #[serde(with = "serde_bytes")]
    payload: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    prev_hash: Vec<u8>,
    #[serde(with = "serde_bytes")]
    entry_hash: Vec<u8>,
    recorded_at: i64,
    #[serde(with = "serde_bytes")]
    payload_digest: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an auditledger export: {0}")]
    NotAnExport(String),
    #[error("item {item} of the export is malformed: {why}")]
    Malformed { item: u64, why: String },
}

/// Writes an export, one entry at a time.
pub struct ExportWriter<W: Write> {
    out: W,
}

impl<W: Write> ExportWriter<W> {
    pub fn new(out: W, stream: &StreamId) -> Result<ExportWriter<W>, ExportError> {
        ExportWriter::with_checkpoint(out, stream, None)
    }

    /// An export whose header carries a signed checkpoint of its entries (an archive).
    pub fn with_checkpoint(
        mut out: W,
        stream: &StreamId,
        checkpoint: Option<String>,
    ) -> Result<ExportWriter<W>, ExportError> {
        let header = ExportHeader {
            format: EXPORT_FORMAT.into(),
            stream: stream.clone(),
            version: EXPORT_VERSION,
            checkpoint,
        };
        ciborium::into_writer(&header, &mut out)
            .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))?;
        Ok(ExportWriter { out })
    }

    pub fn write(&mut self, e: &Entry) -> Result<(), ExportError> {
        let item = ExportEntry {
            seq: e.seq,
            payload: e.payload.clone(),
            prev_hash: e.prev_hash.0.to_vec(),
            entry_hash: e.entry_hash.0.to_vec(),
            recorded_at: e.recorded_at.micros(),
            payload_digest: e.payload_digest.0.to_vec(),
        };
        ciborium::into_writer(&item, &mut self.out)
            .map_err(|e| ExportError::Io(std::io::Error::other(e.to_string())))
    }

    pub fn finish(mut self) -> Result<W, ExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads an export back into entries (columns recomputed from each payload).
pub struct ExportReader<R: BufRead> {
    input: R,
    header: ExportHeader,
    items: u64,
}

impl<R: BufRead> ExportReader<R> {
    pub fn open(mut input: R) -> Result<ExportReader<R>, ExportError> {
        let header: ExportHeader = ciborium::from_reader(&mut input)
            .map_err(|e| ExportError::NotAnExport(e.to_string()))?;
        if header.format != EXPORT_FORMAT || header.version != EXPORT_VERSION {
            return Err(ExportError::NotAnExport(format!(
                "format {:?} version {}",
                header.format, header.version
            )));
        }
        Ok(ExportReader {
            input,
            header,
            items: 0,
        })
    }

    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// The next entry, `None` at the clean end of the file.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ExportError> {
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        self.items += 1;
        let item = self.items;
        let malformed = |why: String| ExportError::Malformed { item, why };
        let raw: ExportEntry =
            ciborium::from_reader(&mut self.input).map_err(|e| malformed(e.to_string()))?;
        let digest = |b: &[u8], name: &str| {
            Digest::from_slice(b).ok_or_else(|| malformed(format!("{name} is not 32 bytes")))
        };
        // An export has no columns of its own: derive them from the payload, so the column
        // check is vacuous and a payload that does not decode is reported by the verifier.
        let columns = match raw.payload.as_deref().map(Payload::decode) {
            Some(Ok(p)) => Columns::of(&p),
            _ => Columns::undecodable(),
        };
        Ok(Some(Entry {
            stream: self.header.stream.clone(),
            seq: raw.seq as Seq,
            recorded_at: Timestamp(raw.recorded_at),
            payload_digest: digest(&raw.payload_digest, "payload_digest")?,
            prev_hash: digest(&raw.prev_hash, "prev_hash")?,
            entry_hash: digest(&raw.entry_hash, "entry_hash")?,
            payload: raw.payload,
            columns,
        }))
    }
}
