//! Per-conversation ordered delivery (`delivery.ordering`) end to end: the built relay, a real
//! redis-server, and a downstream that records, per conversation (`channel.to.id`), every
//! attempt with when it started and ended, and how many were under way at once.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::RedisServer;
use testkit::relay::*;
use testkit::wait::eventually;

/// One attempt the downstream saw.
#[derive(Clone, Debug)]
struct Attempt {
    id: String,
    key: String,
    attempt: u32,
    ok: bool,
    started: Instant,
    ended: Instant,
}

/// What the downstream answers for (event id, attempt): 200 or not, and how long it takes.
type Decide = Arc<dyn Fn(&str, u32) -> (bool, Duration) + Send + Sync>;

#[derive(Clone)]
struct Keyed {
    decide: Arc<Mutex<Decide>>,
    log: Arc<Mutex<Vec<Attempt>>>,
    /// Attempts under way per key now, and the most ever seen for one key.
    running: Arc<Mutex<(HashMap<String, u32>, u32)>>,
}

impl Keyed {
    async fn start(decide: Decide) -> (Keyed, String) {
        let k = Keyed { decide: Arc::new(Mutex::new(decide)), log: Arc::default(), running: Arc::default() };
        let app = axum::Router::new().fallback(axum::routing::post(handle)).with_state(k.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (k, url)
    }

    fn set(&self, decide: Decide) {
        *self.decide.lock().unwrap() = decide;
    }

    fn log(&self) -> Vec<Attempt> {
        self.log.lock().unwrap().clone()
    }

    /// Ids delivered (answered 200), per key, in the order the downstream answered them.
    fn delivered(&self) -> HashMap<String, Vec<String>> {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut log = self.log();
        log.sort_by_key(|a| a.ended);
        for a in log.into_iter().filter(|a| a.ok) {
            by_key.entry(a.key).or_default().push(a.id);
        }
        by_key
    }

    fn most_at_once_per_key(&self) -> u32 {
        self.running.lock().unwrap().1
    }
}

async fn handle(
    axum::extract::State(k): axum::extract::State<Keyed>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    // On a task of its own, so an attempt is recorded whole even when the relay that made it
    // is killed (and its connection dropped) meanwhile.
    tokio::spawn(answer(k, headers, body)).await.unwrap()
}

async fn answer(k: Keyed, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> axum::http::StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = v["id"].as_str().unwrap_or("").to_string();
    let key = v.pointer("/channel/to/id").and_then(Value::as_str).unwrap_or("").to_string();
    let attempt = headers.get("x-relay-attempt").and_then(|h| h.to_str().ok()?.parse().ok()).unwrap_or(0);
    let started = Instant::now();
    {
        let mut r = k.running.lock().unwrap();
        let n = r.0.entry(key.clone()).or_default();
        *n += 1;
        let n = *n;
        r.1 = r.1.max(n);
    }
    let decide = k.decide.lock().unwrap().clone();
    let (ok, delay) = decide(&id, attempt);
    tokio::time::sleep(delay).await;
    *k.running.lock().unwrap().0.get_mut(&key).unwrap() -= 1;
    k.log.lock().unwrap().push(Attempt { id, key, attempt, ok, started, ended: Instant::now() });
    if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE }
}

/// Every attempt of a key came after the delivery of the event before it, and its deliveries
/// are `want` in order.
fn assert_in_order(k: &Keyed, key: &str, want: &[String]) {
    let mut log: Vec<Attempt> = k.log().into_iter().filter(|a| a.key == key).collect();
    log.sort_by_key(|a| a.started);
    let rank = |id: &str| want.iter().position(|w| w == id).unwrap_or_else(|| panic!("{id} not sent for {key}"));
    let mut done = 0; // events of the key delivered so far
    for a in &log {
        assert_eq!(rank(&a.id), done, "{key}: attempt {} of {} out of order: {log:#?}", a.attempt, a.id);
        if a.ok {
            done += 1;
        }
    }
    assert_eq!(k.delivered().get(key).cloned().unwrap_or_default(), want, "{key} delivered");
}

