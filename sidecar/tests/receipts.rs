//! Genesys delivery receipts from the relay process, against a fake Genesys Cloud that
//! follows the documented API: `POST /oauth/token` (Basic client credentials, form
//! `grant_type=client_credentials`) and
//! `POST /api/v2/conversations/messages/{integrationId}/inbound/open/receipt` (Bearer).

mod common;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::RedisServer;

const CLIENT_ID: &str = "relay-oauth-client";
const CLIENT_SECRET: &str = "relay-oauth-secret-do-not-log";
const INTEGRATION: &str = "6d1e4a9c-0000-4000-8000-000000000001";

#[derive(Clone, Default)]
struct Fake {
    tokens_issued: Arc<Mutex<u32>>,
    receipts: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn token(State(f): State<Fake>, headers: HeaderMap, body: String) -> Response {
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client", "description": "bad client"})))
            .into_response();
    }
    if body != "grant_type=client_credentials" {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type"}))).into_response();
    }
    *f.tokens_issued.lock().unwrap() += 1;
    axum::Json(json!({"access_token": "fake-token-1", "token_type": "bearer", "expires_in": 86400})).into_response()
}

async fn receipt(State(f): State<Fake>, Path(integration): Path<String>, headers: HeaderMap, body: String) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer fake-token-1") {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "authentication.required"}))).into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    f.receipts.lock().unwrap().push((integration, v));
    (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_posts_exactly_one_failed_receipt_and_delivery_one_delivered() {
    let fake = Fake::default();
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/api/v2/conversations/messages/{integration}/inbound/open/receipt", post(receipt))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let genesys = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let redis = RedisServer::start();
    let script: Script = Arc::new(|id, _| if id.starts_with("bad") { (400, None) } else { (200, None) });
    let ds = Downstream::start(script, Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = format!(
        "{}genesys:\n  apiBaseUrl: {genesys}\n  loginBaseUrl: {genesys}\n  integrationId: {INTEGRATION}\n  \
         receipts: {{ onDeadLetter: true, onDelivered: true }}\n",
        config("t/receipts", l, a, &ds.url, "  maxAttempts: 3")
    );
    let relay = RelayProcess::start_with_env(
        &yaml,
        &redis.url(),
        l,
        a,
        &[("GENESYS_CLIENT_ID", CLIENT_ID), ("GENESYS_CLIENT_SECRET", CLIENT_SECRET)],
    );
    let client = reqwest::Client::new();
    assert_eq!(send(&client, &relay.intake, "bad-1").await.unwrap().0, 200);
    assert_eq!(send(&client, &relay.intake, "good-1").await.unwrap().0, 200);

    let both = eventually(Duration::from_secs(20), || async { fake.receipts.lock().unwrap().len() >= 2 }).await;
    assert!(both, "receipts: {:?}; log:\n{}", fake.receipts.lock().unwrap(), relay.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await; // a second receipt would arrive by now
    let receipts = fake.receipts.lock().unwrap().clone();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let failed: Vec<&Value> = receipts.iter().filter(|(_, v)| v["status"] == "Failed").map(|(_, v)| v).collect();
    assert_eq!(failed.len(), 1, "exactly one Failed receipt");
    let f = failed[0];
    assert!(receipts.iter().all(|(i, _)| i == INTEGRATION));
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
    assert_eq!(*fake.tokens_issued.lock().unwrap(), 1, "the token is cached across receipts");

    let m = client.get(format!("{}/metrics", relay.admin)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(r#"webhook_relay_genesys_receipts_total{status="Failed",outcome="sent"} 1"#), "{m}");
    let log = relay.log_text();
    assert!(!log.contains(CLIENT_SECRET) && !log.contains("fake-token-1"), "secrets in the log");
}
