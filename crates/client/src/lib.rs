//! A small client for the auditledger HTTP service (`auditledger serve`, see `docs/HTTP.md`).
//!
//! What a backend service needs is one call that either returns durable receipts or a clear
//! error, and never writes an event twice: [`Client::append`] gives every request an
//! idempotency key and retries with that same key (on connection errors, timeouts and the
//! server's 503 pushback, honouring `Retry-After`), so a retried request whose first attempt did
//! commit returns the original receipts instead of a second copy.
//!
//! Errors are typed so a caller can act on them: [`ClientError::Invalid`] names each bad field
//! (and is never retried: the same events would be refused again), [`ClientError::Unauthorized`]
//! and [`ClientError::Forbidden`] mean a token problem, [`ClientError::Busy`] means the ledger
//! pushed back for longer than the retry budget.
//!
//! This crate never logs and never puts event content into error messages.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// The header that makes an append idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the server answers for each stored event: its position and hash in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Receipt {
    pub stream: String,
    pub seq: u64,
    pub entry_hash: String,
    pub recorded_at: String,
}

/// One broken rule of one event of a refused request (the value itself is never echoed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// Position of the event in the request (absent for problems of the request as a whole).
    pub index: Option<usize>,
    /// Dotted path of the field, e.g. `actor.ip`.
    pub field: String,
    /// The rule the field broke, in words.
    pub rule: String,
}

/// A page of entries (pseudonyms only) and where the next page starts.
#[derive(Debug, Clone, Deserialize)]
pub struct EntriesPage {
    pub entries: Vec<Value>,
    pub next_from_seq: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The events were refused; nothing of the request was written. Not retried.
    #[error("refused: {} problem(s); nothing was written", problems.len())]
    Invalid { problems: Vec<Problem> },
    /// Missing, unknown or revoked token.
    #[error("the server refused the token (401)")]
    Unauthorized,
    /// The token's role may not do this.
    #[error("the token's role may not do this (403)")]
    Forbidden,
    /// The request is larger than the server accepts (split it).
    #[error("the request is too large for the server (413): {0}")]
    TooLarge(String),
    /// The ledger pushed back for longer than the retry budget.
    #[error("the ledger is busy (retry after {retry_after:?})")]
    Busy { retry_after: Option<Duration> },
    /// The idempotency key was used before for different events.
    #[error("conflict (409): {0}")]
    Conflict(String),
    #[error("not found (404)")]
    NotFound,
    /// Any other answer of the server.
    #[error("server answered {status}: {message}")]
    Server { status: u16, message: String },
    /// Connection, timeout or decoding failure.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether the same request may succeed if sent again (with the same idempotency key).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Busy { .. } => true,
            ClientError::Server { status, .. } => *status >= 500,
            ClientError::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            _ => false,
        }
    }
}

