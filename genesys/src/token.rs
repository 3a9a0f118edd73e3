//! OAuth Client Credentials tokens: fetched from `POST /oauth/token`, cached, renewed
//! ahead of expiry by one caller at a time, and invalidated when the API rejects them.
//!
//! Genesys issues no refresh token; a new token is simply requested. Renewal starts
//! when less than the refresh margin remains: by default `min(10% of the lifetime,
//! 5 min)` (2.4 h of a default 24 h token keeps 5 min), overridable with
//! [`ClientConfig::token_refresh_margin`](crate::ClientConfig) and never more than half
//! the lifetime.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use url::Url;

use crate::client::ClientConfig;
use crate::error::{Call, Error};
use crate::region::Environment;
use crate::response::Failure;
use crate::retry::{self, RetryPolicy};
use crate::secret::{Credentials, Secret};

/// Lifetime Genesys gives a token when `expires_in` is absent (its default, 24 h).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(86_400);
/// Upper bound of the default refresh margin.
const MAX_DEFAULT_MARGIN: Duration = Duration::from_secs(300);
/// After a failed renewal while the old token still works, wait at most this long
/// before trying again, so a login outage does not slow every call.
const RENEWAL_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// An access token; `Debug` never prints its value.
#[derive(Clone)]
pub struct AccessToken {
    value: Secret,
    generation: u64,
    expires_at: Instant,
}

impl AccessToken {
    /// The bearer token to send.
    pub fn secret(&self) -> &Secret {
        &self.value
    }

    /// When Genesys will stop accepting it (measured from when it was requested).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &self.value)
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// The last failed fetch, so callers that queued behind it share its error instead
    /// of each repeating it.
    last_failure: Option<(Instant, Error)>,
}

struct Inner {
    http: reqwest::Client,
    token_url: Url,
    credentials: Credentials,
    retry: RetryPolicy,
    request_timeout: Duration,
    refresh_margin: Option<Duration>,
    state: Mutex<State>,
    /// Held by the one caller fetching a token (single flight).
    refresh: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

/// Hands out a valid access token, fetching a new one only when needed. Cheap to clone;
/// clones share the cache.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.inner.token_url.as_str())
            .field("client_id", &self.inner.credentials.client_id())
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for these credentials at `environment`'s login service.
    pub fn new(
        http: reqwest::Client,
        environment: &Environment,
        credentials: Credentials,
        config: &ClientConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                token_url: environment.login_url(&["oauth", "token"]),
                credentials,
                retry: config.retry.clone(),
                request_timeout: config.request_timeout,
                refresh_margin: config.token_refresh_margin,
                state: Mutex::new(State::default()),
                refresh: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The OAuth client id this provider logs in as.
    pub fn client_id(&self) -> &str {
        self.inner.credentials.client_id()
    }

    /// A token that is not due for renewal, fetching one if needed. However many
    /// callers wait, only one request goes to the token endpoint at a time.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let queued_at = Instant::now();
        let _single_flight = self.inner.refresh.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        if let Some((failed_at, err)) = &self.state().last_failure
            && *failed_at >= queued_at
        {
            // The fetch we queued behind has just failed; its answer is ours too.
            return Err(err.clone());
        }
        match self.fetch().await {
            Ok(cached) => {
                let token = cached.token.clone();
                let mut state = self.state();
                state.cached = Some(cached);
                state.last_failure = None;
                Ok(token)
            }
            Err(err) => {
                let now = Instant::now();
                let mut state = self.state();
                state.last_failure = Some((now, err.clone()));
                match state.cached.as_mut() {
                    // Renewal ahead of expiry failed but the token still works: keep
                    // using it and try again a little later.
                    Some(cached) if now < cached.token.expires_at => {
                        let remaining = cached.token.expires_at - now;
                        cached.refresh_at = now + (remaining / 2).min(RENEWAL_RETRY_PAUSE);
                        tracing::warn!(
                            client_id = %self.client_id(),
                            error = %err,
                            remaining_s = remaining.as_secs(),
                            "renewing the Genesys Cloud token failed; using the current one until it expires"
                        );
                        Ok(cached.token.clone())
                    }
                    _ => Err(err),
                }
            }
        }
    }

    /// Forgets `token` after the API rejected it with 401, so the next [`token`](Self::token)
    /// fetches a new one. A token that was already replaced is left alone, so many
    /// callers rejected together cause one re-authentication.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut state = self.state();
        if state.cached.as_ref().is_some_and(|c| c.token.generation == token.generation) {
            tracing::info!(client_id = %self.client_id(), "Genesys Cloud rejected the access token; re-authenticating");
            state.cached = None;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only ever replaced whole, so a panic elsewhere cannot leave it
        // half-written; recover from poisoning.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self) -> Option<AccessToken> {
        let state = self.state();
        let cached = state.cached.as_ref()?;
        (Instant::now() < cached.refresh_at).then(|| cached.token.clone())
    }

