//! `auditledger serve`: the HTTP service (see `docs/HTTP.md`).
//!
//! - [`config`]: settings from flags, environment, a TOML file, defaults.
//! - [`auth`]: bearer tokens in `<data-dir>/auth.db`, roles.
//! - [`routes`]: handlers and the request-id and authorization middlewares.
//! - [`errors`]: the API's error type and its HTTP form.
//! - [`metrics`]: Prometheus metrics.
//! - [`fhir`]: FHIR R4 AuditEvent → event contract.
//! - [`projections`]: the projections (security detection and block list, PHI access) following
//!   the head.
//! - [`reports`]: the compliance report and the accounting of disclosures, for auditors.
//!
//! The server is a thin adapter: events go through the same `Ingest` and `GroupCommitWriter` as
//! the command line. It owns one writer for its stream; shutdown is the writer's own protocol:
//! stop accepting, let in-flight requests finish, drop every writer handle, await the writer
//! task, which commits and acknowledges what it holds. Only then does the process exit 0.

pub mod auth;
pub mod checkpoints;
pub mod config;
pub mod errors;
pub mod fhir;
pub mod metrics;
pub mod projections;
pub mod reports;
pub mod routes;
pub mod security;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use axum::Router;
use ledger::checkpoint::NoteSigner;
use ledger::{
    GroupCommitWriter, Ingest, Store, StreamId, SystemClock, VerifyOptions, WriterConfig,
};
use tokio::sync::Semaphore;

use self::auth::{Authenticator, Permission};
use self::checkpoints::Checkpointer;
use self::config::Settings;
use self::errors::ApiError;
use self::metrics::Metrics;

/// What every handler shares.
pub struct AppState {
    pub settings: Settings,
    pub stream: StreamId,
    pub store: Arc<dyn Store>,
    pub ingest: Ingest,
    pub writer: GroupCommitWriter,
    pub auth: Arc<Authenticator>,
    pub metrics: Metrics,
    pub data_dir: PathBuf,
    /// One permit per append request in progress (bounds memory: see `max_inflight_appends`).
    pub append_slots: Arc<Semaphore>,
    /// One verification at a time.
    pub verify_slot: Arc<Semaphore>,
    pub verify_options: VerifyOptions,
    pub shutting_down: AtomicBool,
    /// Signs checkpoints (periodic, and on demand for `GET /v1/checkpoint`); `None` when the
    /// data directory has no signing key.
    pub checkpointer: Option<Arc<Checkpointer>>,
    /// The phi-access projection's settings (for the reports).
    pub analytics: phi_access::AnalyticsConfig,
}

impl AppState {
    pub fn retry_after(&self) -> u64 {
        self.settings.retry_after_seconds
    }

    pub fn busy(&self, message: &str) -> ApiError {
        ApiError::Busy {
            message: message.to_owned(),
            retry_after_seconds: self.retry_after(),
        }
    }
}

/// The router. Every route but `/healthz` and `/readyz` requires a token with the permission
/// its group names.
pub fn router(state: Arc<AppState>) -> Router {
    let guarded = |permission: Permission, routes: Router<Arc<AppState>>| {
        let s = state.clone();
        routes.route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let s = s.clone();
            async move {
                let peer =
                    routes::connect_info_peer(req.extensions().get::<ConnectInfo<SocketAddr>>());
                routes::authorize(s, permission, peer, req, next).await
            }
        }))
    };
    let append = guarded(
        Permission::Append,
        Router::new()
            .route("/v1/events", post(routes::post_events))
            .route("/fhir/AuditEvent", post(routes::post_fhir_audit_event)),
    );
    let read = guarded(
        Permission::Read,
        Router::new()
            .route("/v1/entries", get(routes::get_entries))
            .route("/v1/entries/{seq}", get(routes::get_entry))
            .route("/v1/head", get(routes::get_head))
            .route("/v1/verify", post(routes::post_verify))
            .route("/v1/export", get(routes::get_export))
            .route("/v1/checkpoint", get(routes::get_checkpoint))
            .route("/v1/proof/inclusion", get(routes::get_inclusion_proof))
            .route("/v1/proof/consistency", get(routes::get_consistency_proof))
            .route("/v1/blocklist", get(security::get_blocklist))
            .route("/v1/security/events", get(security::get_security_events))
            .route("/v1/reports/hipaa", get(reports::get_hipaa))
            .route("/v1/reports/disclosures", post(reports::post_disclosures)),
    );
    let consult = guarded(
        Permission::Consult,
        Router::new().route(
            "/v1/blocklist/check",
            get(security::get_blocklist_check).post(security::post_blocklist_check),
        ),
    );
    let manage = guarded(
        Permission::Manage,
        Router::new().route("/v1/tokens", get(routes::get_tokens)),
    );
    let metrics = guarded(
        Permission::Metrics,
        Router::new().route("/metrics", get(routes::metrics)),
    );
    Router::new()
        .merge(append)
        .merge(read)
        .merge(consult)
        .merge(manage)
        .merge(metrics)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        // The body limit is enforced while reading (a client cannot make us buffer more), and
        // the handlers turn it into a 413 with a JSON body.
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::request_id,
        ))
        .with_state(state)
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// What `serve` needs from the command line's context.
pub struct ServeInputs {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub stream: StreamId,
    pub ingest: Ingest,
    pub data_dir: PathBuf,
    pub verify_options: VerifyOptions,
    /// The checkpoint signer (the data directory's signing key), when there is one.
    pub signer: Option<NoteSigner>,
    /// The security projection's rules.
    pub security_rules: ::security::RulesConfig,
    /// What counts as PHI access, the site's calendar, the unusual-pattern thresholds.
    pub analytics: phi_access::AnalyticsConfig,
}

