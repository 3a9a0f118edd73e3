//! Wiring: connect the store, build the shared state, serve intake and admin, run the
//! worker and the sampler, and shut down gracefully on SIGTERM/SIGINT.

use crate::metrics::Metrics;
use crate::receipts::Receipts;
use crate::relay::Relay;
use crate::server::{Limits, serve};
use crate::settings::Settings;
use std::sync::Arc;
use std::time::Duration;
use webhook_relay_store::{Conn, ConnectOptions, Store};

/// How often queue gauges and Redis reachability are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Header read timeout of the admin listener (operators and scrapers, not the internet).
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time beyond the read timeout for a request in progress to be stored and answered.
const STORE_SLACK: Duration = Duration::from_secs(5);

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("redis ({which}): {source}")]
    Redis { which: &'static str, source: webhook_relay_store::StoreError },
    #[error("cannot listen on {addr} ({field}): {source}")]
    Listen { addr: std::net::SocketAddr, field: &'static str, source: std::io::Error },
    #[error(transparent)]
    Receipts(#[from] crate::receipts::ReceiptsError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the process's one HTTP client.
pub fn http_client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    let cfg = &settings.config;
    reqwest::Client::builder()
        .user_agent(concat!("webhook-relay/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.destination.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(cfg.delivery.concurrency as usize)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

/// Connects and builds the shared state (no listeners yet).
pub async fn build(settings: Settings) -> Result<Arc<Relay>, RunError> {
    let opts = ConnectOptions::new(settings.secrets.redis_url.clone()).cluster(settings.config.redis.cluster);
    let conn = Conn::connect(&opts).await.map_err(|e| RunError::Redis { which: "connect", source: e.into() })?;
    let store = Store::new(conn, settings.config.relay.as_str());
    let http = http_client(&settings)?;
    let metrics = Arc::new(Metrics::new());
    let receipts = match &settings.config.genesys {
        Some(g) => Some(Receipts::start(
            g,
            settings.secrets.genesys_client_id.clone().unwrap_or_default(),
            settings.secrets.genesys_client_secret.clone().unwrap_or_default(),
            http.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    Ok(Relay::new(settings, store, http, metrics, receipts))
}

/// Runs the relay until SIGTERM/SIGINT, then drains and returns.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let cfg = settings.config.clone();
    let relay = build(settings).await?;
    let intake = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|source| RunError::Listen {
        addr: cfg.listen,
        field: "listen",
        source,
    })?;
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen).await.map_err(|source| RunError::Listen {
        addr: cfg.admin_listen,
        field: "adminListen",
        source,
    })?;
    tracing::info!(
        relay = %cfg.relay, listen = %intake.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        destination = %cfg.destination.url, "webhook-relay started"
    );
    if relay.settings.secrets.admin_token.is_none() {
        tracing::warn!(var = %cfg.admin.token_env, "admin token not set: the /v1/ admin API is disabled");
    }

    tokio::spawn(signals(relay.clone()));
    tokio::spawn(sample(relay.clone()));
    let worker = tokio::spawn(crate::delivery::run(relay.clone()));

    // Requests still being read or stored when shutdown begins get the read timeout to finish.
    let intake_limits =
        Limits { header_read_timeout: cfg.source.read_timeout, drain: cfg.source.read_timeout + STORE_SLACK };
    let admin_limits = Limits { header_read_timeout: ADMIN_HEADER_TIMEOUT, drain: ADMIN_HEADER_TIMEOUT };
    let r = relay.clone();
    let intake_server =
        serve(intake, crate::intake::router(relay.clone()), intake_limits, async move { r.shutting_down().await });
    let r = relay.clone();
    let admin_server = tokio::spawn(serve(admin, crate::admin::router(relay.clone()), admin_limits, async move {
        r.shutting_down().await;
        // Keep /readyz answering "shutting down" while the worker drains.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }));
    if let Err(e) = intake_server.await {
        tracing::error!(error = %e, "intake server failed");
        relay.begin_shutdown();
    }
    let _ = worker.await;
    let _ = admin_server.await;
    tracing::info!("webhook-relay stopped");
    Ok(())
}

async fn signals(relay: Arc<Relay>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: no new events; finishing in-flight deliveries"),
        _ = int.recv() => tracing::info!("SIGINT: no new events; finishing in-flight deliveries"),
    }
    relay.begin_shutdown();
}

/// Samples queue figures into gauges and tracks Redis reachability for `/readyz`.
async fn sample(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = relay.shutting_down() => return,
        }
        match relay.store.stats().await {
            Ok(s) => {
                if !relay.redis_up() {
                    tracing::info!("redis reachable again");
                }
                relay.set_redis_up(true);
                let m = &relay.metrics;
                m.due.set(s.due as i64);
                m.in_flight.set(s.in_flight as i64);
                m.dead.set(s.dead as i64);
                m.oldest_due_age_seconds.set(s.oldest_due_age.map_or(0.0, |d| d.as_secs_f64()));
            }
            Err(e) => {
                if relay.redis_up() {
                    tracing::warn!(error = %e, "redis unreachable");
                }
                relay.set_redis_up(false);
            }
        }
    }
}
