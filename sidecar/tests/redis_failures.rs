//! What production Redis does to a relay, against real redis-server processes and the built
//! binary: TLS (single server and cluster, mutual TLS, a wrong CA), a server stalled past the
//! client timeout (`DEBUG SLEEP`), a server out of memory, and the version check at start.

use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::downstream::*;
use testkit::relay::*;
use testkit::tls::Ca;
use testkit::wait::eventually;
use testkit::{RedisCluster, RedisServer, ServerTls};

/// The test config plus `redis.tls` files.
fn tls_config(relay: &str, l: u16, a: u16, ds: &str, tls: &str) -> String {
    format!("{}redis:\n  tls:\n{tls}", config(relay, l, a, ds, "  maxAttempts: 3"))
}

async fn deliver_one(relay: &RelayProcess, ds: &Downstream, id: &str) {
    let client = reqwest::Client::new();
    let (status, body) = send(&client, &relay.intake, id).await.unwrap();
    assert_eq!(status, 200, "{body}; log:\n{}", relay.log_text());
    let delivered = eventually(Duration::from_secs(20), || async { ds.delivered().contains_key(id) }).await;
    assert!(delivered, "{id} not delivered; log:\n{}", relay.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_ca_file_works_on_a_single_server_and_a_cluster() {
    let ca = Ca::new("redis-test-ca");
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let ca_line = format!("    caFile: {}\n", ca.cert().display());

    let single = RedisServer::start_tls_with(Some(ServerTls::new(&ca, false)), &[]);
    assert!(single.url().starts_with("rediss://"));
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let relay = RelayProcess::start(&tls_config("t/tls", l, a, &ds.url, &ca_line), &single.url(), l, a);
    deliver_one(&relay, &ds, "tls-single-1").await;
    assert!(relay.log_text().contains("redis version supported"), "{}", relay.log_text());

    let cluster = RedisCluster::start_tls(Some(ServerTls::new(&ca, false)));
    assert!(cluster.cluster_url().starts_with("rediss+cluster://"));
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let relay = RelayProcess::start(&tls_config("t/tlscluster", l, a, &ds.url, &ca_line), &cluster.cluster_url(), l, a);
    deliver_one(&relay, &ds, "tls-cluster-1").await;
    println!("redis TLS: an event stored and delivered over rediss:// (single) and rediss+cluster:// (3 nodes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let ca = Ca::new("redis-mtls-ca");
    let server = RedisServer::start_tls_with(Some(ServerTls::new(&ca, true)), &[]);
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let client = ca.client("relay");
    let tls = format!(
        "    caFile: {}\n    certFile: {}\n    keyFile: {}\n",
        ca.cert().display(),
        client.cert.display(),
        client.key.display()
    );
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let relay = RelayProcess::start(&tls_config("t/mtls", l, a, &ds.url, &tls), &server.url(), l, a);
    deliver_one(&relay, &ds, "mtls-1").await;

    // Without the client certificate the server refuses the handshake: a clear error.
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = tls_config("t/mtls2", l, a, &ds.url, &format!("    caFile: {}\n", ca.cert().display()));
    let out = run_to_exit(&yaml, &server.url(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.log);
    assert!(out.log.contains("set redis.tls.certFile and redis.tls.keyFile"), "{}", out.log);
}

/// How a relay that was expected to stop by itself ended.
struct Exit {
    status: std::process::ExitStatus,
    log: String,
}

fn run_to_exit(yaml: &str, redis_url: &str, limit: Duration) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-relay"))
        .args(["serve", "--config"])
        .arg(dir.path().join("relay.yaml"))
        .env("REDIS_URL", redis_url)
        .env("RELAY_SIGNING_SECRET", SECRET)
        .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            return Exit { status: out.status, log };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    panic!("relay still running after {limit:?}; log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_a_clear_error_naming_redis_tls_ca_file() {
    let server_ca = Ca::new("the-servers-ca");
    let other_ca = Ca::new("some-other-ca");
    let server = RedisServer::start_tls_with(Some(ServerTls::new(&server_ca, false)), &[]);
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = tls_config("t/wrongca", l, a, &ds.url, &format!("    caFile: {}\n", other_ca.cert().display()));
    let out = run_to_exit(&yaml, &server.url(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.log);
    let last = out.log.lines().rev().find(|l| l.starts_with("webhook-relay: ")).unwrap_or_default().to_string();
    assert!(last.contains("redis.tls.caFile"), "the error names the field: {last}");
    assert!(last.contains(&other_ca.cert().display().to_string()), "and the file: {last}");
    assert!(last.contains("not trusted"), "{last}");
    println!("wrong CA: exit 1, {last}");

    // No caFile at all: the system roots do not know the test CA either, and the error says
    // to set redis.tls.caFile.
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = format!("{}redis:\n  tls: {{}}\n", config("t/noca", l, a, &ds.url, "  maxAttempts: 3"));
    let out = run_to_exit(&yaml, &server.url(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.log);
    assert!(out.log.contains("set redis.tls.caFile"), "{}", out.log);

    // redis.tls with a plain redis:// URL is refused before connecting, naming the variable.
    let plain = RedisServer::start();
    let out = run_to_exit(&yaml, &plain.url(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", out.log);
    assert!(out.log.contains("redis.tls is set but the URL in REDIS_URL"), "{}", out.log);
    assert!(!out.log.contains(&plain.url()), "the URL is a secret and is not printed: {}", out.log);
}

/// Keys a newer webhook-relay wrote (store format 3) stop this one at start, saying so,
/// before it touches them.
#[tokio::test]
async fn keys_of_a_newer_store_format_stop_the_relay_at_start() {
    let server = RedisServer::start();
    server.cli(&["SET", "whr:{t/newer}:format", "3"]);
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let out =
        run_to_exit(&config("t/newer", l, a, &ds.url, "  maxAttempts: 3"), &server.url(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.log);
    let last = out.log.lines().rev().find(|l| l.starts_with("webhook-relay: ")).unwrap_or_default().to_string();
    assert!(last.contains("store format 3") && last.contains("format 2 at most"), "{last}");
    assert_eq!(server.cli(&["GET", "whr:{t/newer}:format"]), "3", "the refused keys were changed");
    println!("newer format: exit 1, {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_past_the_client_timeout_neither_strands_nor_burns_an_attempt() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/stall", &redis.url(), &ds.url, "  maxAttempts: 5");
    let client = reqwest::Client::new();
    // Warm up: the worker is polling (claims every second at most when idle).
    deliver_one(&relay, &ds, "warm-1").await;

    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "DEBUG", "SLEEP", "4"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let posted = Instant::now();
    // Answered 503 after the client timeout (3 s) while Redis sleeps, or 200 once it woke:
    // either way the sender's retry finds it (stored late, or stored now).
    let mut answers = vec![];
    loop {
        let (status, body) = send(&client, &relay.intake, "stalled-1").await.unwrap();
        answers.push(status);
        if status == 200 {
            assert!(body.contains("accepted") || body.contains("duplicate"), "{body}");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(posted.elapsed() < Duration::from_secs(20), "never stored: {answers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sleeper.join().unwrap(), "OK");
    let delivered = eventually(Duration::from_secs(20), || async { ds.delivered().contains_key("stalled-1") }).await;
    let took = posted.elapsed();
    assert!(delivered, "not delivered; log:\n{}", relay.log_text());
    let hit = ds.hits().into_iter().find(|h| h.id == "stalled-1").unwrap();
    println!(
        "DEBUG SLEEP 4: intake answered {answers:?}; delivered {:.1}s after the first post with X-Relay-Attempt {}",
        took.as_secs_f64(),
        hit.attempt
    );
    assert_eq!(hit.attempt, 1, "an attempt was counted that was never made");
    assert!(took < Duration::from_secs(15), "stranded in flight for {took:?} (a lease is 32 s here)");
}

async fn readyz(admin: &str) -> (u16, String) {
    let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{admin}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_redis_up_mean_can_store_when_redis_is_out_of_memory() {
    let redis = RedisServer::start();
    let ds = Downstream::start(Arc::new(|_, _| (503, None)), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/oom", &redis.url(), &ds.url, "  maxAttempts: 100\n  initialDelay: 10s");
    let client = reqwest::Client::new();
    assert!(eventually(Duration::from_secs(10), || async { readyz(&relay.admin).await.0 == 200 }).await);
    assert_eq!(metric(&relay.admin, "webhook_relay_redis_up ").await, Some(1.0));

    // Fill Redis up to a maxmemory just above what it uses now.
    let used: u64 = redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    redis.cli(&["CONFIG", "SET", "maxmemory", &(used + 300_000).to_string()]);
    let mut stored = 0;
    let mut refused = false;
    for i in 0..2000 {
        let (status, _) = send(&client, &relay.intake, &format!("fill-{i:04}-{}", "x".repeat(400))).await.unwrap();
        match status {
            200 => stored += 1,
            503 => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "Redis never refused a write ({stored} stored)");
    // Reads still work (stats), writes do not: readiness and redis_up must stay down, sample
    // after sample (the sampler runs every 2 s).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        let (status, text) = readyz(&relay.admin).await;
        assert_eq!(status, 503, "ready while Redis refuses writes: {text}");
        assert!(
            text.contains("refuses writes")
                || text.contains("storing an event failed")
                || text.contains("out of memory"),
            "{text}"
        );
        assert_eq!(metric(&relay.admin, "webhook_relay_redis_up ").await, Some(0.0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, text) = readyz(&relay.admin).await;
    assert!(text.contains("maxmemory"), "the reason names the limit: {text}");
    let admin_stats = client
        .get(format!("{}/v1/stats", relay.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(admin_stats, 200, "reads are still served");

    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(
        eventually(Duration::from_secs(10), || async { readyz(&relay.admin).await.0 == 200 }).await,
        "ready again once Redis takes writes"
    );
    assert_eq!(metric(&relay.admin, "webhook_relay_redis_up ").await, Some(1.0));
    assert_eq!(send(&client, &relay.intake, "after-oom").await.unwrap().0, 200);
    println!(
        "OOM: {stored} events stored before Redis refused writes; /readyz 503 and redis_up 0 for 7 s; ready again after"
    );
}
