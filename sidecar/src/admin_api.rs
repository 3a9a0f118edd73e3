//! The bearer-token admin API under `/v1/`: list, show, replay and delete events, replay or
//! delete the dead letters a filter selects (time range, last status, error text; with a
//! dry run), queue stats, and the OpenAPI document describing it.
//!
//! The router is built from one table of operations ([`operations`]); the OpenAPI
//! document is checked against that table by a test, so neither can drift from the other.
//! Listings page by a cursor holding the (score, id) of the last item, a position rather
//! than an offset, so paging stays stable while events move between states.

use crate::admin_types::*;
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, any, on};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, Modify, OpenApi};
use webhook_relay_store::{
    BulkAction, CircuitState, DeadFilter, Deleted, EventId, EventMeta, EventState, ListCursor, ListOrder,
    Replayed as StoreReplayed, StatusFilter, StoreError,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Dead letters scanned per script call by a bulk action (keeps each call short).
const BULK_BATCH: usize = 500;
/// How long one bulk request works before it answers with a cursor to go on from.
const BULK_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Routes under `/v1/`. Everything but the OpenAPI document needs the bearer token.
pub fn router(relay: Arc<AppState>) -> Router<Arc<AppState>> {
    let (protected, _) = protected_routes();
    protected
        .route_layer(middleware::from_fn_with_state(relay, authorize))
        .route("/v1/openapi.json", on(MethodFilter::GET, openapi))
        .route("/v1/{*rest}", any(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint under /v1/") }))
}

/// Every operation of the API as (method, path template), the public OpenAPI route included.
pub fn operations() -> Vec<(Method, &'static str)> {
    let (_, mut ops) = protected_routes();
    ops.push((Method::GET, "/v1/openapi.json"));
    ops
}

/// Builds the router and the list of its operations from one place.
struct Routes {
    router: Router<Arc<AppState>>,
    ops: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.ops.push((method, path));
        self
    }
}

fn protected_routes() -> (Router<Arc<AppState>>, Vec<(Method, &'static str)>) {
    let r = Routes { router: Router::new(), ops: vec![] }
        .add(Method::GET, "/v1/events", list)
        .add(Method::GET, "/v1/events/{id}", show)
        .add(Method::DELETE, "/v1/events/{id}", delete)
        .add(Method::POST, "/v1/events/{id}/replay", replay)
        .add(Method::POST, "/v1/dead/replay", replay_dead)
        .add(Method::POST, "/v1/dead/delete", delete_dead)
        .add(Method::GET, "/v1/stats", stats);
    (r.router, r.ops)
}

/// A JSON error: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(id: &EventId) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no event {:?}", id.as_str()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Protocol(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            _ => Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("redis unavailable, try again: {e}")),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Bearer-token check. With no token configured the API is off (503, naming the variable).
async fn authorize(State(relay): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(expected) = relay.run_config.secrets.admin_token.as_deref() else {
        let var = &relay.config().admin.token_env;
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the admin API is disabled: set the environment variable {var} (admin.tokenEnv) to a token and restart"
            ),
        )
        .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let refusal = match given {
        Some(token) if token_matches(token, expected) => return next.run(req).await,
        Some(_) => "invalid bearer token",
        None => "missing Authorization: Bearer <token>",
    };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="webhook-relay""#));
    r
}

/// Constant time in the token's content; hashing first hides its length too.
fn token_matches(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())).into()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `due`, `inflight`, `dead` (default) or `blocked` (waiting behind the event of its
    /// ordering key that goes first).
    #[param(value_type = Option<String>, pattern = "^(due|inflight|dead|blocked)$")]
    state: Option<String>,
    /// Events per page, 1 to 1000 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// `oldest` first (default) or `newest` first, by the state's score (dead: when it was
    /// dead-lettered; due: next attempt; inflight: lease deadline).
    #[param(value_type = Option<String>, pattern = "^(oldest|newest)$")]
    order: Option<String>,
}

fn parse_order(s: Option<&str>) -> Result<ListOrder, ApiError> {
    match s {
        None | Some("oldest") => Ok(ListOrder::OldestFirst),
        Some("newest") => Ok(ListOrder::NewestFirst),
        Some(other) => Err(ApiError::bad_request(format!("order must be oldest or newest (got {other:?})"))),
    }
}

fn parse_state(s: &str) -> Result<EventState, ApiError> {
    match s {
        "due" => Ok(EventState::Due),
        "inflight" => Ok(EventState::InFlight),
        "dead" => Ok(EventState::Dead),
        "blocked" => Ok(EventState::Blocked),
        other => Err(ApiError::bad_request(format!("state must be due, inflight, dead or blocked (got {other:?})"))),
    }
}

fn state_name(s: EventState) -> &'static str {
    match s {
        EventState::Due => "due",
        EventState::InFlight => "inflight",
        EventState::Dead => "dead",
        EventState::Blocked => "blocked",
        EventState::Unknown => "unknown",
    }
}

