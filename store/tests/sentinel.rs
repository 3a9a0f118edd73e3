//! Redis Sentinel, against real processes on loopback: a primary, a replica and three
//! Sentinels (`redis-server --sentinel`, down-after 1 s). The store finds the primary
//! through the Sentinels and follows a failover by itself, without a new `Conn`.

use std::time::{Duration, Instant};
use testkit::wait::eventually;
use testkit::{RedisSentinels, RedisServer};
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);
const RELAY: &str = "t/sentinel";

fn id(s: &str) -> EventId {
    EventId::new(s).unwrap()
}

/// A primary and a replica requiring `password` (when given), synced.
fn pair(password: Option<&str>) -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &port];
    if let Some(pw) = password {
        args.extend(["--masterauth", pw]);
        primary.cli(&["CONFIG", "SET", "requirepass", pw]);
    }
    let replica = RedisServer::start_with(&args);
    let cli = |s: &RedisServer, args: &[&str]| {
        let mut full = password.map(|pw| vec!["--no-auth-warning", "-a", pw]).unwrap_or_default();
        full.extend(args);
        s.cli(&full)
    };
    if let Some(pw) = password {
        replica.cli(&["CONFIG", "SET", "requirepass", pw]);
    }
    let linked = testkit::wait::wait_until(Duration::from_secs(15), || {
        cli(&replica, &["INFO", "replication"]).contains("master_link_status:up")
    });
    assert!(linked, "the replica did not sync: {}", cli(&replica, &["INFO", "replication"]));
    (primary, replica)
}

fn primaries_connected(conn: &Conn) -> u64 {
    match conn {
        Conn::Sentinel(s) => s.primaries_connected(),
        _ => panic!("a redis+sentinel:// URL gives a Sentinel connection"),
    }
}

async fn enqueue(s: &Store, name: &str) -> Result<Enqueued, StoreError> {
    s.enqueue(&id(name), b"{}", "application/json", DAY).await
}

