//! The bearer-token admin API under `/v1/`: list, show, replay and delete events, replay or
//! delete the dead letters a filter selects (time range, last status, error text; with a
//! dry run), queue stats, and the OpenAPI document describing it.
//!
//! The router is built from one table of operations ([`operations`]); the OpenAPI
//! document is checked against that table by a test, so neither can drift from the other.
//! Listings page by a cursor holding the (score, id) of the last item, a position rather
//! than an offset, so paging stays stable while events move between states.

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
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use webhook_relay_store::{
    BulkAction, DeadFilter, Deleted, EventId, EventMeta, EventState, ListCursor, Replayed, StatusFilter, StoreError,
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
        (self.status, Json(json!({ "error": self.message }))).into_response()
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

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

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

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_state(s: &str) -> Result<EventState, ApiError> {
    match s {
        "due" => Ok(EventState::Due),
        "inflight" => Ok(EventState::InFlight),
        "dead" => Ok(EventState::Dead),
        other => Err(ApiError::bad_request(format!("state must be due, inflight or dead (got {other:?})"))),
    }
}

fn state_name(s: EventState) -> &'static str {
    match s {
        EventState::Due => "due",
        EventState::InFlight => "inflight",
        EventState::Dead => "dead",
        EventState::Unknown => "unknown",
    }
}

/// The opaque cursor: base64url of `<state>:<score ms>:<id>`.
pub fn encode_cursor(state: EventState, c: &ListCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", state_name(state), c.score_ms, c.id))
}

fn decode_cursor(state: EventState, text: &str) -> Result<ListCursor, ApiError> {
    let bad = || ApiError::bad_request("cursor is not one this API returned; start without a cursor");
    let raw = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, ':');
    let (Some(s), Some(score), Some(id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    if parse_state(s).map_err(|_| bad())? != state {
        return Err(ApiError::bad_request(format!(
            "cursor belongs to a listing of state {s}, not {}",
            state_name(state)
        )));
    }
    Ok(ListCursor { score_ms: score.parse().map_err(|_| bad())?, id: EventId::new(id).map_err(|_| bad())? })
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> Value {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text.trim()).map(|t| t.timestamp_millis()).map_err(|e| {
        ApiError::bad_request(format!("{name} must be an RFC 3339 time like 2026-05-01T12:00:00Z (got {text:?}: {e})"))
    })
}

/// The fields every listing item and detail share.
fn summary(id: &EventId, state: EventState, score_ms: i64, attempts: u32, meta: &EventMeta) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id.as_str()));
    m.insert("state".into(), json!(state_name(state)));
    m.insert("attempts".into(), json!(attempts));
    let at = match state {
        EventState::Due => Some("nextAttemptAt"),
        EventState::InFlight => Some("leaseExpiresAt"),
        EventState::Dead => Some("deadAt"),
        EventState::Unknown => None,
    };
    if let Some(at) = at {
        m.insert(at.into(), rfc3339(score_ms));
    }
    m.insert("lastStatus".into(), json!(meta.last_status));
    m.insert("lastError".into(), json!(meta.last_error));
    m
}

fn event_id(path: Result<Path<String>, PathRejection>) -> Result<EventId, ApiError> {
    let Path(id) = path?;
    EventId::new(id).map_err(ApiError::bad_request)
}

async fn list(State(relay): State<Arc<AppState>>, query: Result<Query<ListQuery>, QueryRejection>) -> ApiResult {
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
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| decode_cursor(state, c)).transpose()?;
    let page = relay.store.list(state, limit, after.as_ref()).await?;
    let items: Vec<Value> =
        page.events.iter().map(|e| Value::Object(summary(&e.id, e.state, e.score_ms, e.attempts, &e.meta))).collect();
    Ok(Json(json!({
        "items": items,
        "nextCursor": page.next.map(|c| encode_cursor(state, &c)),
    })))
}

async fn show(State(relay): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = event_id(path)?;
    let e = relay.store.get(&id).await?.ok_or_else(|| ApiError::not_found(&id))?;
    let mut m = summary(&e.id, e.state, e.score_ms, e.attempts, &e.meta);
    m.insert("receivedAt".into(), rfc3339(e.meta.received_at));
    m.insert("contentType".into(), json!(e.meta.content_type));
    m.insert("lastAttemptAt".into(), e.meta.last_attempt_at.map_or(Value::Null, rfc3339));
    let (encoding, payload) = match serde_json::from_slice::<Value>(&e.body) {
        Ok(v) => ("json", v),
        Err(_) => ("base64", Value::String(STANDARD.encode(&e.body))),
    };
    m.insert("payloadEncoding".into(), json!(encoding));
    m.insert("payload".into(), payload);
    Ok(Json(Value::Object(m)))
}