/// How appends are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First back-off; doubled each time, with jitter, capped by `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A handle to one auditledger server. Cheap to clone (connections are pooled).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is in the default headers; never print it.
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080`) with a bearer `token`, a 10 s
    /// request timeout and the default retry policy.
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        Client::with_options(
            base_url,
            token,
            Duration::from_secs(10),
            RetryPolicy::default(),
        )
    }

    pub fn with_options(
        base_url: &str,
        token: &str,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Client, ClientError> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Config("the token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            retry,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Appends `events` atomically under a fresh idempotency key, retrying per the policy.
    pub async fn append(&self, events: &[Value]) -> Result<Vec<Receipt>, ClientError> {
        let key = new_idempotency_key();
        self.append_with_key(events, &key).await
    }

    /// Appends `events` under the caller's idempotency key (use one per logical request, e.g.
    /// the request id of the web request being audited), retrying per the policy.
    pub async fn append_with_key(
        &self,
        events: &[Value],
        key: &str,
    ) -> Result<Vec<Receipt>, ClientError> {
        let body = serde_json::to_vec(events)
            .map_err(|e| ClientError::Config(format!("events are not serializable: {e}")))?;
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.append_body(body.clone(), Some(key)).await {
                Err(e) if e.is_retryable() && attempt < self.retry.attempts.max(1) => {
                    let wait = match &e {
                        ClientError::Busy {
                            retry_after: Some(d),
                        } => (*d).min(self.retry.max_backoff),
                        _ => jitter(backoff),
                    };
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt, no retry (for benchmarks and tests of the server's answers).
    pub async fn append_once(
        &self,
        events: &[Value],
        key: Option<&str>,
    ) -> Result<Vec<Receipt>, ClientError> {
        let body = serde_json::to_vec(events)
            .map_err(|e| ClientError::Config(format!("events are not serializable: {e}")))?;
        self.append_body(body, key).await
    }

    /// One attempt with a body prepared by the caller (one event object or an array).
    pub async fn append_body(
        &self,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Vec<Receipt>, ClientError> {
        let mut req = self
            .http
            .post(self.url("/v1/events"))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_KEY, k);
        }
        let resp = req.send().await?;
        #[derive(Deserialize)]
        struct Receipts {
            receipts: Vec<Receipt>,
        }
        let ok: Receipts = decode(resp).await?;
        Ok(ok.receipts)
    }

    /// Posts one FHIR R4 AuditEvent resource; returns the receipt of the stored entry (from
    /// the `x-auditledger-*` headers of the 201).
    pub async fn post_fhir_audit_event(
        &self,
        resource: &Value,
        key: Option<&str>,
    ) -> Result<Receipt, ClientError> {
        let mut req = self
            .http
            .post(self.url("/fhir/AuditEvent"))
            .header(CONTENT_TYPE, "application/fhir+json")
            .json(resource);
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_KEY, k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            // FHIR answers an OperationOutcome; the receipt travels in headers.
            let h = resp.headers();
            let get = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .ok_or_else(|| ClientError::Server {
                        status: status.as_u16(),
                        message: format!("the answer lacks the {name} header"),
                    })
            };
            let seq = get("x-auditledger-seq")?;
            return Ok(Receipt {
                stream: get("x-auditledger-stream")?,
                seq: seq.parse().map_err(|_| ClientError::Server {
                    status: status.as_u16(),
                    message: "x-auditledger-seq is not a number".into(),
                })?,
                entry_hash: get("x-auditledger-entry-hash")?,
                recorded_at: get("x-auditledger-recorded-at")?,
            });
        }
        let retry_after = retry_after(resp.headers());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        // An OperationOutcome: each issue's expression names the element.
        let problems = body["issue"]
            .as_array()
            .map(|issues| {
                issues
                    .iter()
                    .map(|i| Problem {
                        index: None,
                        field: i["expression"][0].as_str().unwrap_or("").to_owned(),
                        rule: i["diagnostics"].as_str().unwrap_or("").to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(error_for(status, problems, retry_after, &body))
    }

    /// The head of the stream: `{"stream", "seq", "size", "entry_hash", "recorded_at"}`.
    pub async fn head(&self) -> Result<Value, ClientError> {
        decode(self.http.get(self.url("/v1/head")).send().await?).await
    }

    /// Up to `limit` entries from `from_seq` on.
    pub async fn entries(&self, from_seq: u64, limit: usize) -> Result<EntriesPage, ClientError> {
        let resp = self
            .http
            .get(self.url("/v1/entries"))
            .query(&[("from_seq", from_seq as usize), ("limit", limit)])
            .send()
            .await?;
        decode(resp).await
    }

    /// One entry, `None` when there is no entry at `seq`.
    pub async fn entry(&self, seq: u64) -> Result<Option<Value>, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/entries/{seq}")))
            .send()
            .await?;
        match decode(resp).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs a verification on the server; the report is the JSON of `auditledger verify --json`.
    pub async fn verify(&self) -> Result<Value, ClientError> {
        decode(self.http.post(self.url("/v1/verify")).send().await?).await
    }

    /// Streams the export (a CBOR sequence) into `out`; returns the bytes written.
    pub async fn export_to<W: std::io::Write>(&self, out: &mut W) -> Result<u64, ClientError> {
        let mut resp = self.http.get(self.url("/v1/export")).send().await?;
        if !resp.status().is_success() {
            return Err(decode::<Value>(resp)
                .await
                .err()
                .unwrap_or(ClientError::Server {
                    status: 0,
                    message: "unexpected answer".into(),
                }));
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Config(format!("cannot write the export: {e}")))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

/// 128 random bits in hex: unique per logical request.
pub fn new_idempotency_key() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn jitter(d: Duration) -> Duration {
    // Between half and all of `d`, so clients that failed together do not retry together.
    let f = 0.5 + rand::random::<f64>() * 0.5;
    d.mul_f64(f)
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn error_for(
    status: StatusCode,
    problems: Vec<Problem>,
    retry_after: Option<Duration>,
    body: &Value,
) -> ClientError {
    let message = body["message"]
        .as_str()
        .or_else(|| body["issue"][0]["diagnostics"].as_str())
        .unwrap_or("")
        .to_owned();
    match status {
        StatusCode::BAD_REQUEST => ClientError::Invalid { problems },
        StatusCode::UNAUTHORIZED => ClientError::Unauthorized,
        StatusCode::FORBIDDEN => ClientError::Forbidden,
        StatusCode::NOT_FOUND => ClientError::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ClientError::TooLarge(message),
        StatusCode::CONFLICT => ClientError::Conflict(message),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            ClientError::Busy { retry_after }
        }
        s => ClientError::Server {
            status: s.as_u16(),
            message,
        },
    }
}

/// A success body as `T`, or the server's error as a [`ClientError`].
async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.json().await?);
    }
    let retry = retry_after(resp.headers());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let problems = body["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| serde_json::from_value(p.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    Err(error_for(status, problems, retry, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_server_errors_are_retried_but_refusals_are_not() {
        assert!(ClientError::Busy { retry_after: None }.is_retryable());
        assert!(ClientError::Server {
            status: 503,
            message: String::new()
        }
        .is_retryable());
        assert!(!ClientError::Invalid { problems: vec![] }.is_retryable());
        assert!(!ClientError::Unauthorized.is_retryable());
        assert!(!ClientError::Conflict(String::new()).is_retryable());
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_jitter_stays_below_the_backoff() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let d = Duration::from_millis(100);
        for _ in 0..100 {
            let j = jitter(d);
            assert!(j >= d / 2 && j <= d);
        }
        assert_ne!(new_idempotency_key(), new_idempotency_key());
        assert_eq!(new_idempotency_key().len(), 32);
    }
}
