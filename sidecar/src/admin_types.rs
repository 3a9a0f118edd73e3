//! The admin API's wire format, spelled once: the request and response bodies of `/v1/`,
//! serialized by the server ([`admin_api`](crate::admin_api)), deserialized by the `dlq` CLI
//! ([`cli`](crate::cli)), and described by the generated OpenAPI document (their `ToSchema`).
//! Times are RFC 3339 UTC strings with milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: String,
}

/// The state of a stored event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Due,
    Inflight,
    Dead,
    /// Waiting behind the event of its ordering key that goes first (`delivery.ordering`).
    Blocked,
    Unknown,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Due => "due",
            StateName::Inflight => "inflight",
            StateName::Dead => "dead",
            StateName::Blocked => "blocked",
            StateName::Unknown => "unknown",
        }
    }
}

/// An event as listed: its state, attempts and last outcome, no payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    pub id: String,
    pub state: StateName,
    /// Attempts started since it was received or last replayed.
    pub attempts: u32,
    /// For a due event: when it is attempted next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// For an event in flight: when its lease expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub lease_expires_at: Option<String>,
    /// For a dead letter: when it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub dead_at: Option<String>,
    /// For an event waiting behind its ordering key: since when (received or replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub waiting_since: Option<String>,
    /// HTTP status of the last attempt (none: no attempt yet, or no HTTP answer).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// How [`EventDetail::payload`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The body parsed as JSON and is given as that JSON.
    Json,
    /// The body is given as a base64 string.
    Base64,
}

/// One event with its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    pub content_type: String,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    /// The W3C `traceparent` it was received with, in version 00 form; each delivery
    /// attempt sends the same trace id and flags with a span id of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The `tracestate` received with that `traceparent`, sent on with every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Its ordering key (`delivery.ordering.keyPointer`), when it was stored with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub payload_encoding: PayloadEncoding,
    /// The body as JSON when it parses, else a base64 string.
    pub payload: Value,
}

/// A page of a listing, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub items: Vec<EventSummary>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// What replaying one event did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    pub id: String,
    pub replayed: bool,
    /// `dead` or `due`.
    pub previous_state: StateName,
    /// A dead letter of an ordering key now waits (state `blocked`) behind the event of its
    /// key in flight, or one received before it; false: due now.
    #[serde(default)]
    pub waiting: bool,
}

/// What one bulk replay or delete request selected and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// Replay: how many were replayed (0 on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// Delete: how many were deleted (0 on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// How many the filter selected in this request.
    pub matched: u64,
    /// Dead letters looked at in this request.
    pub scanned: u64,
    pub dry_run: bool,
    /// false: send the request again with `cursor` to go on.
    pub done: bool,
    pub cursor: Option<String>,
    /// The end of the time range, fixed by the first request.
    #[schema(format = DateTime)]
    pub until: String,
}

/// Queue figures and the destination gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub due: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Age of the oldest undelivered event; 0 when none.
    pub oldest_due_age_seconds: u64,
    /// Events waiting behind the event of their ordering key that goes first
    /// (`delivery.ordering`; 0 without it).
    #[serde(default)]
    pub blocked: u64,
    /// Ordering keys with events waiting.
    #[serde(default)]
    pub waiting_keys: u64,
    /// The ordering key of the event that has waited longest; null when none waits.
    #[serde(default)]
    pub oldest_blocked: Option<OldestBlocked>,
    pub destination: Destination,
}

/// The ordering key whose waiting event has waited longest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OldestBlocked {
    pub key: String,
    /// How long that event has waited (since received or replayed).
    pub age_seconds: u64,
}

/// The destination gate shared by all replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// No attempts until then: a 429 or 503 with Retry-After asked for it.
    #[schema(format = DateTime)]
    pub paused_until: Option<String>,
    /// Null without `delivery.circuitBreaker`.
    pub circuit: Option<Circuit>,
    /// Null without `delivery.rateLimit`.
    pub rate_limit: Option<RateLimitFigures>,
}

/// A circuit breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitStateName {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitStateName {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitStateName::Closed => "closed",
            CircuitStateName::Open => "open",
            CircuitStateName::HalfOpen => "half_open",
        }
    }
}

/// The circuit breaker's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Circuit {
    pub state: CircuitStateName,
    /// When it opened (open, half_open) or last closed.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    /// While open: when one probe attempt may go.
    #[schema(format = DateTime)]
    pub next_probe_at: Option<String>,
}

/// The rate limit and its bucket now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitFigures {
    pub per_second: f64,
    pub burst: u32,
    /// Attempts that may start right now.
    pub tokens: u64,
}
