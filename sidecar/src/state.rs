//! The state one relay process shares between intake, the delivery worker and admin.

use crate::batch::{BatchError, Batcher};
use crate::intake::BodyBudget;
use crate::metrics::Metrics;
use crate::receipts::{ReceiptKind, Receipts};
use crate::run_config::RunConfig;
use crate::signature::Verifier;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use webhook_relay_api::RelayConfig;
use webhook_relay_store::{DeadBounds, Enqueued, EventId, NewEvent, Store};

/// Most intake events stored in one script call.
const ENQUEUE_BATCH: usize = 64;
/// Enqueue calls in Redis at once: while one is answered the next is already on its way.
pub const ENQUEUE_PARALLEL: usize = 4;

/// Everything a relay process shares; built once, held in an `Arc`.
pub struct AppState {
    pub run_config: RunConfig,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The one HTTP client of the process (delivery; Genesys receipts share it).
    pub http: reqwest::Client,
    receipts: Option<Receipts>,
    /// The OTLP span exporter, when `tracing.otlpEndpoint` is set.
    pub spans: Option<crate::otlp::Exporter>,
    /// Intake's writes, coalesced into one enqueue script call per batch.
    enqueuer: Batcher<NewEvent, Enqueued>,
    /// The request body bytes intake may hold at once (`source.maxBufferedBytes`).
    pub body_budget: BodyBudget,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    /// Set by [`begin_drain`](Self::begin_drain): `/readyz` fails, intake still takes events.
    draining: AtomicBool,
    /// Whether Redis can store events right now (writes succeed, not merely reads).
    redis_up: AtomicBool,
    /// Why Redis cannot store, for `/readyz` (no secret in it).
    redis_problem: Mutex<String>,
    /// Set when the relay must stop with an error (e.g. a Redis too old for the scripts).
    fatal: Mutex<Option<String>>,
    /// Whether the Redis version and the store format were checked (at start, or once Redis
    /// first answered), format-1 keys migrated.
    pub server_checked: AtomicBool,
    /// Counts store failures, so a health check that began before one cannot undo it.
    failures: std::sync::atomic::AtomicU64,
}

impl AppState {
    /// Builds the shared state; `http` is the process's one HTTP client.
    pub fn new(
        run_config: RunConfig,
        store: Store,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        receipts: Option<Receipts>,
        spans: Option<crate::otlp::Exporter>,
    ) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        let settings_budget = run_config.config.source.max_buffered_bytes;
        let enqueuer = {
            let (store, window) = (store.clone(), run_config.config.source.dedup_window);
            Batcher::start(ENQUEUE_BATCH, ENQUEUE_PARALLEL, move |events: Vec<NewEvent>| {
                let store = store.clone();
                async move { store.enqueue_many(&events, window).await }
            })
        };
        Arc::new(AppState {
            run_config,
            store,
            metrics,
            http,
            receipts,
            spans,
            enqueuer,
            body_budget: BodyBudget::new(settings_budget),
            wake: Notify::new(),
            shutdown,
            draining: AtomicBool::new(false),
            redis_up: AtomicBool::new(true),
            redis_problem: Mutex::new(String::new()),
            fatal: Mutex::new(None),
            server_checked: AtomicBool::new(false),
            failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The intake's signature check.
    pub fn verifier(&self) -> &Verifier {
        &self.run_config.secrets.verifier
    }

    pub fn config(&self) -> &RelayConfig {
        &self.run_config.config
    }

    /// Stores an intake event (batched with concurrent ones); `Ok` means it is in Redis.
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, BatchError> {
        self.enqueuer.submit(event).await
    }

    /// Dead-letter bounds from the config.
    pub fn dead_bounds(&self) -> DeadBounds {
        let d = &self.config().delivery.dead_letter;
        DeadBounds { max_age: d.max_age, max_entries: d.max_entries }
    }

    /// Tells the delivery worker something is due now (intake calls this after storing).
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Queues a Genesys receipt for this event if receipts of this kind are configured.
    pub fn receipt(&self, kind: ReceiptKind, id: &EventId, body: &Bytes) {
        if let Some(r) = &self.receipts {
            r.queue(kind, id, body);
        }
    }

    /// At shutdown: sends the receipts still queued within the drain time; the rest are
    /// counted and logged as failed, never dropped silently.
    pub async fn finish_receipts(&self) {
        if let Some(r) = &self.receipts {
            r.drain(self.config().receipts_drain()).await;
        }
    }

    /// Exports the spans still queued, for at most `limit` (at shutdown).
    pub async fn finish_spans(&self, limit: std::time::Duration) {
        if let Some(s) = &self.spans {
            s.flush(limit).await;
        }
    }

    /// Records a finished span when spans are exported.
    pub fn span(&self, span: impl FnOnce() -> crate::otlp::Span) {
        if let Some(s) = &self.spans {
            s.record(span());
        }
    }

    /// The first step of a shutdown with `source.shutdownDelay`: `/readyz` turns false while
    /// intake and deliveries go on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Starts a graceful shutdown: intake stops, the worker drains, `/readyz` turns false.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.wake.notify_one();
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether a shutdown has begun, counting its delay (`/readyz` answers "shutting down").
    pub fn is_leaving(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.is_shutting_down()
    }

    /// Resolves when shutdown begins.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Records that Redis stored something just now: only a write proves it can store.
    pub fn set_redis_up(&self) {
        self.redis_up.store(true, Ordering::Relaxed);
        self.metrics.redis_up.set(1);
    }

    /// Records that Redis could not store (or be reached), and why.
    pub fn set_redis_down(&self, why: impl Into<String>) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        *self.redis_problem.lock().unwrap() = why.into();
        self.redis_up.store(false, Ordering::Relaxed);
        self.metrics.redis_up.set(0);
    }

    /// A mark taken before a health check; [`set_redis_up_since`](Self::set_redis_up_since)
    /// with it does nothing if a store failure came in meanwhile.
    pub fn health_mark(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Records a passed health check begun at `mark`, unless a failure came in since.
    pub fn set_redis_up_since(&self, mark: u64) -> bool {
        if self.failures.load(Ordering::SeqCst) != mark {
            return false;
        }
        self.set_redis_up();
        true
    }

    /// Whether Redis took the last write asked of it (`redis_up` and `/readyz` mean "can store").
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Why Redis cannot store, when [`redis_up`](Self::redis_up) is false.
    pub fn redis_problem(&self) -> String {
        self.redis_problem.lock().unwrap().clone()
    }

    /// Stops the relay with an error the process exits with.
    pub fn fail(&self, why: String) {
        tracing::error!(error = %why, "webhook-relay cannot run");
        self.fatal.lock().unwrap().get_or_insert(why);
        self.begin_shutdown();
    }

    /// The error set by [`fail`](Self::fail), if any.
    pub fn failure(&self) -> Option<String> {
        self.fatal.lock().unwrap().clone()
    }

    /// Ready to take events: Redis reachable and not shutting down.
    pub fn ready(&self) -> bool {
        self.redis_up() && !self.is_leaving()
    }
}
