//! The admin API and intake driven in-process with `tower::ServiceExt::oneshot` (no
//! socket), against a real redis-server: auth, listing and paging, show, replay, delete,
//! stats, the OpenAPI document against the real routes, intake limits, and a property
//! test over intake bodies and headers.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use testkit::RedisServer;
use testkit::relay::SECRET;
use tower::ServiceExt;
use webhook_relay_api::RelayConfig;
use webhook_relay_sidecar::run_config::RunConfig;
use webhook_relay_sidecar::state::AppState;
use webhook_relay_sidecar::{admin, admin_api, app, intake, signature};
use webhook_relay_store::{DeadBounds, EventId, EventMeta, Store};

const TOKEN: &str = "admin-token-for-tests";

/// A relay (no worker running) on `redis`; `source` is extra YAML under `source:`.
async fn relay(redis: &RedisServer, id: &str, token: Option<&str>, source: &str) -> Arc<AppState> {
    let yaml = format!(
        "relay: {id}\nsource:\n  verify: {{scheme: genesys-open-messaging, secretEnv: SIGN}}\n{source}destination:\n  url: http://127.0.0.1:9/events\n"
    );
    let config = RelayConfig::from_yaml(&yaml).unwrap();
    let mut env: HashMap<&str, String> = [("REDIS_URL", redis.url()), ("SIGN", SECRET.to_string())].into();
    if let Some(t) = token {
        env.insert("RELAY_ADMIN_TOKEN", t.to_string());
    }
    let run_config = RunConfig::from_config(config, |k| env.get(k).cloned()).unwrap();
    app::build(run_config).await.unwrap()
}

/// Sends one request; returns status, headers and the body as JSON (`Null` when empty or not JSON).
async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(app, Method::GET, uri, Some(TOKEN)).await;
    (s, v)
}

async fn post(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(app, Method::POST, uri, Some(TOKEN)).await;
    (s, v)
}

fn id(s: &str) -> EventId {
    EventId::new(s).unwrap()
}