async fn replay(State(relay): State<Arc<AppState>>, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let id = event_id(path)?;
    let from = match relay.store.replay(&id).await? {
        Replayed::FromDead => "dead",
        Replayed::FromDue => "due",
        Replayed::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("event {:?} is being delivered right now; replay it once this attempt ends", id.as_str()),
            ));
        }
        Replayed::NotFound => return Err(ApiError::not_found(&id)),
    };
    relay.wake_worker();
    tracing::info!(event_id = %id, from, "replayed by an admin request");
    Ok(Json(json!({ "id": id.as_str(), "replayed": true, "previousState": from })))
}

/// The filter and paging of a bulk action on dead letters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkQuery {
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    error: Option<String>,
    #[serde(default)]
    dry_run: bool,
    cursor: Option<String>,
    /// Look at about this many dead letters in this request at most (default: as many as
    /// [`BULK_BUDGET`] allows).
    limit: Option<usize>,
    /// Delete: required when no filter is given (deleting every dead letter is deliberate).
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

async fn bulk(relay: &AppState, action: BulkAction, q: BulkQuery) -> ApiResult {
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
    if action == BulkAction::Replay && !q.dry_run && matched > 0 {
        relay.wake_worker();
    }
    tracing::info!(
        action = verb, dry_run = q.dry_run, matched, scanned, done, status = %filter.status,
        since = q.since.as_deref().unwrap_or(""), until = q.until.as_deref().unwrap_or(""),
        error = filter.error.as_deref().unwrap_or(""), "dead letters selected by an admin request"
    );
    let changed = if q.dry_run { 0 } else { matched };
    Ok(Json(json!({
        verb: changed,
        "matched": matched,
        "scanned": scanned,
        "dryRun": q.dry_run,
        "done": done,
        "cursor": if done { Value::Null } else { json!(format!("{scan}.{until_ms}")) },
        "until": rfc3339(until_ms),
    })))
}

async fn replay_dead(State(relay): State<Arc<AppState>>, query: Result<Query<BulkQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query?;
    bulk(&relay, BulkAction::Replay, q).await
}

async fn delete_dead(State(relay): State<Arc<AppState>>, query: Result<Query<BulkQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query?;
    bulk(&relay, BulkAction::Delete, q).await
}

