//! The delivery worker: claims due events, POSTs them downstream with bounded
//! concurrency, and records each outcome (ack, reschedule with backoff, dead-letter).
//!
//! It sleeps exactly until the earliest due score or lease deadline (capped at
//! [`IDLE_MAX`]), and intake wakes it at once when an event arrives, so first attempts
//! start immediately and retries fire close to their scheduled time.

use crate::batch::Batcher;
use crate::metrics::{AttemptOutcome, HeldLabels};
use crate::otlp::{Attr, Span, SpanKind};
use crate::receipts::ReceiptKind;
use crate::state::AppState;
use crate::trace_context::{self, new_span_id};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use webhook_relay_store::{Breaker, CircuitState, ClaimedEvent, EventMeta, GateOutcome, GatePolicy, Lease};
use webhook_relay_util::retry::{self, Backoff, Jitter, Next, Schedule};

/// Longest idle sleep: bounds how long events another replica stored wait for us.
pub const IDLE_MAX: Duration = Duration::from_secs(1);
/// Most events claimed in one script call.
const CLAIM_BATCH: usize = 256;
/// How often the dead set is trimmed by age, independent of new dead letters.
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Wait after the n-th claim in a row that failed (Redis unreachable): 200 ms doubling to 5 s.
const CLAIM_BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(200), Duration::from_secs(5), Jitter::None);
/// How an outcome write (ack, reschedule, dead-letter) is retried through a Redis blip.
const RECORD_OUTCOME: Schedule = Schedule {
    attempts: 8,
    backoff: Backoff::doubling(Duration::from_millis(50), Duration::from_secs(2), Jitter::None),
};
/// Bytes of a downstream's error body kept as `lastError`.
const ERROR_BODY_BYTES: usize = 200;

/// What an attempt's answer (or its failure) says about the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptClass {
    /// 2xx.
    Delivered,
    /// 5xx, 408, 429, timeouts, connection errors: try again later, not sooner than
    /// `retry_after` if the downstream said.
    Retry { retry_after: Option<Duration> },
    /// Any other status: retrying cannot help.
    Permanent,
}

/// Classifies an HTTP status and its `Retry-After` header (seconds or an HTTP date), as the
/// design specifies: 2xx delivered; 408, 429 and 5xx retried; anything else permanent.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> AttemptClass {
    match status {
        200..=299 => AttemptClass::Delivered,
        408 | 429 | 500..=599 => AttemptClass::Retry {
            retry_after: retry_after.and_then(|v| webhook_relay_util::retry_after::parse(v, now)),
        },
        _ => AttemptClass::Permanent,
    }
}

/// The result of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub class: AttemptClass,
    /// The HTTP status, if the downstream answered.
    pub status: Option<u16>,
    /// Why it failed (status and a bit of the body, or the transport error); `None` on 2xx.
    pub error: Option<String>,
}

/// The retry policy of a relay: `delivery.*` of its config.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Policy {
    pub fn of(cfg: &webhook_relay_api::config::DeliveryConfig) -> Self {
        Policy {
            max_attempts: cfg.max_attempts,
            backoff: Backoff {
                initial: cfg.initial_delay,
                max: cfg.max_delay,
                multiplier: cfg.multiplier,
                jitter: Jitter::Full,
            },
        }
    }
}

/// The destination gate of a relay: `delivery.rateLimit` and `delivery.circuitBreaker`; a
/// probe holds the half-open circuit for as long as an event's lease.
pub fn gate_policy(cfg: &webhook_relay_api::RelayConfig) -> GatePolicy {
    let d = &cfg.delivery;
    GatePolicy {
        rate_per_second: d.rate_limit.as_ref().map(|r| r.per_second),
        burst: d.rate_limit.as_ref().map_or(1, |r| r.burst()),
        breaker: d
            .circuit_breaker
            .as_ref()
            .map(|b| Breaker { failure_threshold: b.failure_threshold, open_for: b.open_for }),
        probe_lease: cfg.lease(),
    }
}