/// Stores `ids` and dead-letters them (one claim, in order), as a failed delivery would.
async fn dead_letters(store: &Store, ids: &[String]) {
    for i in ids {
        store
            .enqueue(&id(i), format!(r#"{{"id":"{i}"}}"#).as_bytes(), "application/json", Duration::from_secs(3600))
            .await
            .unwrap();
    }
    // Other due events may be claimed on the way; they are released back to due.
    let claim = store.claim(10_000, Duration::from_secs(60)).await.unwrap();
    let bounds = DeadBounds { max_age: Duration::from_secs(3600), max_entries: 100_000 };
    let mut done = 0;
    for ev in claim.events {
        if ids.iter().any(|i| i == ev.lease.id.as_str()) {
            let meta = EventMeta {
                last_status: Some(400),
                last_error: Some("400 Bad Request: nope".into()),
                ..ev.meta.clone()
            };
            assert!(store.dead_letter(&ev.lease, &meta, bounds, false).await.unwrap());
            done += 1;
        } else {
            assert!(store.release(&ev.lease).await.unwrap());
        }
    }
    assert_eq!(done, ids.len());
}

async fn hexists(store: &Store, key: &str, field: &str) -> bool {
    let v = store.conn().cmd(redis::cmd("HEXISTS").arg(key).arg(field)).await.unwrap();
    redis::from_redis_value::<i64>(v).unwrap() == 1
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn v1_needs_the_bearer_token_and_health_does_not() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/auth", Some(TOKEN), "").await;
    let app = admin::router(r);
    let (s, h, v) = call(&app, Method::GET, "/v1/stats", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    assert_eq!(h["www-authenticate"], r#"Bearer realm="webhook-relay""#);
    let (s, _, _) = call(&app, Method::GET, "/v1/stats", Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(&app, Method::POST, "/v1/dead/replay", Some(&format!("{TOKEN}x"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = call(&app, Method::GET, "/v1/stats", Some(TOKEN)).await;
    assert_eq!((s, v["dead"].as_u64()), (StatusCode::OK, Some(0)));
    // The scheme is case-insensitive (RFC 7235).
    let req = Request::get("/v1/stats").header("authorization", format!("bearer {TOKEN}")).body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    for open in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(call(&app, Method::GET, open, None).await.0, StatusCode::OK, "{open}");
    }
    let (s, _, v) = call(&app, Method::GET, "/v1/nope", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());

    // No token configured: the API is off and says which variable to set.
    let off = admin::router(relay(&redis, "t/auth-off", None, "").await);
    let (s, _, v) = call(&off, Method::GET, "/v1/stats", Some(TOKEN)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("RELAY_ADMIN_TOKEN"), "{v}");
    assert_eq!(call(&off, Method::GET, "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn list_show_replay_delete_and_stats() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/api", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    let s = r.store.clone();
    let dead: Vec<String> = (0..3).map(|i| format!("dead-{i}")).collect();
    dead_letters(&s, &dead).await;
    s.enqueue(&id("due-json"), br#"{"id":"due-json","n":1}"#, "application/json", Duration::from_secs(60))
        .await
        .unwrap();
    s.enqueue(&id("due-raw"), b"\xff\x00not json", "application/octet-stream", Duration::from_secs(60)).await.unwrap();

    let (st, page) = get(&app, "/v1/events").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids_of(&page), dead, "dead letters by default, oldest first");
    assert!(page["nextCursor"].is_null());
    let first = &page["items"][0];
    assert_eq!(
        (first["state"].as_str(), first["attempts"].as_u64(), first["lastStatus"].as_u64()),
        (Some("dead"), Some(1), Some(400))
    );
    assert_eq!(first["lastError"], "400 Bad Request: nope");
    chrono::DateTime::parse_from_rfc3339(first["deadAt"].as_str().unwrap()).expect("deadAt is RFC 3339");
    let (_, due) = get(&app, "/v1/events?state=due&limit=10").await;
    assert_eq!(ids_of(&due), ["due-json", "due-raw"]);
    assert!(due["items"][0]["nextAttemptAt"].is_string() && due["items"][0]["lastStatus"].is_null());

    let (st, ev) = get(&app, "/v1/events/due-json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((ev["payloadEncoding"].as_str(), ev["payload"]["n"].as_u64()), (Some("json"), Some(1)));
    assert_eq!(ev["contentType"], "application/json");
    chrono::DateTime::parse_from_rfc3339(ev["receivedAt"].as_str().unwrap()).expect("receivedAt is RFC 3339");
    let (_, raw) = get(&app, "/v1/events/due-raw").await;
    assert_eq!(raw["payloadEncoding"], "base64");
    assert_eq!(raw["payload"], "/wBub3QganNvbg==");
    assert_eq!(get(&app, "/v1/events/missing").await.0, StatusCode::NOT_FOUND);

    // Replay: a dead letter becomes due now with attempts reset.
    let (st, v) = post(&app, "/v1/events/dead-0/replay").await;
    assert_eq!((st, v["previousState"].as_str()), (StatusCode::OK, Some("dead")));
    let (_, ev) = get(&app, "/v1/events/dead-0").await;
    assert_eq!((ev["state"].as_str(), ev["attempts"].as_u64()), (Some("due"), Some(0)));
    assert_eq!(post(&app, "/v1/events/missing/replay").await.0, StatusCode::NOT_FOUND);
    let claimed = s.claim(1, Duration::from_secs(60)).await.unwrap().events.remove(0);
    let (st, v) = post(&app, &format!("/v1/events/{}/replay", claimed.lease.id)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (_, inflight) = get(&app, "/v1/events?state=inflight").await;
    assert_eq!(ids_of(&inflight), [claimed.lease.id.as_str()]);
    assert!(inflight["items"][0]["leaseExpiresAt"].is_string());

    // Delete: payload and metadata go; a second delete is a 404.
    let (st, _, _) = call(&app, Method::DELETE, "/v1/events/dead-2", Some(TOKEN)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!hexists(&s, "whr:{t/api}:ev", "dead-2").await, "the record (payload, metadata) survived delete");
    assert!(hexists(&s, "whr:{t/api}:ev", "dead-1").await);
    assert_eq!(call(&app, Method::DELETE, "/v1/events/dead-2", Some(TOKEN)).await.0, StatusCode::NOT_FOUND);

    let (st, stats) = get(&app, "/v1/stats").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (stats["due"].as_u64(), stats["inFlight"].as_u64(), stats["dead"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert!(stats["oldestDueAgeSeconds"].is_u64());

    // Bad queries are 400 with a JSON error.
    for bad in [
        "/v1/events?state=zombie",
        "/v1/events?limit=0",
        "/v1/events?limit=1001",
        "/v1/events?limit=ten",
        "/v1/events?cursor=%21%21",
        "/v1/events?state=due&cursor=ZGVhZDoxOmE",
        "/v1/events?order=latest",
        "/v1/events?order=newest&cursor=ZGVhZDoxOmE",
    ] {
        let (st, v) = get(&app, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].is_string(), "{bad}: {v}");
    }
    assert_eq!(get(&app, "/v1/events?limit=1000").await.0, StatusCode::OK);
}

#[tokio::test]
async fn range_replay_counts_what_it_moved() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/range", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    let early: Vec<String> = (0..4).map(|i| format!("early-{i}")).collect();
    dead_letters(&r.store, &early).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, page) = get(&app, "/v1/events?limit=1").await;
    let cut = page["items"][0]["deadAt"].as_str().unwrap().to_string();
    let cut = chrono::DateTime::parse_from_rfc3339(&cut).unwrap() + chrono::Duration::milliseconds(10);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late: Vec<String> = (0..3).map(|i| format!("late-{i}")).collect();
    dead_letters(&r.store, &late).await;

    for bad in [
        "/v1/dead/replay?since=yesterday",
        "/v1/dead/replay?until=2026-13-01T00:00:00Z",
        "/v1/dead/replay?since=2026-05-02T00:00:00Z&until=2026-05-01T00:00:00Z",
    ] {
        let (st, v) = post(&app, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let since = (cut).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (st, v) = post(&app, &format!("/v1/dead/replay?since={}", since.replace('+', "%2B"))).await;
    assert_eq!((st, v["replayed"].as_u64()), (StatusCode::OK, Some(3)), "{v}");
    let (_, v) = post(&app, "/v1/dead/replay?until=2000-01-01T00:00:00Z").await;
    assert_eq!(v["replayed"].as_u64(), Some(0));
    let (_, v) = post(&app, "/v1/dead/replay").await;
    assert_eq!(v["replayed"].as_u64(), Some(4));
    let st = r.store.stats().await.unwrap();
    assert_eq!((st.due, st.dead), (7, 0));
}

#[tokio::test]
async fn paging_is_stable_while_events_move() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/paging", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    let ids: Vec<String> = (0..40).map(|i| format!("d{i:02}")).collect();
    dead_letters(&r.store, &ids).await;
    let (mut seen, mut left, mut arrived) = (vec![], HashSet::new(), vec![]);
    let mut cursor: Option<String> = None;
    for round in 0.. {
        let uri = match &cursor {
            Some(c) => format!("/v1/events?state=dead&limit=2&cursor={c}"),
            None => "/v1/events?state=dead&limit=2".into(),
        };
        let (st, page) = get(&app, &uri).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        seen.extend(ids_of(&page));
        // Meanwhile events move: the newest unseen dead letter is replayed (it leaves the
        // dead set), the one just listed is replayed too, and a new one dies.
        if let Some(u) = ids.iter().rev().find(|i| !seen.contains(i) && !left.contains(*i)) {
            assert_eq!(post(&app, &format!("/v1/events/{u}/replay")).await.0, StatusCode::OK);
            left.insert(u.clone());
        }
        if let Some(last) = seen.last().cloned() {
            assert_eq!(post(&app, &format!("/v1/events/{last}/replay")).await.0, StatusCode::OK);
        }
        let newcomer = format!("new{round:02}");
        dead_letters(&r.store, std::slice::from_ref(&newcomer)).await;
        arrived.push(newcomer);
        cursor = page["nextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
        assert!(round < 200, "paging does not end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an item was listed twice: {seen:?}");
    for i in ids.iter().filter(|i| !left.contains(*i)) {
        assert!(unique.contains(i), "{i} stayed dead but was skipped; seen {seen:?}");
    }
    assert!(left.iter().all(|i| !unique.contains(i)), "an event replayed before its page was listed");
    assert!(arrived[..arrived.len() - 1].iter().all(|a| unique.contains(a)), "a later dead letter was missed");
    println!(
        "paging: {} listed in pages of 2 while {} left and {} arrived; none skipped or repeated",
        seen.len(),
        left.len(),
        arrived.len()
    );
}

#[tokio::test]
async fn a_bulk_replay_pages_by_cursor_with_its_time_range_fixed_by_the_first_request() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/bulkpage", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    // More than a small sorted set holds in one listpack, so the scan really pages.
    let ids: Vec<String> = (0..300).map(|i| format!("page-{i:03}")).collect();
    dead_letters(&r.store, &ids).await;
    let follow = |first: String| {
        let app = app.clone();
        async move {
            let (mut total, mut requests, mut untils, mut uri) = (0, 0, HashSet::new(), first.clone());
            loop {
                let (st, v) = post(&app, &uri).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                total += v["matched"].as_u64().unwrap();
                requests += 1;
                untils.insert(v["until"].as_str().unwrap().to_string());
                match v["cursor"].as_str() {
                    Some(c) => {
                        assert_eq!(v["done"], false);
                        uri = format!("{first}&cursor={c}");
                    }
                    None => return (total, requests, untils.len()),
                }
                assert!(requests < 100, "the cursor must reach the end");
            }
        }
    };
    let (dry, requests, untils) = follow("/v1/dead/replay?status=4xx&dryRun=true&limit=50".into()).await;
    assert_eq!(dry, 300);
    assert!(requests >= 4, "300 dead letters at 50 a request took {requests} request(s)");
    assert_eq!(untils, 1, "every request of one run keeps the first request's until");
    assert_eq!(r.store.stats().await.unwrap().dead, 300, "a dry run changes nothing");
    let (replayed, _, _) = follow("/v1/dead/replay?status=400&limit=120".into()).await;
    assert_eq!(replayed, 300, "the replay moves what the dry run counted");
    let st = r.store.stats().await.unwrap();
    assert_eq!((st.dead, st.due), (0, 300));
    let (st, v) = post(&app, "/v1/dead/replay?cursor=nonsense").await;
    assert!(st == StatusCode::BAD_REQUEST && v["error"].as_str().unwrap().contains("cursor"), "{v}");
    let (st, _) = post(&app, "/v1/dead/replay?limit=0").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/openapi", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    let (st, _, doc) = call(&app, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc, admin_api::openapi_document());
    let mut documented = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: HashSet<(String, String)> =
        admin_api::operations().into_iter().map(|(m, p)| (m.as_str().to_string(), p.to_string())).collect();
    assert_eq!(documented, routed, "the OpenAPI document and the router disagree");
    // Every documented operation is really routed: nothing answers 404 (no route) or 405.
    for (i, (method, path)) in routed.iter().enumerate() {
        let ev = format!("probe-{i}");
        r.store.enqueue(&id(&ev), b"{}", "application/json", Duration::from_secs(60)).await.unwrap();
        let mut uri = path.replace("{id}", &ev);
        if path == "/v1/dead/delete" {
            uri.push_str("?all=true"); // deleting every dead letter must be asked for
        }
        let (st, _, body) = call(&app, Method::from_bytes(method.as_bytes()).unwrap(), &uri, Some(TOKEN)).await;
        assert!(st != StatusCode::NOT_FOUND && st != StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {st} {body}");
        assert!(st.is_success(), "{method} {uri}: {st} {body}");
    }
    assert_eq!(call(&app, Method::PUT, "/v1/stats", Some(TOKEN)).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_false_while_redis_is_down_or_shutting_down() {
    let mut redis = RedisServer::start();
    let r = relay(&redis, "t/ready", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    let intake = intake::router(r.clone());
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    redis.stop();
    let (st, v) = get(&app, "/v1/stats").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("redis"), "{v}");
    let (st, _) = send(&intake, &testkit::relay::event_body("while-down"), true).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE, "intake saw Redis fail");
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK, "still serving");
    redis.start_again();
    r.set_redis_up(); // what the sampler does once Redis answers again
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    r.begin_shutdown();
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
}

/// POSTs `body` to intake, signed (or not); returns status and the JSON answer.
async fn send(app: &Router, body: &str, signed: bool) -> (StatusCode, Value) {
    let mut req = Request::post("/webhooks/genesys").header("content-type", "application/json");
    if signed {
        req = req.header("x-hub-signature-256", signature::sign_genesys(SECRET.as_bytes(), body.as_bytes()));
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").is_some();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if retry_after {
        v["retryAfter"] = Value::Bool(true);
    }
    (status, v)
}

/// A request whose body sends `head` and then stalls until `release` is dropped.
fn stalled(head: &'static str) -> (Request<Body>, tokio::sync::oneshot::Sender<()>) {
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let chunks =
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from_static(head.as_bytes())) })
            .chain(futures::stream::once(async move {
                let _ = wait.await;
                Err(std::io::Error::other("client went away"))
            }));
    let req = Request::post("/webhooks/genesys")
        .header("x-hub-signature-256", "sha256=x")
        .body(Body::from_stream(chunks))
        .unwrap();
    (req, release)
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_caps_concurrent_requests_and_times_out_slow_bodies() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/limits", Some(TOKEN), "  maxConcurrentRequests: 2\n  readTimeout: 300ms\n").await;
    let app = intake::router(r.clone());
    // Two requests whose bodies stall hold both slots...
    let (a, release_a) = stalled("{\"id\":");
    let (b, release_b) = stalled("{\"id\":");
    let ta = tokio::spawn(app.clone().oneshot(a));
    let tb = tokio::spawn(app.clone().oneshot(b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third is refused at once with 503 and Retry-After.
    let (st, v) = send(&app, &testkit::relay::event_body("third"), true).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["retryAfter"], true);
    assert!(v["error"].as_str().unwrap().contains("maxConcurrentRequests"), "{v}");
    // The stalled bodies run out of source.readTimeout: 408, and the slots are free again.
    let (ra, rb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
    assert_eq!((ra.status(), rb.status()), (StatusCode::REQUEST_TIMEOUT, StatusCode::REQUEST_TIMEOUT));
    drop((release_a, release_b));
    let (st, v) = send(&app, &testkit::relay::event_body("fourth"), true).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("accepted")), "{v}");
    let m = r.metrics.encode();
    for line in [
        r#"webhook_relay_intake_requests_total{outcome="overloaded"} 1"#,
        r#"webhook_relay_intake_requests_total{outcome="timeout"} 2"#,
        r#"webhook_relay_intake_requests_total{outcome="accepted"} 1"#,
        r#"webhook_relay_intake_requests_total{outcome="unavailable"} 0"#,
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
}

async fn boom() -> &'static str {
    panic!("handler bug")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    use axum::routing::get;
    let app = Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }))
        .layer(webhook_relay_sidecar::server::catch_panic());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = webhook_relay_sidecar::server::Limits {
        header_read_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(1),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook_relay_sidecar::server::serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let boom = client.get(format!("http://{addr}/boom")).send().await.unwrap();
    assert_eq!(boom.status(), 500);
    assert_eq!(boom.text().await.unwrap(), r#"{"error":"internal error"}"#);
    let fine = client.get(format!("http://{addr}/fine")).send().await.unwrap();
    assert_eq!((fine.status().as_u16(), fine.text().await.unwrap().as_str()), (200, "fine"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    /// How a generated request is signed.
    #[derive(Clone, Debug)]
    enum Sig {
        Valid,
        /// A valid signature of a different body.
        OtherBody,
        Missing,
        /// The right digest, hex instead of base64.
        WrongEncoding,
        /// The right digest with one character changed.
        Flipped(usize),
        /// Printable garbage.
        Garbage(String),
    }

    fn sig() -> impl Strategy<Value = Sig> {
        prop_oneof![
            3 => Just(Sig::Valid),
            1 => Just(Sig::OtherBody),
            1 => Just(Sig::Missing),
            1 => Just(Sig::WrongEncoding),
            1 => any::<usize>().prop_map(Sig::Flipped),
            1 => proptest::collection::vec(0x20u8..0x7f, 0..80).prop_map(|b| Sig::Garbage(String::from_utf8(b).unwrap())),
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        let json = (
            prop_oneof![
                Just(Value::Null),
                any::<u32>().prop_map(|n| Value::String(format!("pp-{n}"))),
                any::<i64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::Bool)
            ],
            proptest::collection::vec(any::<char>(), 0..40),
        )
            .prop_map(|(id, text)| {
                serde_json::json!({"id": id, "text": text.into_iter().collect::<String>()}).to_string().into_bytes()
            });
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), json]
    }

    fn headers() -> impl Strategy<Value = (Option<&'static str>, Option<String>)> {
        (
            proptest::option::of(proptest::sample::select(vec![
                "application/json",
                "text/plain",
                "",
                "application/json; charset=utf-8",
                "\u{7f}",
            ])),
            proptest::option::of(prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                Just("-1".to_string()),
                Just("abc".to_string())
            ]),
        )
    }

    #[test]
    fn intake_never_panics_and_never_accepts_a_bad_signature() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let redis = RedisServer::start();
        let relay = rt.block_on(relay(&redis, "t/prop", None, "  maxBodyBytes: 300\n"));
        let app = intake::router(relay);
        let mut runner = TestRunner::new(Config { cases: 128, failure_persistence: None, ..Config::default() });
        let counts = std::cell::RefCell::new(HashMap::<u16, usize>::new());
        let result = runner.run(&(body(), sig(), headers()), |(body, sig, (content_type, content_length))| {
            let right = signature::sign_genesys(SECRET.as_bytes(), &body);
            let value = match &sig {
                Sig::Valid => Some(right.clone()),
                Sig::OtherBody => Some(signature::sign_genesys(SECRET.as_bytes(), &[&body[..], b"x"].concat())),
                Sig::Missing => None,
                Sig::WrongEncoding => {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD.decode(&right["sha256=".len()..]).unwrap();
                    Some(format!("sha256={}", hex::encode(raw)))
                }
                Sig::Flipped(at) => {
                    let mut chars: Vec<char> = right.chars().collect();
                    let i = "sha256=".len() + at % (chars.len() - "sha256=".len());
                    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
                    Some(chars.into_iter().collect())
                }
                Sig::Garbage(g) => Some(g.clone()),
            };
            let mut req = Request::post("/webhooks/genesys");
            if let Some(v) = &value {
                req = req.header("x-hub-signature-256", v.as_str());
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            if let Some(cl) = &content_length {
                req = req.header("content-length", cl.as_str());
            }
            let Ok(req) = req.body(Body::from(body.clone())) else { return Ok(()) };
            let status = rt.block_on(app.clone().oneshot(req)).unwrap().status();
            *counts.borrow_mut().entry(status.as_u16()).or_default() += 1;
            prop_assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "a handler panicked or failed");
            let valid = matches!(sig, Sig::Valid) && value.as_deref() == Some(right.as_str());
            if !valid {
                prop_assert_ne!(status, StatusCode::OK, "200 for an invalid signature ({:?})", sig);
            }
            prop_assert!([200u16, 400, 401, 413].contains(&status.as_u16()), "unexpected status {status}");
            Ok::<(), TestCaseError>(())
        });
        let counts = counts.into_inner();
        println!("intake property: 128 cases, answers by status {counts:?}");
        result.unwrap();
        assert!(counts.get(&200).copied().unwrap_or(0) > 0, "no case reached a 200: {counts:?}");
    }
}

#[tokio::test]
async fn newest_first_lists_the_latest_dead_letters_first_across_pages() {
    let redis = RedisServer::start();
    let r = relay(&redis, "t/newest", Some(TOKEN), "").await;
    let app = admin::router(r.clone());
    for i in 0..5 {
        dead_letters(&r.store, &[format!("n{i}")]).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut seen = vec![];
    let mut uri = "/v1/events?state=dead&order=newest&limit=2".to_string();
    loop {
        let (st, page) = get(&app, &uri).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        seen.extend(ids_of(&page));
        match page["nextCursor"].as_str() {
            Some(c) => uri = format!("/v1/events?state=dead&order=newest&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["n4", "n3", "n2", "n1", "n0"]);
    let (_, oldest) = get(&app, "/v1/events?state=dead&limit=2").await;
    let c = oldest["nextCursor"].as_str().unwrap();
    let (st, v) = get(&app, &format!("/v1/events?state=dead&order=newest&cursor={c}")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "an oldest-first cursor in a newest-first listing: {v}");
    assert!(v["error"].as_str().unwrap().contains("order=oldest"), "{v}");
}
