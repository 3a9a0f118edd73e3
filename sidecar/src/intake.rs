//! Intake: `POST <source.path>`. Verifies, parses, stores, and only then answers 200.
//!
//! Answers: 401 bad or missing signature, 413 body over `maxBodyBytes`, 400 not JSON or
//! no id at `idPointer`, 503 with `Retry-After` when the store cannot take the event,
//! 200 `accepted` once stored, 200 `duplicate` for a repeat within the dedup window.
//! Limits: 408 when the body does not arrive within `readTimeout`, 503 with `Retry-After`
//! beyond `maxConcurrentRequests` requests at once, and 503 with `Retry-After` when buffering
//! a body would take the bytes held by all requests beyond `maxBufferedBytes`. Bodies must be
//! held before their signature can be checked, so that budget (checked against
//! `Content-Length` before reading, and chunk by chunk while reading) is what keeps memory
//! bounded whatever unauthenticated clients send.

use crate::batch::BatchError;
use crate::metrics::IntakeOutcome;
use crate::otlp::{Attr, Span, SpanKind};
use crate::state::AppState;
use crate::trace_context::{IntakeSpan, IntakeTrace};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, SemaphorePermit};
use webhook_relay_api::config::{MissingKey, OrderingConfig};
use webhook_relay_store::{Enqueued, EventId, NewEvent, StoreError};

/// Seconds a sender is asked to wait when the store is unavailable.
const RETRY_AFTER_SECS: &str = "5";
/// Seconds a sender is asked to wait when too many requests are in progress.
const OVERLOADED_RETRY_AFTER_SECS: &str = "1";

