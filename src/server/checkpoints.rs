//! Periodic signed checkpoints. A hash chain alone cannot show that its newest entries were
//! deleted or its tail rewritten; a checkpoint kept outside the database can. So the server
//! signs one every `checkpoint_every_entries` new entries or `checkpoint_every_seconds`
//! (whichever comes first, and only when the ledger grew), stores it in the ledger, and writes
//! it as a file into `checkpoint_dir` when one is set: point that directory at off-site or
//! WORM storage and a rollback can always be proven. A last checkpoint is taken at shutdown,
//! after the final batch is committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ledger::checkpoint::NoteSigner;
use ledger::{Store, StreamId};
use tokio::sync::watch;

/// When and where checkpoints are taken.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// Entries since the last checkpoint that trigger one (0: never by count).
    pub every_entries: u64,
    /// Time since the last checkpoint that triggers one if the ledger grew (zero: never by time).
    pub every: Duration,
    /// Also write each checkpoint here, one file per checkpoint.
    pub dir: Option<PathBuf>,
}

pub struct Checkpointer {
    pub store: Arc<dyn Store>,
    pub stream: StreamId,
    pub signer: NoteSigner,
    pub policy: CheckpointPolicy,
}

impl Checkpointer {
    /// Takes checkpoints until `stop` turns true, then one last one.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let mut last_size = match self.store.checkpoints(&self.stream).await {
            Ok(all) => all.last().map_or(0, |c| c.size),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read stored checkpoints; periodic checkpoints start from zero");
                0
            }
        };
        let mut last_time = tokio::time::Instant::now();
        let poll = Duration::from_millis(500);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => break,
            }
            let size = match self.store.head(&self.stream).await {
                Ok(h) => h.map_or(0, |h| h.seq + 1),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the head for periodic checkpoints");
                    continue;
                }
            };
            let by_count =
                self.policy.every_entries > 0 && size >= last_size + self.policy.every_entries;
            let by_time = !self.policy.every.is_zero()
                && last_time.elapsed() >= self.policy.every
                && size > last_size;
            if by_count || by_time {
                if let Some(taken) = self.take().await {
                    last_size = taken;
                }
                last_time = tokio::time::Instant::now();
            }
        }
    }

    /// One checkpoint now (stored, and written to the directory); its size on success.
    pub async fn take(&self) -> Option<u64> {
        match crate::commands::checkpoint::take(self.store.as_ref(), &self.stream, &self.signer)
            .await
        {
            Ok(Some((cp, note))) => {
                if let Some(dir) = &self.policy.dir {
                    if let Err(e) = write_checkpoint_file(dir, &self.stream, cp.size, &note) {
                        tracing::error!(error = %format!("{e:#}"), size = cp.size, "checkpoint stored but not written to the checkpoint directory");
                    }
                }
                tracing::info!(stream = %self.stream, size = cp.size, "checkpoint taken");
                Some(cp.size)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot take a checkpoint");
                None
            }
        }
    }
}

/// `<dir>/<stream>-<size, 20 digits>.checkpoint`: names sort by size. An existing file (the
/// same checkpoint, taken again after a restart) is left alone.
fn write_checkpoint_file(
    dir: &Path,
    stream: &StreamId,
    size: u64,
    note: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{stream}-{size:020}.checkpoint"));
    if path.exists() {
        return Ok(());
    }
    crate::commands::checkpoint::write_new(&path, note)
}