/// What an attempt tells the destination gate: a success; a failure, with a pause of the
/// whole destination when a 429 or 503 said `Retry-After` (capped at `max_pause`); or for a
/// permanent answer (another 4xx: the destination is up, the event is at fault) nothing, but
/// a success when it answered the half-open probe, which it proves the destination answers.
pub fn gate_outcome(attempt: &Attempt, probe: bool, max_pause: Duration) -> Option<GateOutcome> {
    match attempt.class {
        AttemptClass::Delivered => Some(GateOutcome { ok: true, probe, pause: None }),
        AttemptClass::Retry { retry_after } => {
            let asks = matches!(attempt.status, Some(429 | 503));
            let pause = retry_after.filter(|d| asks && !d.is_zero()).map(|d| d.min(max_pause));
            Some(GateOutcome { ok: false, probe, pause })
        }
        AttemptClass::Permanent => probe.then_some(GateOutcome { ok: true, probe, pause: None }),
    }
}

/// What this process knows of the shared gate, so a success is written only when it can
/// change something (a circuit not closed, or failures counted).
#[derive(Default)]
struct GateView {
    /// Consecutive failures last seen, or `u32::MAX` when the circuit was last seen not closed.
    failures: AtomicU32,
}

impl GateView {
    fn saw(&self, state: CircuitState, failures: u32) {
        let v = if state == CircuitState::Closed { failures } else { u32::MAX };
        self.failures.store(v, Ordering::Relaxed);
    }
    fn clean(&self) -> bool {
        self.failures.load(Ordering::Relaxed) == 0
    }
}

/// What to record after attempt number `number` of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Delivered: delete it.
    Ack,
    /// Failed, attempts left: due again after `delay`, with the outcome in `meta`.
    Reschedule { delay: Duration, meta: EventMeta },
    /// Failed for good (a permanent answer, or the last attempt): dead-letter it.
    Dead { meta: EventMeta, permanent: bool },
}

/// Decides what attempt `number` of an event leads to under `policy`; `meta` is the event's
/// metadata, `at_ms` when the attempt was made. Pure: the jitter comes from `rng`.
pub fn decide(
    attempt: &Attempt,
    number: u32,
    policy: &Policy,
    meta: &EventMeta,
    at_ms: i64,
    rng: &mut impl rand::Rng,
) -> Decision {
    let meta = EventMeta {
        last_status: attempt.status,
        last_error: attempt.error.clone(),
        last_attempt_at: Some(at_ms),
        ..meta.clone()
    };
    match attempt.class {
        AttemptClass::Delivered => Decision::Ack,
        AttemptClass::Retry { retry_after } if number < policy.max_attempts => {
            Decision::Reschedule { delay: policy.backoff.delay_at_least(number, retry_after, rng), meta }
        }
        AttemptClass::Retry { .. } => Decision::Dead { meta, permanent: false },
        AttemptClass::Permanent => Decision::Dead { meta, permanent: true },
    }
}