async fn delete(
    State(relay): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = event_id(path)?;
    match relay.store.delete(&id).await? {
        Deleted::Deleted => {
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

async fn stats(State(relay): State<Arc<AppState>>) -> ApiResult {
    let s = relay.store.stats().await?;
    let cfg = relay.config();
    let gate = crate::delivery::gate_policy(cfg);
    let d = relay.store.destination(&gate).await?;
    let time = |ms: Option<i64>| ms.map_or(Value::Null, rfc3339);
    let circuit = match &cfg.delivery.circuit_breaker {
        None => Value::Null,
        Some(b) => json!({
            "state": d.circuit.as_str(),
            "since": time(d.since_ms),
            "consecutiveFailures": d.consecutive_failures,
            "failureThreshold": b.failure_threshold,
            "nextProbeAt": time(d.open_until_ms),
        }),
    };
    let rate_limit = match &cfg.delivery.rate_limit {
        None => Value::Null,
        Some(r) => json!({
            "perSecond": r.per_second,
            "burst": r.burst(),
            "tokens": d.tokens.map_or(0, |t| t.max(0.0).floor() as u64),
        }),
    };
    Ok(Json(json!({
        "due": s.due,
        "inFlight": s.in_flight,
        "dead": s.dead,
        "oldestDueAgeSeconds": s.oldest_due_age.map_or(0, |d| d.as_secs()),
        "destination": {
            "pausedUntil": time(d.paused_until_ms),
            "circuit": circuit,
            "rateLimit": rate_limit,
        },
    })))
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 document of this API.
pub fn openapi_document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "description": "The event id (percent-encode `/`)", "schema": {"type": "string"}});
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |d: &str, schema: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let common = |mut r: Map<String, Value>| {
        r.insert("401".into(), err("Missing or wrong bearer token"));
        r.insert("503".into(), err("Redis unavailable, or no admin token configured"));
        Value::Object(r)
    };
    let responses = |pairs: Vec<(&str, Value)>| common(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let time = json!({"type": "string", "format": "date-time"});
    let bulk_params = vec![
        json!({"name": "since", "in": "query", "description": "Dead-lettered at or after", "schema": time.clone()}),
        json!({"name": "until", "in": "query", "description": "Dead-lettered at or before (at most now)", "schema": time.clone()}),
        json!({"name": "status", "in": "query", "description": "Last status: a code (503), a class (5xx) or none (no HTTP answer: timeouts, connection errors)", "schema": {"type": "string", "pattern": "^([1-5][0-9][0-9]|[1-5][xX][xX]|none|any)$"}}),
        json!({"name": "error", "in": "query", "description": "Text the last error contains (case-insensitive)", "schema": {"type": "string", "maxLength": MAX_ERROR_FILTER}}),
        json!({"name": "dryRun", "in": "query", "description": "Only count", "schema": {"type": "boolean", "default": false}}),
        json!({"name": "cursor", "in": "query", "description": "cursor of the previous answer, to go on", "schema": {"type": "string"}}),
        json!({"name": "limit", "in": "query", "description": "Look at about this many dead letters in this request at most (steps of up to 500; a small set is looked at whole); default: what 2 s allow", "schema": {"type": "integer", "minimum": 1}}),
    ];
    let mut delete_params = bulk_params.clone();
    delete_params.push(json!({"name": "all", "in": "query", "description": "Delete every dead letter when no filter is given", "schema": {"type": "boolean", "default": false}}));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "webhook-relay admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Inspect, replay and delete the relay's stored events. Served on adminListen; every operation but this document needs `Authorization: Bearer <token>` (the token is in the environment variable named by admin.tokenEnv)."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {"get": {
                "operationId": "listEvents",
                "summary": "Events of one state, oldest first, paged by cursor",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["due", "inflight", "dead"], "default": "dead"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
                    {"name": "cursor", "in": "query", "description": "nextCursor of the previous page", "schema": {"type": "string"}}
                ],
                "responses": responses(vec![("200", ok("A page", "EventPage")), ("400", err("Bad state, limit or cursor"))])
            }},
            "/v1/events/{id}": {
                "get": {
                    "operationId": "getEvent",
                    "summary": "One event with its payload",
                    "parameters": [id.clone()],
                    "responses": responses(vec![("200", ok("The event", "EventDetail")), ("404", err("No such event"))])
                },
                "delete": {
                    "operationId": "deleteEvent",
                    "summary": "Delete an event's payload and metadata (its dedup entry stays)",
                    "parameters": [id.clone()],
                    "responses": responses(vec![
                        ("204", json!({"description": "Deleted"})),
                        ("404", err("No such event")),
                        ("409", err("The event is being delivered right now"))
                    ])
                }
            },
            "/v1/events/{id}/replay": {"post": {
                "operationId": "replayEvent",
                "summary": "Make a dead or due event due now, attempts reset",
                "parameters": [id],
                "responses": responses(vec![
                    ("200", ok("Replayed", "Replayed")),
                    ("404", err("No such event")),
                    ("409", err("The event is being delivered right now"))
                ])
            }},
            "/v1/dead/replay": {"post": {
                "operationId": "replayDead",
                "summary": "Replay the dead letters a filter selects (all of them without one): due now, attempts reset",
                "description": "Works for up to 2 s, then answers with done false and a cursor: send the same request with it to go on. With dryRun it only counts.",
                "parameters": bulk_params.clone(),
                "responses": responses(vec![("200", ok("What was selected and replayed", "BulkResult")), ("400", err("Bad time, status, error or cursor"))])
            }},
            "/v1/dead/delete": {"post": {
                "operationId": "deleteDead",
                "summary": "Delete the dead letters a filter selects (their dedup entries stay)",
                "description": "Needs a filter, or all=true for every dead letter. Paged like replayDead; with dryRun it only counts.",
                "parameters": delete_params,
                "responses": responses(vec![("200", ok("What was selected and deleted", "BulkResult")), ("400", err("No filter, or a bad time, status, error or cursor"))])
            }},
            "/v1/stats": {"get": {
                "operationId": "getStats",
                "summary": "Queue figures",
                "responses": responses(vec![("200", ok("Figures", "Stats"))])
            }},
            "/v1/openapi.json": {"get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "EventSummary": {
                    "type": "object",
                    "required": ["id", "state", "attempts"],
                    "properties": {
                        "id": {"type": "string"},
                        "state": {"type": "string", "enum": ["due", "inflight", "dead", "unknown"]},
                        "attempts": {"type": "integer", "description": "Attempts started since it was received or last replayed"},
                        "nextAttemptAt": time.clone(),
                        "leaseExpiresAt": time.clone(),
                        "deadAt": time.clone(),
                        "lastStatus": {"type": ["integer", "null"], "description": "HTTP status of the last attempt"},
                        "lastError": {"type": ["string", "null"]}
                    }
                },
                "EventPage": {
                    "type": "object",
                    "required": ["items", "nextCursor"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/EventSummary"}},
                        "nextCursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page; null at the end"}
                    }
                },
                "EventDetail": {
                    "allOf": [{"$ref": "#/components/schemas/EventSummary"}, {
                        "type": "object",
                        "required": ["receivedAt", "contentType", "payloadEncoding", "payload"],
                        "properties": {
                            "receivedAt": time.clone(),
                            "contentType": {"type": "string"},
                            "lastAttemptAt": {"type": ["string", "null"], "format": "date-time"},
                            "payloadEncoding": {"type": "string", "enum": ["json", "base64"]},
                            "payload": {"description": "The body as JSON when it parses, else a base64 string"}
                        }
                    }]
                },
                "Replayed": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "replayed": {"type": "boolean"},
                        "previousState": {"type": "string", "enum": ["dead", "due"]}
                    }
                },
                "BulkResult": {
                    "type": "object",
                    "required": ["matched", "scanned", "dryRun", "done", "cursor", "until"],
                    "properties": {
                        "replayed": {"type": "integer", "description": "replayDead: how many were replayed (0 on a dry run)"},
                        "deleted": {"type": "integer", "description": "deleteDead: how many were deleted (0 on a dry run)"},
                        "matched": {"type": "integer", "description": "How many the filter selected in this request"},
                        "scanned": {"type": "integer", "description": "Dead letters looked at in this request"},
                        "dryRun": {"type": "boolean"},
                        "done": {"type": "boolean", "description": "false: send the request again with cursor to go on"},
                        "cursor": {"type": ["string", "null"]},
                        "until": {"type": "string", "format": "date-time", "description": "The end of the time range, fixed by the first request"}
                    }
                },
                "Stats": {
                    "type": "object",
                    "required": ["due", "inFlight", "dead", "oldestDueAgeSeconds", "destination"],
                    "properties": {
                        "due": {"type": "integer"},
                        "inFlight": {"type": "integer"},
                        "dead": {"type": "integer"},
                        "oldestDueAgeSeconds": {"type": "integer", "description": "Age of the oldest undelivered event; 0 when none"},
                        "destination": {"$ref": "#/components/schemas/Destination"}
                    }
                },
                "Destination": {
                    "type": "object",
                    "description": "The destination gate shared by all replicas",
                    "required": ["pausedUntil", "circuit", "rateLimit"],
                    "properties": {
                        "pausedUntil": {"type": ["string", "null"], "format": "date-time", "description": "No attempts until then: a 429 or 503 with Retry-After asked for it"},
                        "circuit": {
                            "type": ["object", "null"],
                            "description": "null without delivery.circuitBreaker",
                            "required": ["state", "since", "consecutiveFailures", "failureThreshold", "nextProbeAt"],
                            "properties": {
                                "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                                "since": {"type": ["string", "null"], "format": "date-time", "description": "When it opened (open, half_open) or last closed"},
                                "consecutiveFailures": {"type": "integer"},
                                "failureThreshold": {"type": "integer"},
                                "nextProbeAt": {"type": ["string", "null"], "format": "date-time", "description": "While open: when one probe attempt may go"}
                            }
                        },
                        "rateLimit": {
                            "type": ["object", "null"],
                            "description": "null without delivery.rateLimit",
                            "required": ["perSecond", "burst", "tokens"],
                            "properties": {
                                "perSecond": {"type": "number"},
                                "burst": {"type": "integer"},
                                "tokens": {"type": "integer", "description": "Attempts that may start right now"}
                            }
                        }
                    }
                }
            }
        }
    })
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
        let text = encode_cursor(EventState::Dead, &c);
        assert_eq!(decode_cursor(EventState::Dead, &text).unwrap(), c);
        assert_eq!(decode_cursor(EventState::Due, &text).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert!(decode_cursor(EventState::Dead, "!!").is_err());
        assert!(decode_cursor(EventState::Dead, &URL_SAFE_NO_PAD.encode("dead:x:id")).is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(parse_time("since", "2026-05-01T12:00:00+02:00").unwrap(), 1_777_629_600_000);
        assert!(parse_time("since", "yesterday").is_err());
    }
}
