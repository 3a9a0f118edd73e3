//! Genesys delivery receipts from the relay process, against a fake Genesys Cloud that
//! follows the documented API: `POST /oauth/token` (Basic client credentials, form
//! `grant_type=client_credentials`) and
//! `POST /api/v2/conversations/messages/{integrationId}/inbound/open/receipt` (Bearer).

use serde_json::{Value, json};
use std::time::Duration;
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::genesys_fake::{CLIENT_ID, CLIENT_SECRET, FakeGenesys, INTEGRATION_ID, TOKEN_PREFIX};
use testkit::relay::*;
use testkit::wait::eventually;

/// The test config with receipts of both kinds to the fake at `genesys`.
fn receipts_config(relay: &str, l: u16, a: u16, ds: &str, genesys: &str) -> String {
    format!(
        "{}genesys:\n  apiBaseUrl: {genesys}\n  loginBaseUrl: {genesys}\n  integrationId: {INTEGRATION_ID}\n  \
         receipts: {{ onDeadLetter: true, onDelivered: true }}\n",
        config(relay, l, a, ds, "  maxAttempts: 3")
    )
}

const GENESYS_ENV: [(&str, &str); 2] = [("GENESYS_CLIENT_ID", CLIENT_ID), ("GENESYS_CLIENT_SECRET", CLIENT_SECRET)];

