//! `webhook-relay`: the sidecar binary. `serve` parses the config and runs the relay;
//! `dlq` is a client of a running relay's admin API.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use webhook_relay_sidecar::{app, cli, run_config::RunConfig};

#[derive(Parser)]
#[command(
    name = "webhook-relay",
    version,
    about = "Receive webhooks, store them in Redis, deliver them downstream with retries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: intake, delivery worker, admin API.
    Serve {
        /// Path of relay.yaml.
        #[arg(long, env = "RELAY_CONFIG", default_value = "/etc/webhook-relay/relay.yaml")]
        config: PathBuf,
    },
    /// Inspect, replay and delete stored events through a running relay's admin API.
    Dlq(Box<cli::DlqArgs>),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dlq(args) => cli::run(*args),
        Command::Serve { config } => {
            init_logging();
            let run_config = match RunConfig::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("webhook-relay: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(app::run(run_config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "webhook-relay failed");
                    eprintln!("webhook-relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
