//! Archive files: the first entries of a stream, with the signed checkpoint that covers exactly
//! them, written so that they verify offline (`auditledger verify --export FILE`) and so that
//! a purge can name them by digest.
//!
//! An archive is written from a verifying pass: every entry is checked on its way to the file
//! and the recomputed tree must match the checkpoint, so a damaged ledger is never archived as
//! if it were evidence. A file that could not be finished is removed.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use ledger::export::{ExportReader, ExportWriter};
use ledger::verify::Verifier;
use ledger::{Digest, Entry, Seq, Store, StoredCheckpoint, StreamId, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::ops::OpsError;

fn failed(e: impl std::fmt::Display) -> OpsError {
    OpsError::Failed(e.to_string())
}

/// What an archive holds.
#[derive(Debug, Clone)]
pub struct ArchiveSummary {
    pub path: PathBuf,
    pub stream: StreamId,
    /// SHA-256 of the file.
    pub sha256: Digest,
    /// The signed checkpoint it carries; it covers entries `0..checkpoint.size`.
    pub checkpoint: Checkpoint,
    pub note: String,
    pub oldest: Timestamp,
    pub newest: Timestamp,
    /// Entries in it whose payload an earlier purge removed (exported with their hashes).
    pub already_purged: u64,
}

impl ArchiveSummary {
    pub fn entries(&self) -> u64 {
        self.checkpoint.size
    }
}

/// How many entries of `stream` were recorded before `before`: `recorded_at` never goes back
/// as `seq` grows (the writer takes the later of its clock and the head's), so it is a prefix,
/// found in O(log n) reads.
pub async fn entries_before(
    store: &dyn Store,
    stream: &StreamId,
    before: Timestamp,
) -> Result<u64, OpsError> {
    let Some(head) = store.head(stream).await? else {
        return Ok(0);
    };
    let (mut lo, mut hi) = (0u64, head.seq + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let e = store.get(stream, mid).await?.ok_or_else(|| {
            OpsError::Failed(format!(
                "entry {mid} of stream {stream} is missing: run `auditledger verify`"
            ))
        })?;
        if e.recorded_at < before {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// A writer that hashes what it writes.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(hasher: Sha256) -> Digest {
    let mut d = [0u8; 32];
    d.copy_from_slice(&hasher.finalize());
    Digest(d)
}

/// Writes the entries recorded before `before` to a new file `out` with a checkpoint of them
/// signed by `signer`, which is also stored in the ledger. Refuses an existing file, an empty
/// range and a ledger that does not verify over the range.
pub async fn write_archive(
    store: Arc<dyn Store>,
    stream: &StreamId,
    before: Timestamp,
    out: &Path,
    signer: &NoteSigner,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<ArchiveSummary, OpsError> {
    let size = entries_before(store.as_ref(), stream, before).await?;
    if size == 0 {
        return Err(OpsError::Refused(format!(
            "no entry of stream {stream} was recorded before {}: nothing to archive",
            before.to_rfc3339()
        )));
    }
    let last = store
        .get(stream, size - 1)
        .await?
        .ok_or_else(|| OpsError::Failed(format!("entry {} is missing", size - 1)))?;
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root: ledger::tree::root_at(store.as_ref(), stream, size).await?,
        head: last.entry_hash,
    };
    let note = checkpoint.sign(signer);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            OpsError::Refused(format!(
                "cannot create {} (an existing file is not overwritten): {e}",
                out.display()
            ))
        })?;
    let written = {
        let mut chunks = store.scan(stream, 0);
        let (stream, note, cp) = (stream.clone(), note.clone(), checkpoint.clone());
        tokio::task::spawn_blocking(move || -> Result<(Digest, Timestamp, Timestamp, u64), OpsError> {
            let hashing = Hashing {
                inner: file,
                hasher: Sha256::new(),
            };
            let mut w = ExportWriter::with_checkpoint(
                BufWriter::with_capacity(1 << 20, hashing),
                &stream,
                Some(note),
            )
            .map_err(failed)?;
            let mut v = Verifier::new(stream.clone());
            v.accept_purges_authorized_elsewhere();
            v.expect_checkpoints([cp]);
            let (mut oldest, mut newest, mut purged) = (None, Timestamp(0), 0u64);
            'read: while let Some(chunk) = chunks.blocking_recv() {
                let mut chunk = chunk?;
                let done = chunk.last().is_some_and(|e| e.seq + 1 >= size);
                chunk.retain(|e| e.seq < size);
                if !v.push(&chunk) {
                    break 'read;
                }
                for e in &chunk {
                    w.write(e).map_err(failed)?;
                    oldest.get_or_insert(e.recorded_at);
                    newest = e.recorded_at;
                    purged += u64::from(e.payload.is_none());
                }
                progress(v.entries(), size);
                if done {
                    break;
                }
            }
            let report = v.finish();
            if !report.ok || report.entries != size {
                return Err(OpsError::Refused(format!(
                    "the ledger does not verify over entries 0..{size}, so it is not archived: {} at seq {} ({})",
                    report.problem.map_or("incomplete", |p| p.as_str()),
                    report.first_bad_seq.map_or("?".into(), |s| s.to_string()),
                    report.detail.unwrap_or_default()
                )));
            }
            let hashing = w
                .finish()
                .map_err(failed)?
                .into_inner()
                .map_err(|e| OpsError::Failed(format!("cannot flush the archive: {}", e.error())))?;
            hashing.inner.sync_all().map_err(failed)?;
            Ok((
                digest_of(hashing.hasher),
                oldest.unwrap_or(newest),
                newest,
                purged,
            ))
        })
        .await
        .map_err(failed)?
    };
    let (sha256, oldest, newest, already_purged) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    store
        .put_checkpoint(
            stream,
            &StoredCheckpoint {
                size,
                note: note.clone(),
            },
        )
        .await?;
    Ok(ArchiveSummary {
        path: out.to_owned(),
        stream: stream.clone(),
        sha256,
        checkpoint,
        note,
        oldest,
        newest,
        already_purged,
    })
}

