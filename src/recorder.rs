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
        Recorder::on(ctx.open_store().await?, ctx).await
    }

    /// A recorder on a store already open (e.g. with `Context::open_existing`).
    pub async fn on(store: Arc<dyn Store>, ctx: &Context) -> anyhow::Result<Recorder> {
        let mut ingest = Ingest::new(ctx.pseudonymizer()?);
        // Our own text: a name that happened to look like PHI is redacted, not refused.
        ingest.parse = ParseOptions {
            phi_policy: PhiPolicy::Redact,
            ..ParseOptions::default()
        };
        let (writer, task) = GroupCommitWriter::start(
            store.clone(),
            ctx.stream.clone(),
            Arc::new(SystemClock),
            WriterConfig::default(),
        )
        .await?;
        ingest.alg = writer.hash_alg();
        Ok(Recorder {
            ingest,
            writer,
            task,
            store,
        })
    }

    /// The retention operations' session on this recorder's writer, acting as the admin
    /// operator, on the system clock; await the handle after dropping the session.
    pub fn into_session(self) -> (retention::ops::Session, tokio::task::JoinHandle<()>) {
        let session = retention::ops::Session {
            store: self.store,
            stream: self.writer.stream().clone(),
            writer: self.writer,
            ingest: self.ingest,
            clock: Arc::new(SystemClock),
            actor: Recorder::operator("admin"),
        };
        (session, self.task)
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
        let action = body["action"].as_str().unwrap_or("operator").to_owned();
        let prepared = self
            .ingest
            .prepare(body, None)
            .map_err(|e| anyhow::anyhow!("cannot record the {action} event: {e}"))?;
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