/// Runs until shutdown, then drains: in-flight deliveries finish (bounded by the
/// delivery timeout) and any still running after that are released back to `due`.
pub async fn run(relay: Arc<AppState>) {
    let cfg = relay.config().clone();
    let lease = cfg.lease();
    let gate = gate_policy(&cfg);
    let view = Arc::new(GateView::default());
    let permits = Arc::new(Semaphore::new(cfg.delivery.concurrency as usize));
    let in_flight: Arc<Mutex<HashMap<u64, Lease>>> = Arc::default();
    let acker = start_acker(relay.clone());
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    let mut pending_claim: Option<u64> = None;
    let mut last_trim = Instant::now();
    while !relay.is_shutting_down() {
        while tasks.try_join_next().is_some() {}
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                p = permits.clone().acquire_owned() => drop(p),
                _ = relay.shutting_down() => break,
            }
            continue;
        }
        let want = free.min(CLAIM_BATCH);
        // A failed claim is sent again under the same id until it answers: if the first
        // call ran and only its reply was lost, the retry returns what it claimed.
        let claim_id = pending_claim.unwrap_or_else(rand::random);
        let claim = match relay.store.claim_gated(claim_id, want, lease, &gate).await {
            Ok(c) => {
                failures = 0;
                pending_claim = None;
                c
            }
            Err(e) => {
                failures += 1;
                pending_claim = Some(claim_id);
                relay.set_redis_down(format!("claiming events failed: {e}"));
                let pause = CLAIM_BACKOFF.delay(failures);
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "could not claim events");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {},
                    _ = relay.shutting_down() => break,
                }
                continue;
            }
        };
        if claim.recovered > 0 {
            tracing::info!(recovered = claim.recovered, "took back events whose lease expired");
        }
        relay.metrics.circuit(claim.gate.state);
        if claim.gate.state != CircuitState::Closed {
            view.saw(claim.gate.state, 0);
        }
        if let Some(held) = claim.gate.held {
            // Nothing was claimed: the events stay due, in order, their attempts not counted.
            // Sleep until the gate may open (intake's wake-ups cannot open it sooner).
            relay.metrics.delivery_held.get_or_create(&HeldLabels { reason: held.as_str() }).inc();
            tracing::debug!(
                held = held.as_str(),
                wait_ms = claim.gate.wait.as_millis() as u64,
                "destination gate closed"
            );
            let next_due = claim.next_due_ms.map(|at| Duration::from_millis((at - claim.now_ms).max(0) as u64));
            let sleep = claim.gate.wait.max(next_due.unwrap_or(IDLE_MAX)).min(IDLE_MAX).max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {},
                _ = relay.shutting_down() => break,
            }
            continue;
        }
        let probe = claim.gate.probe;
        let got = claim.events.len();
        for ev in claim.events {
            let permit = permits.clone().try_acquire_owned().expect("claimed no more than free permits");
            let lateness = (claim.now_ms - ev.scheduled_ms).max(0) as f64 / 1000.0;
            relay.metrics.retry_lateness_seconds.observe(lateness);
            in_flight.lock().unwrap().insert(ev.lease.token, ev.lease.clone());
            let relay = relay.clone();
            let in_flight = in_flight.clone();
            let acker = acker.clone();
            let (gate, view) = (gate, view.clone());
            tasks.spawn(async move {
                let token = ev.lease.token;
                let attempt = deliver(&relay, &acker, ev).await;
                record_gate(&relay, &gate, &view, &attempt, probe).await;
                in_flight.lock().unwrap().remove(&token);
                drop(permit);
            });
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            match relay.store.trim_dead(relay.dead_bounds()).await {
                Ok(n) if n > 0 => tracing::info!(trimmed = n, "dropped dead letters beyond maxAge/maxEntries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not trim dead letters"),
            }
            // Keys whose first event was delivered or dead-lettered by a relay without
            // ordering (a rolling upgrade turning it on) get their next event released.
            match relay.store.heal_order().await {
                Ok(n) if n > 0 => tracing::info!(keys = n, "released ordering keys left waiting by another relay"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not check the ordering keys"),
            }
        }
        if got == want {
            continue; // there may be more due right now
        }
        let next = [claim.next_due_ms, claim.next_lease_ms].into_iter().flatten().min();
        let sleep = match next {
            Some(at) => Duration::from_millis((at - claim.now_ms).max(0) as u64).min(IDLE_MAX),
            None => IDLE_MAX,
        };
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            _ = relay.woken() => {},
            _ = tokio::time::sleep(sleep) => {},
            _ = relay.shutting_down() => break,
        }
    }
    drain(&relay, tasks, in_flight, cfg.delivery_drain()).await;
}

