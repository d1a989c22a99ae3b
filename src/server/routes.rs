//! The routes: append (JSON events and FHIR AuditEvents), read, verify, export, tokens,
//! health and metrics, plus the two middlewares every request passes (request id + log line,
//! and authorization).
//!
//! The append handler's invariant: a 200 carries receipts only for entries the store has
//! committed (the writer answers after the commit), and a request refused for any reason has
//! written nothing (validation is all or nothing, and the writer never splits a request).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::event::{EventError, FieldError};
use ledger::export::ExportWriter;
use ledger::verify::verify_store;
use ledger::{PreparedEntry, Receipt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Permission, Principal, Refusal};
use super::errors::{problems_of, ApiError, Problem};
use super::metrics::{OutcomeLabel, ReasonLabel, RequestLabel};
use super::{fhir, AppState};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Batches up to this size are validated on the request's own task; larger ones on the
/// blocking pool (validation of a big batch runs on all cores and must not stall the async
/// workers that answer other requests).
const INLINE_PREPARE: usize = 8;

type Shared = State<Arc<AppState>>;

// ---------------------------------------------------------------------------------------------
// Middleware

/// Gives every request an id (returned as `x-request-id`), runs it inside a span carrying that
/// id, and logs one line when it ends. Logged: method, route template, status, latency, the
/// token's name. Never: the path with its values, the query string, headers, bodies.
pub async fn request_id(State(state): Shared, mut req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let id = format!("{:016x}", rand::random::<u64>());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabel {
            route,
            status: status.as_u16(),
        })
        .inc();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[derive(Clone)]
pub struct RequestId(pub String);

/// Requires a token whose role has `permission`. A refusal answers 401 (no, unknown or revoked
/// token) or 403 (wrong role), and is appended to the ledger first, so attacks on the ledger
/// are themselves in the ledger.
pub async fn authorize(
    state: Arc<AppState>,
    permission: Permission,
    peer: SocketAddr,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let ip = caller_ip(&state, req.headers(), peer);
    match state.auth.authenticate(header) {
        Ok(principal) if principal.role.allows(permission) => {
            tracing::debug!(token = %principal.name, role = principal.role.as_str(), "authorized");
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(principal) => {
            refuse(&state, Denial::Forbidden(&principal), ip, &method, &route).await;
            ApiError::Forbidden(principal.role.as_str()).into_response()
        }
        Err(refusal) => {
            refuse(&state, Denial::Token(&refusal), ip, &method, &route).await;
            ApiError::Unauthorized.into_response()
        }
    }
}

enum Denial<'a> {
    Token(&'a Refusal),
    Forbidden(&'a Principal),
}

/// The caller's address: the TCP peer, or (behind a trusted proxy) the first valid address
/// of `X-Forwarded-For`.
fn caller_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    if state.settings.trust_forwarded_for {
        if let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        {
            return ip;
        }
    }
    peer.ip()
}

/// Records a refusal in the ledger. The cost of a flood of refusals is bounded: the event is
/// offered with `try_append`, so when the writer is behind the refusal is counted in
/// `auditledger_auth_failures_unrecorded_total` and logged instead of queued without bound.
async fn refuse(state: &AppState, denial: Denial<'_>, ip: IpAddr, method: &str, route: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (reason, event) = match denial {
        Denial::Token(r) => {
            let (reason, detail, user) = match r {
                Refusal::Missing => ("missing", "request without a bearer token", None),
                Refusal::Unknown => ("unknown", "request with an unknown bearer token", None),
                Refusal::Revoked { name } => (
                    "revoked",
                    "request with a revoked bearer token",
                    Some(name.as_str()),
                ),
            };
            let mut actor = json!({"ip": ip.to_string()});
            if let Some(u) = user {
                actor["user_id"] = json!(u);
            }
            (
                reason,
                json!({"occurred_at": now, "action": "login_failed", "outcome": "failure",
                       "actor": actor, "request": {"method": method, "path": route},
                       "source": "auditledger", "detail": detail}),
            )
        }
        Denial::Forbidden(p) => (
            "forbidden",
            json!({"occurred_at": now, "action": "access_denied", "outcome": "denied",
                   "actor": {"user_id": p.name, "role": p.role.as_str(), "ip": ip.to_string()},
                   "request": {"method": method, "path": route},
                   "source": "auditledger",
                   "detail": format!("the {} role may not use this route", p.role.as_str())}),
        ),
    };
    state
        .metrics
        .auth_failures
        .get_or_create(&ReasonLabel { reason })
        .inc();
    tracing::warn!(reason, route, "request refused");
    let prepared = match state.ingest.prepare(&event, None) {
        Ok(p) => p,
        Err(e) => {
            // Our own event failed validation: a bug, not an attack; never silently.
            tracing::error!(error = %e, "cannot record a refusal");
            return;
        }
    };
    match state.writer.try_append(vec![prepared]).await {
        Ok(_) => {}
        Err(e) => {
            state.metrics.auth_failures_unrecorded.inc();
            tracing::warn!(error = %e, reason, "refusal not recorded in the ledger");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Append

/// The request body, or 413/400 without echoing anything of it.
fn body_or_error(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("the body is larger than {max} bytes"))
        } else {
            ApiError::invalid("$", "the body could not be read")
        }
    })
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json (or application/fhir+json)".into(),
        ))
    }
}

