//! The relay's Redis retry schedule and dead letters.
//!
//! Every stored event is in exactly one of: `due` (waiting, score = next attempt),
//! in flight (claimed under a lease with a fencing token), `dead`, or deleted after a 2xx.
//! Each operation here is one atomic Lua script (see [`scripts`]); the key layout is in
//! [`keys`] and documented for other tools in `store/README.md`.

pub mod conn;
pub mod gate;
pub mod keys;
pub mod model;
pub mod scripts;
pub mod sentinel;

use bytes::Bytes;
use redis::{FromRedisValue, Value};
use scripts::LuaScript;
use std::time::Duration;

pub use conn::{Conn, ConnectOptions, TlsMaterial, TlsProblem, install_crypto_provider, tls_problem};
pub use gate::{Breaker, CircuitState, DestinationState, GateOutcome, GatePolicy, GateReply, Held, Recorded};
pub use keys::Keys;
pub use model::*;
pub use sentinel::{SentinelConn, SentinelTarget, is_sentinel_url, parse_sentinel_url};

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or answered with an error; retry later.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the operation timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered something this version does not understand.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The relay's keys are in a store format newer than this version knows: a newer
    /// webhook-relay wrote them, and this one must not touch them.
    /// Stored, but fewer replicas than `redis.waitForReplicas` confirmed holding it within
    /// `redis.waitTimeout`: the caller must not acknowledge it yet (its retry is a duplicate,
    /// which waits again).
    #[error("stored, but {confirmed} of {wanted} replica(s) confirmed it within {timeout:?} (redis.waitForReplicas)")]
    NotReplicated { confirmed: u32, wanted: u32, timeout: Duration },
    #[error(
        "redis holds this relay's events in store format {found} (key {key}); this webhook-relay \
         reads format {known} at most: run the newer webhook-relay that wrote them, or another relay id"
    )]
    NewerFormat { found: String, known: u32, key: String },
}

/// What [`Store::prepare`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// Events moved from format 1 by this call (0 when the keys were already format 2,
    /// or new, or another relay migrated them meanwhile).
    pub migrated: u64,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The oldest Redis whose scripts this store runs: the scripts use `ZADD GT`/`NX` and
/// `ZRANGE` forms of 6.2, and the version is read with `redis.REDIS_VERSION` (7.0).
pub const MIN_REDIS_VERSION: (u32, u32, u32) = (7, 0, 0);

/// A Redis server version, as `INFO` and `redis.REDIS_VERSION` give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerVersion {
    pub text: String,
    /// Major, minor, patch; `None` when older than 7.0 (no `redis.REDIS_VERSION`).
    pub number: Option<(u32, u32, u32)>,
}

impl ServerVersion {
    /// From what `redis.REDIS_VERSION` returned (nil before 7.0).
    pub fn parse(reported: Option<String>) -> Self {
        let Some(text) = reported else {
            return ServerVersion { text: "older than 7.0".into(), number: None };
        };
        let mut parts = text.split('.').map(|p| p.trim().parse::<u32>().unwrap_or(0));
        let number = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        ServerVersion { text, number: Some(number) }
    }

    /// Whether the store's scripts run on it.
    pub fn supported(&self) -> bool {
        self.number.is_some_and(|n| n >= MIN_REDIS_VERSION)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One relay's schedule in Redis. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    keys: Keys,
    timeout: Duration,
    /// Replicas an enqueue waits for (`WAIT`), and for how long; 0: none.
    replicas: (u32, Duration),
    /// The connections enqueues write on, in turn, when they wait for replicas (see
    /// [`wait_for_replicas`](Self::wait_for_replicas)); empty: `conn`.
    writes: std::sync::Arc<(Vec<Conn>, std::sync::atomic::AtomicUsize)>,
    /// What a dead letter does to the order of its key (`delivery.ordering.onDeadLetter`).
    on_dead_letter: OnDeadLetter,
}

impl Store {
    /// A store for relay `relay` over an existing connection.
    pub fn new(conn: Conn, relay: &str) -> Self {
        Store {
            conn,
            keys: Keys::new(relay),
            timeout: Duration::from_secs(3),
            replicas: (0, Duration::ZERO),
            writes: Default::default(),
            on_dead_letter: OnDeadLetter::Continue,
        }
    }

    /// What a dead-lettered event of an ordering key does to its key: release the next event
    /// ([`OnDeadLetter::Continue`], the default) or hold the key until the dead letter is
    /// replayed or deleted ([`OnDeadLetter::Block`]).
    pub fn on_dead_letter(mut self, mode: OnDeadLetter) -> Self {
        self.on_dead_letter = mode;
        self
    }