/// An archive file, checked: its digest, and its entries verified against the checkpoint it
/// carries, opened with `key`.
pub struct OpenedArchive {
    pub path: PathBuf,
    pub sha256: Digest,
    pub checkpoint: Checkpoint,
    pub stream: StreamId,
}

/// Hashes and verifies the archive at `path` (every entry, and the signed checkpoint, which
/// must cover exactly its entries). Errors say what is wrong with the file.
pub fn open_archive(path: &Path, key: &NoteVerifier) -> Result<OpenedArchive, OpsError> {
    // The digest, over the file's bytes as they are.
    let mut file = std::fs::File::open(path)
        .map_err(|e| OpsError::Refused(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(failed)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = digest_of(hasher);
    let mut reader = archive_reader(path)?;
    let note = reader.header().checkpoint.clone().ok_or_else(|| {
        OpsError::Refused(format!(
            "{} is an export, not an archive: it carries no signed checkpoint (write one with `auditledger archive`)",
            path.display()
        ))
    })?;
    let checkpoint = Checkpoint::open(&note, key).map_err(|e| {
        OpsError::Refused(format!(
            "the checkpoint in {} is refused: {e}",
            path.display()
        ))
    })?;
    let stream = reader.header().stream.clone();
    let mut v = Verifier::new(stream.clone());
    v.accept_purges_authorized_elsewhere();
    v.expect_checkpoints([checkpoint.clone()]);
    let mut chunk = Vec::with_capacity(ledger::store::SCAN_CHUNK);
    loop {
        let next = reader
            .next_entry()
            .map_err(|e| OpsError::Refused(format!("{} is malformed: {e}", path.display())))?;
        let end = next.is_none();
        chunk.extend(next);
        if chunk.len() == ledger::store::SCAN_CHUNK || end {
            if !v.push(&chunk) {
                break;
            }
            chunk.clear();
        }
        if end {
            break;
        }
    }
    let report = v.finish();
    if !report.ok || report.entries != checkpoint.size {
        return Err(OpsError::Refused(format!(
            "{} does not verify against its checkpoint of size {}: {} ({})",
            path.display(),
            checkpoint.size,
            report.problem.map_or("extra entries", |p| p.as_str()),
            report.detail.unwrap_or_default()
        )));
    }
    Ok(OpenedArchive {
        path: path.to_owned(),
        sha256,
        checkpoint,
        stream,
    })
}

/// A reader of the archive's entries, in seq order.
pub fn archive_reader(path: &Path) -> Result<ExportReader<BufReader<std::fs::File>>, OpsError> {
    let file = std::fs::File::open(path)
        .map_err(|e| OpsError::Refused(format!("cannot open {}: {e}", path.display())))?;
    ExportReader::open(BufReader::with_capacity(1 << 20, file)).map_err(|e| {
        OpsError::Refused(format!(
            "{} is not an auditledger archive: {e}",
            path.display()
        ))
    })
}

/// The store's entries `from..to`, in seq order, read in pages (for walking beside an
/// archive).
pub async fn store_page(
    store: &dyn Store,
    stream: &StreamId,
    from: Seq,
    to: Seq,
) -> Result<Vec<Entry>, OpsError> {
    let want = (to - from).min(ledger::store::SCAN_CHUNK as u64) as usize;
    let page = store.read(stream, from, want).await?;
    if page.len() != want || page.first().is_some_and(|e| e.seq != from) {
        return Err(OpsError::Failed(format!("the store does not hold entries {from}..{to} of stream {stream} in order: run `auditledger verify`")));
    }
    Ok(page)
}