/// Enqueues `name` until it is accepted (at most `limit`); how many attempts failed.
async fn enqueue_until_accepted(s: &Store, name: &str, limit: Duration) -> usize {
    let t0 = Instant::now();
    let mut failed = 0;
    loop {
        match enqueue(s, name).await {
            Ok(_) => return failed,
            Err(e) => {
                failed += 1;
                assert!(t0.elapsed() < limit, "no enqueue accepted within {limit:?} after the failover; last: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_killed_primary_to_the_promoted_replica_and_keeps_what_it_confirmed() {
    let (mut primary, replica) = pair(Some("data-pw"));
    let sentinels = RedisSentinels::start(&primary, "relay-primary", 1, Some("data-pw"), Some("sentinel-pw"));
    let opts = ConnectOptions::new(sentinels.url())
        .password(Some("data-pw".into()))
        .sentinel_password(Some("sentinel-pw".into()));
    let conn = Conn::connect(&opts).await.unwrap();
    let writes = vec![Conn::connect(&opts).await.unwrap()];
    let s = Store::new(conn.clone(), RELAY).wait_for_replicas(1, Duration::from_millis(500), writes.clone());
    s.prepare().await.unwrap();
    for i in 0..20 {
        let e = enqueue(&s, &format!("before-{i}")).await.unwrap();
        assert!(matches!(e, Enqueued::Accepted { .. }), "{e:?}");
    }
    assert_eq!((primaries_connected(&conn), primaries_connected(&writes[0])), (1, 1));

    primary.kill();
    let t0 = Instant::now();
    let promoted = sentinels.wait_for_failover(primary.port, Duration::from_secs(30));
    assert_eq!(promoted, replica.port, "the replica was promoted");
    // waitForReplicas 1 and no replica left: stored on the new primary, but refused.
    let unwaited = s.clone().wait_for_replicas(0, Duration::ZERO, vec![]);
    let failed = enqueue_until_accepted(&unwaited, "after", Duration::from_secs(30)).await;
    println!("first write accepted {:?} after the kill, {failed} refused meanwhile", t0.elapsed());
    assert_eq!(primaries_connected(&conn), 2, "one new primary found through the Sentinels, no new Conn");
    for i in 0..20 {
        let got = s.get(&id(&format!("before-{i}"))).await.unwrap();
        assert!(got.is_some(), "before-{i} was confirmed by the replica, so the promoted replica holds it");
    }
    // The write connection follows too; with no replica left, nothing is confirmed.
    let mut last = None;
    for _ in 0..50 {
        last = Some(enqueue(&s, "unreplicated").await);
        if matches!(last, Some(Err(StoreError::NotReplicated { .. }))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(last, Some(Err(StoreError::NotReplicated { confirmed: 0, wanted: 1, .. }))), "{last:?}");
    assert_eq!(primaries_connected(&writes[0]), 2, "the write connection followed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_announced_by_sentinel_moves_writes_before_any_fails_on_the_demoted_primary() {
    let (primary, replica) = pair(None);
    let sentinels = RedisSentinels::start(&primary, "m1", 1, None, None);
    let conn = Conn::connect(&ConnectOptions::new(sentinels.url())).await.unwrap();
    let s = Store::new(conn.clone(), RELAY);
    s.prepare().await.unwrap();
    assert!(matches!(enqueue(&s, "a").await, Ok(Enqueued::Accepted { .. })));
    // A planned failover: the old primary stays up and becomes a replica.
    assert_eq!(sentinels.cli(sentinels.ports[0], &["SENTINEL", "FAILOVER", "m1"]).unwrap(), "OK");
    sentinels.wait_for_failover(primary.port, Duration::from_secs(30));
    let demoted = eventually(Duration::from_secs(15), || async {
        primary.cli(&["ROLE"]).starts_with("slave") && replica.cli(&["ROLE"]).starts_with("master")
    })
    .await;
    assert!(demoted, "the old primary was demoted: {}", primary.cli(&["ROLE"]));
    // +switch-master reached the connection, so the very next write goes to the new
    // primary (without it, that write would meet READONLY on the demoted one).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = enqueue(&s, "b").await;
    assert!(matches!(first, Ok(Enqueued::Accepted { .. })), "no write failed on the demoted primary: {first:?}");
    assert_eq!(replica.cli(&["HEXISTS", "whr:{t/sentinel}:ev", "b"]), "1", "written to the new primary");
    assert_eq!(primaries_connected(&conn), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_problems_are_errors_that_name_the_sentinel_and_the_master() {
    let (primary, _replica) = pair(None);
    let sentinels = RedisSentinels::start(&primary, "m2", 1, None, Some("right"));
    let stats = |opts: ConnectOptions| async move {
        let conn = Conn::connect(&opts).await.unwrap();
        Store::new(conn, RELAY).stats().await.map(|_| ()).map_err(|e| e.to_string())
    };
    let e = stats(ConnectOptions::new(sentinels.url()).sentinel_password(Some("wrong".into()))).await.unwrap_err();
    let first = format!("sentinel 127.0.0.1:{}", sentinels.ports[0]);
    assert!(e.contains(&first) && e.contains("\"m2\""), "{e}");
    assert!(!e.contains("wrong"), "the password is not repeated: {e}");

    let unknown = sentinels.url().replace("/m2", "/nope");
    let e = stats(ConnectOptions::new(unknown).sentinel_password(Some("right".into()))).await.unwrap_err();
    assert!(e.contains("does not monitor a master named \"nope\""), "{e}");

    stats(ConnectOptions::new(sentinels.url()).sentinel_password(Some("right".into()))).await.unwrap();
    let e = Conn::connect(&ConnectOptions::new("redis+sentinel://127.0.0.1:1")).await.err().unwrap();
    assert!(e.to_string().contains("names no master"), "{e}");
}
