//! Routes of the security projection's read model.
//!
//! - `GET /v1/blocklist/check?ip=RAW_IP` and `POST /v1/blocklist/check` (`{"ip": "RAW_IP"}`),
//!   for any token: services ask at login. The raw IP is pseudonymized here and never logged
//!   (the request log has the route template, never the query string; see `request_id`) nor
//!   stored; POST keeps it out of proxies' access logs too.
//! - `GET /v1/blocklist[?all=true]` and `GET /v1/security/events?since=&severity=&limit=`,
//!   for auditors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use ledger::{Clock as _, SystemClock, Timestamp};
use security::{read, Severity};
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::AppState;

type Shared = State<Arc<AppState>>;

/// Most rows one listing returns.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpQuery {
    ip: String,
}

fn store_error(e: ledger::StoreError) -> ApiError {
    tracing::error!(error = %e, "security read model read failed");
    ApiError::Internal
}

async fn check(state: &AppState, ip: &str) -> Result<Json<Value>, ApiError> {
    // Parsed and written canonically, as ingest does, so every spelling of one address
    // finds its block.
    let pseudonym = state
        .ingest
        .pseudonymizer
        .pseudonymize_ip(ip)
        .ok_or_else(|| ApiError::invalid("ip", "must be an IPv4 or IPv6 address"))?
        .to_string();
    let now = SystemClock.now();
    let block = read::block_of(state.store.as_ref(), &state.stream, &pseudonym, now)
        .await
        .map_err(store_error)?;
    Ok(Json(match block {
        Some(b) => {
            json!({"blocked": true, "until": b["until"], "rule": b["rule"], "ip": pseudonym})
        }
        None => json!({"blocked": false, "ip": pseudonym}),
    }))
}

/// `GET /v1/blocklist/check?ip=`.
pub async fn get_blocklist_check(
    State(state): Shared,
    query: Result<Query<IpQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::invalid("ip", "the query must be ?ip=ADDRESS"))?;
    check(&state, &q.ip).await
}

/// `POST /v1/blocklist/check` with `{"ip": "..."}`.
pub async fn post_blocklist_check(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|_| ApiError::invalid("$", "the body could not be read"))?;
    let q: IpQuery = serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid("$", "the body must be {\"ip\": \"ADDRESS\"}"))?;
    check(&state, &q.ip).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlocklistQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /v1/blocklist`: blocks in force (every unlifted block with `all=true`).
pub async fn get_blocklist(
    State(state): Shared,
    query: Result<Query<BlocklistQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::invalid("all", "must be true or false"))?;
    let blocks = read::blocks(
        state.store.as_ref(),
        &state.stream,
        SystemClock.now(),
        q.all,
        MAX_LIMIT,
    )
    .await
    .map_err(store_error)?;
    Ok(Json(json!({ "blocks": blocks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    since: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/security/events`: newest first.
pub async fn get_security_events(
    State(state): Shared,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid(
            "query",
            "since (RFC 3339 or 15m/24h/7d), severity (low|medium|high|critical), limit (integer)",
        )
    })?;
    let now = SystemClock.now();
    let since: Option<Timestamp> = q
        .since
        .as_deref()
        .map(|s| crate::rules::parse_since(s, now))
        .transpose()
        .map_err(|rule| ApiError::invalid("since", rule))?;
    let severity = match q.severity.as_deref() {
        None => Severity::Low,
        Some(s) => Severity::parse(s)
            .ok_or_else(|| ApiError::invalid("severity", "low, medium, high or critical"))?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let events = read::events(
        state.store.as_ref(),
        &state.stream,
        since,
        None,
        severity,
        limit,
    )
    .await
    .map_err(store_error)?;
    Ok(Json(json!({ "events": events })))
}
