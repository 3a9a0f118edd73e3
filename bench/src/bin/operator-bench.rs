//! `make bench-operator`: the operator (a release build, run as a process) against the test
//! cluster, with N WebhookRelays sharing one Redis (a redis-server on loopback), for each N
//! of `--counts`. Prints, per N: the time from the first create until every relay has been
//! fully reconciled (children applied, Redis probed, status written for its generation),
//! the operator's peak RSS, and, with every relay idle for `--idle-periods` refresh
//! periods, the API requests per minute by verb and resource and the operator's CPU per
//! minute.
//!
//! The relays run no pods (`workload.replicas: 0`; one 2-core node cannot run 1,000), so
//! their Ready condition is False with reason ScaledToZero: what is measured is the
//! operator's own work, which is the same for a relay whose pods run (one more status
//! write when they become available).

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace as CoreNamespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::RedisServer;
use testkit::kube::{install_crd, relay_manifest};
use webhook_relay_api::crd::WebhookRelay;

#[derive(Parser)]
#[command(name = "operator-bench", about = "WebhookRelays applied at once: time to reconcile, RSS, idle API load")]
struct Args {
    /// The operator binary.
    #[arg(long)]
    operator: PathBuf,
    /// How many WebhookRelays, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    counts: Vec<usize>,
    /// The operator's --refresh.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    refresh: Duration,
    /// Refresh periods the idle figures are measured over.
    #[arg(long, default_value_t = 2)]
    idle_periods: u32,
    /// One more flag for the operator (repeat for more), e.g. `--operator-arg=--max-concurrent-reconciles=0`.
    #[arg(long, allow_hyphen_values = true)]
    operator_arg: Vec<String>,
    /// Give up on a run after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    limit: Duration,
}

/// Resources whose API requests are counted (the operator's; other clients' requests on
/// them, e.g. the controller-manager's, are in the figures too).
const RESOURCES: &[&str] = &[
    "webhookrelays",
    "configmaps",
    "deployments",
    "services",
    "ingresses",
    "poddisruptionbudgets",
    "secrets",
    "pods",
    "events",
];
const WRITE_VERBS: &[&str] = &["APPLY", "PATCH", "UPDATE", "CREATE", "DELETE", "POST", "PUT"];

/// `apiserver_request_total` for [`RESOURCES`], by (verb, resource[/subresource]).
async fn api_requests(client: &Client) -> BTreeMap<(String, String), f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client.request_text(req).await.expect("the API server's /metrics");
    let mut counts = BTreeMap::new();
    for m in testkit::relay::samples(&text, "apiserver_request_total") {
        let resource = m.label("resource");
        if !RESOURCES.contains(&resource) || m.label("verb") == "WATCH" {
            continue;
        }
        let sub = m.label("subresource");
        let what = if sub.is_empty() { resource.to_string() } else { format!("{resource}/{sub}") };
        *counts.entry((m.label("verb").to_string(), what)).or_insert(0.0) += m.value;
    }
    counts
}

/// The operator's own count of its API requests
/// (`webhook_relay_operator_kube_requests_total`), by (verb, resource).
fn operator_requests(metrics_port: u16) -> BTreeMap<(String, String), f64> {
    let body = testkit::http::get(metrics_port, "/metrics").map(|r| r.body).unwrap_or_default();
    testkit::relay::samples(&body, "webhook_relay_operator_kube_requests_total")
        .map(|m| ((m.label("verb").to_string(), m.label("resource").to_string()), m.value))
        .collect()
}

/// Per-minute rates of `after - before` over `window`: by verb, and by verb and resource.
fn rates(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    window: Duration,
) -> (String, String, f64) {
    let per_min = 60.0 / window.as_secs_f64();
    let mut by_verb: BTreeMap<String, f64> = BTreeMap::new();
    let mut detail = Vec::new();
    let mut writes = 0.0;
    for ((verb, what), count) in after {
        let d = count - before.get(&(verb.clone(), what.clone())).unwrap_or(&0.0);
        if d > 0.0 {
            *by_verb.entry(verb.clone()).or_default() += d * per_min;
            detail.push(format!("{verb} {what} {:.0}", d * per_min));
            if WRITE_VERBS.contains(&verb.as_str()) {
                writes += d;
            }
        }
    }
    let verbs: Vec<String> = by_verb.iter().map(|(v, r)| format!("{v} {r:.0}")).collect();
    let verbs = if verbs.is_empty() { "none".to_string() } else { verbs.join(", ") };
    let detail = if detail.is_empty() { "none".to_string() } else { detail.join(", ") };
    (verbs, detail, writes)
}

/// User + system CPU seconds of process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the operator's /proc stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(100.0);
    ticks / hz
}

/// Peak resident set size of process `pid`, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the operator's /proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// Whether `r` carries a status written for its current generation.
fn reconciled(r: &WebhookRelay) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.observed_generation == r.metadata.generation && s.conditions.iter().any(|c| c.type_ == "Ready")
    })
}

async fn run_one(args: &Args, client: &Client, redis_url: &str, n: usize) -> Result<(), String> {
    let ns = format!("whr-bench-{n}-{}", std::process::id());
    let namespaces: Api<CoreNamespace> = Api::all(client.clone());
    let ns_obj: CoreNamespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    namespaces.create(&PostParams::default(), &ns_obj).await.map_err(|e| format!("creating namespace {ns}: {e}"))?;
    let result = measure(args, client, redis_url, n, &ns).await;
    // Leave the cluster as found: the namespace and everything in it, waited for.
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let gone = Instant::now();
    while namespaces.get_opt(&ns).await.ok().flatten().is_some() && gone.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  namespace {ns} deleted in {:.1}s", gone.elapsed().as_secs_f64());
    result
}

