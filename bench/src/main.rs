//! `relay-bench`: a load generator for webhook-relay on loopback. It starts a real
//! redis-server (AOF on), a downstream that answers 204 (or 400 when told to), a no-op HTTP
//! server (the same axum stack answering 200 at once, as the baseline), and the relay
//! binary; then prints:
//!
//! 1. durable-ack throughput and p50/p99 latency, relay beside the no-op server (closed loop);
//! 2. ack latency p50/p99 at a fixed 5,000 events/s (open loop), relay beside the no-op;
//! 3. the relay's CPU time per delivered event at a fixed 2,000 events/s (from /proc);
//! 4. end-to-end deliveries per second beside the no-op server's requests per second, and
//!    the Redis commands per delivered event in that run (`INFO commandstats`: script calls
//!    and the commands inside them);
//! 5. Redis memory per stored event beyond its body;
//! 6. the drain rate of a replayed 100k dead-letter backlog beside a 10k one;
//! 7. the relay's peak RSS (VmHWM);
//! 8. the destination gate: end-to-end deliveries per second through a relay with
//!    `rateLimit` (far above the throughput) and `circuitBreaker` beside one without, and the
//!    rate a binding `rateLimit` of 1,000/s achieves;
//! 9. `redis.waitForReplicas: 1` beside 0, closed and open loop;
//! 10. `delivery.ordering` over 10,000 conversations beside unordered: end-to-end deliveries
//!     per second and Redis commands per delivered event.
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
    #[arg(long, default_value_t = 5)]
    rate_seconds: u64,
    /// Events per second in the fixed-rate latency run.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Events per second in the CPU run (as long as the latency run).
    #[arg(long, default_value_t = 2000)]
    cpu_rate: u64,
    /// Events for the end-to-end run.
    #[arg(long, default_value_t = 50_000)]
    e2e_events: usize,
    /// Events stored for the memory figure.
    #[arg(long, default_value_t = 20_000)]
    memory_events: usize,
    /// The small and the large dead-letter backlog replayed for the drain figure.
    #[arg(long, default_value_t = 10_000)]
    small_backlog: usize,
    #[arg(long, default_value_t = 100_000)]
    large_backlog: usize,
    /// Internal: serve a no-op HTTP server on this port and exit when killed.
    #[arg(long, hide = true)]
    serve_noop: Option<u16>,
    /// Internal: serve the counting downstream on this port.
    #[arg(long, hide = true)]
    serve_downstream: Option<u16>,
}

const SECRET: &str = "bench-signing-secret-0123456789";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

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

/// Counts 204s; after `POST /refuse` answers 400 (counted apart) until `POST /accept`.
#[derive(Default)]
struct Downstream {
    delivered: AtomicU64,
    refusing: std::sync::atomic::AtomicBool,
}

async fn serve_downstream(port: u16) {
    use axum::http::StatusCode;
    type Ds = State<Arc<Downstream>>;
    let app = Router::new()
        .route(
            "/events",
            post(|State(d): Ds, _b: axum::body::Bytes| async move {
                if d.refusing.load(Ordering::Relaxed) {
                    return StatusCode::BAD_REQUEST;
                }
                d.delivered.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }),
        )
        .route("/count", get(|State(d): Ds| async move { d.delivered.load(Ordering::Relaxed).to_string() }))
        .route("/refuse", post(|State(d): Ds| async move { d.refusing.store(true, Ordering::Relaxed) }))
        .route("/accept", post(|State(d): Ds| async move { d.refusing.store(false, Ordering::Relaxed) }))
        .with_state(Arc::new(Downstream::default()));
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
    keyed_body(i, 0)
}

