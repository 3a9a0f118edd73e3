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
    /// The W3C trace context received with it (`traceparent`, then `\n` and `tracestate`
    /// if one came), kept so every attempt continues the sender's trace.
    pub trace_context: Option<String>,
    /// Its ordering key (`delivery.ordering`): events with the same key are delivered one at
    /// a time in the order they were stored. `None` (or empty): unordered.
    pub ordering_key: Option<String>,
}

/// What intake's enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored and due now; `at_ms` is the server's time of receipt.
    Accepted { at_ms: i64 },
    /// Seen within the dedup window, or still stored: not stored again.
    Duplicate,
}

/// What is kept of an event besides its body (in its record in `whr:{R}:ev`).
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
    /// The W3C trace context it was received with (see [`NewEvent::trace_context`]); in
    /// `whr:{R}:trace`, not in the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
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
    /// What the destination gate said (held back, or the probe).
    pub gate: crate::gate::GateReply,
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
    /// A dead letter of an ordering key, back at its place in its key's order but waiting
    /// behind the key's active event (one in flight, or one received before it).
    FromDeadWaiting,
    /// Being delivered right now; replaying it would deliver it twice at once.
    InFlight,
    /// Waiting behind the active event of its ordering key; replaying it would break the order.
    Blocked,
    NotFound,
}

/// What a dead letter does to the order of its key (`delivery.ordering.onDeadLetter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDeadLetter {
    /// The next event of the key is released.
    #[default]
    Continue,
    /// The key waits until the dead letter is replayed (and delivered) or deleted.
    Block,
}

impl OnDeadLetter {
    pub(crate) fn arg(self) -> &'static str {
        match self {
            OnDeadLetter::Continue => "continue",
            OnDeadLetter::Block => "block",
        }
    }
}

/// Queue figures as Redis sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub due: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Events waiting behind the active event of their ordering key.
    pub blocked: u64,
    /// Ordering keys with events waiting.
    pub waiting_keys: u64,
    /// The ordering key of the event that has waited longest, and since when (Unix ms).
    #[serde(skip)]
    pub oldest_blocked: Option<(String, i64)>,
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
    /// Waiting behind the active event of its ordering key (never attempted while so).
    Blocked,
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
    /// Its ordering key, if it was stored with one.
    pub ordering_key: Option<String>,
}

/// Most events one [`Store::list`](crate::Store::list) call returns.
pub const MAX_LIST: usize = 10_000;

/// The order of a listing: by score (due time, lease deadline, dead-lettered at), then id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListOrder {
    #[default]
    OldestFirst,
    NewestFirst,
}

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

/// An event's record as stored in `whr:{R}:ev` (see `store/README.md`):
/// `<attempts> <receivedAt> <seenUntil> <lastAttemptAt> <lastStatus> <ctLen> <errLen>\n`,
/// then the content type, the last error and the body. A record that does not parse (a hand
/// edit, a foreign writer) is logged and read as all body with default metadata everywhere:
/// the event is still delivered, listed and shown, as the scripts read it too.
pub(crate) struct Record {
    pub meta: EventMeta,
    /// Where the body starts in the record.
    pub body_at: usize,
}

pub(crate) fn decode_record(record: &[u8], id: &str) -> Record {
    parse_record(record).unwrap_or_else(|| {
        tracing::warn!(event_id = %id, "event record has no valid header; reading it all as the body");
        Record { meta: EventMeta::default(), body_at: 0 }
    })
}

fn parse_record(r: &[u8]) -> Option<Record> {
    let nl = r.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&r[..nl]).ok()?;
    let mut f = head.split(' ').map(|n| n.parse::<u64>().ok());
    let mut next = || f.next().flatten();
    let (_attempts, received, _seen, last_at, last_status, ct_len, err_len) =
        (next()?, next()?, next()?, next()?, next()?, next()? as usize, next()? as usize);
    let ct_end = (nl + 1).checked_add(ct_len).filter(|&e| e <= r.len())?;
    let err_end = ct_end.checked_add(err_len).filter(|&e| e <= r.len())?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let meta = EventMeta {
        received_at: received as i64,
        content_type: text(&r[nl + 1..ct_end]),
        last_status: u16::try_from(last_status).ok().filter(|&s| s > 0),
        last_error: (err_len > 0).then(|| text(&r[ct_end..err_end])),
        last_attempt_at: (last_at > 0).then_some(last_at as i64),
        trace_context: None,
    };
    Some(Record { meta, body_at: err_end })
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

