//! Acknowledging only what a replica holds (`WAIT` after each enqueue), against a real
//! primary and replica on loopback; the replica is paused with SIGSTOP to play a lagging or
//! lost one.

use std::time::{Duration, Instant};
use testkit::wait::eventually;
use testkit::{RedisServer, Stopped};
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);
const WAIT: Duration = Duration::from_millis(300);

async fn waiting_store(primary: &RedisServer, replicas: u32) -> Store {
    let connect =
        || async { Conn::connect(&ConnectOptions::new(primary.url())).await.expect("connect to the primary") };
    Store::new(connect().await, "t/wait").wait_for_replicas(replicas, WAIT, vec![connect().await, connect().await])
}

fn on_replica(replica: &RedisServer, id: &str) -> bool {
    replica.cli(&["HEXISTS", "whr:{t/wait}:ev", id]).trim() == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_acknowledged_only_once_a_replica_holds_it_and_so_is_its_duplicate() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let s = waiting_store(&primary, 1).await;
    s.prepare().await.unwrap();
    // Another relay process: its own connection, which has written nothing yet.
    let other = waiting_store(&primary, 1).await;
    let id = |s: &str| EventId::new(s).unwrap();

    assert!(matches!(s.enqueue(&id("a"), b"{}", "application/json", DAY).await, Ok(Enqueued::Accepted { .. })));
    assert!(on_replica(&replica, "a"), "acknowledged: the replica holds it");

    let paused = Stopped::new(replica.pid().unwrap());
    let t0 = Instant::now();
    let e = s.enqueue(&id("b"), b"{}", "application/json", DAY).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(
        matches!(e, StoreError::NotReplicated { confirmed: 0, wanted: 1, .. }),
        "the replica does not answer: not acknowledged ({e})"
    );
    assert!(waited >= WAIT - Duration::from_millis(20), "WAIT waited {waited:?}");
    assert_eq!(s.get(&id("b")).await.unwrap().map(|e| e.state), Some(EventState::Due), "stored all the same");
    // The sender retries through another replica of the relay: a duplicate, whose first write
    // the replica does not hold yet, so it must not be acknowledged either.
    let e = other.enqueue(&id("b"), b"{}", "application/json", DAY).await.unwrap_err();
    assert!(matches!(e, StoreError::NotReplicated { .. }), "a duplicate waits for the first write too ({e})");
    // A relay that does not wait acknowledges at once (what waitForReplicas: 0 risks).
    let plain = Store::new(Conn::connect(&ConnectOptions::new(primary.url())).await.unwrap(), "t/wait");
    let t0 = Instant::now();
    assert!(matches!(plain.enqueue(&id("c"), b"{}", "application/json", DAY).await, Ok(Enqueued::Accepted { .. })));
    let unwaited = t0.elapsed();

    drop(paused);
    let caught_up = eventually(Duration::from_secs(10), || async { on_replica(&replica, "b") }).await;
    assert!(caught_up, "the replica caught up after SIGCONT");
    assert_eq!(other.enqueue(&id("b"), b"{}", "application/json", DAY).await.unwrap(), Enqueued::Duplicate);
    assert!(on_replica(&replica, "c"));
    println!(
        "replica paused: enqueue refused after {waited:?} (0 of 1 confirmed), its duplicate too; \
         without waiting: accepted in {unwaited:?}; after SIGCONT the duplicate is acknowledged"
    );
}
