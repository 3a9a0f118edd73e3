//! The destination gate (rate limit, circuit breaker, Retry-After pause) against a real
//! redis-server, on a single server and on a 3-node Redis Cluster.

mod common;
use common::store;

use std::time::Duration;
use webhook_relay_store::*;

const LEASE: Duration = Duration::from_secs(30);

async fn enqueue(s: &Store, n: usize) {
    common::enqueue_numbered(s, "e", n).await;
}

async fn claim(s: &Store, max: usize, gate: &GatePolicy) -> Claim {
    s.claim_gated(new_claim_id(), max, LEASE, gate).await.unwrap()
}

on_both!(
    the_rate_limit_caps_claims_at_its_tokens_and_refills,
    the_breaker_opens_at_the_threshold_lets_one_probe_through_and_closes_on_success,
    a_retry_after_pause_holds_every_event,
);

async fn the_rate_limit_caps_claims_at_its_tokens_and_refills(cluster: bool) {
    let (_b, s) = store(cluster, "t/rate").await;
    enqueue(&s, 40).await;
    let gate = GatePolicy { rate_per_second: Some(10.0), burst: 5, ..GatePolicy::default() };
    let first = claim(&s, 100, &gate).await;
    assert_eq!(first.events.len(), 5, "a full bucket: the burst");
    assert_eq!(first.gate.held, None);
    let next = claim(&s, 100, &gate).await;
    assert_eq!((next.events.len(), next.gate.held), (0, Some(Held::RateLimited)), "the bucket is empty");
    assert!(next.gate.wait > Duration::ZERO && next.gate.wait <= Duration::from_millis(100), "{:?}", next.gate.wait);
    assert_eq!(s.stats().await.unwrap().due, 35, "held events stay due, unclaimed");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let refilled = claim(&s, 100, &gate).await;
    assert!((4..=5).contains(&refilled.events.len()), "10/s for 450 ms: {} tokens", refilled.events.len());
    // The held events kept their order: the claims took e0000.. in sequence.
    let ids: Vec<String> =
        first.events.iter().chain(&refilled.events).map(|e| e.lease.id.as_str().to_string()).collect();
    let expected: Vec<String> = (0..ids.len()).map(|i| format!("e{i:04}")).collect();
    assert_eq!(ids, expected);
    let d = s.destination(&gate).await.unwrap();
    assert!(d.tokens.unwrap() < 1.0, "{d:?}");
}

async fn the_breaker_opens_at_the_threshold_lets_one_probe_through_and_closes_on_success(cluster: bool) {
    let (_b, s) = store(cluster, "t/breaker").await;
    enqueue(&s, 20).await;
    let breaker = Breaker { failure_threshold: 3, open_for: Duration::from_millis(300) };
    let gate = GatePolicy { breaker: Some(breaker), probe_lease: Duration::from_secs(5), ..GatePolicy::default() };
    let fail = GateOutcome { ok: false, probe: false, pause: None };
    let ok = GateOutcome { ok: true, probe: false, pause: None };
    assert_eq!(claim(&s, 2, &gate).await.events.len(), 2, "closed: claims flow");
    assert!(!s.record_gate(fail, &gate).await.unwrap().opened);
    // A success in between resets the count: failures must be consecutive.
    assert_eq!(s.record_gate(ok, &gate).await.unwrap().consecutive_failures, 0);
    assert!(!s.record_gate(fail, &gate).await.unwrap().opened);
    assert!(!s.record_gate(fail, &gate).await.unwrap().opened);
    let third = s.record_gate(fail, &gate).await.unwrap();
    assert_eq!((third.state, third.consecutive_failures, third.opened), (CircuitState::Open, 3, true));
    let d = s.destination(&gate).await.unwrap();
    assert_eq!(d.circuit, CircuitState::Open);
    let opened_at = d.since_ms.expect("since when");
    assert!(d.open_until_ms.unwrap() - opened_at == 300, "{d:?}");

    let held = claim(&s, 10, &gate).await;
    assert_eq!((held.events.len(), held.gate.held), (0, Some(Held::CircuitOpen)));
    assert!(held.gate.wait <= Duration::from_millis(300));
    // Failures of attempts already in flight count but do not extend the open period.
    s.record_gate(fail, &gate).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;

    // Open past its time: exactly one probe, whoever asks first; the next claimer waits.
    let probe = claim(&s, 10, &gate).await;
    assert_eq!(probe.events.len(), 1);
    assert!(probe.gate.probe);
    assert_eq!(probe.gate.state, CircuitState::HalfOpen);
    let other = claim(&s, 10, &gate).await;
    assert_eq!((other.events.len(), other.gate.held), (0, Some(Held::Probing)));

    // A failed probe opens it again, since when it first opened.
    let again = s.record_gate(GateOutcome { probe: true, ..fail }, &gate).await.unwrap();
    assert_eq!((again.state, again.opened), (CircuitState::Open, true));
    assert_eq!(s.destination(&gate).await.unwrap().since_ms, Some(opened_at));
    assert_eq!(claim(&s, 10, &gate).await.gate.held, Some(Held::CircuitOpen));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let probe = claim(&s, 10, &gate).await;
    assert!(probe.gate.probe && probe.events.len() == 1);
    let closed = s.record_gate(GateOutcome { probe: true, ..ok }, &gate).await.unwrap();
    assert_eq!((closed.state, closed.consecutive_failures), (CircuitState::Closed, 0));
    assert_eq!(claim(&s, 100, &gate).await.events.len(), 16, "closed: the rest flows");
    // 2 + probe + probe + 16 claimed: the held claims took nothing and counted no attempt.
    assert_eq!(s.stats().await.unwrap().in_flight, 20);

    // With the breaker off (the setting removed), a stored open state holds nothing.
    for _ in 0..3 {
        s.record_gate(fail, &gate).await.unwrap();
    }
    enqueue(&s, 1).await;
    let off = GatePolicy::default();
    assert!(s.claim_gated(new_claim_id(), 10, LEASE, &off).await.unwrap().gate.held.is_none());
}

async fn a_retry_after_pause_holds_every_event(cluster: bool) {
    let (_b, s) = store(cluster, "t/pause").await;
    enqueue(&s, 5).await;
    let gate = GatePolicy::default();
    let pause = GateOutcome { ok: false, probe: false, pause: Some(Duration::from_millis(400)) };
    s.record_gate(pause, &gate).await.unwrap();
    // A shorter pause never shortens a longer one.
    s.record_gate(GateOutcome { pause: Some(Duration::from_millis(10)), ..pause }, &gate).await.unwrap();
    let d = s.destination(&gate).await.unwrap();
    assert!(d.paused_until_ms.unwrap() - d.now_ms > 300, "{d:?}");
    let held = claim(&s, 10, &gate).await;
    assert_eq!((held.events.len(), held.gate.held), (0, Some(Held::Paused)));
    assert!(held.gate.wait > Duration::from_millis(300));
    tokio::time::sleep(held.gate.wait + Duration::from_millis(20)).await;
    assert_eq!(claim(&s, 10, &gate).await.events.len(), 5);
    assert_eq!(s.destination(&gate).await.unwrap().paused_until_ms, None);
}