async fn drain(relay: &AppState, mut tasks: JoinSet<()>, in_flight: Arc<Mutex<HashMap<u64, Lease>>>, limit: Duration) {
    let running = tasks.len();
    if running > 0 {
        tracing::info!(running, "waiting for in-flight deliveries before exit");
    }
    let finished = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let left: Vec<Lease> = in_flight.lock().unwrap().drain().map(|(_, l)| l).collect();
    for lease in left {
        match relay.store.release(&lease).await {
            Ok(_) => tracing::info!(event_id = %lease.id, "released an unfinished delivery"),
            Err(e) => tracing::warn!(event_id = %lease.id, error = %e, "could not release; its lease will expire"),
        }
    }
}

/// Tells the shared gate what an attempt showed (see [`gate_outcome`]): failures and pauses
/// always, a success only when it can change something.
async fn record_gate(relay: &AppState, gate: &GatePolicy, view: &GateView, attempt: &Attempt, probe: bool) {
    let Some(outcome) = gate_outcome(attempt, probe, relay.config().delivery.max_delay) else { return };
    let breaker = gate.breaker.is_some();
    let needed = outcome.pause.is_some() || (breaker && (!outcome.ok || probe || !view.clean()));
    if !needed {
        return;
    }
    match relay.store.record_gate(outcome, gate).await {
        Ok(r) => {
            let was_open = view.failures.load(Ordering::Relaxed) == u32::MAX;
            view.saw(r.state, r.consecutive_failures);
            relay.metrics.circuit(r.state);
            if let Some(pause) = outcome.pause {
                tracing::info!(
                    pause_ms = pause.as_millis() as u64,
                    status = attempt.status,
                    "downstream asked for a pause (Retry-After): no attempts until then"
                );
            }
            if r.opened {
                let open_for = gate.breaker.map_or(Duration::ZERO, |b| b.open_for);
                tracing::warn!(
                    consecutive_failures = r.consecutive_failures,
                    open_for_ms = open_for.as_millis() as u64,
                    probe,
                    "circuit opened: no attempts to the destination until a probe succeeds"
                );
            } else if was_open && r.state == CircuitState::Closed {
                tracing::info!("circuit closed: the probe succeeded");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not record an attempt in the destination gate"),
    }
}

/// Delivers one claimed event, records the outcome and returns the attempt.
async fn deliver(relay: &AppState, acker: &Acker, ev: ClaimedEvent) -> Attempt {
    let started = Instant::now();
    let attempt = send(relay, &ev).await;
    let took = started.elapsed();
    let id = &ev.lease.id;
    let policy = Policy::of(&relay.config().delivery);
    let decision = decide(&attempt, ev.attempt, &policy, &ev.meta, unix_ms(), &mut rand::rng());
    let outcome = match decision {
        Decision::Ack => match record_outcome(relay, |retry| acker.submit((ev.lease.clone(), retry))).await {
            Some(true) => {
                tracing::debug!(event_id = %id, attempt = ev.attempt, status = attempt.status, "delivered");
                relay.receipt(ReceiptKind::Delivered, &ev.lease.id, &ev.body);
                AttemptOutcome::delivered
            }
            _ => AttemptOutcome::lease_lost,
        },
        Decision::Reschedule { delay, meta } => {
            match record_outcome(relay, |retry| relay.store.reschedule(&ev.lease, delay, &meta, retry)).await {
                Some(Some(_)) => {
                    tracing::info!(
                        event_id = %id, attempt = ev.attempt, status = attempt.status,
                        error = loggable_error(&attempt), retry_in_ms = delay.as_millis() as u64,
                        "delivery failed; retrying"
                    );
                    if delay < IDLE_MAX {
                        // The worker's sleep was planned before this retry existed: let it
                        // plan again, so the retry is made on time rather than at the next poll.
                        relay.wake_worker();
                    }
                    AttemptOutcome::retry
                }
                _ => AttemptOutcome::lease_lost,
            }
        }
        Decision::Dead { meta, permanent } => {
            let why = if permanent { "permanent failure" } else { "last attempt failed" };
            match record_outcome(relay, |retry| relay.store.dead_letter(&ev.lease, &meta, relay.dead_bounds(), retry))
                .await
            {
                Some(true) => {
                    tracing::warn!(
                        event_id = %id, attempt = ev.attempt, status = attempt.status,
                        error = loggable_error(&attempt), "dead-lettered: {why}"
                    );
                    if relay.config().delivery.ordering.is_some() {
                        relay.wake_worker(); // the next event of its key may be due now
                    }
                    // Genesys users see this text: the status or failure kind, never the downstream's body.
                    let reason = match attempt.status {
                        Some(s) => format!("downstream answered HTTP {s}"),
                        None => attempt.error.clone().unwrap_or_default(),
                    };
                    relay.receipt(ReceiptKind::Failed(reason), &ev.lease.id, &ev.body);
                    AttemptOutcome::dead
                }
                _ => AttemptOutcome::lease_lost,
            }
        }
    };
    if outcome == AttemptOutcome::lease_lost {
        tracing::warn!(event_id = %id, attempt = ev.attempt, "lease lost before the outcome was recorded; another replica owns the event");
    }
    relay.metrics.attempt(outcome, attempt.status, took);
    attempt
}

/// Most acks sent to Redis in one script call.
const ACK_BATCH: usize = 256;
/// Ack calls in Redis at once.
const ACK_PARALLEL: usize = 2;

/// Acks from all deliveries go through one [`Batcher`]: at high rates one script call
/// acks many events. Each item says whether it retries an ack whose reply was lost.
type Acker = Batcher<(Lease, bool), bool>;

fn start_acker(relay: Arc<AppState>) -> Acker {
    Batcher::start(ACK_BATCH, ACK_PARALLEL, move |leases: Vec<(Lease, bool)>| {
        let relay = relay.clone();
        async move {
            let acked = relay.store.ack_batch(&leases).await;
            // An ack may have released the next event of an ordering key: due now, and the
            // worker would otherwise find it only at its next poll (up to IDLE_MAX later).
            if relay.config().delivery.ordering.is_some() {
                relay.wake_worker();
            }
            acked
        }
    })
}

/// Runs a store write, retrying briefly through a Redis blip; `None` if it never got through
/// (the lease then expires and the event is attempted again: at-least-once). `op` gets
/// `true` on a retry: the first call may have run with its reply lost, and the store then
/// reports what that call did instead of "lease lost".
async fn record_outcome<T, E, F, Fut>(relay: &AppState, op: F) -> Option<T>
where
    E: std::fmt::Display,
    F: Fn(bool) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempt = |n: u32| op(n > 1);
    let outcome = retry::run(RECORD_OUTCOME, attempt, |e: &E, _| {
        relay.set_redis_down(format!("recording a delivery outcome failed: {e}"));
        tracing::warn!(error = %e, "could not record a delivery outcome; retrying");
        Next::Retry
    })
    .await;
    outcome.ok()
}

/// One attempt; with span export, its `attempt` span (a child of the stored parent, under the
/// span id its `traceparent` carries).
async fn send(relay: &AppState, ev: &ClaimedEvent) -> Attempt {
    let trace = ev.meta.trace_context.as_deref().and_then(trace_context::for_attempt);
    let span_id = new_span_id();
    let started = SystemTime::now();
    let attempt = send_once(relay, ev, trace.as_ref().map(|(parent, state)| (parent.child(span_id), *state))).await;
    if let Some((parent, _)) = trace.filter(|(p, _)| p.sampled()) {
        relay.span(|| attempt_span(relay, ev, &parent, span_id, started, &attempt));
    }
    attempt
}

fn attempt_span(
    relay: &AppState,
    ev: &ClaimedEvent,
    parent: &trace_context::TraceParent,
    span_id: [u8; 8],
    start: SystemTime,
    attempt: &Attempt,
) -> Span {
    let url = &relay.config().destination.url;
    let mut attributes = vec![
        ("http.request.method", Attr::from("POST")),
        ("server.address", Attr::from(url.host_str().unwrap_or(""))),
        ("server.port", Attr::Int(i64::from(url.port_or_known_default().unwrap_or(0)))),
        ("url.path", Attr::from(url.path())),
        ("webhook_relay.event_id", Attr::from(ev.lease.id.as_str())),
        ("webhook_relay.attempt", Attr::Int(i64::from(ev.attempt))),
    ];
    if let Some(s) = attempt.status {
        attributes.push(("http.response.status_code", Attr::Int(i64::from(s))));
    }
    // A downstream's error body may quote the payload: the span says the status only.
    let error = match (&attempt.class, attempt.status) {
        (AttemptClass::Delivered, _) => None,
        (_, Some(s)) => Some(http::StatusCode::from_u16(s).map(|s| s.to_string()).unwrap_or_else(|_| s.to_string())),
        (_, None) => attempt.error.clone(),
    };
    Span {
        trace_id: parent.trace_id,
        span_id,
        parent_id: Some(parent.parent_id),
        name: "attempt",
        kind: SpanKind::Client,
        start,
        end: SystemTime::now(),
        attributes,
        error,
    }
}

async fn send_once(
    relay: &AppState,
    ev: &ClaimedEvent,
    trace: Option<(trace_context::TraceParent, Option<&str>)>,
) -> Attempt {
    let cfg = relay.config();
    let content_type = if ev.meta.content_type.is_empty() { "application/json" } else { &ev.meta.content_type };
    let request = relay
        .http
        .post(cfg.destination.url.clone())
        .timeout(cfg.destination.timeout)
        .header(CONTENT_TYPE, content_type)
        .header("X-Relay-Event-Id", ev.lease.id.as_str())
        .header("X-Relay-Attempt", ev.attempt.to_string());
    let request = match trace {
        Some((parent, state)) => {
            let request = request.header("traceparent", parent.header());
            match state {
                Some(s) => request.header("tracestate", s),
                None => request,
            }
        }
        None => request,
    };
    let request = request.body(ev.body.clone());
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let error = if e.is_timeout() {
                format!("timed out after {}", webhook_relay_api::duration::format(cfg.destination.timeout))
            } else if e.is_connect() {
                format!("connection failed: {}", webhook_relay_util::root_cause(&e))
            } else {
                format!("request failed: {}", webhook_relay_util::root_cause(&e))
            };
            return Attempt { class: AttemptClass::Retry { retry_after: None }, status: None, error: Some(error) };
        }
    };
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
    let class = classify(status.as_u16(), retry_after, SystemTime::now());
    let body = read_some(response, ERROR_BODY_BYTES).await;
    let error = match class {
        AttemptClass::Delivered => None,
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            Some(if text.is_empty() { status.to_string() } else { format!("{status}: {text}") })
        }
    };
    Attempt { class, status: Some(status.as_u16()), error }
}

