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