/// Marks the state of a newest-first listing's cursor.
const NEWEST: &str = "-newest";

/// The opaque cursor: base64url of `<state>:<score ms>:<id>` (`<state>-newest:...` newest first).
pub fn encode_cursor(state: EventState, order: ListOrder, c: &ListCursor) -> String {
    let suffix = if order == ListOrder::NewestFirst { NEWEST } else { "" };
    URL_SAFE_NO_PAD.encode(format!("{}{suffix}:{}:{}", state_name(state), c.score_ms, c.id))
}

fn decode_cursor(state: EventState, order: ListOrder, text: &str) -> Result<ListCursor, ApiError> {
    let bad = || ApiError::bad_request("cursor is not one this API returned; start without a cursor");
    let raw = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, ':');
    let (Some(s), Some(score), Some(id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let (s, newest) = match s.strip_suffix(NEWEST) {
        Some(s) => (s, true),
        None => (s, false),
    };
    if newest != (order == ListOrder::NewestFirst) {
        let was = if newest { "newest" } else { "oldest" };
        return Err(ApiError::bad_request(format!(
            "cursor belongs to a listing in order {was}; pass order={was} or start without a cursor"
        )));
    }
    if parse_state(s).map_err(|_| bad())? != state {
        return Err(ApiError::bad_request(format!(
            "cursor belongs to a listing of state {s}, not {}",
            state_name(state)
        )));
    }
    Ok(ListCursor { score_ms: score.parse().map_err(|_| bad())?, id: EventId::new(id).map_err(|_| bad())? })
}

/// Unix ms as RFC 3339 UTC with milliseconds (the Unix epoch when out of range).
pub fn rfc3339_text(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text.trim()).map(|t| t.timestamp_millis()).map_err(|e| {
        ApiError::bad_request(format!("{name} must be an RFC 3339 time like 2026-05-01T12:00:00Z (got {text:?}: {e})"))
    })
}

/// The fields every listing item and detail share.
fn summary(id: &EventId, state: EventState, score_ms: i64, attempts: u32, meta: &EventMeta) -> EventSummary {
    let at = Some(rfc3339_text(score_ms));
    let (mut next_attempt_at, mut lease_expires_at, mut dead_at, mut waiting_since) = (None, None, None, None);
    match state {
        EventState::Due => next_attempt_at = at,
        EventState::InFlight => lease_expires_at = at,
        EventState::Dead => dead_at = at,
        EventState::Blocked => waiting_since = at,
        EventState::Unknown => {}
    }
    EventSummary {
        id: id.as_str().to_string(),
        state: state_wire(state),
        attempts,
        next_attempt_at,
        lease_expires_at,
        dead_at,
        waiting_since,
        last_status: meta.last_status,
        last_error: meta.last_error.clone(),
    }
}