/// Reads at most `limit` bytes of a response (keeping the connection reusable when the
/// body is short) and drops the rest.
async fn read_some(mut response: reqwest::Response, limit: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

/// What the logs say about a failure: the transport error, but for an HTTP answer only its
/// status: a downstream's error body may quote the payload, so it stays in `lastError`.
fn loggable_error(a: &Attempt) -> &str {
    if a.status.is_some() { "" } else { a.error.as_deref().unwrap_or("") }
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap()
    }

    #[test]
    fn statuses_are_classified_as_designed() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(s, None, now()), AttemptClass::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(s, None, now()), AttemptClass::Retry { retry_after: None }, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(classify(s, Some("5"), now()), AttemptClass::Permanent, "{s}");
        }
        assert_eq!(classify(429, Some("7"), now()), AttemptClass::Retry { retry_after: Some(Duration::from_secs(7)) });
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2015 07:29:30 GMT"), now()),
            AttemptClass::Retry { retry_after: Some(Duration::from_secs(90)) }
        );
        assert_eq!(classify(503, Some("soon"), now()), AttemptClass::Retry { retry_after: None });
        assert_eq!(classify(200, Some("7"), now()), AttemptClass::Delivered, "Retry-After means nothing on a 2xx");
    }

    fn policy() -> Policy {
        Policy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2.0,
                jitter: Jitter::Full,
            },
        }
    }

    fn attempt(class: AttemptClass, status: Option<u16>, error: Option<&str>) -> Attempt {
        Attempt { class, status, error: error.map(String::from) }
    }

    #[test]
    fn the_gate_counts_failures_pauses_on_retry_after_and_closes_on_any_answer_to_a_probe() {
        let max = Duration::from_secs(60);
        let retry = |status: Option<u16>, after: Option<u64>| Attempt {
            class: AttemptClass::Retry { retry_after: after.map(Duration::from_secs) },
            status,
            error: Some("x".into()),
        };
        let pause = |a: &Attempt| gate_outcome(a, false, max).map(|o| (o.ok, o.pause));
        assert_eq!(pause(&retry(Some(503), Some(3))), Some((false, Some(Duration::from_secs(3)))));
        assert_eq!(pause(&retry(Some(429), Some(7200))), Some((false, Some(max))), "capped at maxDelay");
        assert_eq!(pause(&retry(Some(500), Some(3))), Some((false, None)), "only 429 and 503 pause");
        assert_eq!(pause(&retry(Some(503), None)), Some((false, None)));
        assert_eq!(pause(&retry(None, None)), Some((false, None)), "a timeout is a failure");
        let ok = attempt(AttemptClass::Delivered, Some(204), None);
        assert_eq!(pause(&ok), Some((true, None)));
        let gone = attempt(AttemptClass::Permanent, Some(404), Some("404"));
        assert_eq!(gate_outcome(&gone, false, max), None, "a 4xx says nothing about the destination");
        let probed = gate_outcome(&gone, true, max).unwrap();
        assert!(probed.ok && probed.probe, "but it answered the probe: the destination is up");
    }

    #[test]
    fn decisions_follow_the_attempt_and_the_policy() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let meta = EventMeta { received_at: 1, content_type: "application/json".into(), ..EventMeta::default() };
        let ok = attempt(AttemptClass::Delivered, Some(204), None);
        assert_eq!(decide(&ok, 1, &policy(), &meta, 10, &mut rng), Decision::Ack);

        let busy = attempt(AttemptClass::Retry { retry_after: Some(Duration::from_secs(30)) }, Some(503), Some("503"));
        match decide(&busy, 1, &policy(), &meta, 10, &mut rng) {
            Decision::Reschedule { delay, meta: m } => {
                assert!(delay >= Duration::from_secs(30) && delay <= Duration::from_secs(60), "{delay:?}");
                assert_eq!(
                    (m.last_status, m.last_error.as_deref(), m.last_attempt_at),
                    (Some(503), Some("503"), Some(10))
                );
                assert_eq!((m.received_at, m.content_type.as_str()), (1, "application/json"), "kept");
            }
            other => panic!("{other:?}"),
        }
        // The last attempt dead-letters even a retryable failure; a permanent one at once.
        match decide(&busy, 3, &policy(), &meta, 10, &mut rng) {
            Decision::Dead { permanent, meta: m } => assert!(!permanent && m.last_status == Some(503)),
            other => panic!("{other:?}"),
        }
        let gone = attempt(AttemptClass::Permanent, Some(410), Some("410 Gone"));
        assert!(matches!(decide(&gone, 1, &policy(), &meta, 10, &mut rng), Decision::Dead { permanent: true, .. }));
        let timeout = attempt(AttemptClass::Retry { retry_after: None }, None, Some("timed out after 5s"));
        match decide(&timeout, 2, &policy(), &meta, 10, &mut rng) {
            Decision::Reschedule { delay, .. } => {
                assert!(delay <= Duration::from_secs(2), "ceiling of retry 2: {delay:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
