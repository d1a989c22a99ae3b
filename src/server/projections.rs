//! The projections inside `serve`: each follows the head of the server's stream with low lag,
//! through the server's own writer (so its detections are group-committed with the traffic).
//!
//! A projection that fails is reopened from its saved position after a pause; one that meets a
//! damaged entry stops there (it never applies what does not verify) and says so every minute
//! in the log and in `auditledger_projection_damaged`, until an operator has looked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ledger::projection::{PhaseSeconds, Projection, ProjectionError, Runner, RunnerStats};
use ledger::{GroupCommitWriter, Store};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::metrics::SecondsCounter;

/// Gauges of one projection, registered by [`super::metrics::Metrics`].
#[derive(Clone, Default)]
pub struct ProjectionGauges {
    /// The next `seq` it will apply.
    pub position: Gauge,
    /// Entries between it and the head.
    pub lag: Gauge,
    /// 1 while stopped at a damaged entry.
    pub damaged: Gauge,
    /// Counters of [`RunnerStats`], summed over the runners opened (a runner that fails is
    /// replaced by a new one, whose stats start at zero).
    pub row_writes: Counter,
    pub read_seconds: SecondsCounter,
    pub apply_seconds: SecondsCounter,
    pub commit_wait_seconds: SecondsCounter,
}

impl ProjectionGauges {
    /// Adds what `stats` counted since `seen`, and moves `seen` on.
    fn observe(&self, stats: &RunnerStats, seen: &mut Seen) {
        let rows = stats.row_writes.load(Ordering::Relaxed);
        self.row_writes.inc_by(rows.saturating_sub(seen.rows));
        let phases = stats.phases();
        for (counter, now, before) in [
            (&self.read_seconds, phases.read, seen.phases.read),
            (&self.apply_seconds, phases.apply, seen.phases.apply),
            (
                &self.commit_wait_seconds,
                phases.commit_wait,
                seen.phases.commit_wait,
            ),
        ] {
            counter.inc_by((now - before).max(0.0));
        }
        *seen = Seen { rows, phases };
    }
}

/// What [`ProjectionGauges::observe`] has counted of one runner's stats.
#[derive(Default)]
struct Seen {
    rows: u64,
    phases: PhaseSeconds,
}

/// Runs `make()`'s projection until `stop` turns true.
pub async fn run<P: Projection>(
    store: Arc<dyn Store>,
    writer: GroupCommitWriter,
    make: impl Fn() -> P + Send,
    poll: Duration,
    gauges: ProjectionGauges,
    stop: watch::Receiver<bool>,
) {
    let pause = |d: Duration, stop: &watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => {}
            }
        }
    };
    while !*stop.borrow() {
        let projection = make();
        let name = projection.name();
        let mut runner = match Runner::open(store.clone(), writer.clone(), projection).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "cannot open the projection; retrying");
                pause(Duration::from_secs(5), &stop).await;
                continue;
            }
        };
        tracing::info!(
            projection = name,
            from_seq = runner.next_seq(),
            "projection started"
        );
        let stats = runner.stats();
        let mut seen = Seen::default();
        let failure = loop {
            if *stop.borrow() {
                // Keep what was applied: the next start resumes after it.
                let failed = runner.commit_pending().await.err();
                gauges.observe(&stats, &mut seen);
                break failed;
            }
            let step = runner.keep_up().await;
            gauges.observe(&stats, &mut seen);
            match step {
                Ok(applied) => {
                    gauges.damaged.set(0);
                    gauges
                        .position
                        .set(stats.position.load(Ordering::Relaxed) as i64);
                    gauges.lag.set(stats.lag() as i64);
                    if applied == 0 {
                        pause(poll, &stop).await;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        drop(runner);
        match failure {
            None => return,
            Some(ProjectionError::Damaged {
                seq,
                problem,
                detail,
            }) => {
                gauges.damaged.set(1);
                tracing::error!(projection = name, seq, problem = problem.as_str(), %detail,
                    "projection stopped before a damaged entry; run `auditledger verify`");
                pause(Duration::from_secs(60), &stop).await;
            }
            Some(ProjectionError::Moved(_)) => {
                // Another server runs it too: reload its position and go on from there.
                tracing::debug!(
                    projection = name,
                    "another runner moved the projection; reloading"
                );
                pause(poll, &stop).await;
            }
            Some(e) => {
                tracing::warn!(projection = name, error = %e, "projection failed; reopening from its saved position");
                pause(Duration::from_secs(1), &stop).await;
            }
        }
    }
}