    async fn fetch(&self) -> Result<Cached, Error> {
        let inner = &*self.inner;
        let call = Call::Token { client_id: inner.credentials.client_id().to_owned() };
        let secret = inner.credentials.client_secret().expose();
        // Lifetimes count from before the request, so our clock runs out before Genesys's.
        let requested_at = Instant::now();
        let response = retry::send(&inner.retry, &call, || {
            inner
                .http
                .post(inner.token_url.clone())
                .basic_auth(inner.credentials.client_id(), Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .timeout(inner.request_timeout)
        })
        .await?;
        if !response.status().is_success() {
            let failure = Failure::read(response, &[secret]).await;
            return Err(token_error(failure, call));
        }
        let body = response.bytes().await.map_err(|e| Error::Unreachable {
            call: call.clone(),
            detail: format!("reading the token response: {}", retry::error_chain(&e)),
        })?;
        let (value, lifetime) =
            parse_token_response(&body).map_err(|detail| Error::InvalidResponse { call: call.clone(), detail })?;
        let margin = self.refresh_margin(lifetime);
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            client_id = %inner.credentials.client_id(),
            expires_in_s = lifetime.as_secs(),
            refresh_margin_s = margin.as_secs_f64(),
            "obtained a Genesys Cloud access token"
        );
        Ok(Cached {
            token: AccessToken { value, generation, expires_at: requested_at + lifetime },
            refresh_at: requested_at + lifetime - margin,
        })
    }

    fn refresh_margin(&self, lifetime: Duration) -> Duration {
        self.inner.refresh_margin.unwrap_or_else(|| (lifetime / 10).min(MAX_DEFAULT_MARGIN)).min(lifetime / 2)
    }
}

/// Bad credentials come back as 401, or as 400 with an OAuth error naming the client.
fn token_error(failure: Failure, call: Call) -> Error {
    let credentials_refused = failure.status == StatusCode::UNAUTHORIZED
        || (failure.status == StatusCode::BAD_REQUEST
            && matches!(
                failure.oauth_error.as_deref(),
                Some("invalid_client" | "unauthorized_client" | "invalid_grant")
            ));
    if credentials_refused {
        Error::Unauthorized { call, status: failure.status, detail: failure.detail }
    } else {
        failure.into_error(call)
    }
}

/// The token and its lifetime from a token response. Fields are read one by one rather
/// than through a derived struct, so a parse error can never quote the token.
fn parse_token_response(body: &[u8]) -> Result<(Secret, Duration), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the token response is not JSON".to_owned())?;
    let value = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "the token response has no access_token string".to_owned())?;
    if let Some(kind) = json.get("token_type").and_then(|v| v.as_str())
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("the token response has token_type {kind:?}, not bearer"));
    }
    let lifetime = match json.get("expires_in") {
        None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME,
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "the token response's expires_in is not a number of seconds".to_owned())?,
    };
    // A zero lifetime would make every call fetch a token; one second is the floor.
    Ok((Secret::from(value), lifetime.max(Duration::from_secs(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_token_response() {
        let (token, lifetime) =
            parse_token_response(br#"{"access_token":"abc","token_type":"bearer","expires_in":86399}"#).unwrap();
        assert_eq!(token.expose(), "abc");
        assert_eq!(lifetime, Duration::from_secs(86_399));
        let (_, lifetime) = parse_token_response(br#"{"access_token":"abc","token_type":"Bearer"}"#).unwrap();
        assert_eq!(lifetime, DEFAULT_LIFETIME);
    }

    #[test]
    fn token_response_errors_do_not_quote_the_token() {
        for body in [
            &br#"{"access_token":"sekrit-token","token_type":"mac","expires_in":1}"#[..],
            br#"{"access_token":"sekrit-token","expires_in":"sekrit-token"}"#,
            br#"{"token_type":"bearer"}"#,
            b"sekrit-token",
        ] {
            let err = parse_token_response(body).unwrap_err();
            assert!(!err.contains("sekrit"), "{err}");
        }
    }

    #[test]
    fn default_margin_is_a_tenth_of_the_lifetime_up_to_five_minutes() {
        let env = Environment::from_region("us-east-1").unwrap();
        let credentials = Credentials::new("id", "secret");
        let provider = TokenProvider::new(reqwest::Client::new(), &env, credentials.clone(), &ClientConfig::default());
        assert_eq!(provider.refresh_margin(Duration::from_secs(86_400)), Duration::from_secs(300));
        assert_eq!(provider.refresh_margin(Duration::from_secs(300)), Duration::from_secs(30));
        let config = ClientConfig { token_refresh_margin: Some(Duration::from_secs(600)), ..ClientConfig::default() };
        let provider = TokenProvider::new(reqwest::Client::new(), &env, credentials, &config);
        assert_eq!(provider.refresh_margin(Duration::from_secs(86_400)), Duration::from_secs(600));
        assert_eq!(provider.refresh_margin(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = AccessToken { value: Secret::from("sekrit-token"), generation: 1, expires_at: Instant::now() };
        assert!(!format!("{token:?}").contains("sekrit"));
    }
}