fn state_wire(s: EventState) -> StateName {
    match s {
        EventState::Due => StateName::Due,
        EventState::InFlight => StateName::Inflight,
        EventState::Dead => StateName::Dead,
        EventState::Blocked => StateName::Blocked,
        EventState::Unknown => StateName::Unknown,
    }
}

fn event_id(path: Result<Path<String>, PathRejection>) -> Result<EventId, ApiError> {
    let Path(id) = path?;
    EventId::new(id).map_err(ApiError::bad_request)
}

/// Events of one state, oldest or newest first, paged by cursor
#[utoipa::path(get, path = "/v1/events", operation_id = "listEvents", params(ListQuery), responses(
    (status = 200, description = "A page", body = EventPage),
    (status = 400, description = "Bad state, limit, order or cursor", body = ErrorBody),
))]
async fn list(
    State(relay): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<EventPage> {
    let Query(q) = query?;
    let state = parse_state(q.state.as_deref().unwrap_or("dead"))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a number from 1 to {MAX_LIMIT} (got {text:?})"
                )));
            }
        },
    };
    let order = parse_order(q.order.as_deref())?;
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| decode_cursor(state, order, c)).transpose()?;
    let page = relay.store.list_in(order, state, limit, after.as_ref()).await?;
    let items = page.events.iter().map(|e| summary(&e.id, e.state, e.score_ms, e.attempts, &e.meta)).collect();
    Ok(Json(EventPage { items, next_cursor: page.next.map(|c| encode_cursor(state, order, &c)) }))
}

/// One event with its payload
#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "getEvent", params(ID), responses(
    (status = 400, description = "Not an event id (empty, too long, or with control characters)", body = ErrorBody),
    (status = 200, description = "The event", body = EventDetail),
    (status = 404, description = "No such event", body = ErrorBody),
))]
async fn show(State(relay): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> ApiResult<EventDetail> {
    let id = event_id(path)?;
    let e = relay.store.get(&id).await?.ok_or_else(|| ApiError::not_found(&id))?;
    let (payload_encoding, payload) = match serde_json::from_slice::<Value>(&e.body) {
        Ok(v) => (PayloadEncoding::Json, v),
        Err(_) => (PayloadEncoding::Base64, Value::String(STANDARD.encode(&e.body))),
    };
    let trace = e.meta.trace_context.as_deref().map(crate::trace_context::split);
    Ok(Json(EventDetail {
        summary: summary(&e.id, e.state, e.score_ms, e.attempts, &e.meta),
        received_at: Some(rfc3339_text(e.meta.received_at)),
        content_type: e.meta.content_type.clone(),
        last_attempt_at: e.meta.last_attempt_at.map(rfc3339_text),
        traceparent: trace.map(|(p, _)| p.to_string()),
        tracestate: trace.and_then(|(_, s)| s).map(str::to_string),
        ordering_key: e.ordering_key.clone(),
        payload_encoding,
        payload,
    }))
}

/// Make a dead or due event due now, attempts reset
#[utoipa::path(post, path = "/v1/events/{id}/replay", operation_id = "replayEvent", params(ID), responses(
    (status = 400, description = "Not an event id (empty, too long, or with control characters)", body = ErrorBody),
    (status = 200, description = "Replayed", body = Replayed),
    (status = 404, description = "No such event", body = ErrorBody),
    (status = 409, description = "The event is being delivered right now, or waits behind the event of its ordering key that goes first", body = ErrorBody),
))]
async fn replay(State(relay): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> ApiResult<Replayed> {
    let id = event_id(path)?;
    let (from, waiting) = match relay.store.replay(&id).await? {
        StoreReplayed::FromDead => (StateName::Dead, false),
        StoreReplayed::FromDeadWaiting => (StateName::Dead, true),
        StoreReplayed::FromDue => (StateName::Due, false),
        StoreReplayed::Blocked => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "event {:?} waits behind the event of its ordering key that goes first; it is delivered after that one",
                    id.as_str()
                ),
            ));
        }
        StoreReplayed::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("event {:?} is being delivered right now; replay it once this attempt ends", id.as_str()),
            ));
        }
        StoreReplayed::NotFound => return Err(ApiError::not_found(&id)),
    };
    relay.wake_worker();
    tracing::info!(event_id = %id, from = from.as_str(), waiting, "replayed by an admin request");
    Ok(Json(Replayed { id: id.as_str().to_string(), replayed: true, previous_state: from, waiting }))
}