/// [`body`] for the conversation of customer `i % keys` (`channel.to.id`; `keys` 0: all
/// events to `customer-42`).
fn keyed_body(i: usize, keys: usize) -> (String, String) {
    let to = if keys == 0 { "customer-42".to_string() } else { format!("customer-{}", i % keys) };
    let b = format!(
        r#"{{"id":"bench-{i}","channel":{{"platform":"Open","type":"Private","messageId":"bench-{i}","to":{{"id":"{to}","idType":"Opaque"}},"from":{{"id":"agent-7","idType":"Opaque"}},"time":"2026-11-30T09:00:00.000Z"}},"type":"Text","text":"Your order has shipped","direction":"Outbound"}}"#
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

async fn one(client: &reqwest::Client, url: &str, i: usize, keys: usize) -> (bool, u64) {
    let (b, sig) = keyed_body(i, keys);
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
    closed_loop_keyed(client, url, first, n, concurrency, 0).await
}

/// [`closed_loop`] with event `i` in the conversation of customer `i % keys` ([`keyed_body`]).
async fn closed_loop_keyed(
    client: &reqwest::Client,
    url: &str,
    first: usize,
    n: usize,
    concurrency: usize,
    keys: usize,
) -> Run {
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
                let (ok, us) = one(&client, &url, first + i, keys).await;
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
        tasks.push(tokio::spawn(async move { one(&client, &url, first + i, 0).await }));
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

/// User + system CPU time of a process so far, in µs (from /proc/<pid>/stat).
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the relay's /proc stat");
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0);
    ticks * 1e6 / hz
}

/// Calls and µs per command from `INFO commandstats`, busiest first.
fn command_stats(redis: &testkit::RedisServer) -> Vec<(String, f64, f64)> {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let field = |line: &str, name: &str| -> f64 {
        line.split(name).nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(0.0)
    };
    let mut out: Vec<(String, f64, f64)> = stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            Some((name.to_string(), field(rest, "calls="), field(rest, "usec=")))
        })
        .filter(|(name, _, _)| !matches!(name.as_str(), "info" | "config" | "ping" | "hello" | "client" | "select"))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn used_memory(redis: &testkit::RedisServer) -> f64 {
    let info = redis.cli(&["INFO", "memory"]);
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).unwrap()
}

