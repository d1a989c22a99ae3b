//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client) rather than the
//! `metrics` facade: its registry is a value owned by the server, not a process-wide recorder,
//! so two servers in one process (the HTTP benchmark, tests) never mix their counters, and
//! every metric is a typed field here rather than a string looked up at each call site.
//!
//! Labels carry only fixed words (outcome, reason, route template): never identifiers,
//! token names or paths with values in them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger::GroupCommitWriter;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionPhaseLabel {
    pub projection: &'static str,
    /// read, apply or commit_wait ([`ledger::projection::PhaseSeconds`]).
    pub phase: &'static str,
}

/// Seconds, as a counter.
pub type SecondsCounter = Counter<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    /// Append requests by outcome (ok, invalid, too_large, busy, conflict, error).
    pub append_requests: Family<OutcomeLabel, Counter>,
    /// Entries acknowledged to HTTP clients (including idempotent replays).
    pub appended_entries: Counter,
    /// Events per append request.
    pub request_events: Histogram,
    /// From the request's arrival to its durable acknowledgement.
    pub ack_seconds: Histogram,
    /// Verifications by result (intact, damaged, error, busy).
    pub verify_runs: Family<OutcomeLabel, Counter>,
    /// Refused requests by reason (missing, unknown, revoked, forbidden).
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Refusals that could not be recorded in the ledger because the writer pushed back.
    pub auth_failures_unrecorded: Counter,
    /// Every HTTP request by route template and status.
    pub http_requests: Family<RequestLabel, Counter>,
    /// Append requests being validated or waiting for the writer.
    pub appends_in_flight: Gauge,
    /// Position, lag and damage of each projection, by name.
    pub projection_position: Family<ProjectionLabel, Gauge>,
    pub projection_lag: Family<ProjectionLabel, Gauge>,
    pub projection_damaged: Family<ProjectionLabel, Gauge>,
    /// Read-model row changes each projection committed: with the entries it applied, what
    /// it costs the store.
    pub projection_row_writes: Family<ProjectionLabel, Counter>,
    /// Where each projection's time goes (read, apply, commit_wait): a projection that lags
    /// behind the head says whether the store's reads, its own work or the store's commits
    /// hold it back.
    pub projection_seconds: Family<ProjectionPhaseLabel, SecondsCounter>,
    writer: Arc<WriterCollector>,
}

