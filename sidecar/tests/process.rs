//! Process end-to-end tests: the built `webhook-relay` binary, a real redis-server, and a
//! scripted downstream, all on loopback. Figures are printed (run with --nocapture).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;
use webhook_relay_store::{EventId, EventState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_delivered_exactly_once_with_future_due_scores_meanwhile() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(2), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh(
        "t/retry",
        &redis.url(),
        &ds.url,
        "  maxAttempts: 5\n  initialDelay: 200ms\n  maxDelay: 5s",
    );
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..20).map(|i| format!("retry-{i}")).collect();
    for id in &ids {
        let (status, body) = send(&client, &relay.intake, id).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""status":"accepted""#), "{body}");
    }
    // A resend from Genesys of the same message id is a duplicate.
    let (status, body) = send(&client, &relay.intake, &ids[0]).await.unwrap();
    assert_eq!((status, body.contains(r#""status":"duplicate""#)), (200, true), "{body}");

    // Meanwhile the events wait in whr:{R}:due with a future score (Retry-After: 1 is a floor).
    let s = store(&redis.url(), "t/retry").await;
    let saw_future = eventually(Duration::from_secs(10), || async {
        let now = s.stats().await.unwrap().now_ms;
        let v =
            s.conn().cmd(redis::cmd("ZRANGE").arg("whr:{t/retry}:due").arg(0).arg(-1).arg("WITHSCORES")).await.unwrap();
        let pairs: Vec<(String, f64)> = redis::from_redis_value(v).unwrap();
        pairs.iter().any(|(_, score)| *score as i64 > now + 200)
    })
    .await;
    assert!(saw_future, "no due event with a future score seen");

    let all = eventually(Duration::from_secs(30), || async { ds.delivered().len() == ids.len() }).await;
    assert!(all, "delivered {} of {}; log:\n{}", ds.delivered().len(), ids.len(), relay.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = ds.delivered();
    for id in &ids {
        assert_eq!(delivered.get(id), Some(&1), "{id} delivered {:?} times", delivered.get(id));
    }
    let hits = ds.hits();
    assert_eq!(hits.len(), ids.len() * 3, "each event: two 503s then one 200");
    assert!(hits.iter().all(|h| h.content_type == "application/json"));
    assert_eq!(hits.iter().find(|h| h.id == ids[3]).unwrap().body, event_body(&ids[3]).as_bytes());
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 0, 0));
    println!("retry test: 20 accepted, 1 duplicate, {} downstream hits, 20 delivered once each", hits.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_dead_letter_at_once_and_last_failed_attempt_too() {
    let redis = RedisServer::start();
    let script: Script = Arc::new(|id, _| if id.starts_with("bad") { (400, None) } else { (503, None) });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = RelayProcess::start_fresh(
        "t/dead",
        &redis.url(),
        &ds.url,
        "  maxAttempts: 3\n  initialDelay: 10ms\n  maxDelay: 50ms",
    );
    let client = reqwest::Client::new();
    for id in ["bad-1", "bad-2", "flaky-1"] {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/dead").await;
    let dead = eventually(Duration::from_secs(20), || async { s.stats().await.unwrap().dead == 3 }).await;
    assert!(dead, "stats: {:?}; log:\n{}", s.stats().await.unwrap(), relay.log_text());
    let bad = s.get(&EventId::new("bad-1").unwrap()).await.unwrap().unwrap();
    assert_eq!((bad.state, bad.attempts, bad.meta.last_status), (EventState::Dead, 1, Some(400)));
    assert!(bad.meta.last_error.as_deref().unwrap().starts_with("400"), "{:?}", bad.meta.last_error);
    let flaky = s.get(&EventId::new("flaky-1").unwrap()).await.unwrap().unwrap();
    assert_eq!((flaky.state, flaky.attempts, flaky.meta.last_status), (EventState::Dead, 3, Some(503)));
    let hits = ds.hits();
    assert_eq!(hits.iter().filter(|h| h.id == "bad-1").count(), 1, "a 400 is never retried");
    assert_eq!(hits.iter().filter(|h| h.id == "flaky-1").count(), 3, "maxAttempts is the total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_refuses_what_it_cannot_verify_or_parse() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = config("t/refuse", l, a, &ds.url, "  maxAttempts: 3")
        .replace("  dedupWindow: 1h", "  dedupWindow: 1h\n  maxBodyBytes: 1024");
    let relay = RelayProcess::start(&yaml, &redis.url(), l, a);
    let client = reqwest::Client::new();
    let post = |body: String, sig: Option<String>| {
        let mut r = client.post(&relay.intake).header("content-type", "application/json").body(body);
        if let Some(sig) = sig {
            r = r.header("x-hub-signature-256", sig);
        }
        r.send()
    };
    let sign = |b: &str| webhook_relay_sidecar::signature::sign_genesys(SECRET.as_bytes(), b.as_bytes());
    let body = event_body("r1");
    assert_eq!(post(body.clone(), None).await.unwrap().status(), 401);
    assert_eq!(post(body.clone(), Some(sign("other body"))).await.unwrap().status(), 401);
    let big = format!(r#"{{"id":"big","pad":"{}"}}"#, "x".repeat(2000));
    assert_eq!(post(big.clone(), Some(sign(&big))).await.unwrap().status(), 413);
    assert_eq!(post("not json".into(), Some(sign("not json"))).await.unwrap().status(), 400);
    let r = post(r#"{"noid":1}"#.into(), Some(sign(r#"{"noid":1}"#))).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("source.idPointer"));
    let wrong_path = client.post(format!("http://127.0.0.1:{l}/other")).body(body.clone()).send().await.unwrap();
    assert_eq!(wrong_path.status(), 404);
    let s = store(&redis.url(), "t/refuse").await;
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 0, 0), "nothing refused was stored");
    assert!(ds.hits().is_empty());
    // Metrics count what happened.
    let m = client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(r#"webhook_relay_intake_requests_total{outcome="unauthorized"} 2"#), "{m}");
    assert!(m.contains(r#"webhook_relay_intake_requests_total{outcome="too_large"} 1"#), "{m}");
    assert!(m.contains(r#"webhook_relay_intake_requests_total{outcome="invalid"} 2"#), "{m}");
}

/// Sends `n` events with `parallel` senders, retrying refused ones like Genesys would
/// (bounded), and returns the ids that were acknowledged with 200.
async fn load(
    url: String,
    prefix: &str,
    n: usize,
    parallel: usize,
    progress: Arc<AtomicUsize>,
) -> (HashSet<String>, usize) {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..parallel {
        let (client, url, next, progress) = (client.clone(), url.clone(), next.clone(), progress.clone());
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            let mut refused = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let id = format!("{prefix}-{i}");
                for _try in 0..200 {
                    match send(&client, &url, &id).await {
                        Ok((200, _)) => {
                            acked.insert(id.clone());
                            progress.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok((503, _)) | Err(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok((s, b)) => panic!("unexpected {s}: {b}"),
                    }
                }
            }
            (acked, refused)
        }));
    }
    let mut acked = HashSet::new();
    let mut refused = 0;
    for t in tasks {
        let (a, r) = t.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    (acked, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_loses_no_acknowledged_event() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::from_millis(30)).await;
    let mut relay = RelayProcess::start_fresh(
        "t/kill",
        &redis.url(),
        &ds.url,
        "  maxAttempts: 10\n  initialDelay: 50ms\n  maxDelay: 1s\n  lease: 3s\n  concurrency: 16",
    );
    let n = 3000;
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(load(relay.intake.clone(), "k", n, 8, progress.clone()));
    let s = store(&redis.url(), "t/kill").await;
    // Kill it mid-stream: events arriving, waiting and in flight.
    let busy = eventually(Duration::from_secs(30), || async {
        let st = s.stats().await.unwrap();
        st.in_flight > 0 && progress.load(Ordering::Relaxed) >= 500
    })
    .await;
    assert!(busy, "never saw deliveries in flight");
    let before = s.stats().await.unwrap();
    relay.kill9();
    let delivered_at_kill = ds.delivered().len();
    let acked_at_kill = progress.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    relay.restart();
    let (acked, refused) = sender.await.unwrap();
    assert_eq!(acked.len(), n, "the sender retries refused events until they are acknowledged");
    let done = eventually(Duration::from_secs(60), || async {
        let d = ds.delivered();
        acked.iter().all(|id| d.contains_key(id))
    })
    .await;
    let delivered = ds.delivered();
    let lost: Vec<&String> = acked.iter().filter(|id| !delivered.contains_key(*id)).collect();
    let dupes: usize = delivered.values().map(|c| c - 1).sum();
    println!(
        "kill -9 test: acknowledged {} (sender saw {refused} refusals/connection errors while the relay was down), \
         delivered {} distinct, lost {}, duplicates {dupes} (delivery is at-least-once; \
         the killed process's leases expired and its events were delivered by the restarted one); at kill: acknowledged {acked_at_kill}, due {}, in flight {}, delivered {delivered_at_kill}",
        acked.len(),
        delivered.len(),
        lost.len(),
        before.due,
        before.in_flight,
    );
    assert!(done && lost.is_empty(), "lost acknowledged events: {:?}", &lost[..lost.len().min(10)]);
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503_never_200_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/outage", &redis.url(), &ds.url, "  maxAttempts: 10\n  initialDelay: 50ms");
    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    for i in 0..50 {
        let id = format!("o-{i}");
        assert_eq!(send(&client, &relay.intake, &id).await.unwrap().0, 200);
        acked.insert(id);
    }
    redis.stop();
    let mut during = (0usize, 0usize, 0usize); // (200, 503, other)
    for i in 0..30 {
        let id = format!("down-{i}");
        match send(&client, &relay.intake, &id).await {
            Ok((200, b)) => panic!("200 for an event that cannot have been stored: {b}"),
            Ok((503, _)) => during.1 += 1,
            Ok((s, b)) => panic!("unexpected {s}: {b}"),
            Err(e) => panic!("relay stopped answering during the outage: {e}"),
        }
    }
    let ready = client.get(format!("{}/readyz", relay.admin)).send().await.unwrap().status().as_u16();
    assert_eq!(ready, 503, "/readyz must fail while Redis is down");
    let retry_after = {
        let body = event_body("down-x");
        let sig = webhook_relay_sidecar::signature::sign_genesys(SECRET.as_bytes(), body.as_bytes());
        let r = client.post(&relay.intake).header("x-hub-signature-256", sig).body(body).send().await.unwrap();
        r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(retry_after.as_deref(), Some("5"));
    redis.start_again();
    let mut after = 0;
    let recovered = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let url = relay.intake.clone();
        async move { matches!(send(&client, &url, "after-0").await, Ok((200, _))) }
    })
    .await;
    assert!(recovered, "intake did not recover; log:\n{}", relay.log_text());
    acked.insert("after-0".into());
    for i in 1..20 {
        let id = format!("after-{i}");
        assert_eq!(send(&client, &relay.intake, &id).await.unwrap().0, 200);
        acked.insert(id);
        after += 1;
    }
    let done = eventually(Duration::from_secs(30), || async {
        let d = ds.delivered();
        acked.iter().all(|id| d.contains_key(id))
    })
    .await;
    let delivered = ds.delivered();
    println!(
        "redis outage test: before 50 acknowledged; during the outage {} answered 503, 0 answered 200; \
         after recovery {} acknowledged; delivered {} of {} acknowledged",
        during.1,
        after + 1,
        acked.iter().filter(|id| delivered.contains_key(*id)).count(),
        acked.len()
    );
    assert!(done, "not every acknowledged event was delivered; log:\n{}", relay.log_text());
    assert!(!delivered.keys().any(|id| id.starts_with("down-")), "a refused event was delivered");
    // Readiness is sampled (every 2 s, and only by a check no store failure overlapped), so
    // it follows the recovery within a sample or two.
    let ready_again = eventually(Duration::from_secs(10), || {
        let (client, url) = (client.clone(), format!("{}/readyz", relay.admin));
        async move { client.get(url).send().await.is_ok_and(|r| r.status().as_u16() == 200) }
    })
    .await;
    assert!(ready_again, "/readyz did not return to 200 after Redis came back; log:\n{}", relay.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_deliveries_and_exits_zero() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::from_millis(800)).await;
    let mut relay = RelayProcess::start_fresh("t/term", &redis.url(), &ds.url, "  concurrency: 4");
    let client = reqwest::Client::new();
    for i in 0..10 {
        assert_eq!(send(&client, &relay.intake, &format!("t-{i}")).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/term").await;
    assert!(eventually(Duration::from_secs(10), || async { s.stats().await.unwrap().in_flight == 4 }).await);
    let status = relay.terminate(Duration::from_secs(20)).expect("exited within 20s");
    assert!(status.success(), "exit status {status:?}; log:\n{}", relay.log_text());
    let st = s.stats().await.unwrap();
    assert_eq!(st.in_flight, 0, "nothing left leased by the stopped process");
    assert_eq!(st.due + ds.delivered().len() as u64, 10, "every event delivered or waiting: {st:?}");
    assert!(
        ds.delivered().len() >= 4,
        "the in-flight deliveries finished: {:?} {st:?}; log:\n{}",
        ds.delivered(),
        relay.log_text()
    );
    assert!(send(&client, &relay.intake, "late").await.is_err(), "intake is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_shutdown_delay_fails_readiness_first_and_keeps_taking_events_meanwhile() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = config("t/delay", l, a, &ds.url, "  maxAttempts: 3")
        .replace("  dedupWindow: 1h\n", "  dedupWindow: 1h\n  shutdownDelay: 2s\n");
    let mut relay = RelayProcess::start(&yaml, &redis.url(), l, a);
    let client = reqwest::Client::new();
    let readyz = || async {
        let r = client.get(format!("{}/readyz", relay.admin)).send().await.ok()?;
        Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
    };
    assert_eq!(readyz().await.map(|r| r.0), Some(200));

    let t0 = std::time::Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &relay.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let not_ready = eventually(Duration::from_secs(1), || async {
        readyz().await.is_some_and(|(s, b)| s == 503 && b.contains("shutting down"))
    })
    .await;
    let not_ready_after = t0.elapsed();
    assert!(not_ready, "/readyz still {:?} after SIGTERM", readyz().await);
    // Readiness fails, yet intake still stores and acknowledges events.
    let (status, body) = send(&client, &relay.intake, "during-delay").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let accepted_after = t0.elapsed();
    let exit = relay.wait_exit(Duration::from_secs(20)).expect("exited within 20s");
    let exited_after = t0.elapsed();
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", relay.log_text());
    assert!(exited_after >= Duration::from_secs(2), "exited {exited_after:?} after SIGTERM, before shutdownDelay");
    assert_eq!(ds.delivered().get("during-delay"), Some(&1), "the event taken during the delay was delivered");
    println!(
        "shutdownDelay 2s: /readyz 503 {:.0} ms after SIGTERM; an event acknowledged at {:.0} ms; exit 0 at {:.2} s",
        not_ready_after.as_secs_f64() * 1000.0,
        accepted_after.as_secs_f64() * 1000.0,
        exited_after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_never_deliver_the_same_claim_twice() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::from_millis(2)).await;
    let a = RelayProcess::start_fresh("t/replicas", &redis.url(), &ds.url, "  concurrency: 8");
    let b = RelayProcess::start_fresh("t/replicas", &redis.url(), &ds.url, "  concurrency: 8");
    let progress = Arc::new(AtomicUsize::new(0));
    let (ra, rb) = tokio::join!(
        load(a.intake.clone(), "ra", 400, 4, progress.clone()),
        load(b.intake.clone(), "rb", 400, 4, progress.clone())
    );
    assert_eq!(ra.0.len() + rb.0.len(), 800);
    let done = eventually(Duration::from_secs(30), || async { ds.delivered().len() == 800 }).await;
    assert!(done, "delivered {}", ds.delivered().len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let twice: Vec<_> = ds.delivered().into_iter().filter(|(_, c)| *c > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(ds.hits().len(), 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_runs_on_a_redis_cluster_with_a_cluster_url() {
    let cluster = testkit::RedisCluster::start();
    let ds = Downstream::start(ok_after(1), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh(
        "t/cluster",
        &cluster.cluster_url(),
        &ds.url,
        "  maxAttempts: 4\n  initialDelay: 50ms\n  maxDelay: 200ms",
    );
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..20).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let done = eventually(Duration::from_secs(30), || async { ds.delivered().len() == ids.len() }).await;
    assert!(done, "delivered {} of 20; log:\n{}", ds.delivered().len(), relay.log_text());
    assert!(ds.delivered().values().all(|n| *n == 1));
    // Every key of the relay lives in one slot: the node holding {t/cluster} has the dedup set.
    let slot_owner =
        cluster.nodes.iter().find(|n| n.cli(&["ZCARD", "whr:{t/cluster}:seen"]).parse::<u64>().is_ok_and(|c| c == 20));
    assert!(slot_owner.is_some(), "no node holds whr:{{t/cluster}}:seen with 20 ids");
}

/// A rotation of the signing secret: with `previousSecretEnv` set, events signed with the
/// current or the previous secret are taken and delivered, one signed with neither is 401,
/// and the metric counts the events only the previous secret verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_accepts_the_current_and_the_previous_secret_and_counts_the_previous() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(0), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = config("t/rotate", l, a, &ds.url, "  maxAttempts: 3").replace(
        "secretEnv: RELAY_SIGNING_SECRET }",
        "secretEnv: RELAY_SIGNING_SECRET, previousSecretEnv: RELAY_PREVIOUS_SIGNING_SECRET }",
    );
    const PREVIOUS: &str = "the-secret-being-rotated-out";
    let relay = RelayProcess::start_with_env(&yaml, &redis.url(), l, a, &[("RELAY_PREVIOUS_SIGNING_SECRET", PREVIOUS)]);
    let client = reqwest::Client::new();
    let post = |body: String, secret: &str| {
        let sig = webhook_relay_sidecar::signature::sign_genesys(secret.as_bytes(), body.as_bytes());
        client
            .post(&relay.intake)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
    };
    assert_eq!(post(event_body("current-1"), SECRET).await.unwrap().status(), 200);
    assert_eq!(post(event_body("previous-1"), PREVIOUS).await.unwrap().status(), 200);
    assert_eq!(post(event_body("previous-2"), PREVIOUS).await.unwrap().status(), 200);
    assert_eq!(post(event_body("neither-1"), "some-other-secret-entirely").await.unwrap().status(), 401);
    assert!(
        eventually(Duration::from_secs(10), || async { ds.hits().len() >= 3 }).await,
        "the three verified events are delivered: {:?}",
        ds.hits()
    );
    let delivered: HashSet<String> = ds.hits().into_iter().map(|h| h.id).collect();
    assert_eq!(delivered, HashSet::from(["current-1".into(), "previous-1".into(), "previous-2".into()]));
    let m = client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("webhook_relay_signatures_previous_secret_total 2"), "{m}");
    assert!(m.contains(r#"webhook_relay_intake_requests_total{outcome="unauthorized"} 1"#), "{m}");
    assert!(!relay.log_text().contains(PREVIOUS), "the previous secret never appears in the log");
}
