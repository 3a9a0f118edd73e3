//! `relay-bench`: a load generator for webhook-relay on loopback. It starts a real
//! redis-server (AOF on), a downstream that answers 204, a no-op HTTP server (the same
//! axum stack answering 200 at once, as the baseline), and the relay binary; then prints:
//!
//! - durable-ack throughput and p50/p99 latency, relay beside the no-op server (closed loop);
//! - ack latency p50/p99 at a fixed 1,000 events/s (open loop), relay beside the no-op;
//! - end-to-end deliveries per second (first send to last delivery);
//! - the relay's peak RSS (VmHWM).
//!
//! Figures, not assertions: see BENCHMARKS.md for recorded runs and the command.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use clap::Parser;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Path of the webhook-relay binary (build it with --release).
    #[arg(long, default_value = "target/release/webhook-relay")]
    relay: String,
    /// Events for the closed-loop throughput run.
    #[arg(long, default_value_t = 20_000)]
    throughput_events: usize,
    /// Concurrent senders in the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of the fixed-rate latency run.
    #[arg(long, default_value_t = 10)]
    rate_seconds: u64,
    /// Events per second in the fixed-rate run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Events for the end-to-end run.
    #[arg(long, default_value_t = 50_000)]
    e2e_events: usize,
    /// Internal: serve a no-op HTTP server on this port and exit when killed.
    #[arg(long, hide = true)]
    serve_noop: Option<u16>,
    /// Internal: serve the counting downstream on this port.
    #[arg(long, hide = true)]
    serve_downstream: Option<u16>,
}

const SECRET: &str = "bench-signing-secret-0123456789";

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Some(port) = args.serve_noop {
        rt.block_on(serve_noop(port));
        return;
    }
    if let Some(port) = args.serve_downstream {
        rt.block_on(serve_downstream(port));
        return;
    }
    rt.block_on(bench(args));
}

async fn serve_noop(port: u16) {
    // The same stack as the relay's intake: axum, JSON answer, nothing stored.
    let app = Router::new()
        .route("/webhooks/genesys", post(|_body: axum::body::Bytes| async { axum::Json(serde_json_value()) }));
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(l, app).await.unwrap();
}

fn serde_json_value() -> &'static str {
    r#"{"status":"accepted","id":"noop"}"#
}

async fn serve_downstream(port: u16) {
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/events",
            post(|State(c): State<Arc<AtomicU64>>, _b: axum::body::Bytes| async move {
                c.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .route("/count", get(|State(c): State<Arc<AtomicU64>>| async move { c.load(Ordering::Relaxed).to_string() }))
        .with_state(count);
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(l, app).await.unwrap();
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_self(flag: &str, port: u16) -> Killer {
    let me = std::env::current_exe().unwrap();
    let c = Command::new(me).args([flag, &port.to_string()]).stdout(Stdio::null()).spawn().unwrap();
    wait_port(port);
    Killer(c)
}

fn wait_port(port: u16) {
    assert!(
        testkit::wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "nothing listening on {port}"
    );
}

fn body(i: usize) -> (String, String) {
    let b = format!(
        r#"{{"id":"bench-{i}","channel":{{"platform":"Open","type":"Private","messageId":"bench-{i}","to":{{"id":"customer-42","idType":"Opaque"}},"from":{{"id":"agent-7","idType":"Opaque"}},"time":"2026-11-30T09:00:00.000Z"}},"type":"Text","text":"Your order has shipped","direction":"Outbound"}}"#
    );
    let sig = webhook_relay_sidecar::signature::sign_genesys(SECRET.as_bytes(), b.as_bytes());
    (b, sig)
}

struct Run {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

async fn one(client: &reqwest::Client, url: &str, i: usize) -> (bool, u64) {
    let (b, sig) = body(i);
    let t = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(b)
        .send()
        .await;
    let ok = match r {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s == 200
        }
        Err(_) => false,
    };
    (ok, t.elapsed().as_micros() as u64)
}

/// Closed loop: `concurrency` senders, `n` events numbered from `first`.
async fn closed_loop(client: &reqwest::Client, url: &str, first: usize, n: usize, concurrency: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / concurrency + 1);
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (ok, us) = one(&client, &url, first + i).await;
                if ok { lat.push(us) } else { failed += 1 }
            }
            (lat, failed)
        }));
    }
    let mut latencies_us = vec![];
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        latencies_us.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Run { ok: latencies_us.len(), failed, elapsed, latencies_us }
}