/// The filter and paging of a bulk action on dead letters.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct BulkQuery {
    /// Dead-lettered at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Dead-lettered at or before (RFC 3339; at most now).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Last status: a code (503), a class (5xx) or none (no HTTP answer: timeouts, connection errors).
    #[param(pattern = "^([1-5][0-9][0-9]|[1-5][xX][xX]|none|any)$")]
    status: Option<String>,
    /// Text the last error contains (case-insensitive).
    #[param(max_length = 200)]
    error: Option<String>,
    /// Only count.
    #[serde(default)]
    dry_run: bool,
    /// `cursor` of the previous answer, to go on.
    cursor: Option<String>,
    /// Look at about this many dead letters in this request at most (steps of up to 500; a
    /// small set is looked at whole); default: what 2 s allow.
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// Delete only: delete every dead letter when no filter is given.
    #[serde(default)]
    all: bool,
}

/// Longest error substring accepted as a filter.
const MAX_ERROR_FILTER: usize = 200;

/// A bulk cursor: the `ZSCAN` cursor and the `until` the first request fixed (so events
/// that die again during a replay are not replayed twice), as `<scan>.<until ms>`.
fn decode_bulk_cursor(text: &str) -> Result<(u64, i64), ApiError> {
    let bad = || ApiError::bad_request(format!("cursor {text:?} is not one this API returned; start again without it"));
    let (scan, until) = text.split_once('.').ok_or_else(bad)?;
    Ok((scan.parse().map_err(|_| bad())?, until.parse().map_err(|_| bad())?))
}

async fn bulk(relay: &AppState, action: BulkAction, q: BulkQuery) -> ApiResult<BulkResult> {
    let since = q.since.as_deref().filter(|s| !s.is_empty()).map(|s| parse_time("since", s)).transpose()?;
    let until = q.until.as_deref().filter(|s| !s.is_empty()).map(|s| parse_time("until", s)).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request("since is after until"));
    }
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => StatusFilter::Any,
        Some(s) => s.parse::<StatusFilter>().map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
    };
    let error = q.error.clone().filter(|e| !e.is_empty());
    if error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_FILTER) {
        return Err(ApiError::bad_request(format!("error: at most {MAX_ERROR_FILTER} bytes")));
    }
    let filtered = since.is_some() || until.is_some() || status != StatusFilter::Any || error.is_some();
    if action == BulkAction::Delete && !filtered && !q.all {
        return Err(ApiError::bad_request(
            "give a filter (since, until, status, error) or all=true to delete every dead letter",
        ));
    }
    let (mut scan, until_ms) = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => decode_bulk_cursor(c)?,
        None => {
            let now = relay.store.stats().await?.now_ms;
            (0, until.map_or(now, |u| u.min(now)))
        }
    };
    let filter = DeadFilter { since_ms: since, until_ms, status, error };
    let step_action = if q.dry_run { BulkAction::Count } else { action };
    if q.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let limit = q.limit.unwrap_or(usize::MAX) as u64;
    let started = std::time::Instant::now();
    let (mut matched, mut scanned) = (0u64, 0u64);
    loop {
        let batch = (limit - scanned).min(BULK_BATCH as u64) as usize;
        let step = relay.store.dead_bulk_step(step_action, &filter, scan, batch).await?;
        matched += step.matched;
        scanned += step.scanned;
        scan = step.cursor;
        if scan == 0 || scanned >= limit || started.elapsed() >= BULK_BUDGET {
            break;
        }
    }
    let done = scan == 0;
    let verb = if action == BulkAction::Replay { "replayed" } else { "deleted" };
    if !q.dry_run && matched > 0 {
        relay.wake_worker(); // replayed events are due; a deletion may release an ordering key's next event
    }
    tracing::info!(
        action = verb, dry_run = q.dry_run, matched, scanned, done, status = %filter.status,
        since = q.since.as_deref().unwrap_or(""), until = q.until.as_deref().unwrap_or(""),
        error = filter.error.as_deref().unwrap_or(""), "dead letters selected by an admin request"
    );
    let changed = Some(if q.dry_run { 0 } else { matched });
    let (replayed, deleted) = if action == BulkAction::Replay { (changed, None) } else { (None, changed) };
    Ok(Json(BulkResult {
        replayed,
        deleted,
        matched,
        scanned,
        dry_run: q.dry_run,
        done,
        cursor: (!done).then(|| format!("{scan}.{until_ms}")),
        until: rfc3339_text(until_ms),
    }))
}