async fn admin_get(relay: &RelayProcess, path: &str) -> Value {
    let client = reqwest::Client::new();
    let r = client.get(format!("{}{path}", relay.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

async fn dlq(relay: &RelayProcess, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhook-relay"));
    cmd.arg("dlq").args(args).env("RELAY_ADMIN_URL", &relay.admin).env("RELAY_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("dlq finished").unwrap();
    assert!(out.status.success(), "dlq {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ORDERED: &str = "  ordering: { keyPointer: /channel/to/id }\n";

async fn send_ok(client: &reqwest::Client, relay: &RelayProcess, id: &str, key: &str) {
    let (status, body) = send_body(client, &relay.intake, &event_body_to(id, key)).await.unwrap();
    assert_eq!(status, 200, "{id}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_interleaved_conversations_stay_in_order_while_one_retries() {
    let redis = RedisServer::start();
    // The first message of conversation 1 fails 3 times, each attempt taking 800 ms; everything
    // else succeeds at once.
    let (ds, url) = Keyed::start(Arc::new(|id, attempt| match id {
        "c1-m1" => (attempt > 3, Duration::from_millis(800)),
        _ => (true, Duration::ZERO),
    }))
    .await;
    let delivery = format!("  maxAttempts: 8\n  initialDelay: 200ms\n  multiplier: 1\n{ORDERED}");
    let relay = RelayProcess::start_fresh("t/ordered", &redis.url(), &url, &delivery);
    let client = reqwest::Client::new();
    let sent_at = Instant::now();
    for m in 1..=5 {
        for c in 1..=4 {
            send_ok(&client, &relay, &format!("c{c}-m{m}"), &format!("conv-{c}")).await;
        }
    }

    // While c1-m1 waits for its retry, its later messages wait in `blocked` and show.
    let others_done = eventually(Duration::from_secs(10), || async {
        let d = ds.delivered();
        (2..=4).all(|c| d.get(&format!("conv-{c}")).is_some_and(|v| v.len() == 5))
    })
    .await;
    assert!(others_done, "the other conversations flow: {:?}", ds.delivered());
    let others_at = sent_at.elapsed();
    // c1-m1 takes at least 4 x 800 ms in all: its later messages still wait.
    let stats = admin_get(&relay, "/v1/stats").await;
    assert_eq!(ds.delivered().get("conv-1"), None);
    assert_eq!(stats["blocked"], 4, "{stats}");
    assert_eq!(stats["waitingKeys"], 1, "{stats}");
    assert_eq!(stats["oldestBlocked"]["key"], "conv-1", "{stats}");
    let gauges = eventually(Duration::from_secs(5), || async {
        relay.metric("webhook_relay_queue_blocked") == 4.0 && relay.metric("webhook_relay_queue_waiting_keys") == 1.0
    })
    .await;
    assert!(gauges, "the gauges show it: {}", relay.metrics());
    let listed = dlq(&relay, &["list", "--state", "blocked"]).await;
    for m in 2..=5 {
        assert!(listed.contains(&format!("c1-m{m}")), "{listed}");
    }

    let all =
        eventually(Duration::from_secs(20), || async { ds.delivered().get("conv-1").is_some_and(|v| v.len() == 5) })
            .await;
    assert!(all, "conversation 1: {:?}; log:\n{}", ds.delivered(), relay.log_text());
    let c1_at = sent_at.elapsed();
    for c in 1..=4 {
        let want: Vec<String> = (1..=5).map(|m| format!("c{c}-m{m}")).collect();
        assert_in_order(&ds, &format!("conv-{c}"), &want);
    }
    let c1_first_end = ds.log().iter().filter(|a| a.id == "c1-m1").map(|a| a.ended).min().unwrap();
    let last_other = ds.log().iter().filter(|a| a.key != "conv-1").map(|a| a.ended).max().unwrap();
    assert!(last_other < c1_first_end, "conversations 2-4 were all delivered before c1-m1's first attempt failed");
    assert_eq!(ds.log().iter().filter(|a| a.id == "c1-m1").count(), 4, "3 failures and the success");
    // Genesys resending a delivered message: a duplicate, not delivered again, nothing waits.
    let (status, body) = send_body(&client, &relay.intake, &event_body_to("c2-m3", "conv-2")).await.unwrap();
    assert_eq!((status, body.contains("duplicate")), (200, true), "{body}");
    let stats = admin_get(&relay, "/v1/stats").await;
    assert_eq!((stats["blocked"].as_u64(), stats["waitingKeys"].as_u64()), (Some(0), Some(0)), "{stats}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ds.log().iter().filter(|a| a.id == "c2-m3").count(), 1, "the duplicate was not delivered");
    println!(
        "4 conversations x 5 messages, c1-m1 failing 3 times: conversations 2-4 delivered in order after {:.2}s, \
         conversation 1 in order after {:.2}s (4 blocked behind c1-m1 meanwhile)",
        others_at.as_secs_f64(),
        c1_at.as_secs_f64(),
    );
}

/// 30 % of attempts fail, chosen by a hash of (id, attempt) so each run fails the same ones.
fn fails(id: &str, attempt: u32) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, attempt).hash(&mut h);
    h.finish() % 100 < 30
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_every_key_in_order_and_one_at_a_time_through_failures() {
    let redis = RedisServer::start();
    let (ds, url) = Keyed::start(Arc::new(|id, attempt| (!fails(id, attempt), Duration::from_millis(3)))).await;
    let delivery = format!("  maxAttempts: 40\n  initialDelay: 20ms\n  maxDelay: 100ms\n  concurrency: 16\n{ORDERED}");
    let yaml = |l, a| config("t/ordered2", l, a, &url, &delivery);
    let (l1, a1, l2, a2) = (testkit::free_port(), testkit::free_port(), testkit::free_port(), testkit::free_port());
    let r1 = RelayProcess::start(&yaml(l1, a1), &redis.url(), l1, a1);
    let r2 = RelayProcess::start(&yaml(l2, a2), &redis.url(), l2, a2);
    const KEYS: usize = 50;
    const PER_KEY: usize = 20;
    let started = Instant::now();
    // 10 senders, 5 keys each, each key's events sent one after another (alternating relays).
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..10 {
        let (i1, i2) = (r1.intake.clone(), r2.intake.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..PER_KEY {
                for k in (s * 5)..(s * 5 + 5) {
                    let id = format!("k{k:02}-{n:02}");
                    let intake = if (n + k) % 2 == 0 { &i1 } else { &i2 };
                    let (status, body) =
                        send_body(&client, intake, &event_body_to(&id, &format!("key-{k:02}"))).await.unwrap();
                    assert_eq!(status, 200, "{id}: {body}");
                }
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let all = eventually(Duration::from_secs(90), || async {
        ds.delivered().values().map(Vec::len).sum::<usize>() >= KEYS * PER_KEY
    })
    .await;
    let log = ds.log();
    assert!(
        all,
        "delivered {} of {}; relay 1 log:\n{}",
        ds.delivered().values().map(Vec::len).sum::<usize>(),
        KEYS * PER_KEY,
        r1.log_text()
    );
    let took = started.elapsed();
    for k in 0..KEYS {
        let want: Vec<String> = (0..PER_KEY).map(|n| format!("k{k:02}-{n:02}")).collect();
        assert_in_order(&ds, &format!("key-{k:02}"), &want);
    }
    assert_eq!(ds.most_at_once_per_key(), 1, "never two attempts of one key at once");
    let failed = log.iter().filter(|a| !a.ok).count();
    let by_relay =
        (r1.metric("webhook_relay_delivery_attempts_total"), r2.metric("webhook_relay_delivery_attempts_total"));
    assert!(by_relay.0 > 0.0 && by_relay.1 > 0.0, "both replicas delivered: {by_relay:?}");
    println!(
        "2 replicas, {} events over {KEYS} keys, {} attempts ({failed} failed, {:.0}%): every key in order, at most {} \
         attempt of a key at once; attempts by replica {:?}; {:.1}s",
        KEYS * PER_KEY,
        log.len(),
        100.0 * failed as f64 / log.len() as f64,
        ds.most_at_once_per_key(),
        by_relay,
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_holding_a_key_is_taken_over_after_its_lease_in_order() {
    let redis = RedisServer::start();
    // The first attempt of h-1 takes 1.5 s: the relay holding it is killed meanwhile.
    let (ds, url) = Keyed::start(Arc::new(|id, attempt| {
        (true, if id == "h-1" && attempt == 1 { Duration::from_millis(1500) } else { Duration::ZERO })
    }))
    .await;
    let delivery = format!("  lease: 3s\n  initialDelay: 100ms\n{ORDERED}");
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = config("t/ordered-kill", l, a, &url, &delivery);
    let mut holder = RelayProcess::start(&yaml, &redis.url(), l, a);
    let client = reqwest::Client::new();
    for n in 1..=3 {
        send_ok(&client, &holder, &format!("h-{n}"), "conv-h").await;
    }
    let claimed =
        eventually(Duration::from_secs(5), || async { ds.running.lock().unwrap().0.get("conv-h") == Some(&1) }).await;
    assert!(claimed, "h-1 under way");
    let killed_at = Instant::now();
    holder.kill9();
    tokio::time::sleep(Duration::from_millis(1600)).await; // the downstream answers the dead relay
    let (l2, a2) = (testkit::free_port(), testkit::free_port());
    let taker = RelayProcess::start(&config("t/ordered-kill", l2, a2, &url, &delivery), &redis.url(), l2, a2);
    let all = eventually(Duration::from_secs(15), || async {
        ds.delivered().get("conv-h").is_some_and(|v| v.iter().any(|id| id == "h-3"))
    })
    .await;
    assert!(all, "{:?}; log:\n{}", ds.log(), taker.log_text());
    let log = ds.log();
    let again = log.iter().find(|a| a.id == "h-1" && a.attempt == 2).expect("h-1 attempted again by the new relay");
    let h2 = log.iter().find(|a| a.id == "h-2").unwrap();
    assert!(again.started.duration_since(killed_at) >= Duration::from_millis(2500), "not before the 3 s lease expired");
    assert!(h2.started >= again.ended, "h-2 only after h-1 was delivered again");
    // h-1 was delivered twice (the killed relay's attempt was answered, its ack never sent):
    // at least once, and in order.
    let mut by_start = log.clone();
    by_start.sort_by_key(|a| a.started);
    let order: Vec<&str> = by_start.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(order, ["h-1", "h-1", "h-2", "h-3"]);
    assert_eq!(ds.most_at_once_per_key(), 1, "the new relay waited for the lease, not just for the kill");
    println!(
        "kill -9 of the relay holding h-1: taken over {:.2}s after the kill (lease 3s), then h-2, h-3 in order",
        again.started.duration_since(killed_at).as_secs_f64()
    );
    drop(taker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_blocks_or_releases_its_key_and_its_replay_goes_first() {
    let redis = RedisServer::start();
    let failing = |id: &str, _| (!id.ends_with("-1"), Duration::ZERO);
    let (ds, url) = Keyed::start(Arc::new(failing)).await;
    let client = reqwest::Client::new();
    let base = "  maxAttempts: 2\n  initialDelay: 50ms\n";
    let block = RelayProcess::start_fresh(
        "t/ordered-block",
        &redis.url(),
        &url,
        &format!("{base}  ordering: {{ keyPointer: /channel/to/id, onDeadLetter: block }}\n"),
    );
    let cont = RelayProcess::start_fresh("t/ordered-continue", &redis.url(), &url, &format!("{base}{ORDERED}"));
    for n in 1..=3 {
        send_ok(&client, &block, &format!("b-{n}"), "conv-b").await;
        send_ok(&client, &cont, &format!("c-{n}"), "conv-c").await;
    }
    send_ok(&client, &block, "o-2", "conv-o").await;

    // continue: c-1 dead, c-2 and c-3 delivered. block: b-1 dead, b-2 and b-3 wait; conv-o flows.
    let settled = eventually(Duration::from_secs(10), || async {
        let d = ds.delivered();
        d.get("conv-c").is_some_and(|v| v.len() == 2) && d.contains_key("conv-o")
    })
    .await;
    assert!(settled, "{:?}", ds.delivered());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ds.delivered().get("conv-b"), None, "blocked by its dead letter");
    let stats = admin_get(&block, "/v1/stats").await;
    assert_eq!((stats["dead"].as_u64(), stats["blocked"].as_u64()), (Some(1), Some(2)), "{stats}");
    assert_eq!(stats["oldestBlocked"]["key"], "conv-b");
    let blocked = dlq(&block, &["list", "--state", "blocked"]).await;
    assert!(blocked.contains("b-2") && blocked.contains("b-3") && !blocked.contains("b-1"), "{blocked}");
    let table = dlq(&block, &["stats"]).await;
    assert!(table.contains("blocked: 2 event(s) of 1 ordering key(s)") && table.contains("key \"conv-b\""), "{table}");
    let detail = admin_get(&block, "/v1/events/b-2").await;
    assert_eq!(
        (detail["state"].as_str(), detail["orderingKey"].as_str()),
        (Some("blocked"), Some("conv-b")),
        "{detail}"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events/b-2/replay", block.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a waiting event cannot jump its key");

    // The downstream is mended; the dead letters are replayed: each goes first in its key.
    ds.set(Arc::new(|_, _| (true, Duration::ZERO)));
    dlq(&block, &["replay", "b-1"]).await;
    dlq(&cont, &["replay", "c-1"]).await;
    let done = eventually(Duration::from_secs(10), || async {
        let d = ds.delivered();
        d.get("conv-b").is_some_and(|v| v.len() == 3) && d.get("conv-c").is_some_and(|v| v.len() == 3)
    })
    .await;
    assert!(done, "{:?}", ds.delivered());
    let ids = |n: &str| (1..=3).map(|i| format!("{n}-{i}")).collect::<Vec<_>>();
    assert_eq!(ds.delivered()["conv-b"], ids("b"), "block: the replayed dead letter first, then the rest in order");
    assert_eq!(ds.delivered()["conv-c"], ["c-2", "c-3", "c-1"], "continue: the others went on; the replay after");
    assert_eq!(ds.most_at_once_per_key(), 1);

    // An event without the key: 400 naming the pointer.
    let (status, body) = send_body(&client, &block.intake, r#"{"id":"nokey","channel":{}}"#).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("/channel/to/id") && body.contains("delivery.ordering.keyPointer"), "{body}");
    println!(
        "block: b-2, b-3 waited behind dead b-1 until its replay, then b-1, b-2, b-3; continue: c-2, c-3, then replayed c-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_missing_key_unordered_an_event_without_a_key_is_delivered() {
    let redis = RedisServer::start();
    let (ds, url) = Keyed::start(Arc::new(|_, _| (true, Duration::ZERO))).await;
    let delivery = "  ordering: { keyPointer: /channel/to/id, missingKey: unordered }\n";
    let relay = RelayProcess::start_fresh("t/ordered-missing", &redis.url(), &url, delivery);
    let (status, body) =
        send_body(&reqwest::Client::new(), &relay.intake, r#"{"id":"nokey","channel":{}}"#).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(eventually(Duration::from_secs(5), || async { ds.log().iter().any(|a| a.id == "nokey") }).await);
}
