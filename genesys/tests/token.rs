//! Token handling against the fake Genesys: caching, renewal ahead of expiry, single
//! flight, re-authentication on 401, and refused credentials.

mod common;

use std::time::Duration;

use common::{CLIENT_ID, CLIENT_SECRET, ClientOf, FakeGenesys, INTEGRATION_ID, Route, Scripted, bounded, fast_config};
use genesys_cloud::{ClientConfig, Credentials, Error};
use reqwest::StatusCode;

#[tokio::test]
async fn token_is_cached_across_calls() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let client = fake.client();
        for _ in 0..5 {
            client.get_open_integration(INTEGRATION_ID).await.unwrap();
        }
        // A clone shares the cache.
        client.clone().get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(fake.requests(Route::Token), 1);
        assert_eq!(fake.requests(Route::Integration), 6);
        assert!(fake.bearers_seen().iter().all(|t| t == "fake-token-1"));
    })
    .await;
}

#[tokio::test]
async fn token_is_renewed_before_expiry() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.set_expires_in(Some(2));
        let config = ClientConfig { token_refresh_margin: Some(Duration::from_secs(1)), ..fast_config() };
        let client = fake.client_with(Credentials::new(CLIENT_ID, CLIENT_SECRET), config);

        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(fake.tokens_issued(), 1, "a fresh token is reused");

        // Inside the 1 s margin before the 2 s token expires: the next call renews.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(fake.tokens_issued(), 2, "the token is renewed once in the margin");
        assert_eq!(fake.bearers_seen().last().map(String::as_str), Some("fake-token-2"));
        assert_eq!(fake.unauthorized_answers(), 0, "no call carried an expired token");
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_token_request() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.set_token_delay(Duration::from_millis(200));
        let client = fake.client();
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.get_open_integration(INTEGRATION_ID).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(fake.requests(Route::Token), 1);
        assert_eq!(fake.requests(Route::Integration), 50);
    })
    .await;
}

#[tokio::test]
async fn api_401_reauthenticates_once_and_the_call_succeeds() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let client = fake.client();
        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        fake.revoke_tokens();

        let integration = client.get_open_integration(INTEGRATION_ID).await.unwrap();
        assert_eq!(integration.id, INTEGRATION_ID);
        assert_eq!(fake.requests(Route::Token), 2, "exactly one re-authentication");
        assert_eq!(fake.requests(Route::Integration), 3, "the rejected call is retried once");
        assert_eq!(fake.unauthorized_answers(), 1);
        assert_eq!(fake.bearers_seen(), ["fake-token-1", "fake-token-1", "fake-token-2"]);
    })
    .await;
}

#[tokio::test]
async fn many_callers_rejected_together_reauthenticate_once() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let client = fake.client();
        client.get_open_integration(INTEGRATION_ID).await.unwrap();
        fake.revoke_tokens();
        fake.set_token_delay(Duration::from_millis(100));

        let calls: Vec<_> = (0..20)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.get_open_integration(INTEGRATION_ID).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(fake.requests(Route::Token), 2);
    })
    .await;
}

#[tokio::test]
async fn persistent_401_is_unauthorized_after_one_reauthentication() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        // The second answer echoes the token, to check it is scrubbed from the error.
        fake.script(
            Route::Integration,
            [
                Scripted::status(401),
                Scripted::json(
                    401,
                    serde_json::json!({"message": "token fake-token-2 rejected", "code": "bad.credentials"}),
                ),
            ],
        );
        let client = fake.client();
        let err = client.get_open_integration(INTEGRATION_ID).await.unwrap_err();

        assert!(matches!(err, Error::Unauthorized { status: StatusCode::UNAUTHORIZED, .. }), "{err:?}");
        assert_eq!(err.reason(), "Unauthorized");
        assert_eq!(fake.requests(Route::Token), 2);
        assert_eq!(fake.requests(Route::Integration), 2);
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains(&format!("GET open messaging integration {INTEGRATION_ID}: 401 Unauthorized")),
            "{shown}"
        );
        assert!(!shown.contains("fake-token"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn bad_credentials_are_unauthorized_and_the_secret_is_never_shown() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        let wrong_secret = "wrong-SECRET-value";
        let client = fake.client_with(Credentials::new(CLIENT_ID, wrong_secret), fast_config());

        let err = client.get_open_integration(INTEGRATION_ID).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { status: StatusCode::UNAUTHORIZED, .. }), "{err:?}");
        let shown = format!("{err} {err:?} {client:?}");
        assert!(shown.contains(&format!("POST /oauth/token for OAuth client {CLIENT_ID}")), "{shown}");
        assert!(shown.contains("invalid_client"), "{shown}");
        assert!(!shown.contains(wrong_secret), "{shown}");
        assert_eq!(fake.requests(Route::Token), 1, "refused credentials are not retried");
        assert_eq!(fake.requests(Route::Integration), 0);
    })
    .await;
}

#[tokio::test]
async fn invalid_client_as_400_is_unauthorized_and_echoed_secrets_are_scrubbed() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(
            Route::Token,
            [Scripted::json(
                400,
                serde_json::json!({
                    "error": "invalid_client",
                    "description": format!("client secret {CLIENT_SECRET} does not match"),
                    "error_description": format!("client secret {CLIENT_SECRET} does not match")
                }),
            )],
        );
        let err = fake.client().tokens().token().await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { status: StatusCode::BAD_REQUEST, .. }), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(CLIENT_SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn token_endpoint_outage_is_retried() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.script(Route::Token, [Scripted::status(503), Scripted::too_many_requests(0)]);
        let token = fake.client().tokens().token().await.unwrap();
        assert_eq!(token.secret().expose(), "fake-token-1");
        assert_eq!(fake.requests(Route::Token), 3);
    })
    .await;
}

#[tokio::test]
async fn waiters_share_a_failed_token_request() {
    bounded(async {
        let fake = FakeGenesys::start().await;
        fake.set_token_delay(Duration::from_millis(200));
        let client = fake.client_with(Credentials::new(CLIENT_ID, "wrong"), fast_config());
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.tokens().token().await })
            })
            .collect();
        for call in calls {
            assert!(matches!(call.await.unwrap(), Err(Error::Unauthorized { .. })));
        }
        // Callers that queued behind the failed request share its answer; only a caller
        // arriving after it failed would ask again.
        assert!(fake.requests(Route::Token) < 10, "{}", fake.requests(Route::Token));
    })
    .await;
}
