//! The Redis probe against a real redis-server: queue figures through the store format,
//! persistence settings (the primary's and its replicas'), refused CONFIG, an unreachable
//! server, and no leaked password.

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
    use webhook_relay_operator::redis_probe::ReplicaAddr;
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&primary);
    let synced = eventually(std::time::Duration::from_secs(10), || async {
        probe(&primary.url(), false, None, "ns/replicated").await.replication.is_ok_and(|r| {
            (r.role.as_str(), r.connected, r.in_sync) == ("master", 1, 1)
                && r.replicas == [ReplicaAddr { ip: "127.0.0.1".into(), port: replica.port }]
        })
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

/// The `RedisPersistent` condition a relay gets from `probe`.
fn persistent_condition(probe: &webhook_relay_operator::redis_probe::Probe) -> (String, String, String) {
    use webhook_relay_operator::status::{Outcome, REDIS_PERSISTENT, desired_status, find};
    let relay = serde_yaml::from_str(include_str!("../../examples/webhookrelay.yaml")).unwrap();
    let s = desired_status(&relay, &Outcome::Probed { probe, workload: None }, "e".into(), None, Default::default());
    let c = find(Some(&s), REDIS_PERSISTENT).expect("RedisPersistent").clone();
    (c.status, c.reason, c.message)
}

/// Probes `primary` until it lists `replicas` replica(s) (replication takes a moment).
async fn probe_with_replicas(url: &str, replicas: usize) -> webhook_relay_operator::redis_probe::Probe {
    let listed = testkit::eventually(std::time::Duration::from_secs(10), || async {
        probe(url, false, None, "ns/replicated").await.replication.is_ok_and(|r| r.replicas.len() == replicas)
    })
    .await;
    assert!(listed, "{:?}", probe(url, false, None, "ns/replicated").await.replication);
    probe(url, false, None, "ns/replicated").await
}

#[tokio::test]
async fn probe_judges_the_replicas_persistence_too() {
    use webhook_relay_operator::redis_probe::ReplicaAddr;
    let primary = RedisServer::start();
    let first = RedisServer::start_replica_of(&primary);
    let second = RedisServer::start_replica_of(&primary);
    let p = probe_with_replicas(&primary.url(), 2).await;
    assert_eq!(p.persistence, Persistence::Durable, "primary and both replicas durable");
    let (status, reason, message) = persistent_condition(&p);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Durable"));
    assert!(message.ends_with("on the primary and its 2 replica(s)"), "{message}");

    // A replica without the AOF: promoted after a failover, it would lose events.
    second.cli(&["CONFIG", "SET", "appendonly", "no"]);
    let p = probe(&primary.url(), false, None, "ns/replicated").await;
    let on_second = |problem| Persistence::Replica {
        replica: ReplicaAddr { ip: "127.0.0.1".into(), port: second.port },
        problem: Box::new(problem),
    };
    assert_eq!(p.persistence, on_second(Persistence::AppendOnlyOff));
    let (status, reason, aof_off) = persistent_condition(&p);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ReplicaAppendOnlyOff"));
    assert!(aof_off.starts_with(&format!("replica 127.0.0.1:{}: appendonly is off", second.port)), "{aof_off}");

    second.cli(&["CONFIG", "SET", "appendonly", "yes"]);
    second.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let p = probe(&primary.url(), false, None, "ns/replicated").await;
    assert_eq!(p.persistence, on_second(Persistence::Eviction("allkeys-lru".into())));
    second.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    assert_eq!(probe(&primary.url(), false, None, "ns/replicated").await.persistence, Persistence::Durable);

    // The replicas are reached with the primary's credentials: a replica without the
    // relay's ACL user (ACLs do not replicate) cannot be judged, and says so without the
    // password; one whose user may not run CONFIG neither.
    let user = ["ACL", "SETUSER", "relay", "on", ">s3cret-pass", "~*", "&*", "+@all"];
    primary.cli(&user);
    first.cli(&user);
    second.cli(&[&user[..], &["-config"]].concat());
    let acl_url = format!("redis://relay:s3cret-pass@127.0.0.1:{}/", primary.port);
    let p = probe(&acl_url, false, None, "ns/replicated").await;
    match &p.persistence {
        Persistence::Replica { replica, problem } => {
            assert_eq!(replica.port, second.port);
            assert!(
                matches!(problem.as_ref(), Persistence::Unknown(why) if why.contains("CONFIG GET refused")),
                "{problem:?}"
            );
        }
        other => panic!("expected the second replica's CONFIG refused, got {other:?}"),
    }
    first.cli(&["ACL", "DELUSER", "relay"]);
    second.cli(&[&user[..], &["+config"]].concat());
    let p = probe(&acl_url, false, None, "ns/replicated").await;
    let (status, reason, message) = persistent_condition(&p);
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "ReplicaNotChecked"), "{message}");
    assert!(
        message.starts_with(&format!("replica 127.0.0.1:{}: the Redis URL's credentials are refused", first.port)),
        "{message}"
    );
    assert!(!format!("{message} {p:?}").contains("s3cret-pass"), "{message}");
    first.cli(&user);
    assert_eq!(probe(&acl_url, false, None, "ns/replicated").await.persistence, Persistence::Durable);
    println!("replicas: both durable -> Durable; appendonly no on one -> ReplicaAppendOnlyOff: {aof_off}");
    println!("replica without the relay's ACL user -> {reason}: {message}");
}