impl Metrics {
    pub fn new(writer: GroupCommitWriter) -> Metrics {
        let mut registry = Registry::with_prefix("auditledger");
        let append_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "append_requests",
            "Append requests (POST /v1/events, POST /fhir/AuditEvent) by outcome",
            append_requests.clone(),
        );
        let appended_entries = Counter::default();
        registry.register(
            "appended_entries",
            "Entries acknowledged to HTTP clients, durable (idempotent replays included)",
            appended_entries.clone(),
        );
        let request_events = Histogram::new(exponential_buckets(1.0, 4.0, 7));
        registry.register(
            "append_request_events",
            "Events per append request",
            request_events.clone(),
        );
        let ack_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        registry.register(
            "append_ack_seconds",
            "Time from an append request's arrival to its durable acknowledgement",
            ack_seconds.clone(),
        );
        let verify_runs = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "verify_runs",
            "Verifications run through POST /v1/verify, by result",
            verify_runs.clone(),
        );
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused with 401 or 403, by reason",
            auth_failures.clone(),
        );
        let auth_failures_unrecorded = Counter::default();
        registry.register(
            "auth_failures_unrecorded",
            "Refusals not recorded in the ledger because the writer pushed back (a flood)",
            auth_failures_unrecorded.clone(),
        );
        let http_requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template and status",
            http_requests.clone(),
        );
        let appends_in_flight = Gauge::default();
        registry.register(
            "appends_in_flight",
            "Append requests being validated or waiting for the writer",
            appends_in_flight.clone(),
        );
        let projection_position = Family::<ProjectionLabel, Gauge>::default();
        registry.register(
            "projection_position",
            "The next entry each projection will apply",
            projection_position.clone(),
        );
        let projection_lag = Family::<ProjectionLabel, Gauge>::default();
        registry.register(
            "projection_lag_entries",
            "Entries between each projection and the head",
            projection_lag.clone(),
        );
        let projection_damaged = Family::<ProjectionLabel, Gauge>::default();
        registry.register(
            "projection_damaged",
            "1 while a projection is stopped before an entry that failed verification",
            projection_damaged.clone(),
        );
        let projection_row_writes = Family::<ProjectionLabel, Counter>::default();
        registry.register(
            "projection_row_writes",
            "Read-model row changes each projection committed",
            projection_row_writes.clone(),
        );
        let projection_seconds = Family::<ProjectionPhaseLabel, SecondsCounter>::default();
        registry.register(
            "projection_seconds",
            "Seconds each projection spent reading entries, applying them and waiting for its commits",
            projection_seconds.clone(),
        );
        let writer = Arc::new(WriterCollector {
            writer: Mutex::new(Some(writer)),
        });
        registry.register_collector(Box::new(writer.clone()));
        Metrics {
            registry,
            append_requests,
            appended_entries,
            request_events,
            ack_seconds,
            verify_runs,
            auth_failures,
            auth_failures_unrecorded,
            http_requests,
            appends_in_flight,
            projection_position,
            projection_lag,
            projection_damaged,
            projection_row_writes,
            projection_seconds,
            writer,
        }
    }

    /// The gauges of projection `name`.
    pub fn projection(&self, name: &'static str) -> super::projections::ProjectionGauges {
        let label = ProjectionLabel { projection: name };
        let seconds = |phase| {
            self.projection_seconds
                .get_or_create(&ProjectionPhaseLabel {
                    projection: name,
                    phase,
                })
                .clone()
        };
        super::projections::ProjectionGauges {
            position: self.projection_position.get_or_create(&label).clone(),
            lag: self.projection_lag.get_or_create(&label).clone(),
            damaged: self.projection_damaged.get_or_create(&label).clone(),
            row_writes: self.projection_row_writes.get_or_create(&label).clone(),
            read_seconds: seconds("read"),
            apply_seconds: seconds("apply"),
            commit_wait_seconds: seconds("commit_wait"),
        }
    }

    pub fn append_outcome(&self, outcome: &'static str) {
        self.append_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn acknowledged(&self, entries: usize, elapsed: Duration) {
        self.append_outcome("ok");
        self.appended_entries.inc_by(entries as u64);
        self.request_events.observe(entries as f64);
        self.ack_seconds.observe(elapsed.as_secs_f64());
    }

    /// Lets go of the writer handle, so that the writer task can end (graceful shutdown: the
    /// task finishes when every handle is dropped).
    pub fn detach_writer(&self) {
        self.writer
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The group-commit writer's own counters, read at scrape time.
struct WriterCollector {
    writer: Mutex<Option<GroupCommitWriter>>,
}

impl std::fmt::Debug for WriterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterCollector")
    }
}

impl prometheus_client::collector::Collector for WriterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_ref() else {
            return Ok(());
        };
        let s = w.stats();
        for (name, help, value) in [
            (
                "writer_batches",
                "Transactions committed by the group-commit writer",
                s.batches.load(Ordering::Relaxed),
            ),
            (
                "writer_entries",
                "Entries committed by the group-commit writer (all callers)",
                s.entries.load(Ordering::Relaxed),
            ),
            (
                "writer_requests",
                "Requests answered by the group-commit writer",
                s.requests.load(Ordering::Relaxed),
            ),
            (
                "writer_conflicts",
                "Batches re-chained after another writer took the head",
                s.conflicts.load(Ordering::Relaxed),
            ),
            (
                "writer_failed_batches",
                "Batches the store failed (their callers got an error)",
                s.failed_batches.load(Ordering::Relaxed),
            ),
        ] {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}
