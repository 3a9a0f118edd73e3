//! Genesys delivery receipts: a `Failed` receipt when an event is dead-lettered
//! (`genesys.receipts.onDeadLetter`), `Delivered` after a 2xx (`onDelivered`).
//!
//! Receipts never block or slow deliveries: the worker hands them to a bounded queue and
//! a separate task posts them, retrying with backoff. One that cannot be sent is counted
//! (`webhook_relay_genesys_receipts_total{outcome="failed"}`) and logged with the event id.
//! At shutdown the queued receipts are sent within the drain time; any still unsent then
//! are counted and logged as failed, never dropped silently.

use crate::metrics::{Metrics, ReceiptLabels};
use bytes::Bytes;
use genesys_cloud::{Credentials, Environment, GenesysClient, Receipt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use webhook_relay_api::config::GenesysConfig;
use webhook_relay_store::EventId;
use webhook_relay_util::retry::{self, Backoff, Jitter, Next, Schedule};

/// Receipts waiting to be sent; beyond this, new ones are counted as failed.
const QUEUE: usize = 10_000;
/// Receipts posted at once.
const PARALLEL: usize = 8;
/// Rounds of retries on top of the client's own (which already waits out 429s and 5xx):
/// 4 rounds, 2 s, 8 s and 32 s apart.
const ROUNDS: Schedule = Schedule {
    attempts: 4,
    backoff: Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(32),
        multiplier: 4.0,
        jitter: Jitter::None,
    },
};

/// Which receipt to send.
#[derive(Clone, Debug)]
pub enum ReceiptKind {
    Delivered,
    /// With the reason shown to the Genesys user.
    Failed(String),
}

impl ReceiptKind {
    fn label(&self) -> &'static str {
        match self {
            ReceiptKind::Delivered => "Delivered",
            ReceiptKind::Failed(_) => "Failed",
        }
    }
}

struct Job {
    kind: ReceiptKind,
    id: EventId,
    body: Bytes,
}

enum Msg {
    Job(Job),
    /// Everything queued before this was handed over; answer once all is sent or given up.
    Drain(oneshot::Sender<()>),
}

/// The handle the worker uses to queue receipts.
pub struct Receipts {
    tx: mpsc::Sender<Msg>,
    on_delivered: bool,
    on_dead_letter: bool,
    metrics: Arc<Metrics>,
    /// Set by [`drain`](Self::drain): the time by which unsent receipts are given up.
    deadline: watch::Sender<Option<Instant>>,
}