async fn admin_json(client: &reqwest::Client, admin: &str, method: reqwest::Method, path: &str) -> serde_json::Value {
    let r = client.request(method, format!("{admin}{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Dead-letters `n` events (the downstream refuses them, one attempt each), then replays
/// them all at once and returns the drain rate: events delivered per second from the
/// replay request until the last delivery.
async fn drain_rate(client: &reqwest::Client, b: &Bench<'_>, first: usize, n: usize) -> f64 {
    let ds = format!("http://127.0.0.1:{}", b.ds_port);
    client.post(format!("{ds}/refuse")).send().await.unwrap();
    let sent = closed_loop(client, b.relay_url, first, n, b.concurrency * 2).await;
    assert_eq!(sent.ok, n, "backlog events not acknowledged");
    let start = Instant::now();
    loop {
        let dead = admin_json(client, b.admin, reqwest::Method::GET, "/v1/stats").await["dead"].as_u64().unwrap();
        if dead as usize >= n {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "only {dead} of {n} dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.post(format!("{ds}/accept")).send().await.unwrap();
    let before = downstream_count(client, b.ds_port).await;
    let start = Instant::now();
    // A replay request works for at most 2 s, then answers with a cursor to go on from.
    let (mut replayed, mut path) = (0, "/v1/dead/replay".to_string());
    loop {
        let r = admin_json(client, b.admin, reqwest::Method::POST, &path).await;
        replayed += r["replayed"].as_u64().unwrap();
        match r["cursor"].as_str() {
            Some(c) => path = format!("/v1/dead/replay?cursor={c}"),
            None => break,
        }
    }
    assert_eq!(replayed, n as u64);
    assert!(wait_drained(client, b.ds_port, before + n as u64).await, "the replayed backlog did not drain");
    n as f64 / start.elapsed().as_secs_f64()
}

struct Bench<'a> {
    relay_url: &'a str,
    admin: &'a str,
    ds_port: u16,
    concurrency: usize,
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
    let (noop_port, ds_port) = (testkit::free_port(), testkit::free_port());
    let _noop = spawn_self("--serve-noop", noop_port);
    let _ds = spawn_self("--serve-downstream", ds_port);
    let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let main_relay = RelayRun::start(&a.relay, &redis, &dir, "bench/orders", ds_port, "");
    let (relay_pid, in_port, admin_port) = (main_relay.pid, main_relay.in_port, main_relay.admin_port);

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
    let mut delivered = (2000 + a.throughput_events + relay_r.ok) as u64;
    wait_drained(&client, ds_port, delivered).await;

    let cpu_before = cpu_us(relay_pid);
    let cpu_run = fixed_rate(&client, &relay_url, 1_500_000, a.cpu_rate, a.rate_seconds).await;
    delivered += cpu_run.ok as u64;
    wait_drained(&client, ds_port, delivered).await;
    let cpu = cpu_us(relay_pid) - cpu_before;
    println!(
        "\n3. relay CPU at {} events/s for {} s: {:.0} us per delivered event (intake, store, delivery; {} events)",
        a.cpu_rate,
        a.rate_seconds,
        cpu / cpu_run.ok as f64,
        cpu_run.ok
    );

    // The no-op server under the end-to-end load (64 senders) is the end-to-end baseline.
    let noop_e2e = closed_loop(&client, &noop_url, 0, a.e2e_events, a.concurrency * 2).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let start = Instant::now();
    let e2e = closed_loop(&client, &relay_url, 2_000_000, a.e2e_events, a.concurrency * 2).await;
    let acked_in = start.elapsed();
    let target = delivered + e2e.ok as u64;
    let done = wait_drained(&client, ds_port, target).await;
    let total = start.elapsed();
    let commands = command_stats(&redis);
    let e2e_rate = e2e.ok as f64 / total.as_secs_f64();
    println!("\n4. end to end: {} events sent with {} senders", a.e2e_events, a.concurrency * 2);
    println!(
        "   acknowledged {} in {:.2} s ({:.0}/s); all delivered downstream after {:.2} s: {:.0} deliveries/s end to end{}",
        e2e.ok,
        acked_in.as_secs_f64(),
        e2e.rate(),
        total.as_secs_f64(),
        e2e_rate,
        if done { "" } else { " (NOT all delivered within the wait)" }
    );
    println!("   no-op server, same senders: {:.0} requests/s", noop_e2e.rate());
    println!("   relay end-to-end / no-op ratio: {:.2}", e2e_rate / noop_e2e.rate());
    let per_event = |calls: f64| calls / e2e.ok as f64;
    let all_calls: f64 = commands.iter().map(|c| c.1).sum();
    // A script's time includes the commands inside it: Redis time is the top-level calls'.
    let top_level_usec: f64 = commands.iter().filter(|c| matches!(c.0.as_str(), "evalsha" | "eval")).map(|c| c.2).sum();
    println!(
        "   redis: {:.2} commands per delivered event (scripts' inner commands included), {:.1} us of script time per event",
        per_event(all_calls),
        per_event(top_level_usec)
    );
    let top: Vec<String> = commands
        .iter()
        .take(12)
        .map(|(name, calls, us)| format!("{name} {:.2} ({:.1} us)", per_event(*calls), us / calls))
        .collect();
    println!("   per event (us per call): {}", top.join(", "));

    // Memory: events stored through the store itself (same scripts) under a relay id of
    // their own, nothing delivered; used_memory before and after, bodies subtracted.
    let conn =
        webhook_relay_store::Conn::connect(&webhook_relay_store::ConnectOptions::new(redis.url())).await.unwrap();
    let store = webhook_relay_store::Store::new(conn, "bench/memory");
    store.prepare().await.unwrap();
    let before = used_memory(&redis);
    let mut body_bytes = 0usize;
    for chunk in (0..a.memory_events).collect::<Vec<_>>().chunks(500) {
        let events: Vec<webhook_relay_store::NewEvent> = chunk
            .iter()
            .map(|&i| {
                let (b, _) = body(5_000_000 + i);
                body_bytes += b.len();
                webhook_relay_store::NewEvent {
                    id: webhook_relay_store::EventId::new(format!("bench-{}", 5_000_000 + i)).unwrap(),
                    body: b.into_bytes().into(),
                    content_type: "application/json".into(),
                    trace_context: None,
                    ordering_key: None,
                }
            })
            .collect();
        store.enqueue_many(&events, Duration::from_secs(86400)).await.unwrap();
    }
    let grown = used_memory(&redis) - before;
    println!(
        "\n5. redis memory: {} events stored (bodies {:.0} bytes each): {:.0} bytes per event beyond its body",
        a.memory_events,
        body_bytes as f64 / a.memory_events as f64,
        (grown - body_bytes as f64) / a.memory_events as f64
    );

    let b = Bench {
        relay_url: &relay_url,
        admin: &format!("http://127.0.0.1:{admin_port}"),
        ds_port,
        concurrency: a.concurrency,
    };
    let small = drain_rate(&client, &b, 6_000_000, a.small_backlog).await;
    let large = drain_rate(&client, &b, 7_000_000, a.large_backlog).await;
    println!(
        "\n6. replayed dead-letter backlog drain: {} events {:.0}/s, {} events {:.0}/s; ratio large/small {:.2}",
        a.small_backlog,
        small,
        a.large_backlog,
        large,
        large / small
    );

    println!("\n7. relay peak RSS (VmHWM): {:.1} MiB", peak_rss_kib(relay_pid).unwrap_or(0) as f64 / 1024.0);

    // 8. The destination gate (delivery.rateLimit, delivery.circuitBreaker): a relay with both
    // set far above the throughput (checked and spent in every claim, holding nothing back)
    // beside the first relay, each run twice in turn; then a relay whose limit binds.
    let gated = RelayRun::start(
        &a.relay,
        &redis,
        &dir,
        "bench/gated",
        ds_port,
        "  rateLimit: { perSecond: 100000, burst: 10000 }\n  circuitBreaker: { failureThreshold: 10 }\n",
    );
    let n = a.e2e_events / 2;
    let (mut off, mut on) = (vec![], vec![]);
    for round in 0..2 {
        let first = 8_000_000 + round * 2 * n;
        off.push(end_to_end(&client, &relay_url, first, n, a.concurrency * 2, ds_port).await);
        on.push(end_to_end(&client, &gated.url(), first + n, n, a.concurrency * 2, ds_port).await);
    }
    println!(
        "\n8. destination gate, {n} events end to end per run, two runs each in turn: no gate {} deliveries/s; \
         breaker + rate limit 100000/s {}/s; ratio on/off {:.2}",
        runs_text(&off, 0),
        runs_text(&on, 0),
        mean(&on) / mean(&off)
    );
    drop(gated);
    let limited = RelayRun::start(
        &a.relay,
        &redis,
        &dir,
        "bench/limited",
        ds_port,
        "  rateLimit: { perSecond: 1000, burst: 100 }\n",
    );
    let limited_n = 5_000;
    let rate = end_to_end(&client, &limited.url(), 9_000_000, limited_n, a.concurrency * 2, ds_port).await;
    println!(
        "   rateLimit 1000/s burst 100: {limited_n} events delivered at {rate:.0}/s end to end \
         (from the first send; the limit allows {:.0}/s over this run)",
        limited_n as f64 / ((limited_n - 100) as f64 / 1000.0)
    );
    drop(limited);

    // 9. redis.waitForReplicas: a replica of the bench's Redis on loopback, then the first
    // relay (answers once the primary holds an event) beside one that waits for the replica
    // (WAIT 1 after each stored batch), each run twice in turn, closed loop and open loop.
    let replica = testkit::RedisServer::start_replica_of(&redis);
    let waiting = RelayRun::start(
        &a.relay,
        &redis,
        &dir,
        "bench/replicated",
        ds_port,
        "redis:\n  waitForReplicas: 1\n  waitTimeout: 1s\n",
    );
    let wait_url = waiting.url();
    let n = a.throughput_events / 2;
    let (mut plain, mut waited) = (vec![], vec![]);
    for round in 0..2 {
        let first = 10_000_000 + round * 2 * n;
        plain.push(closed_loop(&client, &relay_url, first, n, a.concurrency).await);
        waited.push(closed_loop(&client, &wait_url, first + n, n, a.concurrency).await);
    }
    let mut open = vec![];
    for (k, rate) in [a.cpu_rate, a.rate].into_iter().enumerate() {
        let first = 11_000_000 + k * 1_000_000;
        let p = fixed_rate(&client, &relay_url, first, rate, a.rate_seconds).await;
        let w = fixed_rate(&client, &wait_url, first + 500_000, rate, a.rate_seconds).await;
        open.push((rate, p, w));
    }
    println!(
        "\n9. redis.waitForReplicas with one replica on loopback ({} senders, {n} events per run, two runs each in turn)",
        a.concurrency
    );
    println!("   {:<24} {:>12} {:>10} {:>10} {:>8}", "", "events/s", "p50 ms", "p99 ms", "failed");
    for (name, runs) in [("waitForReplicas: 0", &plain), ("waitForReplicas: 1", &waited)] {
        for r in runs.iter() {
            println!("   {:<24} {:>12.0} {:>10.2} {:>10.2} {:>8}", name, r.rate(), r.pct(0.5), r.pct(0.99), r.failed);
        }
    }
    let rates = |v: &[Run]| v.iter().map(Run::rate).collect::<Vec<f64>>();
    println!("   throughput ratio wait 1 / wait 0: {:.2}", mean(&rates(&waited)) / mean(&rates(&plain)));
    for (rate, p, w) in &open {
        for (name, r) in [("waitForReplicas: 0", p), ("waitForReplicas: 1", w)] {
            println!(
                "   open loop {rate}/s {:<20} achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, not 200: {}",
                name,
                r.rate(),
                r.pct(0.5),
                r.pct(0.99),
                r.failed
            );
        }
        println!("   open loop {rate}/s p99 ratio wait 1 / wait 0: {:.2}", w.pct(0.99) / p.pct(0.99));
    }
    drop(waiting);
    drop(replica);

    // 10. delivery.ordering: a relay delivering each conversation's events one at a time in
    // order, beside one without ordering, over 10,000 conversations (event i to customer
    // i % 10000), end to end, each run twice in turn.
    const KEYS: usize = 10_000;
    let unordered = RelayRun::start(&a.relay, &redis, &dir, "bench/unordered", ds_port, "");
    let ordered = RelayRun::start(
        &a.relay,
        &redis,
        &dir,
        "bench/ordered",
        ds_port,
        "  ordering: { keyPointer: /channel/to/id }\n",
    );
    let n = a.e2e_events / 2;
    let (mut off, mut on, mut off_cmds, mut on_cmds) = (vec![], vec![], vec![], vec![]);
    // Redis commands per delivered event of a run (scripts' inner commands included).
    let commands_per_event =
        |redis: &testkit::RedisServer| -> f64 { command_stats(redis).iter().map(|c| c.1).sum::<f64>() / n as f64 };
    for round in 0..2 {
        let first = 13_000_000 + round * 2 * n;
        redis.cli(&["CONFIG", "RESETSTAT"]);
        off.push(end_to_end_keyed(&client, &unordered.url(), first, n, a.concurrency * 2, ds_port, KEYS).await);
        off_cmds.push(commands_per_event(&redis));
        redis.cli(&["CONFIG", "RESETSTAT"]);
        on.push(end_to_end_keyed(&client, &ordered.url(), first + n, n, a.concurrency * 2, ds_port, KEYS).await);
        on_cmds.push(commands_per_event(&redis));
    }
    println!(
        "\n10. delivery.ordering over {KEYS} conversations, {n} events end to end per run ({} senders), two runs each \
         in turn: unordered {} deliveries/s; ordered {}/s; ratio ordered/unordered {:.2}",
        a.concurrency * 2,
        runs_text(&off, 0),
        runs_text(&on, 0),
        mean(&on) / mean(&off)
    );
    let stats =
        admin_json(&client, &format!("http://127.0.0.1:{}", ordered.admin_port), reqwest::Method::GET, "/v1/stats")
            .await;
    println!(
        "   redis commands per delivered event: unordered {}; ordered {}",
        runs_text(&off_cmds, 2),
        runs_text(&on_cmds, 2)
    );
    println!("   ordered relay afterwards: blocked {}, waitingKeys {}", stats["blocked"], stats["waitingKeys"]);
    drop(ordered);
    drop(unordered);
    drop(main_relay);
    let _ = std::fs::remove_dir_all(&dir);
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The mean of runs, then each run: `8203 (8127, 8279)`, with `decimals` decimals.
fn runs_text(v: &[f64], decimals: usize) -> String {
    let each: Vec<String> = v.iter().map(|x| format!("{x:.decimals$}")).collect();
    format!("{:.decimals$} ({})", mean(v), each.join(", "))
}

/// A relay process of this bench, killed on drop.
struct RelayRun {
    _process: Killer,
    pid: u32,
    in_port: u16,
    admin_port: u16,
}

impl RelayRun {
    /// Starts the relay binary `bin` as relay `id` on `redis`, delivering to the bench's
    /// downstream; `extra` is more YAML under `delivery:` (indented two spaces).
    fn start(
        bin: &str,
        redis: &testkit::RedisServer,
        dir: &std::path::Path,
        id: &str,
        ds_port: u16,
        extra: &str,
    ) -> Self {
        let (in_port, admin_port) = (testkit::free_port(), testkit::free_port());
        let cfg = dir.join(format!("{}.yaml", id.replace('/', "-")));
        std::fs::write(
            &cfg,
            format!(
                "relay: {id}\nlisten: 127.0.0.1:{in_port}\nadminListen: 127.0.0.1:{admin_port}\n\
                 source:\n  path: /webhooks/genesys\n  verify: {{ scheme: genesys-open-messaging, secretEnv: RELAY_SIGNING_SECRET }}\n\
                 destination:\n  url: http://127.0.0.1:{ds_port}/events\n  timeout: 5s\n\
                 delivery:\n  concurrency: 128\n  maxAttempts: 1\n  deadLetter: {{ maxEntries: 1000000 }}\n{extra}"
            ),
        )
        .unwrap();
        let process = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("REDIS_URL", redis.url())
            .env("RELAY_SIGNING_SECRET", SECRET)
            .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = process.id();
        wait_port(in_port);
        RelayRun { _process: Killer(process), pid, in_port, admin_port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks/genesys", self.in_port)
    }
}

/// Sends `n` events to `url` with `senders` at once; returns deliveries per second from the
/// first send until the downstream has them all.
async fn end_to_end(client: &reqwest::Client, url: &str, first: usize, n: usize, senders: usize, ds_port: u16) -> f64 {
    end_to_end_keyed(client, url, first, n, senders, ds_port, 0).await
}

/// [`end_to_end`] with event `i` in the conversation of customer `i % keys` ([`keyed_body`]).
async fn end_to_end_keyed(
    client: &reqwest::Client,
    url: &str,
    first: usize,
    n: usize,
    senders: usize,
    ds_port: u16,
    keys: usize,
) -> f64 {
    let before = downstream_count(client, ds_port).await;
    let start = Instant::now();
    let sent = closed_loop_keyed(client, url, first, n, senders, keys).await;
    assert!(wait_drained(client, ds_port, before + sent.ok as u64).await, "{url}: not all delivered");
    sent.ok as f64 / start.elapsed().as_secs_f64()
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