    /// Makes every enqueue wait, after its script, until `replicas` replicas hold what it
    /// wrote (`WAIT`, at most `timeout`); fewer is [`StoreError::NotReplicated`]. Duplicates
    /// wait too: their first write may not have reached a replica yet. Enqueues then write on
    /// `writes`, connections of their own taken in turn: `WAIT` holds up the connection it
    /// runs on until the replicas answer, so claims and acks must not queue behind it, and
    /// concurrent batches each wait on their own connection (give one per batch in flight).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration, writes: Vec<Conn>) -> Self {
        self.replicas = (replicas, timeout);
        let writes = if replicas > 0 { writes } else { vec![] };
        self.writes = std::sync::Arc::new((writes, Default::default()));
        self
    }

    /// Bounds every operation (connection problems surface as [`StoreError::Timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key names of this relay.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying connection (for tools and tests that read keys directly).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Makes this relay's keys format 2 before anything else touches them: new keys get
    /// the format key; format-1 keys are migrated in place, [`MIGRATE_BATCH`] events per
    /// atomic call (idempotent, and safe with several relays starting at once: each call
    /// takes what is left); keys of a newer format are refused with
    /// [`StoreError::NewerFormat`], touching nothing.
    pub async fn prepare(&self) -> Result<Prepared> {
        let k = &self.keys;
        let batch = MIGRATE_BATCH.to_string();
        let mut migrated = 0u64;
        loop {
            let (found, n): (i64, u64) = self
                .run(
                    &scripts::MIGRATE,
                    &[&k.format, &k.ev, &k.lease, &k.seen, &k.fence, &k.v1.body, &k.v1.meta, &k.v1.attempts],
                    &[batch.as_bytes()],
                )
                .await?;
            migrated += n;
            match found {
                2 => return Ok(Prepared { migrated }),
                1 => continue,
                other => {
                    let found = if other < 0 { "unknown".to_string() } else { other.to_string() };
                    return Err(StoreError::NewerFormat { found, known: scripts::FORMAT, key: k.format.clone() });
                }
            }
        }
    }

    async fn run<T: FromRedisValue>(&self, script: &LuaScript, keys: &[&str], args: &[&[u8]]) -> Result<T> {
        self.run_on(&self.conn, script, keys, args).await
    }

