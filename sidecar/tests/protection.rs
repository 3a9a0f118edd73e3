//! Protecting the downstream, end to end: the built `webhook-relay` binary (two replicas
//! where the feature is shared), a real redis-server and a scripted downstream on loopback.
//! `delivery.rateLimit`, `delivery.circuitBreaker`, and the pause a 429/503 with
//! `Retry-After` asks for. Figures are printed (run with --nocapture).

use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use testkit::{RedisServer, free_port};

fn start(relay: &str, redis: &RedisServer, downstream: &str, delivery: &str) -> RelayProcess {
    let (l, a) = (free_port(), free_port());
    RelayProcess::start(&config(relay, l, a, downstream, delivery), &redis.url(), l, a)
}

async fn send_all(relays: &[&RelayProcess], ids: &[String]) {
    let client = reqwest::Client::new();
    for (i, id) in ids.iter().enumerate() {
        let (status, body) = send(&client, &relays[i % relays.len()].intake, id).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

async fn stats(relay: &RelayProcess) -> Value {
    let r =
        reqwest::Client::new().get(format!("{}/v1/stats", relay.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The most hits in any window of `window_ms` (sliding, from each hit).
fn busiest_window(times: &[i64], window_ms: i64) -> usize {
    let mut t = times.to_vec();
    t.sort();
    (0..t.len()).map(|i| t[i..].iter().take_while(|&&x| x < t[i] + window_ms).count()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_shared_by_two_replicas_and_bounds_every_second() {
    let redis = RedisServer::start();
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let delivery = "  rateLimit: { perSecond: 20, burst: 5 }\n  concurrency: 16";
    let a = start("t/rate", &redis, &ds.url, delivery);
    let b = start("t/rate", &redis, &ds.url, delivery);
    let ids: Vec<String> = (0..200).map(|i| format!("rate-{i:03}")).collect();
    let began = Instant::now();
    send_all(&[&a, &b], &ids).await;
    let all = eventually(Duration::from_secs(40), || async { ds.delivered().len() == ids.len() }).await;
    let took = began.elapsed();
    assert!(all, "delivered {} of 200; log:\n{}", ds.delivered().len(), a.log_text());
    let hits = ds.hits();
    let times: Vec<i64> = hits.iter().map(|h| h.at_ms).collect();
    // Tokens are taken in Redis when an event is claimed; the request arrives a little later.
    // Windows of 950 ms allow up to 50 ms of that delay to differ between requests (one
    // token's worth at 20/s) on a loaded machine; the one-second figure is printed too.
    let busiest = busiest_window(&times, 950);
    let busiest_second = busiest_window(&times, 1000);
    let peers: std::collections::HashSet<&str> = hits.iter().map(|h| h.peer.as_str()).collect();
    let held = a.metric("webhook_relay_delivery_held_total{reason=\"rate_limited\"}")
        + b.metric("webhook_relay_delivery_held_total{reason=\"rate_limited\"}");
    println!(
        "rate limit: 200 events, 20/s burst 5, two replicas: all delivered in {:.1} s, busiest 1-second window {busiest_second} \
         deliveries (950 ms: {busiest}), {} hits from {} connections, {held} claims held back",
        took.as_secs_f64(),
        hits.len(),
        peers.len()
    );
    assert!(busiest <= 25, "a 950 ms window saw {busiest} deliveries (limit 20/s + burst 5)");
    assert!(busiest >= 15, "the limit should not starve the destination: busiest window {busiest}");
    assert!(took >= Duration::from_secs(8), "200 events at 20/s after a burst of 5 cannot take {took:?}");
    assert!(held > 0.0, "no claim was held back by the rate limit");
    let delivered = ds.delivered();
    assert!(ids.iter().all(|id| delivered.get(id) == Some(&1)), "each event once");
    let d = stats(&a).await;
    assert_eq!(d["destination"]["rateLimit"]["perSecond"], 20.0);
    assert_eq!(d["destination"]["rateLimit"]["burst"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_stops_attempts_during_an_outage_probes_once_and_loses_nothing() {
    let redis = RedisServer::start();
    // 503 (no Retry-After) for 12 s from the first request, then 200.
    const OUTAGE: Duration = Duration::from_secs(12);
    let first: Arc<OnceLock<Instant>> = Arc::default();
    let f = first.clone();
    let script: Script = Arc::new(move |_, _| {
        let t0 = *f.get_or_init(Instant::now);
        if t0.elapsed() < OUTAGE { (503, None) } else { (200, None) }
    });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let delivery = "  maxAttempts: 8\n  initialDelay: 200ms\n  maxDelay: 2s\n  concurrency: 8\n  \
                    circuitBreaker: { failureThreshold: 10, openFor: 2s }";
    let a = start("t/breaker", &redis, &ds.url, delivery);
    let b = start("t/breaker", &redis, &ds.url, delivery);
    let ids: Vec<String> = (0..300).map(|i| format!("cb-{i:03}")).collect();
    send_all(&[&a, &b], &ids).await;

    let opened = eventually(Duration::from_secs(10), || async {
        stats(&a).await["destination"]["circuit"]["state"] != "closed"
    })
    .await;
    assert!(opened, "the circuit never opened; log:\n{}", a.log_text());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-relay"))
        .args(["dlq", "stats"])
        .env("RELAY_ADMIN_URL", &a.admin)
        .env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("circuit open since") || table.contains("circuit half_open since"), "{table}");
    assert!(table.contains("(opens at 10)"), "{table}");
    let s = stats(&b).await;
    let circuit = &s["destination"]["circuit"];
    assert!(circuit["since"].is_string() && circuit["failureThreshold"] == 10, "{s}");
    let gauge = a.metric("webhook_relay_circuit_state{state=\"open\"}")
        + a.metric("webhook_relay_circuit_state{state=\"half_open\"}");
    assert_eq!(gauge, 1.0, "{}", a.metrics());

    let all = eventually(Duration::from_secs(60), || async { ds.delivered().len() == ids.len() }).await;
    let st = testkit::relay::store(&redis.url(), "t/breaker").await.stats().await.unwrap();
    assert!(all, "delivered {} of 300, {st:?}; log:\n{}", ds.delivered().len(), a.log_text());
    assert_eq!(st.dead, 0, "none dead-lettered");

    let t0_ms = {
        let hits = ds.hits();
        hits.iter().map(|h| h.at_ms).min().unwrap()
    };
    let hits = ds.hits();
    let during: Vec<i64> = hits.iter().filter(|h| h.status == 503).map(|h| h.at_ms - t0_ms).collect::<Vec<_>>();
    let mut later: Vec<i64> = during.iter().copied().filter(|&t| t >= 1000).collect();
    later.sort();
    let gaps: Vec<i64> = later.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "breaker: 300 events, outage 12 s, threshold 10, openFor 2s, two replicas × concurrency 8: {} attempts during \
         the outage ({} in its first second, then probes at {:?} ms), 0 dead, all 300 delivered; {} attempts in all",
        during.len(),
        during.len() - later.len(),
        later,
        hits.len()
    );
    assert!(
        during.len() <= 48,
        "{} attempts during the outage; a breaker should hold them to a few dozen",
        during.len()
    );
    assert!(later.len() <= 7, "probes after the first second: {later:?} (one per openFor at most)");
    assert!(gaps.iter().all(|&g| g >= 1500), "two probes too close together (doubled across replicas?): {later:?}");
    let most = ds.hits().iter().map(|h| h.attempt).max().unwrap();
    assert!(most < 8, "an event reached attempt {most}: held-back claims must not count as attempts");
    let closed =
        eventually(Duration::from_secs(5), || async { stats(&a).await["destination"]["circuit"]["state"] == "closed" })
            .await;
    assert!(closed, "{}", stats(&a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_every_event_for_that_long() {
    let redis = RedisServer::start();
    let first: Arc<OnceLock<()>> = Arc::default();
    let f = first.clone();
    let script: Script = Arc::new(move |_, _| if f.set(()).is_ok() { (429, Some("3")) } else { (200, None) });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = start("t/pause", &redis, &ds.url, "  maxAttempts: 5\n  initialDelay: 100ms\n  maxDelay: 10s");
    send_all(&[&relay], &["pause-first".to_string()]).await;
    let asked = eventually(Duration::from_secs(5), || async { !ds.hits().is_empty() }).await;
    assert!(asked);
    let paused =
        eventually(Duration::from_secs(2), || async { stats(&relay).await["destination"]["pausedUntil"].is_string() })
            .await;
    assert!(paused, "{}", stats(&relay).await);
    let ids: Vec<String> = (0..20).map(|i| format!("pause-{i:02}")).collect();
    send_all(&[&relay], &ids).await;
    let all = eventually(Duration::from_secs(15), || async { ds.delivered().len() == 21 }).await;
    assert!(all, "delivered {:?}; log:\n{}", ds.delivered(), relay.log_text());
    let hits = ds.hits();
    let t429 = hits[0].at_ms;
    let next = hits[1..].iter().map(|h| h.at_ms).min().unwrap();
    println!(
        "pause: a 429 with Retry-After: 3, then 20 more events: the downstream saw nothing for {} ms, then {} deliveries",
        next - t429,
        hits.len() - 1
    );
    assert_eq!(hits[0].status, 429);
    assert!(next - t429 >= 2900, "an attempt {} ms after the 429 asked for 3 s", next - t429);
    assert!(relay.metric("webhook_relay_delivery_held_total{reason=\"paused\"}") > 0.0);
}
