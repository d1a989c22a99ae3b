//! Records what an operator does through the command line (token management, lifting a block,
//! ...) as an audit event in the ledger, so the ledger shows who changed what and when.

use std::sync::Arc;

use anyhow::Context as _;
use ledger::event::ParseOptions;
use ledger::{GroupCommitWriter, Ingest, PhiPolicy, Receipt, Store, SystemClock, WriterConfig};
use serde_json::json;

use crate::context::Context;

/// An operator's action to record.
pub struct OperatorEvent<'a> {
    pub action: &'a str,
    /// The event contract's `resource` object (its `id`, if any, is pseudonymized).
    pub resource: serde_json::Value,
    pub detail: &'a str,
}

/// Appends operator events to the ledger.
pub struct Recorder {
    ingest: Ingest,
    writer: GroupCommitWriter,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
}

impl Recorder {
    pub async fn open(ctx: &Context) -> anyhow::Result<Recorder> {
        let store = ctx.open_store().await?;
        Recorder::start(
            store,
            ctx.stream.clone(),
            ctx.pseudonymizer()?,
            Arc::new(SystemClock),
        )
        .await
    }

    /// A recorder on `store` whose entries are recorded at `clock`'s time (tests run the
    /// retention operations years apart with a manual clock).
    pub async fn start(
        store: Arc<dyn Store>,
        stream: ledger::StreamId,
        pseudonymizer: ledger::Pseudonymizer,
        clock: Arc<dyn ledger::Clock>,
    ) -> anyhow::Result<Recorder> {
        let mut ingest = Ingest::new(pseudonymizer);
        // Our own text: a name that happened to look like PHI is redacted, not refused.
        ingest.parse = ParseOptions {
            phi_policy: PhiPolicy::Redact,
            ..ParseOptions::default()
        };
        let (writer, task) =
            GroupCommitWriter::start(store.clone(), stream, clock, WriterConfig::default()).await?;
        ingest.alg = writer.hash_alg();
        Ok(Recorder {
            ingest,
            writer,
            task,
            store,
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn writer(&self) -> &GroupCommitWriter {
        &self.writer
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The operator: the OS account that ran the command (pseudonymized on append like any
    /// user id), in `role`.
    pub fn operator(role: &str) -> serde_json::Value {
        let mut actor = json!({ "role": role });
        if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
            actor["user_id"] = json!(user);
        }
        actor
    }

    /// Appends `event` (done by an admin operator) and returns its receipt once durable.
    pub async fn record(&self, event: OperatorEvent<'_>) -> anyhow::Result<Receipt> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let body = json!({"occurred_at": now, "action": event.action, "outcome": "success",
                          "actor": Recorder::operator("admin"), "resource": event.resource,
                          "source": "auditledger", "detail": event.detail});
        self.record_body(&body).await
    }

    /// Appends one event of the event contract and returns its receipt once durable.
    pub async fn record_body(&self, body: &serde_json::Value) -> anyhow::Result<Receipt> {
        self.append_prepared(body, self.ingest.prepare(body, None))
            .await
    }

    /// Appends an event the ledger writes about itself (`body` done by an admin operator,
    /// carrying `record`), with the clock's time as `occurred_at`.
    pub async fn record_with(
        &self,
        action: &str,
        resource: serde_json::Value,
        detail: &str,
        record: ledger::record::Record,
        occurred_at: ledger::Timestamp,
    ) -> anyhow::Result<Receipt> {
        let body = json!({"occurred_at": occurred_at.to_rfc3339(), "action": action,
                          "outcome": "success", "actor": Recorder::operator("admin"),
                          "resource": resource, "source": "auditledger", "detail": detail});
        let prepared = self.ingest.prepare_record(&body, record);
        self.append_prepared(&body, prepared).await
    }

    async fn append_prepared(
        &self,
        body: &serde_json::Value,
        prepared: Result<ledger::PreparedEntry, ledger::EventError>,
    ) -> anyhow::Result<Receipt> {
        let action = body["action"].as_str().unwrap_or("operator").to_owned();
        let prepared =
            prepared.map_err(|e| anyhow::anyhow!("cannot record the {action} event: {e}"))?;
        let mut receipts = self
            .writer
            .append(vec![prepared])
            .await
            .with_context(|| format!("cannot record the {action} event in the ledger"))?;
        let receipt = receipts.remove(0);
        eprintln!("recorded as ledger entry seq {}", receipt.seq);
        Ok(receipt)
    }

    /// Waits until the writer has committed and stopped.
    pub async fn close(self) -> anyhow::Result<()> {
        drop(self.writer);
        self.task.await.context("writer task failed")
    }
}