/// The bytes all requests of the process may hold at once (`source.maxBufferedBytes`).
pub struct BodyBudget {
    bytes: Semaphore,
    limit: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS as u64);
        BodyBudget { bytes: Semaphore::new(limit as usize), limit }
    }

    /// Bytes not held by any request right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Takes `n` more bytes of the budget into `held`, or fails at once (never waits).
    fn take<'a>(&'a self, held: &mut Option<SemaphorePermit<'a>>, n: usize) -> Result<(), ()> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| ())?;
        let more = self.bytes.try_acquire_many(n).map_err(|_| ())?;
        match held {
            Some(h) => h.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// The intake app: one route, everything else 404.
pub fn router(relay: Arc<AppState>) -> Router {
    let path = relay.config().source.path.clone();
    let slots = Arc::new(Semaphore::new(relay.config().source.max_concurrent_requests as usize));

    Router::new()
        .route(&path, post(receive))
        .route_layer(middleware::from_fn_with_state((relay.clone(), slots), limit_concurrency))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(crate::server::catch_panic())
        .with_state(relay)
}

/// Refuses a request at once when `maxConcurrentRequests` are already being handled: a
/// quick 503 lets Genesys retry, where queueing would only run out its 10 s window.
async fn limit_concurrency(
    State((relay, slots)): State<(Arc<AppState>, Arc<Semaphore>)>,
    req: Request,
    next: Next,
) -> Response {
    match slots.try_acquire() {
        Ok(_slot) => next.run(req).await,
        Err(_) => {
            relay.metrics.intake(IntakeOutcome::overloaded);
            let limit = relay.config().source.max_concurrent_requests;
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many requests at once (source.maxConcurrentRequests = {limit}); retry later"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS));
            r
        }
    }
}

/// Reads a body of at most `limit` bytes into one buffer. With a `Content-Length`
/// (`declared`) its bytes were taken from the budget before reading; without one, each chunk
/// takes its bytes as it arrives.
async fn read_body<'a>(
    mut body: Body,
    limit: u64,
    declared: Option<u64>,
    budget: &'a BodyBudget,
    held: &mut Option<SemaphorePermit<'a>>,
) -> Result<Bytes, Refusal> {
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::Invalid(format!("could not read the body: {e}")))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let len = (buf.len() + chunk.len()) as u64;
        if len > limit {
            return Err(Refusal::TooLarge(limit));
        }
        match declared {
            Some(d) if len > d => {
                return Err(Refusal::Invalid("the body is longer than its Content-Length".into()));
            }
            Some(_) => {}
            None => budget.take(held, chunk.len()).map_err(|_| Refusal::BuffersFull(budget.limit))?,
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn receive(State(relay): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = SystemTime::now();
    let trace = crate::trace_context::for_intake(&headers, relay.spans.is_some());
    let outcome = intake(&relay, &headers, body, &trace).await;
    let event_id = match &outcome {
        Ok((_, id)) => Some(id.as_str().to_string()),
        Err(_) => None,
    };
    let (metric, response) = match outcome {
        Ok((Enqueued::Accepted { .. }, id)) => {
            relay.wake_worker();
            (
                IntakeOutcome::accepted,
                (StatusCode::OK, axum::Json(json!({"status": "accepted", "id": id.as_str()}))).into_response(),
            )
        }
        Ok((Enqueued::Duplicate, id)) => {
            tracing::debug!(event_id = %id, "duplicate within the dedup window");
            (
                IntakeOutcome::duplicate,
                (StatusCode::OK, axum::Json(json!({"status": "duplicate", "id": id.as_str()}))).into_response(),
            )
        }
        Err(Refusal::TooLarge(limit)) => (
            IntakeOutcome::too_large,
            error(StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than source.maxBodyBytes ({limit} bytes)")),
        ),
        Err(Refusal::BuffersFull(limit)) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many request bytes in progress (source.maxBufferedBytes = {limit}); retry later"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS));
            (IntakeOutcome::buffers_full, r)
        }
        Err(Refusal::Unauthorized(why)) => (IntakeOutcome::unauthorized, error(StatusCode::UNAUTHORIZED, why)),
        Err(Refusal::Invalid(why)) => (IntakeOutcome::invalid, error(StatusCode::BAD_REQUEST, why)),
        Err(Refusal::Timeout(limit)) => (
            IntakeOutcome::timeout,
            error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within source.readTimeout ({})",
                    webhook_relay_api::duration::format(limit)
                ),
            ),
        ),
        Err(Refusal::NotReplicated(why)) => {
            let mut r =
                error(StatusCode::SERVICE_UNAVAILABLE, format!("event stored but not yet on a replica, retry: {why}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS));
            (IntakeOutcome::not_replicated, r)
        }
        Err(Refusal::Unavailable(why)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, format!("event not stored, retry later: {why}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            (IntakeOutcome::unavailable, r)
        }
    };
    relay.metrics.intake(metric);
    if let Some(span) = &trace.span {
        relay.span(|| intake_span(&relay, span, started, metric, response.status(), event_id));
    }
    response
}

/// The exported `intake` span of one request.
fn intake_span(
    relay: &AppState,
    span: &IntakeSpan,
    start: SystemTime,
    outcome: IntakeOutcome,
    status: StatusCode,
    event_id: Option<String>,
) -> Span {
    let mut attributes = vec![
        ("http.request.method", Attr::from("POST")),
        ("url.path", Attr::from(relay.config().source.path.as_str())),
        ("http.response.status_code", Attr::Int(i64::from(status.as_u16()))),
        ("webhook_relay.outcome", Attr::from(format!("{outcome:?}"))),
    ];
    if let Some(id) = event_id {
        attributes.push(("webhook_relay.event_id", Attr::Str(id)));
    }
    Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_id: span.parent_id,
        name: "intake",
        kind: SpanKind::Server,
        start,
        end: SystemTime::now(),
        attributes,
        error: status.is_server_error().then(|| format!("answered {status}")),
    }
}

enum Refusal {
    TooLarge(u64),
    /// Buffering the body would go beyond `source.maxBufferedBytes`.
    BuffersFull(u64),
    Unauthorized(String),
    Invalid(String),
    Timeout(Duration),
    Unavailable(String),
    /// Stored, but not confirmed by `redis.waitForReplicas` replicas in time.
    NotReplicated(String),
}

/// Longest ordering key, in bytes (a Genesys conversation's `/channel/to/id` is far shorter).
pub const MAX_ORDERING_KEY: usize = 512;

/// The ordering key at `delivery.ordering.keyPointer` (a string, or a number as JSON writes
/// it); none, null, an empty string or another JSON type is a missing key: refused, or
/// unordered with `missingKey: unordered`.
fn ordering_key(body: &[u8], ordering: &OrderingConfig) -> Result<Option<String>, Refusal> {
    let pointer = &ordering.key_pointer;
    let found = crate::event_id::find(body, pointer)
        .map_err(|e| Refusal::Invalid(format!("body is not JSON: {e}")))?
        .filter(|k| !k.is_empty());
    match found {
        Some(k) if k.len() > MAX_ORDERING_KEY => Err(Refusal::Invalid(format!(
            "the ordering key at {pointer} (delivery.ordering.keyPointer) is {} bytes; at most {MAX_ORDERING_KEY}",
            k.len()
        ))),
        Some(k) => Ok(Some(k)),
        None if ordering.missing_key == MissingKey::Unordered => Ok(None),
        None => Err(Refusal::Invalid(format!(
            "no string or number ordering key at {pointer} (delivery.ordering.keyPointer); send one, or set \
             delivery.ordering.missingKey: unordered to deliver such events without ordering"
        ))),
    }
}

async fn intake(
    relay: &AppState,
    headers: &HeaderMap,
    body: Body,
    trace: &IntakeTrace,
) -> Result<(Enqueued, EventId), Refusal> {
    let source = &relay.config().source;
    let limit = source.max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge(limit));
    }
    // Held until the event is stored and answered: the body lives that long.
    let mut held = None;
    let budget = &relay.body_budget;
    if let Some(n) = declared {
        budget.take(&mut held, n as usize).map_err(|_| Refusal::BuffersFull(budget.limit))?;
    }
    let read = tokio::time::timeout(source.read_timeout, read_body(body, limit, declared, budget, &mut held));
    let body = match read.await {
        Ok(result) => result?,
        Err(_) => return Err(Refusal::Timeout(source.read_timeout)),
    };
    let signed = relay.verifier().verify_which(headers, &body).map_err(|e| {
        let header = relay.verifier().header().map(|h| h.as_str()).unwrap_or("");
        tracing::warn!(reason = %e, header, "refused a request with a bad signature");
        Refusal::Unauthorized(format!("{e} ({header})"))
    })?;
    if signed == crate::signature::SignedWith::Previous {
        relay.metrics.previous_secret.inc();
    }
    let found = crate::event_id::find(&body, &source.id_pointer)
        .map_err(|e| Refusal::Invalid(format!("body is not JSON: {e}")))?;
    let Some(id) = found else {
        return Err(Refusal::Invalid(format!("no string or number id at {} (source.idPointer)", source.id_pointer)));
    };
    let id = EventId::new(id).map_err(Refusal::Invalid)?;
    let ordering_key = match &relay.config().delivery.ordering {
        Some(ordering) => ordering_key(&body, ordering)?,
        None => None,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let bytes = body.len();
    let event = NewEvent {
        id: id.clone(),
        body,
        content_type: content_type.to_string(),
        trace_context: trace.stored.clone(),
        ordering_key,
    };
    let storing = SystemTime::now();
    let stored = relay.enqueue(event).await;
    if let Some(span) = &trace.span {
        relay.span(|| Span {
            trace_id: span.trace_id,
            span_id: crate::trace_context::new_span_id(),
            parent_id: Some(span.span_id),
            name: "store",
            kind: SpanKind::Internal,
            start: storing,
            end: SystemTime::now(),
            attributes: vec![
                ("db.system.name", Attr::from("redis")),
                ("webhook_relay.event_id", Attr::from(id.as_str())),
            ],
            error: stored.as_ref().err().map(|e| e.to_string()),
        });
    }
    match stored {
        Ok(e) => {
            if matches!(e, Enqueued::Accepted { .. }) {
                tracing::debug!(event_id = %id, bytes, "stored");
            }
            Ok((e, id))
        }
        Err(e @ BatchError::Store(StoreError::NotReplicated { .. })) => {
            tracing::warn!(event_id = %id, error = %e, "an event is not on enough replicas yet; answered 503");
            Err(Refusal::NotReplicated(e.to_string()))
        }
        Err(e) => {
            tracing::warn!(event_id = %id, error = %e, "could not store an event; answered 503");
            relay.set_redis_down(format!("storing an event failed: {e}"));
            Err(Refusal::Unavailable(e.to_string()))
        }
    }
}