/// Replay the dead letters a filter selects (all of them without one): due now, attempts reset
///
/// Works for up to 2 s, then answers with done false and a cursor: send the same request with
/// it to go on. With dryRun it only counts.
#[utoipa::path(post, path = "/v1/dead/replay", operation_id = "replayDead", params(BulkQuery), responses(
    (status = 200, description = "What was selected and replayed", body = BulkResult),
    (status = 400, description = "Bad time, status, error, limit or cursor", body = ErrorBody),
))]
async fn replay_dead(
    State(relay): State<Arc<AppState>>,
    query: Result<Query<BulkQuery>, QueryRejection>,
) -> ApiResult<BulkResult> {
    let Query(q) = query?;
    bulk(&relay, BulkAction::Replay, q).await
}

/// Delete the dead letters a filter selects (their dedup entries stay)
///
/// Needs a filter, or all=true for every dead letter. Paged like replayDead; with dryRun it
/// only counts.
#[utoipa::path(post, path = "/v1/dead/delete", operation_id = "deleteDead", params(BulkQuery), responses(
    (status = 200, description = "What was selected and deleted", body = BulkResult),
    (status = 400, description = "No filter, or a bad time, status, error, limit or cursor", body = ErrorBody),
))]
async fn delete_dead(
    State(relay): State<Arc<AppState>>,
    query: Result<Query<BulkQuery>, QueryRejection>,
) -> ApiResult<BulkResult> {
    let Query(q) = query?;
    bulk(&relay, BulkAction::Delete, q).await
}

/// Delete an event's payload and metadata (its dedup entry stays)
#[utoipa::path(delete, path = "/v1/events/{id}", operation_id = "deleteEvent", params(ID), responses(
    (status = 400, description = "Not an event id (empty, too long, or with control characters)", body = ErrorBody),
    (status = 204, description = "Deleted"),
    (status = 404, description = "No such event", body = ErrorBody),
    (status = 409, description = "The event is being delivered right now", body = ErrorBody),
))]
async fn delete(
    State(relay): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = event_id(path)?;
    match relay.store.delete(&id).await? {
        Deleted::Deleted => {
            relay.wake_worker(); // deleting the first event of an ordering key releases the next
            tracing::info!(event_id = %id, "deleted by an admin request");
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("event {:?} is being delivered right now; delete it once this attempt ends", id.as_str()),
        )),
        Deleted::NotFound => Err(ApiError::not_found(&id)),
    }
}