/// Parses JSON without echoing content: serde_json's syntax errors name a line and column
/// only (its data errors could quote a value, and are not used here).
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            "$",
            format!(
                "must be valid JSON (syntax error at line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Validates and prepares `values` (all or nothing), then appends them through the writer,
/// pushing back instead of queueing when it is behind. Shared by both append routes.
async fn append_values(
    state: &Arc<AppState>,
    values: Vec<Value>,
    key: Option<String>,
    started: Instant,
) -> Result<Vec<Receipt>, AppendFailure> {
    // Bounded work in progress: each permit stands for one body in memory.
    let Ok(_permit) = state.append_slots.clone().try_acquire_owned() else {
        return Err(AppendFailure::Api(state.busy(
            "too many append requests in progress; retry with the same Idempotency-Key",
        )));
    };
    state.metrics.appends_in_flight.inc();
    let result = async {
        let prepared: Result<Vec<PreparedEntry>, Vec<EventError>> = if values.len()
            <= INLINE_PREPARE
        {
            prepare_inline(&state.ingest, &values, key.as_deref())
        } else {
            let s = state.clone();
            tokio::task::spawn_blocking(move || s.ingest.prepare_batch(&values, key.as_deref(), 0))
                .await
                .map_err(|_| AppendFailure::Api(ApiError::Internal))?
        };
        let prepared = prepared.map_err(AppendFailure::Invalid)?;
        let n = prepared.len();
        let receipts = state
            .writer
            .try_append(prepared)
            .await
            .map_err(|e| AppendFailure::Api(ApiError::from_append(e, state.retry_after())))?;
        state.metrics.acknowledged(n, started.elapsed());
        Ok(receipts)
    }
    .await;
    state.metrics.appends_in_flight.dec();
    if let Err(e) = &result {
        state.metrics.append_outcome(match e {
            AppendFailure::Invalid(_) => "invalid",
            AppendFailure::Api(ApiError::Busy { .. }) => "busy",
            AppendFailure::Api(ApiError::IdempotencyMismatch) => "conflict",
            AppendFailure::Api(_) => "error",
        });
    }
    result
}

/// `Ingest::prepare_batch` for a few events, on the calling task: the same numbering, keys
/// and all-or-nothing result, without handing one event to the rayon pool and back (which
/// costs more than validating it).
fn prepare_inline(
    ingest: &ledger::Ingest,
    values: &[Value],
    key: Option<&str>,
) -> Result<Vec<PreparedEntry>, Vec<EventError>> {
    let mut ok = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match ingest.prepare(v, key.map(|k| (k, i as u32))) {
            Ok(p) => ok.push(p),
            Err(e) => errors.push(e.at(i)),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}

enum AppendFailure {
    Invalid(Vec<EventError>),
    Api(ApiError),
}

/// `POST /v1/events`: one event object or an array of them.
pub async fn post_events(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let refused = |e: ApiError| {
        state.metrics.append_outcome(match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            _ => "invalid",
        });
        e
    };
    let body = body_or_error(body, state.settings.max_body_bytes).map_err(refused)?;
    require_json(&headers).map_err(refused)?;
    let key = idempotency_key(&headers).map_err(refused)?;
    let values = match parse_json(&body).map_err(refused)? {
        Value::Array(list) => list,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(refused(ApiError::invalid(
                "$",
                "must be an event object or an array of event objects",
            )))
        }
    };
    if values.is_empty() {
        return Err(refused(ApiError::invalid(
            "$",
            "must hold at least one event",
        )));
    }
    let max = state.settings.max_events_per_request;
    if values.len() > max {
        return Err(refused(ApiError::TooLarge(format!(
            "at most {max} events per request (got {}); split the batch",
            values.len()
        ))));
    }
    match append_values(&state, values, key, started).await {
        Ok(receipts) => Ok((StatusCode::OK, Json(json!({ "receipts": receipts }))).into_response()),
        Err(AppendFailure::Invalid(errors)) => Err(ApiError::Invalid(problems_of(&errors))),
        Err(AppendFailure::Api(e)) => Err(e),
    }
}