    async fn run_on<T: FromRedisValue>(
        &self,
        conn: &Conn,
        script: &LuaScript,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T> {
        let fut = conn.clone().eval(script, keys, args);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => T::from_redis_value(v).map_err(|e| StoreError::Protocol(e.to_string())),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Stores a new event, due now, unless its id was seen within `dedup_window` or is
    /// still stored. Only an `Ok(Enqueued::Accepted)` means the event is durable in Redis.
    pub async fn enqueue(
        &self,
        id: &EventId,
        body: &[u8],
        content_type: &str,
        dedup_window: Duration,
    ) -> Result<Enqueued> {
        let event = NewEvent {
            id: id.clone(),
            body: Bytes::copy_from_slice(body),
            content_type: content_type.into(),
            trace_context: None,
            ordering_key: None,
        };
        Ok(self.enqueue_many(std::slice::from_ref(&event), dedup_window).await?[0])
    }

    /// Stores a batch in one script call, in order; one [`Enqueued`] per event. A repeated
    /// id later in the same batch is a duplicate of the earlier one.
    pub async fn enqueue_many(&self, events: &[NewEvent], dedup_window: Duration) -> Result<Vec<Enqueued>> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let k = &self.keys;
        let window = ms(dedup_window).to_string();
        let (replicas, wait) = self.replicas;
        let mut args: Vec<&[u8]> = Vec::with_capacity(2 + events.len() * 5);
        args.push(window.as_bytes());
        args.push(if replicas > 0 { b"1" } else { b"0" });
        for e in events {
            let trace = e.trace_context.as_deref().unwrap_or("");
            let key = e.ordering_key.as_deref().unwrap_or("");
            args.extend([
                e.id.as_str().as_bytes(),
                &e.body[..],
                e.content_type.as_bytes(),
                trace.as_bytes(),
                key.as_bytes(),
            ]);
        }
        let (writes, next) = &*self.writes;
        let conn = match writes.len() {
            0 => &self.conn,
            n => &writes[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n],
        };
        let o = &k.order;
        let keys =
            [&k.seen[..], &k.due, &k.ev, &k.trace, &k.wait, &o.okey, &o.ord, &o.ohead, &o.owait, &o.blocked, &o.oseq];
        let reply: Vec<i64> = if replicas > 0 {
            // The script and its WAIT in one request on one connection (see `eval_and_wait`).
            let call = conn.clone().eval_and_wait(&scripts::ENQUEUE, &keys, &args, replicas, wait);
            let (reply, confirmed) = match tokio::time::timeout(wait + self.timeout, call).await {
                Ok(r) => r?,
                Err(_) => return Err(StoreError::Timeout(wait + self.timeout)),
            };
            if confirmed < replicas {
                return Err(StoreError::NotReplicated { confirmed, wanted: replicas, timeout: wait });
            }
            Vec::<i64>::from_redis_value(reply).map_err(|e| StoreError::Protocol(e.to_string()))?
        } else {
            self.run_on(conn, &scripts::ENQUEUE, &keys, &args).await?
        };
        let Some((&now, stored)) = reply.split_first() else {
            return Err(StoreError::Protocol("enqueue answered nothing".into()));
        };
        if stored.len() != events.len() {
            return Err(StoreError::Protocol(format!(
                "enqueue answered {} results for {} events",
                stored.len(),
                events.len()
            )));
        }
        Ok(stored
            .iter()
            .map(|&s| if s >= 1 { Enqueued::Accepted { at_ms: now } } else { Enqueued::Duplicate })
            .collect())
    }

    /// Claims up to `max` due events under a lease of `lease`, each with a fresh fencing
    /// token; first gives expired leases back to `due`. A new claim id each call: see
    /// [`claim_as`](Self::claim_as) for a call that may be retried.
    pub async fn claim(&self, max: usize, lease: Duration) -> Result<Claim> {
        self.claim_as(new_claim_id(), max, lease).await
    }

    /// Claims like [`claim`](Self::claim) under `claim_id`. Sending the same call again
    /// after its reply was lost (a timeout, a dropped connection) does not claim more: it
    /// returns the events the first call claimed that are still leased to it, so none sits
    /// in flight unattempted until its lease expires.
    pub async fn claim_as(&self, claim_id: u64, max: usize, lease: Duration) -> Result<Claim> {
        self.claim_gated(claim_id, max, lease, &GatePolicy::default()).await
    }

    /// Claims like [`claim_as`](Self::claim_as) through the destination gate under `gate`
    /// (see [`gate`]): while a `Retry-After` pause lasts, the circuit is open (or half-open
    /// with its probe out), or the rate limit has no token, it claims nothing and
    /// [`Claim::gate`] says why and for how long; a rate limit caps the events claimed at its
    /// tokens and spends one per event; a half-open circuit lets one event through, the probe.
    pub async fn claim_gated(&self, claim_id: u64, max: usize, lease: Duration, gate: &GatePolicy) -> Result<Claim> {
        let k = &self.keys;
        let max_s = max.to_string();
        let lease_s = ms(lease).to_string();
        let rate = gate.rate_per_second.unwrap_or(0.0).to_string();
        let burst = gate.burst.max(1).to_string();
        let breaker = if gate.breaker.is_some() { "1" } else { "0" };
        let probe_ms = ms(gate.probe_lease).max(1).to_string();
        let record = k.claim(claim_id);
        let v: Value = self
            .run(
                &scripts::CLAIM,
                &[
                    &k.due,
                    &k.inflight,
                    &k.lease,
                    &k.ev,
                    &k.fence,
                    &k.pending,
                    &record,
                    &k.v1.body,
                    &k.v1.meta,
                    &k.v1.attempts,
                    &k.seen,
                    &k.dest,
                    &k.trace,
                ],
                &[
                    max_s.as_bytes(),
                    lease_s.as_bytes(),
                    rate.as_bytes(),
                    burst.as_bytes(),
                    breaker.as_bytes(),
                    probe_ms.as_bytes(),
                ],
            )
            .await?;
        model::parse_claim(v).map_err(StoreError::Protocol)
    }

    /// Records one attempt's outcome in the destination gate: a pause, and with a breaker in
    /// `gate`, a success (closes it) or a failure (counts; opens it at the threshold, or again
    /// after a failed probe). Call it for every retryable failure and pause; for a success
    /// only when the breaker may not be closed with no failures counted.
    pub async fn record_gate(&self, outcome: GateOutcome, gate: &GatePolicy) -> Result<Recorded> {
        let ok = if outcome.ok { "ok" } else { "fail" };
        let probe = if outcome.probe { "1" } else { "0" };
        let (breaker, threshold, open_ms) = match gate.breaker {
            Some(b) => ("1", b.failure_threshold.max(1), ms(b.open_for)),
            None => ("0", 1, 0),
        };
        let (threshold, open_ms) = (threshold.to_string(), open_ms.to_string());
        let pause = outcome.pause.map_or(0, ms).to_string();
        let (state, failures, opened): (String, u32, i64) = self
            .run(
                &scripts::GATE_RECORD,
                &[&self.keys.dest],
                &[
                    ok.as_bytes(),
                    probe.as_bytes(),
                    breaker.as_bytes(),
                    threshold.as_bytes(),
                    open_ms.as_bytes(),
                    pause.as_bytes(),
                ],
            )
            .await?;
        Ok(Recorded { state: CircuitState::parse(&state), consecutive_failures: failures, opened: opened == 1 })
    }

    /// The destination gate as stored: circuit state and since when, failures counted, a
    /// pause, the bucket's tokens (computed with `gate`'s rate and burst).
    pub async fn destination(&self, gate: &GatePolicy) -> Result<DestinationState> {
        let v: Value = self.run(&scripts::GATE_READ, &[&self.keys.dest], &[]).await?;
        DestinationState::parse(v, gate).map_err(StoreError::Protocol)
    }

    /// Deletes a delivered event. `false` means the lease was lost (another worker owns it now).
    pub async fn ack(&self, lease: &Lease) -> Result<bool> {
        Ok(self.ack_many(std::slice::from_ref(lease)).await?.first().copied().unwrap_or(false))
    }

    /// Acks a batch in one script call; one `bool` per lease, in order (`false`: lease lost).
    pub async fn ack_many(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let first: Vec<(Lease, bool)> = leases.iter().map(|l| (l.clone(), false)).collect();
        self.ack_batch(&first).await
    }

    /// Acks a batch; with `true` beside a lease the call is a retry of an ack whose reply
    /// was lost, and reports `true` too when that first call already acked the event.
    pub async fn ack_batch(&self, leases: &[(Lease, bool)]) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(vec![]);
        }
        let k = &self.keys;
        let fields: Vec<(String, String)> =
            leases.iter().map(|(l, retry)| (l.token.to_string(), retry_deadline(l, *retry))).collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(leases.len() * 3);
        for ((l, _), (t, d)) in leases.iter().zip(&fields) {
            args.push(l.id.as_str().as_bytes());
            args.push(t.as_bytes());
            args.push(d.as_bytes());
        }
        let o = &k.order;
        let keys = [&k.inflight[..], &k.lease, &k.ev, &k.pending, &k.seen, &k.trace];
        let keys = [&keys[..], &[&o.okey[..], &o.ord, &o.ohead, &o.owait, &o.blocked, &k.due]].concat();
        let acked: Vec<i64> = self.run(&scripts::ACK, &keys, &args).await?;
        if acked.len() != leases.len() {
            return Err(StoreError::Protocol(format!(
                "ack answered {} results for {} leases",
                acked.len(),
                leases.len()
            )));
        }
        Ok(acked.into_iter().map(|n| n == 1).collect())
    }

    /// Puts a failed event back in `due`, `delay` from now (server time), recording the
    /// outcome (`meta`'s last status, error and attempt time) in its record. Returns the new due score, or `None` if the lease was lost.
    /// `retry`: this call repeats one whose reply was lost (see [`ack_batch`](Self::ack_batch)).
    pub async fn reschedule(
        &self,
        lease: &Lease,
        delay: Duration,
        meta: &EventMeta,
        retry: bool,
    ) -> Result<Option<i64>> {
        let k = &self.keys;
        let token = lease.token.to_string();
        let delay_s = ms(delay).to_string();
        let outcome = Outcome::of(meta);
        let deadline = retry_deadline(lease, retry);
        let at: Option<i64> = self
            .run(
                &scripts::RESCHEDULE,
                &[&k.inflight, &k.lease, &k.due, &k.ev, &k.dead],
                &[
                    lease.id.as_str().as_bytes(),
                    token.as_bytes(),
                    delay_s.as_bytes(),
                    outcome.at.as_bytes(),
                    outcome.status.as_bytes(),
                    outcome.error.as_bytes(),
                    deadline.as_bytes(),
                ],
            )
            .await?;
        Ok(at)
    }

    /// Moves a failed event to `dead`, recording why, and trims the dead set to its bounds.
    /// `false` means the lease was lost. `retry` as for [`reschedule`](Self::reschedule).
    pub async fn dead_letter(&self, lease: &Lease, meta: &EventMeta, bounds: DeadBounds, retry: bool) -> Result<bool> {
        let k = &self.keys;
        let token = lease.token.to_string();
        let outcome = Outcome::of(meta);
        let age = ms(bounds.max_age).to_string();
        let count = bounds.max_entries.to_string();
        let deadline = retry_deadline(lease, retry);
        let o = &k.order;
        let (ok, _trimmed): (i64, i64) = self
            .run(
                &scripts::DEAD,
                &[
                    &k.inflight,
                    &k.lease,
                    &k.dead,
                    &k.ev,
                    &k.pending,
                    &k.seen,
                    &k.trace,
                    &o.okey,
                    &o.ord,
                    &o.ohead,
                    &o.owait,
                    &o.blocked,
                    &k.due,
                ],
                &[
                    lease.id.as_str().as_bytes(),
                    token.as_bytes(),
                    outcome.at.as_bytes(),
                    outcome.status.as_bytes(),
                    outcome.error.as_bytes(),
                    age.as_bytes(),
                    count.as_bytes(),
                    deadline.as_bytes(),
                    self.on_dead_letter.arg().as_bytes(),
                ],
            )
            .await?;
        Ok(ok == 1)
    }

    /// Drops dead letters beyond the age and count bounds; returns how many went.
    pub async fn trim_dead(&self, bounds: DeadBounds) -> Result<u64> {
        let k = &self.keys;
        let age = ms(bounds.max_age).to_string();
        let count = bounds.max_entries.to_string();
        let o = &k.order;
        let keys = [&k.dead[..], &k.ev, &k.seen, &k.trace, &o.okey, &o.ord, &o.ohead, &o.owait, &o.blocked, &k.due];
        self.run(&scripts::TRIM, &keys, &[age.as_bytes(), count.as_bytes()]).await
    }

    /// Gives a claimed event back, due now, without counting the attempt (for shutdown).
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        let k = &self.keys;
        let token = lease.token.to_string();
        let n: i64 = self
            .run(&scripts::RELEASE, &[&k.inflight, &k.lease, &k.due], &[lease.id.as_str().as_bytes(), token.as_bytes()])
            .await?;
        Ok(n == 1)
    }

    /// Returns up to `max` events whose lease expired to `due`; returns how many.
    pub async fn recover_expired(&self, max: usize) -> Result<u64> {
        let k = &self.keys;
        let max_s = max.to_string();
        self.run(&scripts::RECOVER, &[&k.inflight, &k.lease, &k.due, &k.ev], &[max_s.as_bytes()]).await
    }

    /// Makes a dead or due event due now with its attempts reset.
    pub async fn replay(&self, id: &EventId) -> Result<Replayed> {
        let k = &self.keys;
        let o = &k.order;
        let keys = [&k.due[..], &k.dead, &k.ev, &k.inflight, &o.okey, &o.ord, &o.ohead, &o.owait, &o.blocked];
        let s: String = self.run(&scripts::REPLAY, &keys, &[id.as_str().as_bytes()]).await?;
        match s.as_str() {
            "dead" => Ok(Replayed::FromDead),
            "dead_waiting" => Ok(Replayed::FromDeadWaiting),
            "blocked" => Ok(Replayed::Blocked),
            "due" => Ok(Replayed::FromDue),
            "inflight" => Ok(Replayed::InFlight),
            "missing" => Ok(Replayed::NotFound),
            other => Err(StoreError::Protocol(format!("replay answered {other:?}"))),
        }
    }

    /// Replays dead letters dead-lettered between `since_ms` and `until_ms` (inclusive,
    /// Unix ms), scanning about `batch` dead letters per script call; returns how many were replayed.
    ///
    /// `until_ms` is capped at the server's time when the call starts, so events that die
    /// again while the replay runs are not replayed twice.
    pub async fn replay_dead_range(&self, since_ms: Option<i64>, until_ms: Option<i64>, batch: usize) -> Result<u64> {
        let now = self.stats().await?.now_ms;
        let filter = DeadFilter {
            since_ms,
            until_ms: until_ms.map_or(now, |u| u.min(now)),
            status: StatusFilter::Any,
            error: None,
        };
        let (mut cursor, mut total) = (0, 0);
        loop {
            let step = self.dead_bulk_step(BulkAction::Replay, &filter, cursor, batch).await?;
            total += step.matched;
            cursor = step.cursor;
            if cursor == 0 {
                return Ok(total);
            }
        }
    }

    /// One step of `action` on the dead letters `filter` selects, scanning about `batch`
    /// members of `dead` from `cursor` (0 to begin; the step's `cursor` is 0 once done). A
    /// member that stays in `dead` for the whole scan is seen exactly once unless `dead` is
    /// resized meanwhile (then it may be seen twice: a count may run high, a replay or
    /// delete finds it gone). Keep `filter.until_ms` at or before the scan's start so events
    /// that die again while a replay runs are not replayed twice.
    pub async fn dead_bulk_step(
        &self,
        action: BulkAction,
        filter: &DeadFilter,
        cursor: u64,
        batch: usize,
    ) -> Result<BulkStep> {
        let k = &self.keys;
        let action = match action {
            BulkAction::Count => "count",
            BulkAction::Replay => "replay",
            BulkAction::Delete => "delete",
        };
        let (kind, value) = match filter.status {
            StatusFilter::Any => ("any", 0),
            StatusFilter::Exact(s) => ("exact", s),
            StatusFilter::Class(c) => ("class", c),
            StatusFilter::NoAnswer => ("none", 0),
        };
        let since = filter.since_ms.map_or("-inf".to_string(), |s| s.to_string());
        let (cursor, batch, until, value) =
            (cursor.to_string(), batch.max(1).to_string(), filter.until_ms.to_string(), value.to_string());
        let needle = filter.error.as_deref().unwrap_or("").to_lowercase();
        let o = &k.order;
        let (next, scanned, matched): (String, u64, u64) = self
            .run(
                &scripts::FILTER_DEAD,
                &[
                    &k.due, &k.dead, &k.ev, &k.pending, &k.seen, &k.trace, &o.okey, &o.ord, &o.ohead, &o.owait,
                    &o.blocked,
                ],
                &[
                    action.as_bytes(),
                    cursor.as_bytes(),
                    batch.as_bytes(),
                    since.as_bytes(),
                    until.as_bytes(),
                    kind.as_bytes(),
                    value.as_bytes(),
                    needle.as_bytes(),
                ],
            )
            .await?;
        let cursor = next.parse().map_err(|_| StoreError::Protocol(format!("ZSCAN cursor {next:?}")))?;
        Ok(BulkStep { cursor, scanned, matched })
    }

    /// Drops an event for good (its dedup entry stays, so a resend is still a duplicate).
    /// An event in flight is left alone ([`Deleted::InFlight`]): only its lease holder, or
    /// the lease's expiry, ends that state.
    pub async fn delete(&self, id: &EventId) -> Result<Deleted> {
        let k = &self.keys;
        let n: i64 = self
            .run(
                &scripts::DELETE,
                &[
                    &k.due,
                    &k.dead,
                    &k.inflight,
                    &k.ev,
                    &k.pending,
                    &k.seen,
                    &k.trace,
                    &k.order.okey,
                    &k.order.ord,
                    &k.order.ohead,
                    &k.order.owait,
                    &k.order.blocked,
                ],
                &[id.as_str().as_bytes()],
            )
            .await?;
        Ok(match n {
            1 => Deleted::Deleted,
            -1 => Deleted::InFlight,
            _ => Deleted::NotFound,
        })
    }

    /// The version of the server holding this relay's keys.
    pub async fn server_version(&self) -> Result<ServerVersion> {
        let v: Option<String> = self.run(&scripts::VERSION, &[&self.keys.due], &[]).await?;
        Ok(ServerVersion::parse(v))
    }

    /// Memory of the node holding this relay's keys: (used, counted as Redis counts it for
    /// `maxmemory`; `maxmemory`, 0 for no limit).
    pub async fn memory(&self) -> Result<(u64, u64)> {
        self.run(&scripts::MEMORY, &[&self.keys.due], &[]).await
    }

    /// Writes a small expiring key: succeeds only if Redis accepts writes right now (an
    /// out-of-memory Redis still answers reads, so reads prove nothing about storing).
    pub async fn check_writable(&self) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.keys.alive).arg("1").arg("PX").arg(10_000);
        match tokio::time::timeout(self.timeout, self.conn.clone().cmd(&cmd)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Queue figures: due, in flight, dead, and the age of the oldest undelivered event.
    pub async fn stats(&self) -> Result<Stats> {
        let k = &self.keys;
        let o = &k.order;
        let v: Value = self
            .run(&scripts::STATS, &[&k.due, &k.inflight, &k.dead, &k.pending, &o.blocked, &o.owait, &o.okey], &[])
            .await?;
        let ((due, in_flight, dead, oldest, now), (blocked, waiting_keys, waiter_key, waiter)): StatsReply = match v {
            Value::Array(mut a) if a.len() == 9 => {
                let rest = a.split_off(5);
                (
                    FromRedisValue::from_redis_value(Value::Array(a))
                        .map_err(|e| StoreError::Protocol(e.to_string()))?,
                    FromRedisValue::from_redis_value(Value::Array(rest))
                        .map_err(|e| StoreError::Protocol(e.to_string()))?,
                )
            }
            other => return Err(StoreError::Protocol(format!("stats answered {other:?}"))),
        };
        Ok(Stats {
            due,
            in_flight,
            dead,
            blocked,
            waiting_keys,
            oldest_blocked: waiter_key.zip(waiter),
            oldest_due_age: oldest.map(|o| Duration::from_millis((now - o).max(0) as u64)),
            now_ms: now,
        })
    }

    /// Up to `limit` events of one state, oldest first (by score, then id), strictly after
    /// `after`. The page's `next` cursor is set when more may follow. Paging by position
    /// rather than offset means an event that stays in the state is listed exactly once
    /// across pages, however many others move in or out meanwhile.
    pub async fn list(&self, state: EventState, limit: usize, after: Option<&ListCursor>) -> Result<Page> {
        self.list_in(ListOrder::OldestFirst, state, limit, after).await
    }

    /// Lists like [`list`](Self::list) in `order`: newest first pages from the highest score
    /// down, each page strictly before its cursor.
    pub async fn list_in(
        &self,
        order: ListOrder,
        state: EventState,
        limit: usize,
        after: Option<&ListCursor>,
    ) -> Result<Page> {
        let k = &self.keys;
        let set = match state {
            EventState::Due => &k.due,
            EventState::InFlight => &k.inflight,
            EventState::Dead => &k.dead,
            EventState::Blocked => &k.order.blocked,
            EventState::Unknown => return Ok(Page { events: vec![], next: None }),
        };
        let limit = limit.clamp(1, MAX_LIST);
        // One more than asked tells whether another page exists.
        let fetch = (limit + 1).to_string();
        let (score, id) = match after {
            Some(c) => (c.score_ms.to_string(), c.id.as_str()),
            None => (String::new(), ""),
        };
        let in_flight = if state == EventState::InFlight { "1" } else { "0" };
        let newest = if order == ListOrder::NewestFirst { "1" } else { "0" };
        let budget = LIST_BYTES.to_string();
        let (full, rows): (i64, Vec<ListRow>) = self
            .run(
                &scripts::LIST,
                &[set, &k.ev, &k.lease],
                &[
                    fetch.as_bytes(),
                    score.as_bytes(),
                    id.as_bytes(),
                    budget.as_bytes(),
                    in_flight.as_bytes(),
                    newest.as_bytes(),
                ],
            )
            .await?;
        let more = full == 1 || rows.len() > limit;
        let mut events = Vec::with_capacity(limit.min(rows.len()));
        for (id, score, attempts, head) in rows.into_iter().take(limit) {
            let meta = model::decode_record(&head, &id).meta;
            let id = EventId::new(id).map_err(StoreError::Protocol)?;
            events.push(ListedEvent { id, state, score_ms: score as i64, attempts, meta });
        }
        let next = match events.last() {
            Some(last) if more => Some(ListCursor { score_ms: last.score_ms, id: last.id.clone() }),
            _ => None,
        };
        Ok(Page { events, next })
    }

    /// One event with its state, metadata and payload; `None` if unknown.
    pub async fn get(&self, id: &EventId) -> Result<Option<StoredEvent>> {
        let k = &self.keys;
        let v: Option<GetReply> = self
            .run(
                &scripts::GET,
                &[&k.due, &k.inflight, &k.dead, &k.ev, &k.lease, &k.trace, &k.order.blocked, &k.order.okey],
                &[id.as_str().as_bytes()],
            )
            .await?;
        let Some((state, score, attempts, record, trace, key)) = v else { return Ok(None) };
        let record = Bytes::from(record);
        let model::Record { mut meta, body_at } = model::decode_record(&record, id.as_str());
        meta.trace_context = (!trace.is_empty()).then(|| String::from_utf8_lossy(&trace).into_owned());
        let state = match state.as_str() {
            "due" => EventState::Due,
            "inflight" => EventState::InFlight,
            "dead" => EventState::Dead,
            "blocked" => EventState::Blocked,
            _ => EventState::Unknown,
        };
        Ok(Some(StoredEvent {
            id: id.clone(),
            state,
            score_ms: score as i64,
            attempts,
            meta,
            body: record.slice(body_at..),
            ordering_key: (!key.is_empty()).then(|| String::from_utf8_lossy(&key).into_owned()),
        }))
    }

    /// One step of repairing the order of the keys with waiting events (about `count` keys
    /// from `cursor`, 0 to begin): a key whose active event was acked, deleted or (under
    /// [`OnDeadLetter::Continue`]) dead-lettered by a relay that knows nothing of ordering (a
    /// rolling upgrade) gets its next event released. Returns (next cursor, 0 once done; keys
    /// repaired).
    pub async fn heal_order_step(&self, cursor: u64, count: usize) -> Result<(u64, u64)> {
        let k = &self.keys;
        let o = &k.order;
        let (cursor, count) = (cursor.to_string(), count.max(1).to_string());
        let (next, repaired): (String, u64) = self
            .run(
                &scripts::ORDER_HEAL,
                &[&o.okey, &o.ord, &o.ohead, &o.owait, &o.blocked, &k.due, &k.ev, &k.dead],
                &[cursor.as_bytes(), count.as_bytes(), self.on_dead_letter.arg().as_bytes()],
            )
            .await?;
        let next = next.parse().map_err(|_| StoreError::Protocol(format!("HSCAN cursor {next:?}")))?;
        Ok((next, repaired))
    }

    /// Repairs the order of every key with waiting events ([`heal_order_step`](Self::heal_order_step)
    /// until done); returns how many keys were repaired.
    pub async fn heal_order(&self) -> Result<u64> {
        let (mut cursor, mut total) = (0, 0);
        loop {
            let (next, n) = self.heal_order_step(cursor, 200).await?;
            total += n;
            cursor = next;
            if cursor == 0 {
                return Ok(total);
            }
        }
    }
}