#[tokio::test]
async fn probe_reports_a_replica_it_cannot_reach() {
    // The replica announces a port nothing listens on (as a NATed replica might).
    let primary = RedisServer::start();
    let nowhere = testkit::free_port();
    let _replica = RedisServer::start_with(&[
        "--replicaof",
        &primary.host,
        &primary.port.to_string(),
        "--replica-announce-port",
        &nowhere.to_string(),
    ]);
    probe_with_replicas(&primary.url(), 1).await;
    let started = std::time::Instant::now();
    let p = probe(&primary.url(), false, None, "ns/replicated").await;
    let took = started.elapsed();
    assert!(p.stats.is_ok(), "an unreachable replica does not fail the probe: {:?}", p.stats);
    let (status, reason, message) = persistent_condition(&p);
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "ReplicaNotChecked"), "{message}");
    assert!(message.starts_with(&format!("replica 127.0.0.1:{nowhere}: not reachable from the operator")), "{message}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    println!("unreachable replica ({took:?}) -> {reason}: {message}");
}

#[tokio::test]
async fn probe_reaches_the_replicas_over_the_primarys_tls() {
    use testkit::{ServerTls, tls::Ca};
    use webhook_relay_store::TlsMaterial;
    let ca = Ca::new("replica-ca");
    let tls = ServerTls::new(&ca, false);
    let primary = RedisServer::start_tls_with(Some(tls.clone()), &[]);
    let replica = RedisServer::start_tls_with(
        Some(tls),
        &["--replicaof", "127.0.0.1", &primary.port.to_string(), "--tls-replication", "yes"],
    );
    let trusting = TlsMaterial { ca_pem: Some(std::fs::read(ca.cert()).unwrap()), client: None };
    let listed = testkit::eventually(std::time::Duration::from_secs(10), || async {
        probe(&primary.url(), false, Some(trusting.clone()), "ns/relay").await.replication.is_ok_and(|r| r.in_sync == 1)
    })
    .await;
    assert!(listed, "the replica did not sync over TLS");
    let p = probe(&primary.url(), false, Some(trusting.clone()), "ns/relay").await;
    assert_eq!(p.persistence, Persistence::Durable);
    replica.cli(&["CONFIG", "SET", "appendonly", "no"]);
    let p = probe(&primary.url(), false, Some(trusting), "ns/relay").await;
    assert!(
        matches!(&p.persistence, Persistence::Replica { replica: r, problem } if r.port == replica.port && **problem == Persistence::AppendOnlyOff),
        "{:?}",
        p.persistence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_through_sentinel_reads_the_primary_and_checks_its_replica() {
    use webhook_relay_operator::redis_probe::Pool;
    use webhook_relay_store::ConnectOptions;
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sentinels = testkit::RedisSentinels::start(&primary, "probe-m", 1, None, Some("sentinel-s3cret"));
    let pool = Pool::default();
    let opts = ConnectOptions::new(sentinels.url()).sentinel_password(Some("sentinel-s3cret".into()));
    let p = pool.probe_with(&opts, "ns/sentinel").await;
    assert_eq!(p.stats.as_ref().map(|s| s.due), Ok(0), "figures read from the primary Sentinel names");
    let r = p.replication.as_ref().unwrap();
    assert_eq!((r.role.as_str(), r.connected), ("master", 1));
    assert_eq!(p.persistence, Persistence::Durable, "the primary and its replica");
    replica.cli(&["CONFIG", "SET", "appendonly", "no"]);
    let p = pool.probe_with(&opts, "ns/sentinel").await;
    assert_eq!(p.persistence, Persistence::Durable, "a replica's verdict is reused for a minute (REPLICA_VERDICT_TTL)");
    let p = Pool::default().probe_with(&opts, "ns/sentinel").await;
    assert!(
        matches!(&p.persistence, Persistence::Replica { replica: r, .. } if r.port == replica.port),
        "{:?}",
        p.persistence
    );

    let wrong = ConnectOptions::new(sentinels.url()).sentinel_password(Some("not-the-pass".into()));
    let p = pool.probe_with(&wrong, "ns/sentinel").await;
    let e = p.stats.unwrap_err();
    assert!(e.message.contains("probe-m") && !e.message.contains("not-the-pass"), "{e}");
}