/// `POST /fhir/AuditEvent`: one FHIR R4 AuditEvent, mapped (see `fhir.rs`) and appended.
/// Errors are OperationOutcome resources; success is 201 with the receipt in headers and a
/// `Location` of the stored entry.
pub async fn post_fhir_audit_event(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let outcome = |status: StatusCode, issues: Vec<fhir::Issue>| {
        let mut resp = (status, Json(fhir::operation_outcome(&issues))).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        );
        resp
    };
    let api_error = |e: ApiError| {
        let status = e.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too-costly",
            StatusCode::SERVICE_UNAVAILABLE => "transient",
            StatusCode::CONFLICT => "duplicate",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "not-supported",
            StatusCode::BAD_REQUEST => "invalid",
            _ => "exception",
        };
        let issues = match &e {
            ApiError::Invalid(problems) => problems
                .iter()
                .map(|p| fhir::Issue {
                    code,
                    diagnostics: format!("{}: {}", p.field, p.rule),
                    expression: "AuditEvent".into(),
                })
                .collect(),
            _ => vec![fhir::Issue {
                code,
                diagnostics: e.to_string(),
                expression: "AuditEvent".into(),
            }],
        };
        let retry = e.retry_after();
        let mut resp = outcome(status, issues);
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    };
    let body = match body_or_error(body, state.settings.max_body_bytes) {
        Ok(b) => b,
        Err(e) => return api_error(e),
    };
    if let Err(e) = require_json(&headers) {
        return api_error(e);
    }
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return api_error(e),
    };
    let resource = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return api_error(e),
    };
    let event = match fhir::to_event(&resource) {
        Ok(e) => e,
        Err(issues) => {
            state.metrics.append_outcome("invalid");
            return outcome(StatusCode::BAD_REQUEST, issues);
        }
    };
    match append_values(&state, vec![event], key, started).await {
        Ok(receipts) => {
            let Some(r) = receipts.first() else {
                return api_error(ApiError::Internal);
            };
            let mut resp = (
                StatusCode::CREATED,
                Json(json!({
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "information", "code": "informational",
                               "diagnostics": format!("recorded as seq {} with entry hash {}", r.seq, r.entry_hash)}],
                })),
            )
                .into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/fhir+json"),
            );
            for (name, value) in [
                ("location", format!("/v1/entries/{}", r.seq)),
                ("x-auditledger-stream", r.stream.to_string()),
                ("x-auditledger-seq", r.seq.to_string()),
                ("x-auditledger-entry-hash", r.entry_hash.to_hex()),
                ("x-auditledger-recorded-at", r.recorded_at.to_rfc3339()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            resp
        }
        Err(AppendFailure::Invalid(errors)) => {
            let issues = errors
                .iter()
                .flat_map(|e| e.errors.iter())
                .map(|f: &FieldError| fhir::Issue {
                    code: "value",
                    diagnostics: format!("{} (mapped to the ledger's {})", f.rule, f.field),
                    expression: fhir::expression_of(&f.field).into(),
                })
                .collect();
            outcome(StatusCode::BAD_REQUEST, issues)
        }
        Err(AppendFailure::Api(e)) => api_error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Read, verify, export

#[derive(Debug, Deserialize)]
pub struct EntriesQuery {
    from_seq: Option<u64>,
    limit: Option<usize>,
}

fn store_error(e: ledger::StoreError) -> ApiError {
    tracing::error!(error = %e, "store read failed");
    ApiError::Internal
}

/// `GET /v1/entries?from_seq=&limit=`: a page of entries, pseudonyms only.
pub async fn get_entries(
    State(state): Shared,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid("query", "from_seq and limit must be non-negative integers")
    })?;
    let from = q.from_seq.unwrap_or(0);
    let limit = q
        .limit
        .unwrap_or(100)
        .clamp(1, state.settings.max_read_limit);
    let entries = state
        .store
        .read(&state.stream, from, limit)
        .await
        .map_err(store_error)?;
    let next = entries.last().map(|e| e.seq + 1).unwrap_or(from);
    Ok(Json(json!({
        "entries": entries.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
        "next_from_seq": next,
    })))
}

