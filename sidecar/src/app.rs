//! Wiring: connect the store, build the shared state, serve intake and admin, run the
//! worker and the sampler, and shut down gracefully on SIGTERM/SIGINT.

use crate::metrics::Metrics;
use crate::receipts::Receipts;
use crate::run_config::RunConfig;
use crate::server::{Limits, serve};
use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use webhook_relay_store::{Conn, ConnectOptions, MIN_REDIS_VERSION, Store, StoreError, TlsProblem, tls_problem};

/// How often queue gauges and Redis reachability are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Header read timeout of the admin listener (operators and scrapers, not the internet).
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the spans still queued at shutdown may take to export.
const SPAN_FLUSH: Duration = Duration::from_secs(2);

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("redis ({which}): {source}")]
    Redis { which: &'static str, source: webhook_relay_store::StoreError },
    #[error("{0}")]
    RedisSetup(String),
    #[error("cannot listen on {addr} ({field}): {source}")]
    Listen { addr: std::net::SocketAddr, field: &'static str, source: std::io::Error },
    #[error(transparent)]
    Receipts(#[from] crate::receipts::ReceiptsError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the process's one HTTP client.
pub fn http_client(run_config: &RunConfig) -> Result<reqwest::Client, reqwest::Error> {
    let cfg = &run_config.config;
    reqwest::Client::builder()
        .user_agent(concat!("webhook-relay/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.destination.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(cfg.delivery.concurrency as usize)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

/// What to tell a user whose Redis connection failed in a way only a change of run_config
/// fixes (an untrusted certificate), or `None` for an outage that may pass.
pub fn redis_setup_problem(run_config: &RunConfig, e: &StoreError) -> Option<String> {
    let StoreError::Redis(re) = e else { return None };
    let tls = run_config.config.redis.tls.as_ref();
    if tls_problem(re)? == TlsProblem::ClientCertificateRefused {
        return Some(match tls.and_then(|t| t.cert_file.as_ref()) {
            Some(cert) => format!(
                "redis TLS: the server refused the client certificate ({re}); check that redis.tls.certFile ({}) \
                 is signed by a CA the server trusts",
                cert.display()
            ),
            None => format!(
                "redis TLS: the server refused the handshake ({re}); it asks for a client certificate: set \
                 redis.tls.certFile and redis.tls.keyFile"
            ),
        });
    }
    let ca = tls.and_then(|t| t.ca_file.as_ref());
    Some(match ca {
        Some(path) => format!(
            "redis TLS: the server's certificate is not trusted ({re}); redis.tls.caFile ({}) must hold the CA \
             that signed it, and the certificate must name the host in the Redis URL",
            path.display()
        ),
        None => format!(
            "redis TLS: the server's certificate is not trusted by the system's root certificates ({re}); \
             set redis.tls.caFile to the PEM file of the CA that signed it"
        ),
    })
}

/// The refusal for a Redis too old for the store's scripts, or `None` when it will do.
fn version_problem(v: &webhook_relay_store::ServerVersion) -> Option<String> {
    let (a, b, c) = MIN_REDIS_VERSION;
    (!v.supported()).then(|| format!("redis {v} is too old: webhook-relay needs Redis {a}.{b}.{c} or newer"))
}

/// Checks the server holding the relay's keys before anything else touches them: its
/// version, then the store format (migrating format-1 keys in place). `Err(Some(why))`: a
/// problem only a change fixes (too old a Redis, keys of a newer format, an untrusted
/// certificate); `Err(None)`: Redis does not answer yet.
async fn check_server(run_config: &RunConfig, store: &Store) -> Result<(), Option<String>> {
    let setup = |e: &StoreError| match e {
        StoreError::NewerFormat { .. } => Some(e.to_string()),
        _ => redis_setup_problem(run_config, e),
    };
    let v = store.server_version().await.map_err(|e| setup(&e))?;
    if let Some(why) = version_problem(&v) {
        return Err(Some(why));
    }
    let prepared = store.prepare().await.map_err(|e| setup(&e))?;
    if prepared.migrated > 0 {
        tracing::info!(events = prepared.migrated, "store format 1 migrated to format 2 in place");
    }
    tracing::info!(redis_version = %v, store_format = webhook_relay_store::scripts::FORMAT, "redis version supported");
    Ok(())
}

/// Connects and builds the shared state (no listeners yet). A Redis that answers but cannot
/// run the relay (too old, an untrusted certificate) is an error; one that does not answer
/// yet is not: the relay starts, answers 503 and checks again once it answers.
pub async fn build(run_config: RunConfig) -> Result<Arc<AppState>, RunError> {
    let opts = ConnectOptions::new(run_config.secrets.redis_url.clone())
        .cluster(run_config.config.redis.cluster)
        .tls(run_config.secrets.redis_tls.clone())
        .password(run_config.secrets.redis_password.clone())
        .sentinel_password(run_config.secrets.redis_sentinel_password.clone());
    let conn = match Conn::connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            let e = StoreError::from(e);
            return Err(match redis_setup_problem(&run_config, &e) {
                Some(why) => RunError::RedisSetup(why),
                None => RunError::Redis { which: "connect", source: e },
            });
        }
    };
    let redis = &run_config.config.redis;
    let mut store = Store::new(conn, run_config.config.relay.as_str());
    if let Some(o) = &run_config.config.delivery.ordering {
        store = store.on_dead_letter(match o.on_dead_letter {
            webhook_relay_api::config::OnDeadLetter::Continue => webhook_relay_store::OnDeadLetter::Continue,
            webhook_relay_api::config::OnDeadLetter::Block => webhook_relay_store::OnDeadLetter::Block,
        });
    }
    if redis.wait_for_replicas > 0 {
        // Intake's writes and their WAIT get connections of their own, one per batch in
        // flight (see Store::wait_for_replicas).
        let mut writes = vec![];
        for _ in 0..crate::state::ENQUEUE_PARALLEL {
            match Conn::connect(&opts).await {
                Ok(c) => writes.push(c),
                Err(e) => return Err(RunError::Redis { which: "connect", source: StoreError::from(e) }),
            }
        }
        store = store.wait_for_replicas(redis.wait_for_replicas, redis.wait_timeout, writes);
    }
    let server_checked = match check_server(&run_config, &store).await {
        Ok(()) => true,
        Err(Some(why)) => return Err(RunError::RedisSetup(why)),
        Err(None) => {
            tracing::warn!("redis not reachable at start; answering 503 until it is");
            false
        }
    };
    let http = http_client(&run_config)?;
    let metrics = Arc::new(Metrics::new());
    let receipts = match &run_config.config.genesys {
        Some(g) => {
            let credentials = run_config.secrets.genesys.clone().expect("resolved with the genesys config");
            Some(Receipts::start(g, credentials, http.clone(), metrics.clone())?)
        }
        None => None,
    };
    let spans = run_config.config.tracing.as_ref().map(|t| {
        let headers = run_config.secrets.otlp_headers.clone();
        crate::otlp::Exporter::start(t, run_config.config.relay.as_str(), headers, http.clone(), metrics.clone())
    });
    let relay = AppState::new(run_config, store, http, metrics, receipts, spans);
    if !server_checked {
        relay.set_redis_down("not reachable yet");
    }
    relay.server_checked.store(server_checked, std::sync::atomic::Ordering::Relaxed);
    Ok(relay)
}

/// Runs the relay until SIGTERM/SIGINT, then drains and returns.
pub async fn run(run_config: RunConfig) -> Result<(), RunError> {
    let cfg = run_config.config.clone();
    let relay = build(run_config).await?;
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
    if relay.run_config.secrets.admin_token.is_none() {
        tracing::warn!(var = %cfg.admin.token_env, "admin token not set: the /v1/ admin API is disabled");
    }

    tokio::spawn(signals(relay.clone()));
    tokio::spawn(sample(relay.clone()));
    let worker = tokio::spawn(crate::delivery::run(relay.clone()));

    // Requests still being read or stored when shutdown begins get the read timeout to finish.
    let intake_limits = Limits { header_read_timeout: cfg.source.read_timeout, drain: cfg.intake_drain() };
    let admin_limits = Limits { header_read_timeout: ADMIN_HEADER_TIMEOUT, drain: ADMIN_HEADER_TIMEOUT };
    let r = relay.clone();
    let intake_server =
        serve(intake, crate::intake::router(relay.clone()), intake_limits, async move { r.shutting_down().await });
    let r = relay.clone();
    let admin_server = tokio::spawn(serve(admin, crate::admin::router(relay.clone()), admin_limits, async move {
        r.shutting_down().await;
        // Keep /readyz answering "shutting down" while the worker drains.
        tokio::time::sleep(webhook_relay_api::config::defaults::ADMIN_LINGER).await;
    }));
    if let Err(e) = intake_server.await {
        tracing::error!(error = %e, "intake server failed");
        relay.begin_shutdown();
    }
    let _ = worker.await;
    let _ = admin_server.await;
    relay.finish_receipts().await;
    relay.finish_spans(SPAN_FLUSH).await;
    if let Some(why) = relay.failure() {
        return Err(RunError::RedisSetup(why));
    }
    tracing::info!("webhook-relay stopped");
    Ok(())
}

async fn signals(relay: Arc<AppState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    // Not ready first, still taking events: whatever routes here by readiness (a Service,
    // an Ingress controller) has `source.shutdownDelay` to stop before the listener closes.
    // A second signal cuts the delay short.
    let delay = relay.config().source.shutdown_delay;
    if !delay.is_zero() {
        relay.begin_drain();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "{name}: not ready; still taking events for source.shutdownDelay"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = term.recv() => {},
            _ = int.recv() => {},
            _ = relay.shutting_down() => {},
        }
    }
    tracing::info!("{name}: no new events; finishing in-flight deliveries");
    relay.begin_shutdown();
}

/// Why Redis cannot store an event now, if it cannot: it refuses a write, or it has less
/// memory left under `maxmemory` than the largest event intake accepts (`maxBodyBytes`).
/// Redis judges each write by the memory in use when it arrives, so near the limit small
/// writes pass while events do not; the headroom keeps readiness from flapping there.
async fn storage_problem(relay: &AppState) -> Option<String> {
    if let Err(e) = relay.store.check_writable().await {
        return Some(format!("refuses writes: {e}"));
    }
    let need = relay.config().source.max_body_bytes;
    match relay.store.memory().await {
        Ok((used, max)) if max > 0 && max.saturating_sub(used) < need => Some(format!(
            "out of memory: {used} bytes used of maxmemory {max}, less than source.maxBodyBytes ({need}) left for an event"
        )),
        Ok(_) => None,
        Err(e) => Some(format!("memory unknown: {e}")),
    }
}

/// Samples queue figures into gauges and tracks whether Redis can store for `/readyz` and
/// `redis_up`: a read (the stats) and a write (an expiring key) each time, because an
/// out-of-memory Redis still answers reads. The first time Redis answers after a start
/// without it, its version is checked too.
async fn sample(relay: Arc<AppState>) {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = relay.shutting_down() => return,
        }
        if !relay.server_checked.load(Ordering::Relaxed) {
            match check_server(&relay.run_config, &relay.store).await {
                Ok(()) => relay.server_checked.store(true, Ordering::Relaxed),
                Err(Some(why)) => {
                    relay.fail(why);
                    return;
                }
                Err(None) => continue,
            }
        }
        let mark = relay.health_mark();
        let stats = relay.store.stats().await;
        if let Ok(s) = &stats {
            let m = &relay.metrics;
            m.due.set(s.due as i64);
            m.in_flight.set(s.in_flight as i64);
            m.dead.set(s.dead as i64);
            m.blocked.set(s.blocked as i64);
            m.waiting_keys.set(s.waiting_keys as i64);
            m.oldest_due_age_seconds.set(s.oldest_due_age.map_or(0.0, |d| d.as_secs_f64()));
        }
        let problem = match stats {
            Err(e) => Some(format!("unreachable: {e}")),
            Ok(_) => storage_problem(&relay).await,
        };
        match problem {
            None => {
                let was_up = relay.redis_up();
                if relay.set_redis_up_since(mark) && !was_up {
                    tracing::info!("redis takes writes again");
                }
            }
            Some(why) => {
                if relay.redis_up() {
                    tracing::warn!(problem = %why, "redis cannot store events");
                }
                relay.set_redis_down(why);
            }
        }
    }
}