/// Open loop: one event every 1/rate s for `secs`, each on its own task.
async fn fixed_rate(client: &reqwest::Client, url: &str, first: usize, rate: u64, secs: u64) -> Run {
    let n = (rate * secs) as usize;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move { one(&client, &url, first + i).await }));
    }
    let mut latencies_us = vec![];
    let mut failed = 0;
    for t in tasks {
        let (ok, us) = t.await.unwrap();
        if ok { latencies_us.push(us) } else { failed += 1 }
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Run { ok: latencies_us.len(), failed, elapsed, latencies_us }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn downstream_count(client: &reqwest::Client, port: u16) -> u64 {
    let t = client.get(format!("http://127.0.0.1:{port}/count")).send().await.unwrap().text().await.unwrap();
    t.trim().parse().unwrap()
}

async fn bench(a: Args) {
    assert!(
        std::path::Path::new(&a.relay).is_file(),
        "{} not found: cargo build --release -p webhook-relay-sidecar",
        a.relay
    );
    let redis = testkit::RedisServer::start();
    let (noop_port, ds_port, in_port, admin_port) =
        (testkit::free_port(), testkit::free_port(), testkit::free_port(), testkit::free_port());
    let _noop = spawn_self("--serve-noop", noop_port);
    let _ds = spawn_self("--serve-downstream", ds_port);
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("relay.yaml");
    std::fs::write(
        &cfg,
        format!(
            "relay: bench/orders\nlisten: 127.0.0.1:{in_port}\nadminListen: 127.0.0.1:{admin_port}\n\
             source:\n  path: /webhooks/genesys\n  verify: {{ scheme: genesys-open-messaging, secretEnv: RELAY_SIGNING_SECRET }}\n\
             destination:\n  url: http://127.0.0.1:{ds_port}/events\n  timeout: 5s\ndelivery:\n  concurrency: 128\n"
        ),
    )
    .unwrap();
    let relay = Command::new(&a.relay)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("REDIS_URL", redis.url())
        .env("RELAY_SIGNING_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let relay_pid = relay.id();
    let _relay = Killer(relay);
    wait_port(in_port);

    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap();
    let relay_url = format!("http://127.0.0.1:{in_port}/webhooks/genesys");
    let noop_url = format!("http://127.0.0.1:{noop_port}/webhooks/genesys");
    println!(
        "machine: {} cores; relay, redis-server, downstream, no-op server and this load generator share them",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // Warm up both (connections, allocator, Lua script cache).
    closed_loop(&client, &noop_url, 0, 2000, a.concurrency).await;
    closed_loop(&client, &relay_url, 10_000_000, 2000, a.concurrency).await;
    wait_drained(&client, ds_port, 2000).await;

    let noop = closed_loop(&client, &noop_url, 0, a.throughput_events, a.concurrency).await;
    let relay_run = closed_loop(&client, &relay_url, 0, a.throughput_events, a.concurrency).await;
    println!(
        "\n1. closed loop, {} senders, {} events (relay: durable ack = stored in Redis before 200)",
        a.concurrency, a.throughput_events
    );
    println!("   {:<18} {:>12} {:>10} {:>10} {:>8}", "", "events/s", "p50 ms", "p99 ms", "failed");
    for (name, r) in [("no-op server", &noop), ("webhook-relay", &relay_run)] {
        println!("   {:<18} {:>12.0} {:>10.2} {:>10.2} {:>8}", name, r.rate(), r.pct(0.5), r.pct(0.99), r.failed);
    }
    println!("   relay/no-op throughput ratio: {:.2}", relay_run.rate() / noop.rate());
    wait_drained(&client, ds_port, (2000 + a.throughput_events) as u64).await;

    let noop_r = fixed_rate(&client, &noop_url, 1_000_000, a.rate, a.rate_seconds).await;
    let relay_r = fixed_rate(&client, &relay_url, 1_000_000, a.rate, a.rate_seconds).await;
    println!("\n2. open loop at {} events/s for {} s (ack latency)", a.rate, a.rate_seconds);
    println!("   {:<18} {:>12} {:>10} {:>10} {:>8}", "", "achieved/s", "p50 ms", "p99 ms", "failed");
    for (name, r) in [("no-op server", &noop_r), ("webhook-relay", &relay_r)] {
        println!("   {:<18} {:>12.0} {:>10.2} {:>10.2} {:>8}", name, r.rate(), r.pct(0.5), r.pct(0.99), r.failed);
    }
    println!("   relay/no-op p99 ratio: {:.2}", relay_r.pct(0.99) / noop_r.pct(0.99));
    let before = (2000 + a.throughput_events + relay_r.ok) as u64;
    wait_drained(&client, ds_port, before).await;

    let start = Instant::now();
    let e2e = closed_loop(&client, &relay_url, 2_000_000, a.e2e_events, a.concurrency * 2).await;
    let acked_in = start.elapsed();
    let target = before + e2e.ok as u64;
    let done = wait_drained(&client, ds_port, target).await;
    let total = start.elapsed();
    println!("\n3. end to end: {} events sent with {} senders", a.e2e_events, a.concurrency * 2);
    println!(
        "   acknowledged {} in {:.2} s ({:.0}/s); all delivered downstream after {:.2} s: {:.0} deliveries/s end to end{}",
        e2e.ok,
        acked_in.as_secs_f64(),
        e2e.rate(),
        total.as_secs_f64(),
        e2e.ok as f64 / total.as_secs_f64(),
        if done { "" } else { " (NOT all delivered within the wait)" }
    );
    println!("\n4. relay peak RSS (VmHWM): {:.1} MiB", peak_rss_kib(relay_pid).unwrap_or(0) as f64 / 1024.0);
    // Redis work per event over the whole run (warm-up included).
    let stats = redis.cli(&["INFO", "commandstats"]);
    let all_events = (target + 2000) as f64;
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_eval:")) {
        let calls: f64 =
            line.split("calls=").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(0.0);
        let usec: f64 = line
            .split("usec_per_call=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        println!(
            "   redis {}: {:.2} script calls per event, {:.1} us per call",
            line.split(':').next().unwrap_or("").trim_start_matches("cmdstat_"),
            calls / all_events,
            usec
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded, 120 s) until the downstream has seen `n` deliveries.
async fn wait_drained(client: &reqwest::Client, port: u16, n: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if downstream_count(client, port).await >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