/// A trace context as the scripts answer it: `''` for none.
pub(crate) fn trace_context(v: Value) -> Result<Option<String>, String> {
    let b = bytes(v)?;
    Ok((!b.is_empty()).then(|| String::from_utf8_lossy(&b).into_owned()))
}

/// Parses the CLAIM script's reply.
pub(crate) fn parse_claim(v: Value) -> Result<Claim, String> {
    let Value::Array(parts) = v else { return Err(format!("claim reply: {v:?}")) };
    let [now, next_due, next_lease, recovered, events, gate]: [Value; 6] =
        parts.try_into().map_err(|p: Vec<Value>| format!("claim reply has {} parts", p.len()))?;
    let events = match events {
        Value::Array(items) => items,
        Value::Nil => vec![],
        other => return Err(format!("claim events: {other:?}")),
    };
    let mut out = Vec::with_capacity(events.len());
    for item in events {
        let Value::Array(f) = item else { return Err("claim event is not an array".into()) };
        let [id, token, attempt, scheduled, record, deadline, trace]: [Value; 7] =
            f.try_into().map_err(|_| "claim event has the wrong arity".to_string())?;
        let id = String::from_utf8(bytes(id)?).map_err(|e| e.to_string())?;
        let record = Bytes::from(bytes(record)?);
        let Record { mut meta, body_at } = decode_record(&record, &id);
        meta.trace_context = trace_context(trace)?;
        out.push(ClaimedEvent {
            lease: Lease { id: EventId(id), token: int(&token)? as u64, deadline_ms: int(&deadline)? },
            attempt: int(&attempt)? as u32,
            scheduled_ms: int(&scheduled)?,
            body: record.slice(body_at..),
            meta,
        });
    }
    Ok(Claim {
        now_ms: int(&now)?,
        events: out,
        next_due_ms: opt_int(&next_due)?,
        next_lease_ms: opt_int(&next_lease)?,
        recovered: int(&recovered)? as u64,
        gate: crate::gate::GateReply::parse(gate)?,
    })
}

/// Which last status a bulk action on dead letters selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    Any,
    /// Exactly this HTTP status (`503`).
    Exact(u16),
    /// Any status of this class (`5xx` is `Class(5)`).
    Class(u16),
    /// No HTTP answer: timeouts and connection errors (`none`).
    NoAnswer,
}

impl std::str::FromStr for StatusFilter {
    type Err = String;

    /// `503`, `5xx` (a class, 1 to 5), `none` (no HTTP answer) or `any`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let bad =
            || format!("{s:?} is not a status filter: give a status (503), a class (5xx) or none (no HTTP answer)");
        match s.as_str() {
            "none" => return Ok(StatusFilter::NoAnswer),
            "any" => return Ok(StatusFilter::Any),
            _ => {}
        }
        if let Some(class) = s.strip_suffix("xx") {
            return match class.parse::<u16>() {
                Ok(c @ 1..=5) => Ok(StatusFilter::Class(c)),
                _ => Err(bad()),
            };
        }
        match s.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(StatusFilter::Exact(code)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusFilter::Any => f.write_str("any"),
            StatusFilter::Exact(s) => write!(f, "{s}"),
            StatusFilter::Class(c) => write!(f, "{c}xx"),
            StatusFilter::NoAnswer => f.write_str("none"),
        }
    }
}

/// The dead letters a bulk action selects: dead-lettered within [`since_ms`, `until_ms`]
/// (Unix ms), with a matching last status and a last error containing `error`
/// (case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadFilter {
    pub since_ms: Option<i64>,
    pub until_ms: i64,
    pub status: StatusFilter,
    pub error: Option<String>,
}

/// What a bulk action does with the dead letters its filter selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    /// Count them only (a dry run).
    Count,
    /// Make them due now, attempts reset.
    Replay,
    /// Delete them (their dedup entries stay).
    Delete,
}

/// One step of a bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkStep {
    /// Where the next step starts; 0 when the scan is done.
    pub cursor: u64,
    /// Dead letters looked at by this step.
    pub scanned: u64,
    /// Of those, the ones the filter selected (and this step replayed or deleted).
    pub matched: u64,
}
