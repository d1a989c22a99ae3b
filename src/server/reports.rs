//! Report routes, for auditors (the `read` permission):
//!
//! - `GET /v1/reports/hipaa?from=YYYY-MM-DD&to=YYYY-MM-DD&format=json|csv|html`: the
//!   compliance report for site days `[from, to)`. The retention projection is brought up to
//!   the head first (unless projections are off in this server), so its section is current.
//! - `POST /v1/reports/disclosures` with `{"patient": "RAW_ID", "from"?, "to"?, "format"?,
//!   "verify_range"?}`: a patient's accounting of disclosures. POST only: the patient id is a
//!   raw identifier, and a query string ends up in proxies' access logs and browser histories
//!   this server does not control (its own request log never has the query or the body).
//!   The request is recorded in the ledger (who asked, the patient's pseudonym) before the
//!   report is made.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::NaiveDate;
use ledger::{Clock as _, SystemClock, Timestamp};
use phi_access::report as render;
use serde::Deserialize;
use serde_json::json;

use super::auth::Principal;
use super::errors::ApiError;
use super::AppState;
use crate::reports::{self, DisclosureQuery, Sources};

type Shared = State<Arc<AppState>>;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Html,
}

fn respond(format: Format, body: String) -> Response {
    let kind = match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
        Format::Html => "text/html; charset=utf-8",
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn store_error(e: ledger::StoreError) -> ApiError {
    tracing::error!(error = %e, "report failed");
    ApiError::Internal
}

fn sources(state: &AppState) -> Sources<'_> {
    Sources {
        store: state.store.as_ref(),
        stream: &state.stream,
        config: &state.analytics,
        checkpoint_key: state.verify_options.checkpoint_key.as_ref(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HipaaQuery {
    from: String,
    to: String,
    #[serde(default)]
    format: Format,
}

/// `GET /v1/reports/hipaa`.
pub async fn get_hipaa(
    State(state): Shared,
    query: Result<Query<HipaaQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::invalid(
            "$",
            "the query must be ?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=json|csv|html]",
        )
    })?;
    let date = |field: &str, s: &str| {
        s.parse::<NaiveDate>()
            .map_err(|_| ApiError::invalid(field, "must be a date, YYYY-MM-DD"))
    };
    let (from, to) = (date("from", &q.from)?, date("to", &q.to)?);
    if from >= to {
        return Err(ApiError::invalid(
            "to",
            "must be after from (to is exclusive)",
        ));
    }
    if (to - from).num_days() > 400 {
        return Err(ApiError::invalid("to", "a period is at most 400 days"));
    }
    // Verifying the period is the costly part: one at a time, like POST /v1/verify.
    let Ok(_permit) = state.verify_slot.clone().try_acquire_owned() else {
        return Err(state.busy("a verification is running already"));
    };
    // With projections off in this server, the read model is as another process left it.
    if state.settings.projection_poll.is_some() {
        match reports::catch_up_retention(
            state.store.clone(),
            state.writer.clone(),
            &state.settings.retention_config,
            |_, _| {},
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!(%warning, "retention projection"),
            Err(e) => {
                tracing::error!(error = %e, "cannot bring the retention projection up to date");
                return Err(ApiError::Internal);
            }
        }
    }
    let retention = Some(&state.settings.retention_config);
    let report = reports::hipaa_with_retention(&sources(&state), retention, from, to, |_| {})
        .await
        .map_err(store_error)?;
    tracing::info!(ok = report.integrity.ok, %from, %to, "compliance report made");
    Ok(respond(
        q.format,
        match q.format {
            Format::Json => render::hipaa_json(&report),
            Format::Csv => render::hipaa_csv(&report),
            Format::Html => render::hipaa_html(&report),
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisclosuresBody {
    patient: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    verify_range: bool,
}

fn instant(field: &str, s: Option<&str>, default: Timestamp) -> Result<Timestamp, ApiError> {
    match s {
        None => Ok(default),
        Some(s) => Timestamp::parse_rfc3339(s)
            .ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 time")),
    }
}

/// `POST /v1/reports/disclosures`.
pub async fn post_disclosures(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::invalid("$", "the body could not be read"))?;
    // The body holds a raw identifier: never echo it, not even in an error.
    let b: DisclosuresBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::invalid(
            "$",
            "the body must be {\"patient\": ID, \"from\"?: RFC3339, \"to\"?: RFC3339, \"format\"?: \"json\"|\"csv\"|\"html\", \"verify_range\"?: bool}",
        )
    })?;
    let patient = b.patient.trim();
    if patient.is_empty() || patient.len() > ledger::event::MAX_ID_LEN {
        return Err(ApiError::invalid(
            "patient",
            format!("must be 1 to {} characters", ledger::event::MAX_ID_LEN),
        ));
    }
    let now = SystemClock.now();
    let from = instant("from", b.from.as_deref(), reports::six_years_before(now))?;
    let to = instant("to", b.to.as_deref(), Timestamp(now.0 + 1))?;
    if from >= to {
        return Err(ApiError::invalid("to", "must be after from"));
    }
    let q = DisclosureQuery {
        raw_patient: patient,
        from,
        to,
        verify_range: b.verify_range,
    };
    let _permit = match b.verify_range {
        true => Some(
            state
                .verify_slot
                .clone()
                .try_acquire_owned()
                .map_err(|_| state.busy("a verification is running already"))?,
        ),
        false => None,
    };
    let event = reports::disclosure_request_event(
        json!({"user_id": principal.name, "role": principal.role.as_str()}),
        &q,
    );
    let prepared = state.ingest.prepare(&event, None).map_err(|e| {
        tracing::error!(error = %e, "cannot record a disclosures request");
        ApiError::Internal
    })?;
    let receipt = state
        .writer
        .append(vec![prepared])
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record a disclosures request");
            ApiError::Internal
        })?
        .remove(0);
    let mut report = reports::disclosures(&sources(&state), &state.ingest.pseudonymizer, &q)
        .await
        .map_err(store_error)?;
    report.request_seq = Some(receipt.seq);
    report.requested_by = Some(
        state
            .ingest
            .pseudonymizer
            .pseudonymize(&principal.name)
            .to_string(),
    );
    tracing::info!(
        ok = report.integrity.ok,
        lines = report.lines.len(),
        request_seq = receipt.seq,
        "accounting of disclosures made"
    );
    Ok(respond(
        b.format,
        match b.format {
            Format::Json => render::disclosures_json(&report),
            Format::Csv => render::disclosures_csv(&report),
            Format::Html => render::disclosures_html(&report),
        },
    ))
}
