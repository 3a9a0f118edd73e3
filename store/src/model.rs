//! Typed values the store reads and writes.

use bytes::Bytes;
use redis::Value;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// An event's id as the sender gave it (Genesys message id), used for dedup.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Ids are 1..=512 bytes of printable text; anything else is refused at intake.
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.is_empty() || s.len() > 512 {
            return Err("event id must be 1 to 512 bytes".into());
        }
        if s.chars().any(char::is_control) {
            return Err("event id must not contain control characters".into());
        }
        Ok(EventId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event to store: what intake received.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: EventId,
    /// The raw request body, byte for byte.
    pub body: Bytes,
    pub content_type: String,
}

/// What intake's enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored and due now; `at_ms` is the server's time of receipt.
    Accepted { at_ms: i64 },
    /// Seen within the dedup window, or still stored: not stored again.
    Duplicate,
}

/// Metadata kept beside each event's payload (`whr:{R}:meta`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMeta {
    /// Server time the event was stored, Unix ms.
    #[serde(default)]
    pub received_at: i64,
    /// Content type of the original request, sent on with the payload.
    #[serde(default)]
    pub content_type: String,
    /// HTTP status of the last attempt, if it got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Why the last attempt failed (timeout, connection refused, 503 ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last attempt was made, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<i64>,
}

/// A claim on one event: only the holder of the current token may ack, reschedule,
/// dead-letter or release it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: EventId,
    /// Fencing token, increasing across the relay (also when Redis comes back from older
    /// data); a newer claim invalidates older ones.
    pub token: u64,
    /// When the lease expires, Unix ms, server time.
    pub deadline_ms: i64,
}

/// A claimed event, ready to deliver.
#[derive(Clone, Debug)]
pub struct ClaimedEvent {
    pub lease: Lease,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    /// When this attempt was scheduled (Unix ms, server time): lateness = now - this.
    pub scheduled_ms: i64,
    pub body: Bytes,
    pub meta: EventMeta,
}

/// What one claim call returned.
#[derive(Clone, Debug)]
pub struct Claim {
    /// Server time of the claim, Unix ms.
    pub now_ms: i64,
    pub events: Vec<ClaimedEvent>,
    /// Score of the earliest remaining due event: when to look again.
    pub next_due_ms: Option<i64>,
    /// Earliest lease deadline among in-flight events: when one may need recovery.
    pub next_lease_ms: Option<i64>,
    /// Expired leases returned to due by this call.
    pub recovered: u64,
}

/// Bounds on the dead-letter set.
#[derive(Clone, Copy, Debug)]
pub struct DeadBounds {
    pub max_age: Duration,
    pub max_entries: u64,
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    NotFound,
    /// Being delivered right now; refused (its lease holder ends that state).
    InFlight,
}

/// What a replay found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    FromDead,
    FromDue,
    /// Being delivered right now; replaying it would deliver it twice at once.
    InFlight,
    NotFound,
}

/// Queue figures as Redis sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub due: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// How long the oldest undelivered (due or in-flight) event has waited.
    #[serde(skip)]
    pub oldest_due_age: Option<Duration>,
    /// Server time of the reading, Unix ms.
    #[serde(skip)]
    pub now_ms: i64,
}

/// Where an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Due,
    InFlight,
    Dead,
    Unknown,
}

/// An event as stored, for inspection.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub id: EventId,
    pub state: EventState,
    /// Next attempt (due), lease deadline (in flight) or dead-lettered at (dead), Unix ms.
    pub score_ms: i64,
    pub attempts: u32,
    pub meta: EventMeta,
    pub body: Bytes,
}

/// Most events one [`Store::list`](crate::Store::list) call returns.
pub const MAX_LIST: usize = 10_000;

/// A position in one state's set: just after the event `id` scored `score_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub score_ms: i64,
    pub id: EventId,
}

/// One event as listed (no payload).
#[derive(Clone, Debug)]
pub struct ListedEvent {
    pub id: EventId,
    pub state: EventState,
    /// Next attempt (due), lease deadline (in flight) or dead-lettered at (dead), Unix ms.
    pub score_ms: i64,
    pub attempts: u32,
    pub meta: EventMeta,
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page {
    pub events: Vec<ListedEvent>,
    /// Where the next page starts; `None` when this page reached the end.
    pub next: Option<ListCursor>,
}

/// An event's stored metadata. Corrupt JSON (a hand edit, a foreign writer) is logged and
/// read as the default everywhere: the event is still delivered, listed and shown.
pub(crate) fn decode_meta(bytes: &[u8], id: &str) -> EventMeta {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        tracing::warn!(event_id = %id, error = %e, "event metadata is not valid JSON; using defaults");
        EventMeta::default()
    })
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .ok_or_else(|| format!("not a number: {:?}", String::from_utf8_lossy(b))),
        Value::SimpleString(s) => s.parse::<f64>().map(|f| f as i64).map_err(|e| e.to_string()),
        other => Err(format!("expected a number, got {other:?}")),
    }
}

fn opt_int(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Nil => Ok(None),
        other => int(other).map(Some),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, String> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

/// Parses the CLAIM script's reply.
pub(crate) fn parse_claim(v: Value) -> Result<Claim, String> {
    let Value::Array(parts) = v else { return Err(format!("claim reply: {v:?}")) };
    let [now, next_due, next_lease, recovered, events]: [Value; 5] =
        parts.try_into().map_err(|p: Vec<Value>| format!("claim reply has {} parts", p.len()))?;
    let events = match events {
        Value::Array(items) => items,
        Value::Nil => vec![],
        other => return Err(format!("claim events: {other:?}")),
    };
    let mut out = Vec::with_capacity(events.len());
    for item in events {
        let Value::Array(f) = item else { return Err("claim event is not an array".into()) };
        let [id, token, attempt, scheduled, body, meta, deadline]: [Value; 7] =
            f.try_into().map_err(|_| "claim event has the wrong arity".to_string())?;
        let id = String::from_utf8(bytes(id)?).map_err(|e| e.to_string())?;
        let meta = decode_meta(&bytes(meta)?, &id);
        out.push(ClaimedEvent {
            lease: Lease { id: EventId(id), token: int(&token)? as u64, deadline_ms: int(&deadline)? },
            attempt: int(&attempt)? as u32,
            scheduled_ms: int(&scheduled)?,
            body: Bytes::from(bytes(body)?),
            meta,
        });
    }
    Ok(Claim {
        now_ms: int(&now)?,
        events: out,
        next_due_ms: opt_int(&next_due)?,
        next_lease_ms: opt_int(&next_lease)?,
        recovered: int(&recovered)? as u64,
    })
}
