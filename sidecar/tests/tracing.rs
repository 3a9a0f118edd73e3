//! W3C trace context end to end: the built `webhook-relay` binary, a real redis-server and a
//! scripted downstream on loopback. A `traceparent` received at intake is stored with the
//! event and sent on every delivery attempt with the same trace id and a new span id.

use std::collections::HashSet;
use std::time::Duration;
use testkit::RedisServer;
use testkit::downstream::*;
use testkit::relay::*;
use testkit::wait::eventually;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

async fn send_traced(client: &reqwest::Client, url: &str, id: &str, trace: &[(&str, &str)]) -> u16 {
    send_with_headers(client, url, &event_body(id), trace).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_continues_the_senders_trace_with_a_span_of_its_own() {
    let redis = RedisServer::start();
    let ds = Downstream::start(ok_after(2), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh(
        "t/trace",
        &redis.url(),
        &ds.url,
        "  maxAttempts: 5\n  initialDelay: 100ms\n  maxDelay: 1s",
    );
    let client = reqwest::Client::new();
    let parent = format!("00-{TRACE_ID}-{SENDER_SPAN}-01");
    let traced = [("traceparent", parent.as_str()), ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")];
    assert_eq!(send_traced(&client, &relay.intake, "traced", &traced).await, 200);
    assert_eq!(send_traced(&client, &relay.intake, "plain", &[]).await, 200);
    let bad = [("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")];
    assert_eq!(send_traced(&client, &relay.intake, "malformed", &bad).await, 200, "a bad traceparent refuses nothing");

    let done = eventually(Duration::from_secs(20), || async { ds.delivered().len() == 3 }).await;
    assert!(done, "delivered {:?}; log:\n{}", ds.delivered(), relay.log_text());
    let hits = ds.hits();
    let of = |id: &str| hits.iter().filter(|h| h.id == id).collect::<Vec<_>>();

    let attempts = of("traced");
    assert_eq!(attempts.len(), 3, "two 503s, then a 200");
    let mut spans = HashSet::new();
    for h in &attempts {
        let tp = h.header("traceparent").unwrap_or_else(|| panic!("attempt {} sent no traceparent", h.attempt));
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"), "same trace and flags: {tp}");
        assert_ne!(parts[2], SENDER_SPAN, "the attempt is a span of its own, not the sender's");
        assert!(parts[2].len() == 16 && parts[2] != "0000000000000000", "{tp}");
        spans.insert(parts[2].to_string());
        assert_eq!(h.header("tracestate"), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), "tracestate sent on");
    }
    assert_eq!(spans.len(), 3, "a new span id per attempt: {spans:?}");
    for id in ["plain", "malformed"] {
        for h in of(id) {
            assert_eq!(h.header("traceparent"), None, "{id}: no trace context was received, none is made up");
            assert_eq!(h.header("tracestate"), None, "{id}");
        }
    }
    println!(
        "trace context: 3 attempts of one event, trace {TRACE_ID} each time, spans {spans:?}; \
         untraced and malformed: no traceparent sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_shows_its_trace_and_its_replay_continues_it() {
    let redis = RedisServer::start();
    let ds = Downstream::start(always(500), Duration::ZERO).await;
    let relay = RelayProcess::start_fresh("t/trace-dead", &redis.url(), &ds.url, "  maxAttempts: 1");
    let client = reqwest::Client::new();
    let parent = format!("00-{TRACE_ID}-{SENDER_SPAN}-00");
    assert_eq!(send_traced(&client, &relay.intake, "dl", &[("traceparent", &parent)]).await, 200);
    let detail = |c: reqwest::Client, admin: String| async move {
        let r = c.get(format!("{admin}/v1/events/dl")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    let dead = eventually(Duration::from_secs(10), || {
        let (c, a) = (client.clone(), relay.admin.clone());
        async move { detail(c, a).await["state"] == "dead" }
    })
    .await;
    assert!(dead, "not dead-lettered; log:\n{}", relay.log_text());
    let d = detail(client.clone(), relay.admin.clone()).await;
    assert_eq!(d["traceparent"], parent, "{d}");
    assert!(d.get("tracestate").is_none(), "none was received: {d}");

    ds.set_script(always(200));
    let r = client.post(format!("{}/v1/events/dl/replay", relay.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let delivered = eventually(Duration::from_secs(10), || async { ds.delivered().contains_key("dl") }).await;
    assert!(delivered, "replay not delivered; log:\n{}", relay.log_text());
    let hits = ds.hits();
    let last = hits.iter().rfind(|h| h.id == "dl").unwrap();
    let tp = last.header("traceparent").expect("the replayed attempt sends the trace");
    assert!(tp.starts_with(&format!("00-{TRACE_ID}-")) && tp.ends_with("-00"), "{tp}");
    let first = hits.iter().find(|h| h.id == "dl").unwrap().header("traceparent").unwrap();
    assert_ne!(tp, first, "the replay's attempt has a span of its own");
}

/// Export requests received: each one's `x-api-key` and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// A small OTLP/HTTP receiver: every `POST /v1/traces` body (JSON) and its `x-api-key`.
struct Collector {
    url: String,
    got: Received,
}

impl Collector {
    async fn start() -> Collector {
        use axum::routing::post;
        let got = Received::default();
        let g = got.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let g = g.clone();
                async move {
                    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(String::from);
                    g.lock().unwrap().push((key, body.0));
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector { url, got }
    }

    /// Every span received, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, serde_json::Value)> {
        let mut out = vec![];
        for (_, body) in self.got.lock().unwrap().iter() {
            for rs in body["resourceSpans"].as_array().unwrap() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "service.name")
                    .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    out.extend(ss["spans"].as_array().unwrap().iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }
}

fn int_attr(span: &serde_json::Value, key: &str) -> Option<i64> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["intValue"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_intake_store_and_each_attempt_are_exported_over_otlp() {
    let redis = RedisServer::start();
    let collector = Collector::start().await;
    let ds = Downstream::start(ok_after(1), Duration::ZERO).await;
    let (l, a) = (testkit::process::free_port(), testkit::process::free_port());
    let yaml = format!(
        "{}tracing:\n  otlpEndpoint: {}\n  serviceName: relay-under-test\n  headersEnv: OTLP_HEADERS\n",
        config("t/otlp", l, a, &ds.url, "  maxAttempts: 5\n  initialDelay: 100ms\n  maxDelay: 1s"),
        collector.url
    );
    let relay = RelayProcess::start_with_env(&yaml, &redis.url(), l, a, &[("OTLP_HEADERS", "x-api-key=k-123")]);
    let client = reqwest::Client::new();
    let sampled = format!("00-{TRACE_ID}-{SENDER_SPAN}-01");
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    assert_eq!(send_traced(&client, &relay.intake, "sampled", &[("traceparent", &sampled)]).await, 200);
    assert_eq!(send_traced(&client, &relay.intake, "untraced", &[]).await, 200);
    assert_eq!(send_traced(&client, &relay.intake, "unsampled", &[("traceparent", unsampled)]).await, 200);

    // Each event: a 503, then a 200; spans: intake + store + 2 attempts for the two sampled ones.
    let all =
        eventually(Duration::from_secs(20), || async { ds.delivered().len() == 3 && collector.spans().len() >= 8 })
            .await;
    assert!(all, "delivered {:?}, {} spans; log:\n{}", ds.delivered(), collector.spans().len(), relay.log_text());
    tokio::time::sleep(Duration::from_millis(1500)).await; // nothing more comes
    let spans = collector.spans();
    assert_eq!(spans.len(), 8, "{spans:#?}");
    assert!(spans.iter().all(|(service, _)| service == "relay-under-test"));
    assert!(
        collector.got.lock().unwrap().iter().all(|(key, _)| key.as_deref() == Some("k-123")),
        "tracing.headersEnv sent"
    );
    let hits = ds.hits();
    for (id, trace_id, sender) in [("sampled", Some(TRACE_ID), Some(SENDER_SPAN)), ("untraced", None, None)] {
        let attempts: Vec<_> = hits.iter().filter(|h| h.id == id).collect();
        let sent: Vec<Vec<String>> =
            attempts.iter().map(|h| h.header("traceparent").unwrap().split('-').map(String::from).collect()).collect();
        let trace = trace_id.map(String::from).unwrap_or_else(|| sent[0][1].clone());
        let of = |name: &str| -> Vec<&serde_json::Value> {
            spans.iter().map(|(_, s)| s).filter(|s| s["traceId"] == trace.as_str() && s["name"] == name).collect()
        };
        let (intake, store, tries) = (of("intake"), of("store"), of("attempt"));
        assert_eq!((intake.len(), store.len(), tries.len()), (1, 1, 2), "{id}: {spans:#?}");
        let intake_id = intake[0]["spanId"].as_str().unwrap();
        assert_eq!(intake[0]["parentSpanId"].as_str(), sender, "{id}: intake is a child of the sender's span");
        assert_eq!(
            (intake[0]["kind"].as_i64(), int_attr(intake[0], "http.response.status_code")),
            (Some(2), Some(200))
        );
        assert_eq!((store[0]["parentSpanId"].as_str(), store[0]["kind"].as_i64()), (Some(intake_id), Some(1)));
        for (h, tp) in attempts.iter().zip(&sent) {
            assert_eq!(tp[1], trace, "{id}: the downstream joins the trace");
            let span =
                tries.iter().find(|s| s["spanId"] == tp[2].as_str()).expect("the attempt's span id is the one sent");
            assert_eq!((span["parentSpanId"].as_str(), span["kind"].as_i64()), (Some(intake_id), Some(3)));
            assert_eq!(int_attr(span, "webhook_relay.attempt"), Some(i64::from(h.attempt)));
            assert_eq!(int_attr(span, "http.response.status_code"), Some(i64::from(h.status)));
            assert_eq!(span["status"]["code"], if h.status == 200 { 1 } else { 2 }, "{span}");
            assert!(span["startTimeUnixNano"].as_str().unwrap() <= span["endTimeUnixNano"].as_str().unwrap());
        }
    }
    let unsampled_sent: Vec<_> = hits.iter().filter(|h| h.id == "unsampled").map(|h| h.header("traceparent")).collect();
    assert!(unsampled_sent.iter().all(|tp| tp.is_some_and(|t| t.starts_with("00-1111") && t.ends_with("-00"))));
    assert!(!spans.iter().any(|(_, s)| s["traceId"] == "11111111111111111111111111111111"), "unsampled: not exported");
    assert_eq!(relay.metric("webhook_relay_spans_total{outcome=\"exported\"}"), 8.0);
    println!(
        "otlp: {} export requests, 8 spans (intake, store, 2 attempts for each of 2 sampled traces)",
        collector.got.lock().unwrap().len()
    );
}
