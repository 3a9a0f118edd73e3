//! The Redis probe against a real redis-server: queue figures through the store format,
//! persistence settings, refused CONFIG, an unreachable server, and no leaked password.

use testkit::RedisServer;
use webhook_relay_operator::redis_probe::{Persistence, probe};

#[tokio::test]
async fn probe_reads_figures_and_judges_persistence() {
    let mut redis = RedisServer::start();
    let p = probe(&redis.url(), false, None, "ns/relay").await;
    assert_eq!(p.stats.as_ref().map(|s| (s.due, s.dead)), Ok((0, 0)));
    assert_eq!(p.persistence, Persistence::Durable);

    redis.cli(&["CONFIG", "SET", "appendonly", "no"]);
    assert_eq!(probe(&redis.url(), false, None, "ns/relay").await.persistence, Persistence::AppendOnlyOff);
    redis.cli(&["CONFIG", "SET", "appendonly", "yes"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    assert_eq!(
        probe(&redis.url(), false, None, "ns/relay").await.persistence,
        Persistence::Eviction("volatile-lru".into())
    );

    redis.cli(&["ACL", "SETUSER", "relay", "on", ">s3cret-pass", "~*", "&*", "+@all", "-config"]);
    let acl_url = format!("redis://relay:s3cret-pass@127.0.0.1:{}/", redis.port);
    let p = probe(&acl_url, false, None, "ns/relay").await;
    assert!(p.stats.is_ok(), "{:?}", p.stats);
    match &p.persistence {
        Persistence::Unknown(why) => assert!(!why.contains("s3cret-pass"), "{why}"),
        other => panic!("expected Unknown, got {other:?}"),
    }

    redis.kill();
    let p = probe(&acl_url, false, None, "ns/relay").await;
    let err = p.stats.unwrap_err();
    assert!(!err.message.contains("s3cret-pass"), "{err}");

    // Restarted without the ACL user (ACLs are not in the AOF): an auth error, redacted.
    redis.start_again();
    let p = probe(&acl_url, false, None, "ns/relay").await;
    let err = p.stats.unwrap_err();
    assert!(!err.message.contains("s3cret-pass"), "{err}");
    assert!(probe(&redis.url(), false, None, "ns/relay").await.stats.is_ok());
}

#[tokio::test]
async fn probe_reads_the_destination_gate_the_relays_share() {
    use std::time::Duration;
    use webhook_relay_store::{Breaker, CircuitState, GateOutcome, GatePolicy};
    let redis = RedisServer::start();
    let p = probe(&redis.url(), false, None, "ns/gated").await;
    assert_eq!(p.destination.map(|d| d.circuit), Some(CircuitState::Closed), "never written: closed");
    // What a relay's delivery worker writes after failed attempts.
    let store = testkit::relay::store(&redis.url(), "ns/gated").await;
    let gate = GatePolicy {
        breaker: Some(Breaker { failure_threshold: 2, open_for: Duration::from_secs(60) }),
        ..GatePolicy::default()
    };
    let fail = GateOutcome { ok: false, probe: false, pause: Some(Duration::from_secs(30)) };
    store.record_gate(fail, &gate).await.unwrap();
    assert!(store.record_gate(fail, &gate).await.unwrap().opened);
    let d = probe(&redis.url(), false, None, "ns/gated").await.destination.expect("read");
    assert_eq!((d.circuit, d.consecutive_failures), (CircuitState::Open, 2));
    assert!(d.since_ms.is_some() && d.open_until_ms.is_some() && d.paused_until_ms.is_some(), "{d:?}");
}

#[tokio::test]
async fn probe_over_tls_trusts_the_relays_ca() {
    use testkit::{ServerTls, tls::Ca};
    use webhook_relay_store::TlsMaterial;
    let ca = Ca::new("probe-ca");
    let redis = RedisServer::start_tls_with(Some(ServerTls::new(&ca, false)), &[]);
    let trusting = TlsMaterial { ca_pem: Some(std::fs::read(ca.cert()).unwrap()), client: None };
    let p = probe(&redis.url(), false, Some(trusting), "ns/relay").await;
    assert!(p.stats.is_ok(), "{:?}", p.stats);
    assert_eq!(p.persistence, Persistence::Durable);
    let other = Ca::new("not-the-servers-ca");
    let wrong = TlsMaterial { ca_pem: Some(std::fs::read(other.cert()).unwrap()), client: None };
    let err = probe(&redis.url(), false, Some(wrong), "ns/relay").await.stats.unwrap_err();
    assert!(err.message.contains("certificate"), "{err}");
    assert_eq!(err.kind, webhook_relay_operator::redis_probe::ProbeFailure::Connect);
}

/// `total_connections_received` of `redis` (the redis-cli call reading it is one more).
fn connections_received(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

#[tokio::test]
async fn relays_on_one_redis_share_one_pooled_connection() {
    use webhook_relay_operator::redis_probe::Pool;
    let mut redis = RedisServer::start();
    let pool = Pool::default();
    let before = connections_received(&redis);
    for round in 0..3 {
        for i in 0..30 {
            let p = pool.probe(&redis.url(), false, None, &format!("ns/relay-{i}")).await;
            assert!(p.stats.is_ok(), "round {round}, relay {i}: {:?}", p.stats);
        }
    }
    let opened = connections_received(&redis) - before - 1;
    assert_eq!(opened, 1, "90 probes of 30 relays on one Redis opened {opened} connections");
    assert_eq!(pool.len(), 1);
    // Another Redis (another URL): a connection of its own.
    let other = RedisServer::start();
    assert!(pool.probe(&other.url(), false, None, "ns/relay-0").await.stats.is_ok());
    assert_eq!(pool.len(), 2);

    // Redis goes away: the probe fails and the connection is dropped; once Redis is back
    // the next probe connects afresh and succeeds.
    redis.kill();
    assert!(pool.probe(&redis.url(), false, None, "ns/relay-0").await.stats.is_err());
    assert_eq!(pool.len(), 1, "the failed connection is not kept");
    redis.start_again();
    let p = pool.probe(&redis.url(), false, None, "ns/relay-0").await;
    assert!(p.stats.is_ok(), "{:?}", p.stats);
    println!("pool: 90 probes of 30 relays opened {opened} connection; after a Redis restart the pool reconnected");
}

#[tokio::test]
async fn probe_counts_the_primarys_in_sync_replicas() {
    use testkit::wait::eventually;
    use webhook_relay_operator::redis_probe::Replication;
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&primary);
    let synced = eventually(std::time::Duration::from_secs(10), || async {
        probe(&primary.url(), false, None, "ns/replicated").await.replication
            == Ok(Replication { role: "master".into(), connected: 1, in_sync: 1 })
    })
    .await;
    assert!(synced, "{:?}", probe(&primary.url(), false, None, "ns/replicated").await.replication);
    let on_replica = probe(&replica.url(), false, None, "ns/replicated").await.replication.unwrap();
    assert_eq!(on_replica.role, "slave", "a URL pointing at the replica is seen as one");
    replica.kill();
    let gone = eventually(std::time::Duration::from_secs(10), || async {
        probe(&primary.url(), false, None, "ns/replicated").await.replication.is_ok_and(|r| r.in_sync == 0)
    })
    .await;
    assert!(gone, "the killed replica still counted");
}
