//! The state one relay process shares between intake, the delivery worker and admin.

use crate::batch::Batcher;
use crate::metrics::Metrics;
use crate::receipts::{ReceiptKind, Receipts};
use crate::settings::Settings;
use crate::signature::Verifier;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, watch};
use webhook_relay_api::RelayConfig;
use webhook_relay_store::{DeadBounds, Enqueued, EventId, NewEvent, Store, StoreError};

/// Most intake events stored in one script call.
const ENQUEUE_BATCH: usize = 64;

/// Everything a relay process shares; built once, held in an `Arc`.
pub struct Relay {
    pub settings: Settings,
    pub store: Store,
    pub verifier: Verifier,
    pub metrics: Arc<Metrics>,
    /// The one HTTP client of the process (delivery; Genesys receipts share it).
    pub http: reqwest::Client,
    receipts: Option<Receipts>,
    /// Intake's writes, coalesced into one enqueue script call per batch.
    enqueuer: Batcher<NewEvent, Enqueued>,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    redis_up: AtomicBool,
}

impl Relay {
    /// Builds the shared state; `http` is the process's one HTTP client.
    pub fn new(
        settings: Settings,
        store: Store,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        receipts: Option<Receipts>,
    ) -> Arc<Self> {
        let verifier = Verifier::new(&settings.config.source.verify, settings.secrets.signing_secret.clone());
        let (shutdown, _) = watch::channel(false);
        let enqueuer = {
            let (store, window) = (store.clone(), settings.config.source.dedup_window);
            Batcher::start(ENQUEUE_BATCH, move |events: Vec<NewEvent>| {
                let store = store.clone();
                async move { store.enqueue_many(&events, window).await }
            })
        };
        Arc::new(Relay {
            settings,
            store,
            verifier,
            metrics,
            http,
            receipts,
            enqueuer,
            wake: Notify::new(),
            shutdown,
            redis_up: AtomicBool::new(true),
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.settings.config
    }

    /// Stores an intake event (batched with concurrent ones); `Ok` means it is in Redis.
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, StoreError> {
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

    /// Starts a graceful shutdown: intake stops, the worker drains, `/readyz` turns false.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.wake.notify_one();
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(up, Ordering::Relaxed);
        self.metrics.redis_up.set(up as i64);
    }

    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Ready to take events: Redis reachable and not shutting down.
    pub fn ready(&self) -> bool {
        self.redis_up() && !self.is_shutting_down()
    }
}