/// Why receipts could not be set up: `genesys` names no environment the client can reach.
#[derive(Debug, thiserror::Error)]
#[error("genesys: {0}")]
pub struct ReceiptsError(#[from] genesys_cloud::EnvironmentError);

impl Receipts {
    /// Starts the receipt sender for `config`; the credentials come from the environment.
    pub fn start(
        config: &GenesysConfig,
        credentials: Credentials,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ReceiptsError> {
        let env = Environment::from_settings(
            config.region.as_deref(),
            config.environment.as_deref(),
            config.api_base_url.as_ref().map(|u| u.as_str()),
            config.login_base_url.as_ref().map(|u| u.as_str()),
        )?;
        let client = GenesysClient::new(http, env, credentials);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (deadline, deadline_rx) = watch::channel(None);
        tokio::spawn(send_all(rx, client, config.integration_id.clone(), metrics.clone(), deadline_rx));
        Ok(Receipts {
            tx,
            on_delivered: config.receipts.on_delivered,
            on_dead_letter: config.receipts.on_dead_letter,
            metrics,
            deadline,
        })
    }

    /// Sends what is queued within `limit`; what is still unsent then is counted as failed
    /// and logged. Call once, after the worker stopped queueing.
    pub async fn drain(&self, limit: Duration) {
        self.deadline.send_replace(Some(Instant::now() + limit));
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Drain(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Queues a receipt if the config asks for this kind; never waits.
    pub fn queue(&self, kind: ReceiptKind, id: &EventId, body: &Bytes) {
        let wanted = match kind {
            ReceiptKind::Delivered => self.on_delivered,
            ReceiptKind::Failed(_) => self.on_dead_letter,
        };
        if !wanted {
            return;
        }
        let label = kind.label();
        if self.tx.try_send(Msg::Job(Job { kind, id: id.clone(), body: body.clone() })).is_err() {
            tracing::warn!(event_id = %id, status = label, "receipt queue full; receipt not sent");
            count(&self.metrics, label, "failed");
        }
    }
}

fn count(metrics: &Metrics, status: &str, outcome: &str) {
    metrics.receipts.get_or_create(&ReceiptLabels { status: status.into(), outcome: outcome.into() }).inc();
}

/// Posts receipts, [`PARALLEL`] at once, until the queue closes or a drain is asked for.
async fn send_all(
    mut rx: mpsc::Receiver<Msg>,
    client: GenesysClient,
    integration: String,
    metrics: Arc<Metrics>,
    mut deadline: watch::Receiver<Option<Instant>>,
) {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    // Receipts being sent, by a sequence number: (event id, status), for the count at a drain.
    let unsent: Arc<Mutex<HashMap<u64, (EventId, &'static str)>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    let give_up = |job: &Job, why: &str| {
        let label = job.kind.label();
        tracing::warn!(event_id = %job.id, status = label, "receipt not sent: {why}");
        count(&metrics, label, "failed");
    };
    while let Some(msg) = rx.recv().await {
        let job = match msg {
            Msg::Job(job) => job,
            Msg::Drain(done) => {
                let until = deadline.borrow().unwrap_or_else(Instant::now);
                if tokio::time::timeout_at(until, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                }
                for (_, (id, label)) in unsent.lock().unwrap().drain() {
                    tracing::warn!(event_id = %id, status = label, "receipt not sent: the relay stopped first");
                    count(&metrics, label, "failed");
                }
                let _ = done.send(());
                return;
            }
        };
        // Once a drain has set its deadline, waiting for a free slot is bounded by it (also
        // when the deadline is set while this job waits).
        let permit = loop {
            let until = *deadline.borrow_and_update();
            match until {
                None => tokio::select! {
                    p = permits.clone().acquire_owned() => break p.ok(),
                    changed = deadline.changed() => if changed.is_err() {
                        break permits.clone().acquire_owned().await.ok();
                    },
                },
                Some(until) => {
                    break tokio::time::timeout_at(until, permits.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
            }
        };
        let Some(permit) = permit else {
            give_up(&job, "the relay stopped first");
            continue;
        };
        seq += 1;
        let key = seq;
        unsent.lock().unwrap().insert(key, (job.id.clone(), job.kind.label()));
        let (client, integration, metrics, unsent) =
            (client.clone(), integration.clone(), metrics.clone(), unsent.clone());
        tasks.spawn(async move {
            send_one(&client, &integration, &metrics, job).await;
            unsent.lock().unwrap().remove(&key);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
}

async fn send_one(client: &GenesysClient, integration: &str, metrics: &Metrics, job: Job) {
    let label = job.kind.label();
    let receipt = serde_json::from_slice::<serde_json::Value>(&job.body).map_err(|e| e.to_string()).and_then(|doc| {
        match &job.kind {
            ReceiptKind::Delivered => Receipt::delivered(&doc),
            ReceiptKind::Failed(reason) => Receipt::failed(&doc, failure_text(reason)),
        }
        .map_err(|e| e.to_string())
    });
    let receipt = match receipt {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(event_id = %job.id, status = label, error = %e, "cannot build a receipt from this payload");
            count(metrics, label, "failed");
            return;
        }
    };
    let sent = retry::run(
        ROUNDS,
        |_| client.send_receipt(integration, &receipt),
        |e, _| {
            if e.is_transient() {
                tracing::info!(event_id = %job.id, status = label, error = %e, "receipt failed; retrying");
                Next::Retry
            } else {
                Next::GiveUp
            }
        },
    )
    .await;
    match sent {
        Ok(()) => {
            tracing::debug!(event_id = %job.id, status = label, "receipt sent");
            count(metrics, label, "sent");
        }
        Err(e) => {
            tracing::warn!(event_id = %job.id, status = label, error = %e, "receipt not sent");
            count(metrics, label, "failed");
        }
    }
}

fn failure_text(reason: &str) -> String {
    let reason = if reason.is_empty() { "downstream refused the message" } else { reason };
    format!("webhook-relay could not deliver the message downstream: {reason}")
}