/// `GET /v1/entries/{seq}`.
pub async fn get_entry(
    State(state): Shared,
    seq: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(seq) = seq.map_err(|_| ApiError::invalid("seq", "must be a non-negative integer"))?;
    match state
        .store
        .get(&state.stream, seq)
        .await
        .map_err(store_error)?
    {
        Some(e) => Ok(Json(e.to_json())),
        None => Err(ApiError::NotFound(format!("no entry at seq {seq}"))),
    }
}

/// `GET /v1/head`.
pub async fn get_head(State(state): Shared) -> Result<Json<Value>, ApiError> {
    match state.store.head(&state.stream).await.map_err(store_error)? {
        Some(h) => Ok(Json(json!({
            "stream": state.stream,
            "seq": h.seq,
            "size": h.seq + 1,
            "entry_hash": h.entry_hash,
            "recorded_at": h.recorded_at.to_rfc3339(),
        }))),
        None => Err(ApiError::NotFound(format!(
            "stream {} has no entries",
            state.stream
        ))),
    }
}

/// `POST /v1/verify`: the JSON of `auditledger verify --json`. One at a time (a second
/// request while one runs gets 503 + Retry-After). Verification reads its own snapshot on its
/// own connection and thread, and hashes on the blocking pool, so appends go on meanwhile.
pub async fn post_verify(State(state): Shared) -> Result<Response, ApiError> {
    let Ok(_permit) = state.verify_slot.clone().try_acquire_owned() else {
        state
            .metrics
            .verify_runs
            .get_or_create(&OutcomeLabel { outcome: "busy" })
            .inc();
        return Err(state.busy("a verification is running already"));
    };
    let started = Instant::now();
    // Appends go on meanwhile: verify_store reads one snapshot and tells entries committed
    // after it from deleted ones (see ledger::verify).
    let result = verify_store(
        state.store.as_ref(),
        &state.stream,
        &state.verify_options,
        |_| {},
    )
    .await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            state
                .metrics
                .verify_runs
                .get_or_create(&OutcomeLabel { outcome: "error" })
                .inc();
            return Err(store_error(e));
        }
    };
    state
        .metrics
        .verify_runs
        .get_or_create(&OutcomeLabel {
            outcome: if report.ok { "intact" } else { "damaged" },
        })
        .inc();
    tracing::info!(
        ok = report.ok,
        entries = report.entries,
        seconds = started.elapsed().as_secs_f64(),
        "verification finished"
    );
    Ok(Json(report).into_response())
}

/// An `io::Write` that hands 64 KiB chunks to the response body through a bounded channel:
/// the export streams at the client's pace and the server holds at most a few chunks.
struct ChannelWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