/// Queue figures and the destination gate
#[utoipa::path(get, path = "/v1/stats", operation_id = "getStats", responses(
    (status = 200, description = "Figures", body = Stats),
))]
async fn stats(State(relay): State<Arc<AppState>>) -> ApiResult<Stats> {
    let s = relay.store.stats().await?;
    let cfg = relay.config();
    let gate = crate::delivery::gate_policy(cfg);
    let d = relay.store.destination(&gate).await?;
    let circuit = cfg.delivery.circuit_breaker.as_ref().map(|b| Circuit {
        state: match d.circuit {
            CircuitState::Closed => CircuitStateName::Closed,
            CircuitState::Open => CircuitStateName::Open,
            CircuitState::HalfOpen => CircuitStateName::HalfOpen,
        },
        since: d.since_ms.map(rfc3339_text),
        consecutive_failures: d.consecutive_failures,
        failure_threshold: b.failure_threshold,
        next_probe_at: d.open_until_ms.map(rfc3339_text),
    });
    let rate_limit = cfg.delivery.rate_limit.as_ref().map(|r| RateLimitFigures {
        per_second: r.per_second,
        burst: r.burst(),
        tokens: d.tokens.map_or(0, |t| t.max(0.0).floor() as u64),
    });
    Ok(Json(Stats {
        due: s.due,
        in_flight: s.in_flight,
        dead: s.dead,
        oldest_due_age_seconds: s.oldest_due_age.map_or(0, |d| d.as_secs()),
        blocked: s.blocked,
        waiting_keys: s.waiting_keys,
        oldest_blocked: s.oldest_blocked.as_ref().map(|(key, since)| OldestBlocked {
            key: key.clone(),
            age_seconds: ((s.now_ms - since).max(0) / 1000) as u64,
        }),
        destination: Destination { paused_until: d.paused_until_ms.map(rfc3339_text), circuit, rate_limit },
    }))
}

/// This document
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "getOpenApi", security(()), responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
))]
async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The `{id}` path parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a schema only: handlers take the id as a string
struct ID {
    /// The event id (percent-encode `/`): 1 to 512 bytes, no control characters.
    #[param(min_length = 1, max_length = 512, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "webhook-relay admin API",
        description = "Inspect, replay and delete the relay's stored events. Served on adminListen; every operation but this document needs `Authorization: Bearer <token>` (the token is in the environment variable named by admin.tokenEnv)."
    ),
    paths(list, show, delete, replay, replay_dead, delete_dead, stats, openapi),
    security(("bearer" = [])),
    modifiers(&Common)
)]
struct ApiDoc;

/// The bearer scheme, and the answers every protected operation may give.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |d: &str| {
            ResponseBuilder::new()
                .description(d)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                if op.operation_id.as_deref() == Some("getOpenApi") {
                    continue;
                }
                op.responses.responses.insert("401".into(), error("Missing or wrong bearer token").into());
                op.responses
                    .responses
                    .insert("503".into(), error("Redis unavailable, or no admin token configured").into());
            }
        }
    }
}

/// The OpenAPI 3.1 document of this API, generated from the handlers and the wire types.
pub fn openapi_document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret ", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn cursors_round_trip_and_name_their_state() {
        let c = ListCursor { score_ms: 1_777_000_000_123, id: EventId::new("a:b/c").unwrap() };
        let (old, new) = (ListOrder::OldestFirst, ListOrder::NewestFirst);
        let text = encode_cursor(EventState::Dead, old, &c);
        assert_eq!(decode_cursor(EventState::Dead, old, &text).unwrap(), c);
        assert_eq!(decode_cursor(EventState::Due, old, &text).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert!(decode_cursor(EventState::Dead, old, "!!").is_err());
        assert!(decode_cursor(EventState::Dead, old, &URL_SAFE_NO_PAD.encode("dead:x:id")).is_err());
        let newest = encode_cursor(EventState::Dead, new, &c);
        assert_eq!(decode_cursor(EventState::Dead, new, &newest).unwrap(), c);
        let e = decode_cursor(EventState::Dead, old, &newest).unwrap_err();
        assert!(e.message.contains("order newest"), "{}", e.message);
        assert!(decode_cursor(EventState::Dead, new, &text).unwrap_err().message.contains("order oldest"));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("since", "2026-05-01T12:00:00+02:00").unwrap(), 1_777_629_600_000);
        assert!(parse_time("since", "yesterday").is_err());
    }
}