/// Runs the server until SIGTERM/SIGINT (or `stop` resolves), then shuts down gracefully.
/// `on_bound` gets the bound address (tests and the benchmark bind port 0).
pub async fn serve(
    inputs: ServeInputs,
    on_bound: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ServeInputs {
        settings,
        store,
        stream,
        mut ingest,
        data_dir,
        verify_options,
        signer,
        security_rules,
        analytics,
    } = inputs;
    let auth = Arc::new(
        Authenticator::open(&data_dir).context("cannot open the token database (auth.db)")?,
    );
    if auth.active_count() == 0 {
        tracing::warn!("no active tokens: create one with `auditledger token create`");
    }
    let (writer, writer_task) = GroupCommitWriter::start(
        store.clone(),
        stream.clone(),
        Arc::new(SystemClock),
        WriterConfig {
            max_batch: settings.max_batch,
            queue_depth: settings.queue_depth,
            gather_window: settings.gather_window,
            ..WriterConfig::default()
        },
    )
    .await
    .with_context(|| format!("cannot open stream {stream}"))?;
    ingest.alg = writer.hash_alg();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let grace = settings.shutdown_grace;
    let checkpointer = signer.map(|signer| {
        Arc::new(Checkpointer {
            store: store.clone(),
            stream: stream.clone(),
            signer,
            policy: settings.checkpoints.clone(),
        })
    });
    if checkpointer.is_none() {
        tracing::warn!(
            "no checkpoint signing key: periodic checkpoints are off (run `auditledger init`)"
        );
    }
    let (stop_checkpoints, checkpoints_stopped) = tokio::sync::watch::channel(false);
    let periodic = checkpointer
        .clone()
        .map(|cp| tokio::spawn(async move { cp.run(checkpoints_stopped).await }));
    let metrics = Metrics::new(writer.clone());
    let (stop_projections, projections_stopped) = tokio::sync::watch::channel(false);
    let mut projections = Vec::new();
    if let Some(poll) = settings.projection_poll {
        projections.push(tokio::spawn(projections::run(
            store.clone(),
            writer.clone(),
            move || ::security::SecurityProjection::new(security_rules.clone()),
            poll,
            metrics.projection(::security::projection::NAME),
            projections_stopped.clone(),
        )));
        let coverage = settings.retention_config.coverage.clone();
        projections.push(tokio::spawn(projections::run(
            store.clone(),
            writer.clone(),
            move || retention::RetentionProjection::new(coverage.clone()),
            poll,
            metrics.projection(retention::projection::NAME),
            projections_stopped.clone(),
        )));
        let config = analytics.clone();
        projections.push(tokio::spawn(projections::run(
            store.clone(),
            writer.clone(),
            move || phi_access::projection::PhiAccessProjection::new(config.clone()),
            poll,
            metrics.projection(phi_access::projection::NAME),
            projections_stopped,
        )));
    }
    let state = Arc::new(AppState {
        checkpointer: checkpointer.clone(),
        metrics,
        append_slots: Arc::new(Semaphore::new(settings.max_inflight_appends)),
        verify_slot: Arc::new(Semaphore::new(1)),
        settings,
        stream,
        store,
        ingest,
        writer,
        auth: auth.clone(),
        data_dir,
        verify_options,
        analytics,
        shutting_down: AtomicBool::new(false),
    });

    // Revocations by `auditledger token revoke` (another process) reach this server through
    // this loop; it holds only the authenticator, never the writer.
    let reload_every = state.settings.auth_reload;
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(reload_every);
        loop {
            tick.tick().await;
            let a = auth.clone();
            match tokio::task::spawn_blocking(move || a.refresh()).await {
                Ok(Ok(true)) => tracing::info!("tokens reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload tokens"),
                Err(_) => {}
            }
        }
    });

    on_bound(bound);
    tracing::info!(addr = %bound, stream = %state.stream, "listening");
    let app = router(state.clone());
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_state = state.clone();
    let signal = async move {
        tokio::select! {
            _ = shutdown_signal() => {},
            _ = stop => {},
        }
        signal_state.shutting_down.store(true, Ordering::Relaxed);
        tracing::info!("shutdown requested: no new connections; finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    // In-flight requests get `grace` once shutdown begins; after that the server stops
    // waiting for them (their connections are dropped; unacknowledged requests are either
    // fully committed or not at all, as ever).
    let mut server = server;
    let served = tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time");
            server.abort();
            server.await
        }
    };
    reloader.abort();
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context("the HTTP server failed"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(anyhow::anyhow!("the HTTP server task failed: {e}")),
    }
    // Every handler is done. The projections hold writer handles too: stop them (a projection
    // cut off mid-way is safe to abandon: its commit is all or nothing, and what it appended
    // is found again by digest when it resumes).
    let _ = stop_projections.send(true);
    for mut task in projections {
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
    // Let go of the last writer handles, then wait for the writer to commit and acknowledge
    // what it holds.
    state.metrics.detach_writer();
    drop(state);
    writer_task.await.context("the writer task failed")?;
    // The last batch is committed: sign a checkpoint over everything acknowledged.
    let _ = stop_checkpoints.send(true);
    if let Some(task) = periodic {
        let _ = task.await;
    }
    if let Some(cp) = &checkpointer {
        cp.take().await;
    }
    tracing::info!("writer flushed; stopped");
    Ok(())
}
