//! Every error the API answers, and its HTTP form: a status, a JSON body
//! `{"error": <code>, "message": <sentence>, "problems": [{index, field, rule}]}` and, for
//! pushback, `Retry-After`. Messages name fields and rules, never values: a value may be a raw
//! identifier, and an error body can end up in a client's logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{AppendError, EventError};
use serde_json::json;

/// One broken rule, flattened for clients: `index` is the event's position in the request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub index: Option<usize>,
    pub field: String,
    pub rule: String,
}

pub fn problems_of(errors: &[EventError]) -> Vec<Problem> {
    errors
        .iter()
        .flat_map(|e| {
            e.errors.iter().map(move |f| Problem {
                index: e.index,
                field: f.field.clone(),
                rule: f.rule.clone(),
            })
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is not valid; nothing was written")]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("the token's role ({0}) may not do this")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("this idempotency key was used before for different events; nothing was written")]
    IdempotencyMismatch,
    /// Pushback: the writer, the append slots or the verifier are busy.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_seconds: u64,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A failure of the store or the server; details go to the log, not to the client.
    #[error("internal error; nothing of this request was written")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::IdempotencyMismatch => StatusCode::CONFLICT,
            ApiError::Busy { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_request",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::IdempotencyMismatch => "idempotency_mismatch",
            ApiError::Busy { .. } => "busy",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal => "internal",
        }
    }

    pub fn invalid(field: &str, rule: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![Problem {
            index: None,
            field: field.to_owned(),
            rule: rule.into(),
        }])
    }

    /// Maps the writer's refusal; `retry_after` is the configured pushback delay.
    pub fn from_append(e: AppendError, retry_after: u64) -> ApiError {
        match e {
            AppendError::Busy | AppendError::Contended => ApiError::Busy {
                message: "the ledger writer is behind; retry with the same Idempotency-Key".into(),
                retry_after_seconds: retry_after,
            },
            AppendError::Closed => ApiError::ShuttingDown,
            AppendError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            AppendError::Empty => ApiError::invalid("$", "must hold at least one event"),
            AppendError::Store(msg) => {
                tracing::error!(error = %msg, "store failed; the request was refused");
                ApiError::Internal
            }
        }
    }

    /// Seconds to put in Retry-After, if this error asks the client to come back.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Busy {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            ApiError::ShuttingDown => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let ApiError::Invalid(problems) = &self {
            body["problems"] = json!(problems);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(s) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let ApiError::Unauthorized = self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"auditledger\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::FieldError;

    #[test]
    fn pushback_carries_retry_after_and_invalid_names_each_field() {
        let resp = ApiError::from_append(AppendError::Busy, 3).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");

        let problems = problems_of(&[EventError {
            index: Some(2),
            errors: vec![
                FieldError {
                    field: "actor.ip".into(),
                    rule: "must be an IPv4 or IPv6 address".into(),
                },
                FieldError {
                    field: "outcome".into(),
                    rule: "is required".into(),
                },
            ],
        }]);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].index, Some(2));
        assert_eq!(problems[1].field, "outcome");
        assert_eq!(
            ApiError::Invalid(problems).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from_append(AppendError::IdempotencyMismatch, 1).status(),
            StatusCode::CONFLICT
        );
    }
}
