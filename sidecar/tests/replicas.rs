//! `redis.waitForReplicas` end to end: the built relay against a real primary and replica on
//! loopback. A webhook is answered 200 only once the replica holds it; with the replica
//! paused (SIGSTOP) the answer is 503 + Retry-After, and the sender's retry after it is back
//! is a duplicate answered 200; the event is delivered exactly once.

use std::time::Duration;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use testkit::{RedisServer, Stopped};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_acknowledged_only_once_a_replica_holds_it() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let ds = Downstream::start(always(200), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = format!(
        "{}redis:\n  waitForReplicas: 1\n  waitTimeout: 300ms\n",
        config("t/replicated", l, a, &ds.url, "  maxAttempts: 5\n  initialDelay: 100ms")
    );
    let relay = RelayProcess::start(&yaml, &primary.url(), l, a);
    let client = reqwest::Client::new();
    let on_replica = |id: &str| replica.cli(&["HEXISTS", "whr:{t/replicated}:ev", id]).trim() == "1";

    let (status, body) = send(&client, &relay.intake, "w1").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let delivered = eventually(Duration::from_secs(10), || async { ds.delivered().contains_key("w1") }).await;
    assert!(delivered);

    let paused = Stopped::new(replica.pid().unwrap());
    let r = send_with_headers(&client, &relay.intake, &event_body("w2"), &[]).await.unwrap();
    let (status, retry_after, body) = (r.status, r.headers.get("retry-after").cloned(), r.body);
    assert_eq!(status, 503, "not on a replica: not acknowledged ({body})");
    assert!(retry_after.is_some(), "503 with Retry-After");
    assert!(body.contains("replica"), "{body}");
    let (status, _) = send(&client, &relay.intake, "w2").await.unwrap();
    assert_eq!(status, 503, "the sender's retry, a duplicate, waits for the replica too");
    assert_eq!(testkit::http::get_status(relay.admin_port, "/readyz"), Some(200), "Redis itself is fine: still ready");
    assert_eq!(relay.metric("webhook_relay_intake_requests_total{outcome=\"not_replicated\"}"), 2.0);

    drop(paused);
    let caught_up = eventually(Duration::from_secs(10), || async { on_replica("w2") }).await;
    assert!(caught_up, "the replica caught up");
    let (status, body) = send(&client, &relay.intake, "w2").await.unwrap();
    assert_eq!((status, body.contains("duplicate")), (200, true), "{body}");
    let both = eventually(Duration::from_secs(10), || async { ds.delivered().len() == 2 }).await;
    assert!(both, "delivered {:?}; log:\n{}", ds.delivered(), relay.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ds.delivered().get("w2"), Some(&1), "delivered exactly once");
    println!("waitForReplicas 1: replica paused -> 503 twice, resumed -> 200 duplicate; w2 delivered once");
}