async fn measure(args: &Args, client: &Client, redis_url: &str, n: usize, ns: &str) -> Result<(), String> {
    let secrets = std::fs::read_to_string(testkit::process::root().join("examples/secrets.yaml")).unwrap();
    for doc in secrets.split("\n---").filter(|d| d.contains("kind: Secret")) {
        let mut s: k8s_openapi::api::core::v1::Secret = serde_yaml::from_str(doc).map_err(|e| e.to_string())?;
        if s.metadata.name.as_deref() == Some("relay-redis") {
            s.string_data = Some([("url".to_string(), redis_url.to_string())].into());
        }
        Api::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await.map_err(|e| e.to_string())?;
    }
    let metrics_port = testkit::process::free_port();
    let log = std::fs::File::create(testkit::process::root().join(format!("target/bench-operator-{n}.log"))).unwrap();
    let op = Command::new(&args.operator)
        .args(["run", "--namespace", ns, "--relay-image", testkit::kube::RELAY_IMAGE])
        .args(["--refresh", &humantime::format_duration(args.refresh).to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(&args.operator_arg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", args.operator.display()))?;
    let pid = op.id();
    // Killed on every way out, a panic included (a closed stdout makes println! panic).
    let mut op = KillOnDrop(Some(op));
    let result = async {
        testkit::wait::wait_for("operator /healthz", || testkit::http::get(metrics_port, "/healthz"));
        let relays: Api<WebhookRelay> = Api::namespaced(client.clone(), ns);
        let (store, writer) = kube::runtime::reflector::store();
        let watch = kube::runtime::watcher(relays.clone(), kube::runtime::watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {});
        let watching = tokio::spawn(watch);
        let destination = format!("http://downstream.{ns}.svc:8080/events");
        let own_at_start = operator_requests(metrics_port);
        let start = Instant::now();
        let created = futures::stream::iter(0..n)
            .map(|i| {
                let relays = relays.clone();
                let yaml = relay_manifest(&format!("r-{i}"), &destination, "  workload: {replicas: 0}\n");
                async move {
                    let r: WebhookRelay = serde_yaml::from_str(&yaml).expect("the manifest parses");
                    relays.create(&PostParams::default(), &r).await.map(|_| ())
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        if let Some(Err(e)) = created.into_iter().find(|r| r.is_err()) {
            return Err(format!("creating a WebhookRelay: {e}"));
        }
        let all_created = start.elapsed();
        // Counted from a watch: listing 1,000 relays every 250 ms would load the API
        // server more than the operator does.
        let all_reconciled = loop {
            let last = store.state().iter().filter(|r| reconciled(r)).count();
            if last == n {
                break start.elapsed();
            }
            if start.elapsed() > args.limit {
                return Err(format!("after {:?} only {last} of {n} relays were reconciled", args.limit));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        watching.abort();
        let own_reconciled = operator_requests(metrics_port);
        println!(
            "{n} relays: created in {:.1}s, all reconciled (children applied, Redis probed, status written) {:.1}s after the first create; operator peak RSS so far {:.1} MiB",
            all_created.as_secs_f64(),
            all_reconciled.as_secs_f64(),
            peak_rss_mib(pid)
        );
        let (_, own_detail, _) = rates(&own_at_start, &own_reconciled, Duration::from_secs(60));
        let total: f64 = own_reconciled.iter().map(|(k, v)| v - own_at_start.get(k).unwrap_or(&0.0)).sum();
        println!(
            "  the operator's requests until then: {total} ({:.1} per relay): {own_detail}",
            total / n as f64
        );
        // Idle: nothing changes; let the last writes land, then count.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (before, cpu_before, t0) = (api_requests(client).await, cpu_seconds(pid), Instant::now());
        let own_before = operator_requests(metrics_port);
        tokio::time::sleep(args.refresh * args.idle_periods).await;
        let (after, cpu_after, window) = (api_requests(client).await, cpu_seconds(pid), t0.elapsed());
        let own_after = operator_requests(metrics_port);
        let per_min = 60.0 / window.as_secs_f64();
        let (own_verbs, own_detail, own_writes) = rates(&own_before, &own_after, window);
        println!(
            "{n} relays idle for {:.0}s ({} refresh periods of {:?}): the operator's API requests/min by verb: {own_verbs}; its writes in the window: {own_writes}",
            window.as_secs_f64(),
            args.idle_periods,
            args.refresh,
        );
        println!("  the operator's requests by verb and resource (/min): {own_detail}");
        let (verbs, detail, writes) = rates(&before, &after, window);
        println!(
            "  the API server's count for the same kinds, all clients (controller-manager, kubelet, ...): {verbs}; writes {writes}"
        );
        println!("  all clients by verb and resource (/min): {detail}");
        println!(
            "  operator CPU {:.2} s/min idle; peak RSS {:.1} MiB",
            (cpu_after - cpu_before) * per_min,
            peak_rss_mib(pid)
        );
        Ok(())
    }
    .await;
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let stopped = Instant::now();
    while op.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
        && stopped.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(op);
    result
}

/// The operator process, killed and reaped when dropped.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = Client::try_default().await.unwrap_or_else(|e| {
        eprintln!("operator-bench: no cluster ({e}); `make bench-operator` starts the test cluster");
        std::process::exit(1)
    });
    install_crd();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    println!(
        "operator-bench: operator {} {}, --refresh {:?}, one redis-server on loopback shared by every relay; {} cores",
        args.operator.display(),
        args.operator_arg.join(" "),
        args.refresh,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let mut failed = false;
    for &n in &args.counts {
        if let Err(e) = run_one(&args, &client, &redis_url, n).await {
            eprintln!("operator-bench: {n} relays: {e}");
            failed = true;
        }
    }
    drop(redis);
    if failed {
        std::process::exit(1);
    }
}
