//! The destination gate: what holds attempts back for a whole relay, shared by its replicas
//! through `whr:{R}:dest` (see [`scripts::GATE`](crate::scripts::GATE)): a pause a downstream
//! asked for with `Retry-After`, the circuit breaker and the rate limit. The gate is checked
//! inside the claim script, so an event it holds back stays in `due`, unclaimed and with its
//! attempt not counted.

use std::time::Duration;

/// How a relay's gate is set: `delivery.rateLimit` and `delivery.circuitBreaker`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GatePolicy {
    /// Attempts per second; `None`: no rate limit.
    pub rate_per_second: Option<f64>,
    /// The token bucket's size (with a rate limit).
    pub burst: u32,
    /// The circuit breaker, if on.
    pub breaker: Option<Breaker>,
    /// How long a half-open probe holds the gate before another replica may probe (its
    /// lease: the delivery timeout and a margin).
    pub probe_lease: Duration,
}

/// Circuit breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

/// The breaker's state, as stored (`closed` when never written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "open" => CircuitState::Open,
            "half_open" => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// `closed`, `open` or `half_open`, as metrics and the admin API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Why a claim took nothing although events may be due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The downstream asked for a pause (429/503 with `Retry-After`).
    Paused,
    /// The circuit is open.
    CircuitOpen,
    /// The circuit is half-open and another attempt is the probe.
    Probing,
    /// No token left in the rate limit's bucket.
    RateLimited,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::Paused => "paused",
            Held::CircuitOpen => "circuit_open",
            Held::Probing => "probing",
            Held::RateLimited => "rate_limited",
        }
    }
}

/// What the gate said to one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateReply {
    /// Set when the gate let nothing through; then `wait` is how long until it may.
    pub held: Option<Held>,
    pub wait: Duration,
    pub state: CircuitState,
    /// The claimed event (there is one) is the half-open probe: report its outcome with
    /// `probe = true`.
    pub probe: bool,
}

impl GateReply {
    pub(crate) fn parse(v: redis::Value) -> Result<Self, String> {
        let redis::Value::Array(parts) = v else { return Err(format!("gate reply: {v:?}")) };
        let [held, wait, state, probe]: [redis::Value; 4] =
            parts.try_into().map_err(|p: Vec<redis::Value>| format!("gate reply has {} parts", p.len()))?;
        let text = |v: redis::Value| -> Result<String, String> {
            redis::from_redis_value::<String>(v).map_err(|e| e.to_string())
        };
        let held = match text(held)?.as_str() {
            "" => None,
            "paused" => Some(Held::Paused),
            "open" => Some(Held::CircuitOpen),
            "probing" => Some(Held::Probing),
            "rate" => Some(Held::RateLimited),
            other => return Err(format!("gate held: {other:?}")),
        };
        let wait: i64 = redis::from_redis_value(wait).map_err(|e| e.to_string())?;
        let probe: i64 = redis::from_redis_value(probe).map_err(|e| e.to_string())?;
        Ok(GateReply {
            held,
            wait: Duration::from_millis(wait.max(0) as u64),
            state: CircuitState::parse(&text(state)?),
            probe: probe == 1,
        })
    }
}

/// One attempt's outcome as the gate counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateOutcome {
    /// 2xx (true) or a retryable failure (false).
    pub ok: bool,
    /// The attempt was the half-open probe.
    pub probe: bool,
    /// Pause the destination this long (a 429 or 503 with `Retry-After`).
    pub pause: Option<Duration>,
}

/// The breaker after a recorded outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// This outcome opened the circuit.
    pub opened: bool,
}

/// The gate as stored, for stats and status.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct DestinationState {
    pub circuit: CircuitState,
    /// When the circuit last opened (while not closed) or closed; `None` if never.
    pub since_ms: Option<i64>,
    pub consecutive_failures: u32,
    /// While open: when the next probe may go.
    pub open_until_ms: Option<i64>,
    /// A `Retry-After` pause, while it lasts.
    pub paused_until_ms: Option<i64>,
    /// Whole tokens in the rate limit's bucket now (with `policy`'s rate and burst).
    pub tokens: Option<f64>,
    pub now_ms: i64,
}

impl DestinationState {
    pub(crate) fn parse(v: redis::Value, policy: &GatePolicy) -> Result<Self, String> {
        let parts: Vec<Option<String>> = redis::from_redis_value(v).map_err(|e| e.to_string())?;
        let [state, since, failures, open_until, paused_until, tokens, tokens_at, now]: [Option<String>; 8] =
            parts.try_into().map_err(|p: Vec<Option<String>>| format!("gate state has {} parts", p.len()))?;
        let num = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<f64>().ok());
        let now = num(&now).ok_or("gate state without a time")? as i64;
        let circuit = CircuitState::parse(state.as_deref().unwrap_or("closed"));
        let tokens = policy.rate_per_second.map(|rate| match (num(&tokens), num(&tokens_at)) {
            (Some(t), Some(at)) => (t + (now as f64 - at).max(0.0) * rate / 1000.0).min(policy.burst as f64),
            _ => policy.burst as f64,
        });
        Ok(DestinationState {
            circuit,
            since_ms: num(&since).map(|v| v as i64),
            consecutive_failures: num(&failures).unwrap_or(0.0) as u32,
            open_until_ms: num(&open_until).map(|v| v as i64).filter(|_| circuit == CircuitState::Open),
            paused_until_ms: num(&paused_until).map(|v| v as i64).filter(|&p| p > now),
            tokens,
            now_ms: now,
        })
    }
}
