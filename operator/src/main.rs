//! `webhook-relay-operator`: `run` the controller, or print the `crd`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};
use webhook_relay_operator::controller::{self, Context};
use webhook_relay_operator::genesys_check::Checker;
use webhook_relay_operator::leader::{self, LeaseSettings};
use webhook_relay_operator::metrics::{self, Metrics};
use webhook_relay_operator::resources::WorkloadDefaults;

#[derive(Parser)]
#[command(name = "webhook-relay-operator", version, about = "Reconciles WebhookRelay resources into running relays")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the WebhookRelay CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Relay image for relays whose spec.workload.image is unset.
    #[arg(long, env = "RELAY_IMAGE", default_value = concat!("ghcr.io/webhook-relay/webhook-relay:", env!("CARGO_PKG_VERSION")))]
    relay_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// How often a healthy relay's status (queue figures) is refreshed.
    #[arg(long, env = "REFRESH_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    refresh: Duration,
    /// Reconciles run at once, at most (0: no limit).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENCY)]
    max_concurrent_reconciles: u16,
    /// How often a relay's Genesys Open Messaging integration is looked up to verify its
    /// webhook URL (at once when the spec, endpoint or credentials Secret changes).
    #[arg(long, env = "GENESYS_CHECK_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    genesys_check_interval: Duration,
    /// Elect a leader through a Lease; needed when more than one replica runs.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "webhook-relay-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in events (default: hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "operator".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// The Kubernetes client (KUBECONFIG or in-cluster config), counting its requests in
/// `webhook_relay_operator_kube_requests_total`.
async fn kube_client(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let config = kube::Config::infer().await.context("connecting to Kubernetes (KUBECONFIG or in-cluster config)")?;
    let counting = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.kube_request(&req);
        req
    });
    let builder = kube::client::ClientBuilder::try_from(config).context("building the Kubernetes client")?;
    Ok(builder.with_layer(&counting).build())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = kube_client(metrics.clone()).await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");
    let app = metrics::router(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });

    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    if args.leader_elect {
        tokio::select! {
            _ = leader::acquire(client.clone(), &lease) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
    metrics.leader.set(1);

    let reporter = Reporter { controller: "webhook-relay-operator".into(), instance: Some(identity) };
    let recorder = Recorder::new(client.clone(), reporter);
    let defaults = WorkloadDefaults { relay_image: args.relay_image.clone() };
    // The process's one HTTP client (Genesys Cloud calls); Kubernetes has its own.
    let http = reqwest::Client::builder()
        .user_agent(concat!("webhook-relay-operator/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let genesys = Checker::new(http, args.genesys_check_interval);
    let mut ctx = Context::new(client.clone(), defaults, recorder, metrics.clone(), args.refresh, genesys);
    ctx.concurrency = args.max_concurrent_reconciles;
    let ctx = Arc::new(ctx);
    info!(image = %args.relay_image, namespace = ?args.namespace, "starting controller");

    if args.leader_elect {
        tokio::select! {
            _ = controller::run(ctx, args.namespace.clone()) => {
                leader::release(client, &lease).await;
            }
            _ = leader::hold(client.clone(), lease.clone()) => {
                metrics.leader.set(0);
                anyhow::bail!("lost leadership; exiting so a restart can compete again");
            }
        }
    } else {
        controller::run(ctx, args.namespace.clone()).await;
    }
    info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", webhook_relay_operator::crd_yaml());
            Ok(())
        }
        Command::Run(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            if args.log_json {
                builder.json().init()
            } else {
                builder.init()
            }
            run(args).await
        }
    }
}