fn bad_is_400() -> Script {
    refuse_prefix("bad", 400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_posts_exactly_one_failed_receipt_and_delivery_one_delivered() {
    let fake = FakeGenesys::start().await;
    let genesys = fake.base_url.clone();
    let redis = RedisServer::start();
    let ds = Downstream::start(bad_is_400(), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = receipts_config("t/receipts", l, a, &ds.url, &genesys);
    let relay = RelayProcess::start_with_env(&yaml, &redis.url(), l, a, &GENESYS_ENV);
    let client = reqwest::Client::new();
    assert_eq!(send(&client, &relay.intake, "bad-1").await.unwrap().0, 200);
    assert_eq!(send(&client, &relay.intake, "good-1").await.unwrap().0, 200);

    let both = eventually(Duration::from_secs(20), || async { fake.receipts().len() >= 2 }).await;
    assert!(both, "receipts: {:?}; log:\n{}", fake.receipts(), relay.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await; // a second receipt would arrive by now
    let receipts = fake.receipts();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let failed: Vec<&Value> = receipts.iter().filter(|(_, v)| v["status"] == "Failed").map(|(_, v)| v).collect();
    assert_eq!(failed.len(), 1, "exactly one Failed receipt");
    let f = failed[0];
    assert!(receipts.iter().all(|(i, _)| i == INTEGRATION_ID));
    assert_eq!(f["id"], "bad-1");
    assert_eq!(f["channel"]["to"], json!({"id": "cust-1", "idType": "Opaque"}));
    assert!(f["channel"]["time"].is_string());
    assert_eq!(f["isFinalReceipt"], true);
    assert_eq!(f["direction"], "Outbound");
    assert_eq!(f["reasons"][0]["code"], "GeneralError");
    let msg = f["reasons"][0]["message"].as_str().unwrap();
    assert!(msg.contains("400"), "{msg}");
    let delivered: Vec<&Value> = receipts.iter().filter(|(_, v)| v["status"] == "Delivered").map(|(_, v)| v).collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["id"], "good-1");
    assert!(delivered[0].get("reasons").is_none_or(|r| r.is_null()));
    assert_eq!(fake.tokens_issued(), 1, "the token is cached across receipts");

    let m = relay.metrics();
    assert!(m.contains(r#"webhook_relay_genesys_receipts_total{status="Failed",outcome="sent"} 1"#), "{m}");
    let log = relay.log_text();
    assert!(!log.contains(CLIENT_SECRET) && !log.contains(TOKEN_PREFIX), "secrets in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_of_an_outcome_write_still_sends_its_receipt_and_counts_right() {
    let fake = FakeGenesys::start().await;
    let genesys = fake.base_url.clone();
    let redis = RedisServer::start();
    let proxy = testkit::proxy::LossyProxy::start(redis.port);
    let ds = Downstream::start(bad_is_400(), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = receipts_config("t/lost", l, a, &ds.url, &genesys);
    let relay = RelayProcess::start_with_env(&yaml, &proxy.url(), l, a, &GENESYS_ENV);
    let client = reqwest::Client::new();
    // Warm up, so the server has both scripts cached and calls them by hash.
    for id in ["bad-warm", "good-warm"] {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    assert!(eventually(Duration::from_secs(20), || async { fake.receipts().len() == 2 }).await);

    // The dead-letter script runs, its reply is lost, the connection drops.
    proxy.lose_reply_to(webhook_relay_store::scripts::DEAD.hash().as_bytes());
    assert_eq!(send(&client, &relay.intake, "bad-lost").await.unwrap().0, 200);
    let failed =
        eventually(Duration::from_secs(20), || async { fake.receipt_ids("Failed").contains(&"bad-lost".to_string()) })
            .await;
    assert!(failed, "no Failed receipt after the lost reply; log:\n{}", relay.log_text());
    assert_eq!(proxy.lost(), 1, "the reply was lost on purpose");

    // The same for an ack.
    proxy.lose_reply_to(webhook_relay_store::scripts::ACK.hash().as_bytes());
    assert_eq!(send(&client, &relay.intake, "good-lost").await.unwrap().0, 200);
    let delivered = eventually(Duration::from_secs(20), || async {
        fake.receipt_ids("Delivered").contains(&"good-lost".to_string())
    })
    .await;
    assert!(delivered, "no Delivered receipt after the lost reply; log:\n{}", relay.log_text());
    assert_eq!(proxy.lost(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.receipt_ids("Failed"), ["bad-warm", "bad-lost"], "one Failed receipt each");
    assert_eq!(fake.receipt_ids("Delivered"), ["good-warm", "good-lost"]);
    let dead = relay.metric(r#"webhook_relay_delivery_attempts_total{outcome="dead""#);
    let acked = relay.metric(r#"webhook_relay_delivery_attempts_total{outcome="delivered""#);
    let lost = relay.metric(r#"webhook_relay_delivery_attempts_total{outcome="lease_lost""#);
    println!(
        "lost replies: 2 replies dropped by the proxy; attempts counted dead {dead}, delivered {acked}, lease_lost {lost}"
    );
    assert_eq!((dead, acked, lost), (2.0, 2.0, 0.0));
    let s = store(&redis.url(), "t/lost").await;
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_queued_at_sigterm_are_sent_within_the_drain_or_counted_as_failed() {
    let fake = FakeGenesys::start().await;
    let genesys = fake.base_url.clone();
    let redis = RedisServer::start();
    let ds = Downstream::start(bad_is_400(), Duration::ZERO).await;
    let client = reqwest::Client::new();

    // A slow Genesys (1 s a receipt, 8 at once): 12 receipts still queued at SIGTERM are all
    // sent within the drain time.
    fake.set_receipt_delay(Duration::from_secs(1));
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let mut relay = RelayProcess::start_with_env(
        &receipts_config("t/drain", l, a, &ds.url, &genesys),
        &redis.url(),
        l,
        a,
        &GENESYS_ENV,
    );
    let ids: Vec<String> = (0..12).map(|i| format!("bad-slow-{i}")).collect();
    for id in &ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/drain").await;
    assert!(eventually(Duration::from_secs(20), || async { s.stats().await.unwrap().dead == 12 }).await);
    let status = relay.terminate(Duration::from_secs(30)).expect("exited");
    assert!(status.success());
    let mut sent = fake.receipt_ids("Failed");
    sent.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sent, want, "every queued receipt was sent before exit; log:\n{}", relay.log_text());
    assert!(!relay.log_text().contains("receipt not sent"), "{}", relay.log_text());

    // A Genesys that never answers in time: the receipts are given up at the end of the
    // drain, each counted and logged with its event id, not dropped silently.
    fake.clear_receipts();
    fake.set_receipt_delay(Duration::from_secs(600));
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let mut relay = RelayProcess::start_with_env(
        &receipts_config("t/drain2", l, a, &ds.url, &genesys),
        &redis.url(),
        l,
        a,
        &GENESYS_ENV,
    );
    let ids: Vec<String> = (0..10).map(|i| format!("bad-hung-{i}")).collect();
    for id in &ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/drain2").await;
    assert!(eventually(Duration::from_secs(20), || async { s.stats().await.unwrap().dead == 10 }).await);
    let t0 = std::time::Instant::now();
    let status = relay.terminate(Duration::from_secs(30)).expect("exited within the drain time");
    assert!(status.success());
    let log = relay.log_text();
    let given_up: Vec<&str> = log.lines().filter(|l| l.contains("receipt not sent")).collect();
    println!(
        "receipts at SIGTERM: 12 of 12 sent to a slow Genesys before exit; with a hung Genesys the relay exited after {:.1}s \
         and logged {} receipts as not sent",
        t0.elapsed().as_secs_f64(),
        given_up.len()
    );
    for id in &ids {
        assert!(given_up.iter().any(|l| l.contains(id.as_str())), "{id} was not reported; log:\n{log}");
    }
    assert_eq!(given_up.len(), ids.len());
}
