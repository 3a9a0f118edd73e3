//! The admin API, the `dlq` CLI, metrics and the intake's connection limits over real
//! sockets: the built `webhook-relay` binary, a real redis-server and a scripted downstream.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;

/// Runs `webhook-relay dlq <args>` against `admin`; returns (success, stdout, stderr).
async fn dlq(admin: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhook-relay"));
    cmd.arg("dlq").args(args).env("RELAY_ADMIN_URL", admin).env_remove("RELAY_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("RELAY_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("dlq finished").unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn dlq_ok(admin: &str, args: &[&str]) -> String {
    let (ok, out, err) = dlq(admin, Some(ADMIN_TOKEN), args).await;
    assert!(ok, "dlq {args:?} failed: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_listed_shown_replayed_and_deleted_over_http_and_the_cli() {
    let redis = RedisServer::start();
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let script: Script =
        Arc::new(
            move |id, _| {
                if id.starts_with("bad") && !h.load(Ordering::SeqCst) { (400, None) } else { (200, None) }
            },
        );
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/dlq", &redis.url(), &ds.url, "  maxAttempts: 2\n  initialDelay: 10ms");
    let client = reqwest::Client::new();
    for id in ["bad-0", "bad-1", "bad-2", "ok-0"] {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/dlq").await;
    assert!(eventually(Duration::from_secs(20), || async { s.stats().await.unwrap().dead == 3 }).await);

    // Over the socket: the token is required.
    let url = format!("{}/v1/events?state=dead", relay.admin);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&url).bearer_auth("nope").send().await.unwrap().status(), 401);
    let page: Value = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");

    // The CLI: list (table and JSON), show.
    let table = dlq_ok(&relay.admin, &["list"]).await;
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("DEAD AT") && table.contains("LAST STATUS"), "{table}");
    for id in ["bad-0", "bad-1", "bad-2"] {
        assert!(table.lines().any(|l| l.starts_with(id) && l.contains(" 400 ")), "{id} missing in\n{table}");
    }
    let json: Value =
        serde_json::from_str(&dlq_ok(&relay.admin, &["list", "-o", "json", "--limit", "2"]).await).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 2);
    let next = json["nextCursor"].as_str().expect("a next cursor").to_string();
    let rest: Value =
        serde_json::from_str(&dlq_ok(&relay.admin, &["list", "-o", "json", "--cursor", &next]).await).unwrap();
    assert_eq!(rest["items"][0]["id"], "bad-2");
    let all: Value =
        serde_json::from_str(&dlq_ok(&relay.admin, &["-o", "json", "list", "--limit", "1", "--all"]).await).unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let shown = dlq_ok(&relay.admin, &["show", "bad-0"]).await;
    assert!(shown.contains("state:        dead"), "{shown}");
    assert!(shown.contains("last status:  400"), "{shown}");
    assert!(shown.contains(r#""messageId": "bad-0""#), "payload shown as JSON:\n{shown}");

    // Replay one: the downstream now accepts it.
    healed.store(true, Ordering::SeqCst);
    let out = dlq_ok(&relay.admin, &["replay", "bad-0"]).await;
    assert_eq!(out, "replayed bad-0 (was dead); it is due now\n");
    assert!(
        eventually(Duration::from_secs(10), || async { ds.delivered().contains_key("bad-0") }).await,
        "replayed event not delivered; log:\n{}",
        relay.log_text()
    );

    // Delete one: its record (payload and metadata) is gone.
    assert_eq!(dlq_ok(&relay.admin, &["delete", "bad-2"]).await, "deleted bad-2\n");
    let exists = |field: &'static str, key: &'static str| {
        let s = s.clone();
        async move {
            let v = s.conn().cmd(redis::cmd("HEXISTS").arg(key).arg(field)).await.unwrap();
            redis::from_redis_value::<i64>(v).unwrap() == 1
        }
    };
    assert!(!exists("bad-2", "whr:{t/dlq}:ev").await, "the record survived delete");
    let (ok, _, err) = dlq(&relay.admin, Some(ADMIN_TOKEN), &["show", "bad-2"]).await;
    assert!(!ok && err.contains("HTTP 404"), "{err}");

    // Replay the rest by range; then nothing is dead.
    let out: Value =
        serde_json::from_str(&dlq_ok(&relay.admin, &["replay", "--all", "--since", "1h", "-o", "json"]).await).unwrap();
    assert_eq!(out["replayed"], 1);
    assert!(eventually(Duration::from_secs(10), || async { ds.delivered().contains_key("bad-1") }).await);
    let stats: Value = serde_json::from_str(&dlq_ok(&relay.admin, &["stats", "-o", "json"]).await).unwrap();
    assert_eq!(
        (stats["due"].as_u64(), stats["inFlight"].as_u64(), stats["dead"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    let table = dlq_ok(&relay.admin, &["stats"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "DUE  IN FLIGHT  DEAD  OLDEST DUE AGE", "{table}");
    assert_eq!(lines[1].split_whitespace().take(3).collect::<Vec<_>>(), ["0", "0", "0"], "{table}");

    // Errors a user meets say what to do.
    let (ok, _, err) = dlq(&relay.admin, None, &["list"]).await;
    assert!(!ok && err.contains("HTTP 401") && err.contains("RELAY_ADMIN_TOKEN"), "{err}");
    let (ok, _, err) = dlq("http://127.0.0.1:9", Some(ADMIN_TOKEN), &["stats"]).await;
    assert!(!ok && err.contains("cannot reach the admin API"), "{err}");
    let (ok, _, err) = dlq(&relay.admin, Some(ADMIN_TOKEN), &["replay"]).await;
    assert!(!ok && err.contains("--all"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let redis = RedisServer::start();
    let script: Script = Arc::new(|id, _| if id.starts_with("dead") { (422, None) } else { (200, None) });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/metrics", &redis.url(), &ds.url, "  maxAttempts: 3");
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..7).map(|i| format!("ok-{i}")).chain((0..3).map(|i| format!("dead-{i}"))).collect();
    for id in &ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    for id in &ids[..2] {
        let (st, body) = send(&client, &relay.intake, id).await.unwrap();
        assert!(st == 200 && body.contains("duplicate"), "{body}");
    }
    let unsigned = client.post(&relay.intake).body(event_body("x")).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let s = store(&redis.url(), "t/metrics").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            s.stats().await.unwrap().dead == 3 && ds.delivered().len() == 7
        })
        .await
    );
    let scrape =
        || async { client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap() };
    // Gauges are sampled every 2 s.
    let sampled = eventually(Duration::from_secs(10), || async {
        scrape().await.lines().any(|l| l == "webhook_relay_queue_dead 3")
    })
    .await;
    let text = scrape().await;
    assert!(sampled, "{text}");
    let expected = [
        r#"webhook_relay_intake_requests_total{outcome="accepted"} 10"#,
        r#"webhook_relay_intake_requests_total{outcome="duplicate"} 2"#,
        r#"webhook_relay_intake_requests_total{outcome="unauthorized"} 1"#,
        r#"webhook_relay_intake_requests_total{outcome="too_large"} 0"#,
        r#"webhook_relay_delivery_attempts_total{outcome="delivered",status_class="2xx"} 7"#,
        r#"webhook_relay_delivery_attempts_total{outcome="dead",status_class="4xx"} 3"#,
        "webhook_relay_delivery_attempt_duration_seconds_count 10",
        "webhook_relay_retry_lateness_seconds_count 10",
        "webhook_relay_queue_due 0",
        "webhook_relay_queue_in_flight 0",
        "webhook_relay_queue_dead 3",
        "webhook_relay_queue_oldest_due_age_seconds 0.0",
        "webhook_relay_redis_up 1",
        "# TYPE webhook_relay_delivery_attempt_duration_seconds histogram",
    ];
    for line in expected {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    println!("metrics after 10 accepted, 2 duplicates, 1 unsigned, 7 delivered, 3 dead:");
    for l in text.lines().filter(|l| expected.contains(l)) {
        println!("  {l}");
    }
}

/// Reads until the server closes the connection; returns what it sent, or `None` if it
/// was still open after `limit`.
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> Option<String> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).to_string()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(String::from_utf8_lossy(&got).to_string()), // reset: closed too
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_still_served() {
    let redis = RedisServer::start();
    let ds = Downstream::start(Arc::new(|_, _| (200, None)), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = config("t/slow", l, a, &ds.url, "  maxAttempts: 3")
        .replace("  dedupWindow: 1h", "  dedupWindow: 1h\n  readTimeout: 1s");
    let relay = RelayProcess::start(&yaml, &redis.url(), l, a);
    let (headers, body) = tokio::task::spawn_blocking(move || {
        // Half the headers, then silence: the connection is closed by the header timeout.
        let mut half = std::net::TcpStream::connect(("127.0.0.1", l)).unwrap();
        half.write_all(b"POST /webhooks/genesys HTTP/1.1\r\nHost: relay\r\nContent-Ty").unwrap();
        let headers = read_until_closed(&mut half, Duration::from_secs(5));
        // Whole headers, a tenth of the body, then silence: 408 from the body timeout.
        let mut slow = std::net::TcpStream::connect(("127.0.0.1", l)).unwrap();
        slow.write_all(b"POST /webhooks/genesys HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{\"id\":\"sl")
            .unwrap();
        let body = read_until_closed(&mut slow, Duration::from_secs(5));
        (headers, body)
    })
    .await
    .unwrap();
    assert!(headers.is_some(), "a client stalled mid-headers was still connected after 5s");
    let body = body.expect("a client stalled mid-body was still connected after 5s");
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("readTimeout"), "{body}");
    let client = reqwest::Client::new();
    assert_eq!(send(&client, &relay.intake, "after-slow").await.unwrap().0, 200);
    let m = client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap();
    assert!(m.lines().any(|l| l == r#"webhook_relay_intake_requests_total{outcome="timeout"} 1"#), "{m}");
}

/// Ids that a URL library would mangle: dot segments, slashes, escapes, queries, unicode.
const AWKWARD_IDS: &[&str] =
    &[".", "..", "...", "%2e%2E", "%2F", "a/../b", "/", "//", "?x=1", "#frag", "a b", "50%", "ü/é", "漢字🙂", "+&="];

fn id_strategy() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%".to_string()),
        Just("%2e".to_string()),
        Just(" ".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("é".to_string()),
        Just("🙂".to_string()),
        "[a-zA-Z0-9_~+&=;:@!$'()*,\"\\\\-]{1,3}",
    ];
    proptest::collection::vec(piece, 1..8).prop_map(|p| p.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_ids_round_trip_through_the_admin_api_and_the_cli() {
    use proptest::strategy::{Strategy, ValueTree};
    let redis = RedisServer::start();
    let ds = Downstream::start(Arc::new(|_, _| (400, None)), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/ids", &redis.url(), &ds.url, "  maxAttempts: 1");
    let client = reqwest::Client::new();
    let s = store(&redis.url(), "t/ids").await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut ids: Vec<String> = AWKWARD_IDS.iter().map(|s| s.to_string()).collect();
    while ids.len() < 64 {
        let id = id_strategy().new_tree(&mut runner).unwrap().current();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let api = webhook_relay_sidecar::cli::Client::new(relay.admin.parse().unwrap(), Some(ADMIN_TOKEN.into())).unwrap();
    for id in &ids {
        let body = serde_json::json!({ "id": id, "text": "x" }).to_string();
        let sig = webhook_relay_sidecar::signature::sign_genesys(SECRET.as_bytes(), body.as_bytes());
        let r = client.post(&relay.intake).header("x-hub-signature-256", sig).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{id:?}: {}", r.text().await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(30), || async { s.stats().await.unwrap().dead == ids.len() as u64 }).await,
        "{:?}",
        s.stats().await.unwrap()
    );
    for id in &ids {
        // The API, addressed the way the CLI does.
        let ev = api.call(http::Method::GET, api.path(&["v1", "events", id])).await.unwrap().unwrap();
        assert_eq!(ev["id"].as_str(), Some(id.as_str()), "GET of {id:?} found another event");
        // The CLI binary: show, replay, delete.
        let shown: Value = serde_json::from_str(&dlq_ok(&relay.admin, &["-o", "json", "show", id]).await).unwrap();
        assert_eq!(shown["id"].as_str(), Some(id.as_str()), "dlq show {id:?}");
        let replayed: Value = serde_json::from_str(&dlq_ok(&relay.admin, &["-o", "json", "replay", id]).await).unwrap();
        assert_eq!(replayed["id"].as_str(), Some(id.as_str()), "dlq replay {id:?}");
    }
    // Replayed, attempted again (400 again), dead again; then deleted one by one.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let st = s.stats().await.unwrap();
            st.dead == ids.len() as u64 && st.due == 0 && st.in_flight == 0
        })
        .await
    );
    assert_eq!(ds.hits().len(), 2 * ids.len(), "each id delivered once, replayed once");
    for id in &ids {
        dlq_ok(&relay.admin, &["delete", id]).await;
        let (ok, _, err) = dlq(&relay.admin, Some(ADMIN_TOKEN), &["show", id]).await;
        assert!(!ok && err.contains("404"), "{id:?} still there after delete: {err}");
    }
    assert_eq!(s.stats().await.unwrap().dead, 0, "every delete hit its own event");
    println!("ids: {} ids (dots, slashes, escapes, unicode) shown, replayed and deleted through the CLI", ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_replayed_and_deleted_by_status_time_and_error_with_a_dry_run_first() {
    let redis = RedisServer::start();
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let script: Script = Arc::new(move |id, _| {
        if h.load(Ordering::SeqCst) {
            (200, None)
        } else if id.starts_with("nf-") {
            (404, None)
        } else if id.starts_with("busy-") {
            (503, None)
        } else {
            (502, None)
        }
    });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/bulk", &redis.url(), &ds.url, "  maxAttempts: 1");
    let client = reqwest::Client::new();
    let ids: Vec<String> = ["nf", "busy", "gw"].iter().flat_map(|p| (0..10).map(move |i| format!("{p}-{i}"))).collect();
    for id in &ids {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let s = store(&redis.url(), "t/bulk").await;
    assert!(eventually(Duration::from_secs(20), || async { s.stats().await.unwrap().dead == 30 }).await);

    // The dry run counts and changes nothing; the API and the CLI agree.
    let dry = dlq_ok(&relay.admin, &["replay", "--status", "5xx", "--since", "2h", "--dry-run"]).await;
    assert_eq!(dry, "would replay 20 dead letter(s) of 30 (dry run: nothing changed)\n");
    let post = |path: String| {
        let client = client.clone();
        async move {
            let r = client.post(path).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, exact) = post(format!("{}/v1/dead/replay?status=503&dryRun=true", relay.admin)).await;
    assert_eq!(
        (code, &exact["matched"], &exact["replayed"], &exact["done"]),
        (200, &json!(10), &json!(0), &json!(true))
    );
    let until = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (_, old) =
        post(format!("{}/v1/dead/replay?dryRun=true&until={}", relay.admin, until.replace('+', "%2B"))).await;
    assert_eq!(old["matched"], 0, "none died an hour ago: {old}");
    assert_eq!(s.stats().await.unwrap().dead, 30);

    // Replay what the dry run counted: the 5xx ones come back and are delivered.
    healed.store(true, Ordering::SeqCst);
    let out = dlq_ok(&relay.admin, &["replay", "--status", "5xx", "--since", "2h"]).await;
    assert_eq!(out, "replayed 20 dead letter(s); they are due now\n");
    let back = eventually(Duration::from_secs(10), || async { ds.delivered().len() == 20 }).await;
    assert!(back, "delivered {:?}", ds.delivered());
    assert!(ds.delivered().keys().all(|id| !id.starts_with("nf-")), "a 404 was replayed");
    assert_eq!(s.stats().await.unwrap().dead, 10);

    // Delete by error text (case-insensitive), a dry run first; a filter-less delete is refused.
    let (code, refused) = post(format!("{}/v1/dead/delete", relay.admin)).await;
    assert_eq!(code, 400);
    assert!(refused["error"].as_str().unwrap().contains("all=true"), "{refused}");
    let (code, bad) = post(format!("{}/v1/dead/delete?status=5xy", relay.admin)).await;
    assert!(code == 400 && bad["error"].as_str().unwrap().starts_with("status:"), "{bad}");
    let dry = dlq_ok(&relay.admin, &["delete", "--error", "NOT FOUND", "--dry-run"]).await;
    assert_eq!(dry, "would delete 10 dead letter(s) of 10 (dry run: nothing changed)\n");
    let out: Value =
        serde_json::from_str(&dlq_ok(&relay.admin, &["delete", "--error", "not found", "-o", "json"]).await).unwrap();
    assert_eq!((&out["deleted"], &out["matched"]), (&json!(10), &json!(10)), "{out}");
    assert_eq!(s.stats().await.unwrap().dead, 0);
    let (status, body) = send(&client, &relay.intake, "nf-3").await.unwrap();
    assert!(status == 200 && body.contains("duplicate"), "a deleted dead letter stays deduplicated: {body}");
}