const EXPORT_CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(EXPORT_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /v1/export`: the CBOR sequence of `auditledger export`, streamed from one snapshot.
pub async fn get_export(State(state): Shared) -> Result<Response, ApiError> {
    if state
        .store
        .head(&state.stream)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "stream {} has no entries",
            state.stream
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let mut chunks = state.store.scan(&state.stream, 0);
    let stream = state.stream.clone();
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let run = move || -> Result<(), String> {
            let out = ChannelWriter {
                buf: Vec::with_capacity(EXPORT_CHUNK),
                tx,
            };
            let mut w = ExportWriter::new(out, &stream).map_err(|e| e.to_string())?;
            while let Some(chunk) = chunks.blocking_recv() {
                for e in chunk.map_err(|e| e.to_string())? {
                    w.write(&e).map_err(|e| e.to_string())?;
                }
            }
            let mut out = w.finish().map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())
        };
        if let Err(e) = run() {
            // Aborting the body tells the client the export is incomplete (no clean end).
            tracing::warn!(error = %e, "export stopped");
            let _ = err_tx.blocking_send(Err(std::io::Error::other("export failed")));
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/cbor-seq"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"auditledger-export.cbor\"",
            ),
        ],
        body,
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// ---------------------------------------------------------------------------------------------
// Tokens, health, metrics

/// `GET /v1/tokens` (admin): names, roles and dates, never tokens.
pub async fn get_tokens(State(state): Shared) -> Result<Json<Value>, ApiError> {
    let dir = state.data_dir.clone();
    let list = tokio::task::spawn_blocking(move || {
        super::auth::TokenStore::open(&dir).and_then(|s| s.list())
    })
    .await
    .map_err(|_| ApiError::Internal)?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot list tokens");
        ApiError::Internal
    })?;
    Ok(Json(json!({ "tokens": list })))
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 while accepting appends, 503 once shutdown began.
pub async fn readyz(State(state): Shared) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
pub async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(|_| ApiError::Internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Unknown routes: 404 with the same error shape (no authentication needed to learn that a
/// route does not exist; nothing is revealed by it).
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route (see docs/HTTP.md)".into())
}

/// Kept for the problem type's use in docs and tests of this module.
#[allow(dead_code)]
fn _problem_shape(p: Problem) -> Value {
    json!(p)
}

pub fn connect_info_peer(ci: Option<&ConnectInfo<SocketAddr>>) -> SocketAddr {
    ci.map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// `GET /v1/checkpoint`: the newest signed checkpoint (C2SP signed note, `text/plain`), for
/// auditors to keep outside the database. When none is stored yet and the server has the
/// signing key, one is taken now.
pub async fn get_checkpoint(State(state): Shared) -> Result<Response, ApiError> {
    let mut newest = state
        .store
        .checkpoints(&state.stream)
        .await
        .map_err(store_error)?
        .pop()
        .map(|c| c.note);
    if newest.is_none() {
        if let Some(cp) = &state.checkpointer {
            cp.take().await;
            newest = state
                .store
                .checkpoints(&state.stream)
                .await
                .map_err(store_error)?
                .pop()
                .map(|c| c.note);
        }
    }
    let note = newest.ok_or_else(|| {
        ApiError::NotFound(format!("stream {} has no checkpoint yet", state.stream))
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// The size of the newest stored checkpoint: proofs default to the tree an auditor can hold.
async fn newest_checkpoint_size(state: &AppState) -> Result<u64, ApiError> {
    let stored = state
        .store
        .checkpoints(&state.stream)
        .await
        .map_err(store_error)?;
    stored.last().map(|c| c.size).ok_or_else(|| {
        ApiError::NotFound(format!(
            "stream {} has no checkpoint yet: GET /v1/checkpoint",
            state.stream
        ))
    })
}

fn prove_error(e: ledger::proof::ProveError) -> ApiError {
    match e {
        ledger::proof::ProveError::Store(e) => store_error(e),
        other => ApiError::invalid("query", other.to_string()),
    }
}

/// `GET /v1/proof/inclusion?seq=&size=`: the RFC 9162 inclusion proof of entry `seq` in the
/// tree of `size` entries (default: the newest checkpoint's), as `auditledger prove` prints it.
pub async fn get_inclusion_proof(
    State(state): Shared,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid(
            "query",
            "seq (and optionally size) must be non-negative integers",
        )
    })?;
    let size = match q.size {
        Some(s) => s,
        None => newest_checkpoint_size(&state).await?,
    };
    let proof = ledger::proof::prove_inclusion(state.store.as_ref(), &state.stream, q.seq, size)
        .await
        .map_err(prove_error)?;
    Ok(Json(
        serde_json::to_value(proof).map_err(|_| ApiError::Internal)?,
    ))
}

/// `GET /v1/proof/consistency?from=&to=`: the RFC 9162 consistency proof that the tree of
/// `from` entries is a prefix of the tree of `to` entries.
pub async fn get_consistency_proof(
    State(state): Shared,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query
        .map_err(|_| ApiError::invalid("query", "from and to must be non-negative integers"))?;
    let proof = ledger::proof::prove_consistency(state.store.as_ref(), &state.stream, q.from, q.to)
        .await
        .map_err(prove_error)?;
    Ok(Json(
        serde_json::to_value(proof).map_err(|_| ApiError::Internal)?,
    ))
}