/// GET's reply: state, score, attempts, record, trace context (empty: none), ordering key (empty: none).
type GetReply = (String, f64, u32, Vec<u8>, Vec<u8>, Vec<u8>);
/// STATS' reply: (due, inflight, dead, oldest undelivered, now), (blocked, keys waiting, key of
/// the oldest waiting event, since when it waits).
type StatsReply = ((u64, u64, u64, Option<i64>, i64), (u64, u64, Option<String>, Option<i64>));
/// One LIST row: id, score, attempts, record without its body.
type ListRow = (String, f64, u32, Vec<u8>);

/// Format-1 events one migration call moves.
pub const MIGRATE_BATCH: usize = 500;
/// Record bytes one LIST call reads before it ends its page early (a page of large bodies).
const LIST_BYTES: usize = 8 << 20;

/// An attempt's outcome as the scripts take it: last attempt time, status (0: none), error.
struct Outcome {
    at: String,
    status: String,
    error: String,
}

impl Outcome {
    fn of(meta: &EventMeta) -> Self {
        Outcome {
            at: meta.last_attempt_at.unwrap_or(0).max(0).to_string(),
            status: meta.last_status.unwrap_or(0).to_string(),
            error: meta.last_error.clone().unwrap_or_default(),
        }
    }
}

/// What an outcome write passes as the lease deadline: the deadline on a retry, `0` (no
/// inference about an earlier call) on a first call.
fn retry_deadline(lease: &Lease, retry: bool) -> String {
    if retry { lease.deadline_ms.to_string() } else { "0".into() }
}

/// A claim id no other call is likely to use: random bits from the standard library's
/// per-process hasher keys, mixed with a counter.
pub fn new_claim_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_are_judged_against_the_minimum() {
        assert!(ServerVersion::parse(Some("7.0.15".into())).supported());
        assert!(ServerVersion::parse(Some("7.2.4".into())).supported());
        assert!(ServerVersion::parse(Some("8.0.0".into())).supported());
        let old = ServerVersion::parse(None);
        assert!(!old.supported());
        assert_eq!(old.to_string(), "older than 7.0");
        assert!(!ServerVersion::parse(Some("6.2.14".into())).supported());
        assert_eq!(ServerVersion::parse(Some("7.0.15".into())).number, Some((7, 0, 15)));
    }
}
