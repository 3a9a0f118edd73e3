//! Prometheus metrics of one relay process, served at `/metrics` on the admin listener.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use webhook_relay_store::{CircuitState, Held};

/// What intake answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum IntakeOutcome {
    accepted,
    duplicate,
    unauthorized,
    too_large,
    invalid,
    unavailable,
    /// The body did not arrive within `source.readTimeout` (408).
    timeout,
    /// Refused beyond `source.maxConcurrentRequests` (503).
    overloaded,
    /// Refused because buffering its body would go beyond `source.maxBufferedBytes` (503).
    buffers_full,
    /// Stored, but fewer replicas than `redis.waitForReplicas` confirmed it in time (503).
    not_replicated,
}

impl IntakeOutcome {
    /// Every outcome, so each series exists (at 0) from the first scrape.
    pub const ALL: [IntakeOutcome; 10] = [
        IntakeOutcome::accepted,
        IntakeOutcome::duplicate,
        IntakeOutcome::unauthorized,
        IntakeOutcome::too_large,
        IntakeOutcome::invalid,
        IntakeOutcome::unavailable,
        IntakeOutcome::timeout,
        IntakeOutcome::overloaded,
        IntakeOutcome::buffers_full,
        IntakeOutcome::not_replicated,
    ];
}

/// How one delivery attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AttemptOutcome {
    /// 2xx: acked.
    delivered,
    /// Failed and rescheduled.
    retry,
    /// Failed for good: dead-lettered.
    dead,
    /// The lease was lost before the outcome could be recorded.
    lease_lost,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntakeLabels {
    pub outcome: IntakeOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub outcome: AttemptOutcome,
    /// `2xx`, `4xx`, `5xx`, or `none` for timeouts and connection errors.
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeldLabels {
    /// `paused`, `circuit_open`, `probing` or `rate_limited`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiptLabels {
    /// `Failed` or `Delivered`.
    pub status: String,
    /// `sent` or `failed`.
    pub outcome: String,
}

/// All metrics; cheap to share behind an `Arc`.
pub struct Metrics {
    pub registry: Registry,
    pub intake: Family<IntakeLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub attempt_seconds: Histogram,
    pub retry_lateness_seconds: Histogram,
    pub receipts: Family<ReceiptLabels, Counter>,
    pub due: Gauge,
    pub in_flight: Gauge,
    pub dead: Gauge,
    /// Events waiting behind the first event of their ordering key, and keys with some.
    pub blocked: Gauge,
    pub waiting_keys: Gauge,
    pub oldest_due_age_seconds: Gauge<f64, AtomicU64>,
    pub redis_up: Gauge,
    /// Events whose signature matched the previous signing secret (a rotation in progress).
    pub previous_secret: Counter,
    /// 1 for the circuit breaker's state as this process last saw it, 0 for the others.
    pub circuit_state: Family<CircuitLabels, Gauge>,
    /// Claims the destination gate held back, by why.
    pub delivery_held: Family<HeldLabels, Counter>,
    /// Spans the OTLP exporter sent (`tracing.otlpEndpoint`), and those it dropped, by why.
    pub spans: Family<SpanLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanLabels {
    /// `exported`, `dropped_queue_full` or `dropped_export_failed`.
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("webhook_relay");
        let intake = Family::<IntakeLabels, Counter>::default();
        registry.register("intake_requests", "Intake requests by outcome", intake.clone());
        for outcome in IntakeOutcome::ALL {
            drop(intake.get_or_create(&IntakeLabels { outcome }));
        }
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register("delivery_attempts", "Delivery attempts by outcome and HTTP status class", attempts.clone());
        let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let attempt_seconds = Histogram::new(buckets);
        registry.register("delivery_attempt_duration_seconds", "Time of one delivery attempt", attempt_seconds.clone());
        let lateness = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0]);
        registry.register(
            "retry_lateness_seconds",
            "How late an attempt started after its scheduled time",
            lateness.clone(),
        );
        let receipts = Family::<ReceiptLabels, Counter>::default();
        registry.register("genesys_receipts", "Genesys delivery receipts by status and outcome", receipts.clone());
        let due = Gauge::default();
        registry.register("queue_due", "Events waiting for an attempt (sampled)", due.clone());
        let in_flight = Gauge::default();
        registry.register("queue_in_flight", "Events claimed under a lease (sampled)", in_flight.clone());
        let dead = Gauge::default();
        registry.register("queue_dead", "Dead-lettered events (sampled)", dead.clone());
        let blocked = Gauge::default();
        registry.register(
            "queue_blocked",
            "Events waiting behind the first event of their ordering key (delivery.ordering; sampled)",
            blocked.clone(),
        );
        let waiting_keys = Gauge::default();
        registry.register("queue_waiting_keys", "Ordering keys with events waiting (sampled)", waiting_keys.clone());
        let oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "queue_oldest_due_age_seconds",
            "Age of the oldest undelivered event (sampled)",
            oldest.clone(),
        );
        let redis_up = Gauge::default();
        registry.register("redis_up", "1 when the last Redis check succeeded", redis_up.clone());
        let previous_secret = Counter::default();
        registry.register(
            "signatures_previous_secret",
            "Requests whose signature matched source.verify.previousSecretEnv, not the current secret: \
             while this grows, senders still sign with the previous secret",
            previous_secret.clone(),
        );
        let circuit_state = Family::<CircuitLabels, Gauge>::default();
        registry.register(
            "circuit_state",
            "1 for the destination's circuit breaker state (closed, open, half_open) as last seen, 0 for the others",
            circuit_state.clone(),
        );
        let delivery_held = Family::<HeldLabels, Counter>::default();
        registry.register(
            "delivery_held",
            "Claims the destination gate held back: paused (Retry-After), circuit_open, probing, rate_limited",
            delivery_held.clone(),
        );
        for reason in [Held::Paused, Held::CircuitOpen, Held::Probing, Held::RateLimited] {
            drop(delivery_held.get_or_create(&HeldLabels { reason: reason.as_str() }));
        }
        let spans = Family::<SpanLabels, Counter>::default();
        registry.register(
            "spans",
            "Spans sent to tracing.otlpEndpoint (exported), or dropped: the export queue was full, or the collector failed",
            spans.clone(),
        );
        let metrics = Metrics {
            registry,
            intake,
            attempts,
            attempt_seconds,
            retry_lateness_seconds: lateness,
            receipts,
            due,
            in_flight,
            dead,
            blocked,
            waiting_keys,
            oldest_due_age_seconds: oldest,
            redis_up,
            previous_secret,
            circuit_state,
            delivery_held,
            spans,
        };
        metrics.circuit(CircuitState::Closed);
        metrics
    }

    /// Sets the circuit gauge to `state`.
    pub fn circuit(&self, state: CircuitState) {
        for s in [CircuitState::Closed, CircuitState::Open, CircuitState::HalfOpen] {
            self.circuit_state.get_or_create(&CircuitLabels { state: s.as_str() }).set(i64::from(s == state));
        }
    }

    pub fn intake(&self, outcome: IntakeOutcome) {
        self.intake.get_or_create(&IntakeLabels { outcome }).inc();
    }

    pub fn attempt(&self, outcome: AttemptOutcome, status: Option<u16>, took: Duration) {
        let status_class = match status {
            Some(s) => format!("{}xx", s / 100),
            None => "none".into(),
        };
        self.attempts.get_or_create(&AttemptLabels { outcome, status_class }).inc();
        self.attempt_seconds.observe(took.as_secs_f64());
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
