//! Platform API calls against the fake Genesys: integration lookup, receipts, and how
//! rate limits, server errors and unreachable hosts are handled.

mod common;

use std::time::{Duration, Instant};

use common::{ClientOf, FakeGenesys, INTEGRATION_ID, Route, Scripted, bounded, fast_config};
use genesys_cloud::{Credentials, Environment, Error, GenesysClient, Receipt};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn outbound_message() -> Value {
    json!({
        "id": "5b7a1d2e9f0c4a3b8e6d1c2b3a4f5e6d",
        "channel": {
            "platform": "Open",
            "type": "Private",
            "messageId": "ext-msg-77",
            "to": {"id": "customer-4711", "idType": "Opaque"},
            "from": {"nickname": "Orders", "id": INTEGRATION_ID, "idType": "Opaque"},
            "time": "2026-03-01T12:00:00.000Z"
        },
        "type": "Text",
        "text": "Your order has shipped",
        "direction": "Outbound"
    })
}

#[tokio::test]
async fn gets_the_open_integration() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let integration = fake.client().get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(integration.id, INTEGRATION_ID);
        assert_eq!(integration.name, "orders relay");
        assert_eq!(
            integration.outbound_notification_webhook_url.as_deref(),
            Some("https://hooks.example.com/webhooks/genesys")
        );
        assert_eq!(integration.webhook_headers["X-Relay"], "orders");
        assert_eq!(integration.status.as_deref(), Some("Active"));
        assert_eq!(integration.create_status.as_deref(), Some("Completed"));
        assert!(integration.is_active());
    })
    .await;
}

#[tokio::test]
async fn missing_integration_is_not_found() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let missing = "00000000-dead-4000-8000-000000000000";
        let err = fake.client().get_open_integration(missing).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert_eq!(err.reason(), "NotFound");
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        let message = err.to_string();
        assert!(message.starts_with(&format!("GET open messaging integration {missing}: 404 Not Found")), "{message}");
        assert!(message.contains("not.found"), "{message}");
        assert_eq!(fake.requests(Route::Integration), 1, "404 is not retried");
    })
    .await;
}

#[tokio::test]
async fn missing_permission_is_forbidden() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Integration, [Scripted::status(403)]);
        let err = fake.client().get_open_integration(INTEGRATION_ID).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert!(err.to_string().contains("messaging:integration:view"), "{err}");
        assert_eq!(fake.requests(Route::Integration), 1);
    })
    .await;
}

#[tokio::test]
async fn rate_limit_waits_retry_after() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let client = fake.client();
        client.tokens().token().await.unwrap();
        fake.script(Route::Integration, [Scripted::too_many_requests(1)]);

        let started = Instant::now();
        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(fake.requests(Route::Integration), 2);
        // Correctness of the wait, not speed: the retry came after Retry-After.
        assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn rate_limit_on_every_attempt_is_rate_limited() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Integration, (0..3).map(|_| Scripted::too_many_requests(0)));
        let err = fake.client().get_open_integration(INTEGRATION_ID).await.unwrap_err();
        assert!(matches!(err, Error::RateLimited { retry_after: Some(Duration::ZERO), .. }), "{err:?}");
        assert!(err.is_transient());
        assert_eq!(fake.requests(Route::Integration), 3);
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Integration, [Scripted::status(503), Scripted::status(500)]);
        fake.client().get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(fake.requests(Route::Integration), 3);
    })
    .await;
}

#[tokio::test]
async fn server_errors_on_every_attempt_give_server_error() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Receipt, (0..5).map(|_| Scripted::status(502)));
        let receipt = Receipt::delivered(&outbound_message()).unwrap();
        let err = fake.client().send_receipt(INTEGRATION_ID, &receipt).await.unwrap_err();
        assert!(matches!(err, Error::Server { status: StatusCode::BAD_GATEWAY, .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!(
            "POST receipt for message 5b7a1d2e9f0c4a3b8e6d1c2b3a4f5e6d to open messaging integration {INTEGRATION_ID}: 502 Bad Gateway"
        )), "{err}");
        assert_eq!(fake.requests(Route::Receipt), 3, "bounded by max_attempts");
    })
    .await;
}

#[tokio::test]
async fn not_implemented_is_not_retried() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Integration, [Scripted::status(501)]);
        let err = fake.client().get_open_integration(INTEGRATION_ID).await.unwrap_err();
        assert!(matches!(err, Error::Server { status: StatusCode::NOT_IMPLEMENTED, .. }), "{err:?}");
        assert_eq!(fake.requests(Route::Integration), 1);
    })
    .await;
}

#[tokio::test]
async fn failed_receipt_body_matches_the_documented_shape() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let time = "2026-03-01T12:00:05.250Z".parse().unwrap();
        let receipt =
            Receipt::failed(&outbound_message(), "downstream answered 500 after 8 attempts").unwrap().at(time);
        fake.client().send_receipt(INTEGRATION_ID, &receipt).await.unwrap();

        let receipts = fake.receipts();
        assert_eq!(receipts.len(), 1);
        let (integration_id, body) = &receipts[0];
        assert_eq!(integration_id, INTEGRATION_ID);
        let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields.len(), 6, "{body}");
        assert_eq!(body["id"], "5b7a1d2e9f0c4a3b8e6d1c2b3a4f5e6d");
        assert_eq!(
            body["channel"],
            json!({"to": {"id": "customer-4711", "idType": "Opaque"}, "time": "2026-03-01T12:00:05.250Z"})
        );
        assert_eq!(body["status"], "Failed");
        assert_eq!(
            body["reasons"],
            json!([{"code": "GeneralError", "message": "downstream answered 500 after 8 attempts"}])
        );
        assert_eq!(body["isFinalReceipt"], true);
        assert_eq!(body["direction"], "Outbound");
    })
    .await;
}

#[tokio::test]
async fn delivered_receipt_has_no_reasons() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let receipt = Receipt::delivered(&outbound_message()).unwrap();
        fake.client().send_receipt(INTEGRATION_ID, &receipt).await.unwrap();

        let (_, body) = fake.receipts().pop().unwrap();
        assert_eq!(body["status"], "Delivered");
        assert!(body.get("reasons").is_none(), "{body}");
        assert_eq!(body["channel"]["to"], json!({"id": "customer-4711", "idType": "Opaque"}));
        let time = body["channel"]["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    })
    .await;
}

#[tokio::test]
async fn receipt_for_unknown_integration_is_not_found() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let receipt = Receipt::delivered(&outbound_message()).unwrap();
        let err = fake.client().send_receipt("no-such-integration", &receipt).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn empty_or_dot_ids_are_refused_before_any_request() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        for id in ["", " ", ".", ".."] {
            let err = fake.client().get_open_integration(id).await.unwrap_err();
            assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        }
        assert_eq!(fake.requests(Route::Token), 0);
    })
    .await;
}

#[tokio::test]
async fn unreachable_host_is_unreachable() {
    bounded(async {
        // Bind then drop a listener so nothing answers on the port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let environment = Environment::from_base_urls(&url, &url).unwrap();
        let client = GenesysClient::with_config(
            reqwest::Client::new(),
            environment,
            Credentials::new(common::CLIENT_ID, common::CLIENT_SECRET),
            fast_config(),
        );
        let err = client.get_open_integration(INTEGRATION_ID).await.unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().starts_with("POST /oauth/token"), "{err}");
        assert!(!format!("{err} {err:?}").contains(common::CLIENT_SECRET));
    })
    .await;
}
