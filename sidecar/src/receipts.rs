//! Genesys delivery receipts: a `Failed` receipt when an event is dead-lettered
//! (`genesys.receipts.onDeadLetter`), `Delivered` after a 2xx (`onDelivered`).
//!
//! Receipts never block or slow deliveries: the worker hands them to a bounded queue and
//! a separate task posts them, retrying with backoff. One that cannot be sent is counted
//! (`webhook_relay_genesys_receipts_total{outcome="failed"}`) and logged with the event id.

use crate::metrics::{Metrics, ReceiptLabels};
use bytes::Bytes;
use genesys_cloud::{Credentials, Environment, GenesysClient, Receipt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use webhook_relay_api::config::GenesysConfig;
use webhook_relay_store::EventId;

/// Receipts waiting to be sent; beyond this, new ones are counted as failed.
const QUEUE: usize = 10_000;
/// Receipts posted at once.
const PARALLEL: usize = 8;
/// Rounds of retries on top of the client's own (which already waits out 429s and 5xx).
const ROUNDS: u32 = 4;

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

/// The handle the worker uses to queue receipts.
pub struct Receipts {
    tx: mpsc::Sender<Job>,
    on_delivered: bool,
    on_dead_letter: bool,
    metrics: Arc<Metrics>,
}

/// Why receipts could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("genesys: {0}")]
pub struct ReceiptsError(String);

impl Receipts {
    /// Starts the receipt sender for `config`; the credentials come from the environment.
    pub fn start(
        config: &GenesysConfig,
        client_id: String,
        client_secret: String,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ReceiptsError> {
        let env = Environment::from_settings(
            config.region.as_deref(),
            config.environment.as_deref(),
            config.api_base_url.as_ref().map(|u| u.as_str()),
            config.login_base_url.as_ref().map(|u| u.as_str()),
        )
        .map_err(|e| ReceiptsError(e.to_string()))?;
        let client = GenesysClient::new(http, env, Credentials::new(client_id, client_secret));
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(rx, client, config.integration_id.clone(), metrics.clone()));
        Ok(Receipts {
            tx,
            on_delivered: config.receipts.on_delivered,
            on_dead_letter: config.receipts.on_dead_letter,
            metrics,
        })
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
        if self.tx.try_send(Job { kind, id: id.clone(), body: body.clone() }).is_err() {
            tracing::warn!(event_id = %id, status = label, "receipt queue full; receipt not sent");
            count(&self.metrics, label, "failed");
        }
    }
}

fn count(metrics: &Metrics, status: &str, outcome: &str) {
    metrics.receipts.get_or_create(&ReceiptLabels { status: status.into(), outcome: outcome.into() }).inc();
}

async fn send_all(mut rx: mpsc::Receiver<Job>, client: GenesysClient, integration: String, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    while let Some(job) = rx.recv().await {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (client, integration, metrics) = (client.clone(), integration.clone(), metrics.clone());
        tokio::spawn(async move {
            send_one(&client, &integration, &metrics, job).await;
            drop(permit);
        });
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
    let mut pause = Duration::from_secs(2);
    for round in 1..=ROUNDS {
        match client.send_receipt(integration, &receipt).await {
            Ok(()) => {
                tracing::debug!(event_id = %job.id, status = label, "receipt sent");
                count(metrics, label, "sent");
                return;
            }
            Err(e) if e.is_transient() && round < ROUNDS => {
                tracing::info!(event_id = %job.id, status = label, error = %e, "receipt failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            Err(e) => {
                tracing::warn!(event_id = %job.id, status = label, error = %e, "receipt not sent");
                count(metrics, label, "failed");
                return;
            }
        }
    }
}

fn failure_text(reason: &str) -> String {
    let reason = if reason.is_empty() { "downstream refused the message" } else { reason };
    format!("webhook-relay could not deliver the message downstream: {reason}")
}
