//! `GenesysClient`: the Platform API calls the relay makes, each authenticated with the
//! shared token provider, retried per [`RetryPolicy`] and re-authenticated once on 401.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::error::{Call, Error};
use crate::integration::OpenIntegration;
use crate::receipt::Receipt;
use crate::region::Environment;
use crate::response::Failure;
use crate::retry::{self, RetryPolicy};
use crate::secret::Credentials;
use crate::token::{AccessToken, TokenProvider};

/// Tuning for [`GenesysClient`]; `Default` holds the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Retries for 429, 5xx (not 501) and transport failures.
    pub retry: RetryPolicy,
    /// Timeout of each HTTP attempt. Default 10 s.
    pub request_timeout: Duration,
    /// Renew the token when less than this remains of its lifetime. `None` (default)
    /// means `min(10% of the lifetime, 5 min)`; never more than half the lifetime.
    pub token_refresh_margin: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { retry: RetryPolicy::default(), request_timeout: Duration::from_secs(10), token_refresh_margin: None }
    }
}

struct Inner {
    http: reqwest::Client,
    environment: Environment,
    tokens: TokenProvider,
    config: ClientConfig,
}

/// Client for one Genesys Cloud organisation and OAuth client. Cheap to clone; clones
/// share the HTTP client and the token cache.
#[derive(Clone)]
pub struct GenesysClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GenesysClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesysClient")
            .field("environment", &self.inner.environment)
            .field("client_id", &self.inner.tokens.client_id())
            .finish_non_exhaustive()
    }
}

impl GenesysClient {
    /// A client with default tuning, sharing the process's `reqwest::Client`.
    pub fn new(http: reqwest::Client, environment: Environment, credentials: Credentials) -> Self {
        Self::with_config(http, environment, credentials, ClientConfig::default())
    }

    /// A client with explicit tuning.
    pub fn with_config(
        http: reqwest::Client,
        environment: Environment,
        credentials: Credentials,
        config: ClientConfig,
    ) -> Self {
        let tokens = TokenProvider::new(http.clone(), &environment, credentials, &config);
        Self { inner: Arc::new(Inner { http, environment, tokens, config }) }
    }

    /// Where this client sends its requests.
    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// The token provider, e.g. to check credentials with `tokens().token()`.
    pub fn tokens(&self) -> &TokenProvider {
        &self.inner.tokens
    }

    /// `GET /api/v2/conversations/messaging/integrations/open/{integration_id}`
    /// (permission `messaging:integration:view`).
    pub async fn get_open_integration(&self, integration_id: &str) -> Result<OpenIntegration, Error> {
        let call = Call::GetOpenIntegration { integration_id: integration_id.to_owned() };
        check_id(&call, "integration id", integration_id)?;
        let url = self.inner.environment.api_url(&[
            "api",
            "v2",
            "conversations",
            "messaging",
            "integrations",
            "open",
            integration_id,
        ]);
        let (response, token) = self
            .authorized(&call, |token| self.inner.http.get(url.clone()).bearer_auth(token.secret().expose()))
            .await?;
        let response = success(response, &token, &call).await?;
        let body = response.bytes().await.map_err(|e| Error::Unreachable {
            call: call.clone(),
            detail: format!("reading the response body: {}", retry::error_chain(&e)),
        })?;
        let integration: OpenIntegration = serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidResponse { call: call.clone(), detail: describe_json_error(&e) })?;
        tracing::debug!(
            integration_id,
            status = integration.status.as_deref().unwrap_or(""),
            "fetched the Genesys Cloud open messaging integration"
        );
        Ok(integration)
    }

    /// `POST /api/v2/conversations/messages/{integration_id}/inbound/open/receipt`
    /// (permission `conversation:message:receive`).
    pub async fn send_receipt(&self, integration_id: &str, receipt: &Receipt) -> Result<(), Error> {
        let call = Call::SendReceipt { integration_id: integration_id.to_owned(), message_id: receipt.id.clone() };
        check_id(&call, "integration id", integration_id)?;
        check_id(&call, "receipt id (the original message id)", &receipt.id)?;
        let url = self.inner.environment.api_url(&[
            "api",
            "v2",
            "conversations",
            "messages",
            integration_id,
            "inbound",
            "open",
            "receipt",
        ]);
        let (response, token) = self
            .authorized(&call, |token| {
                self.inner.http.post(url.clone()).bearer_auth(token.secret().expose()).json(receipt)
            })
            .await?;
        success(response, &token, &call).await?;
        tracing::info!(
            integration_id,
            message_id = %receipt.id,
            status = ?receipt.status,
            "sent a Genesys Cloud delivery receipt"
        );
        Ok(())
    }

    /// Sends a request with a token; on 401 forgets that token, fetches a new one and
    /// sends once more. Returns the last response and the token it carried.
    async fn authorized(
        &self,
        call: &Call,
        request: impl Fn(&AccessToken) -> RequestBuilder,
    ) -> Result<(Response, AccessToken), Error> {
        let config = &self.inner.config;
        let attempt = |token: AccessToken| async {
            let response = retry::send(&config.retry, call, || {
                request(&token).header(ACCEPT, "application/json").timeout(config.request_timeout)
            })
            .await?;
            Ok::<_, Error>((response, token))
        };
        let (response, token) = attempt(self.inner.tokens.token().await?).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((response, token));
        }
        // Tokens can be revoked or expire early (e.g. the OAuth client was edited).
        self.inner.tokens.invalidate(&token);
        attempt(self.inner.tokens.token().await?).await
    }
}

/// The response if it is a 2xx, else the error for it.
async fn success(response: Response, token: &AccessToken, call: &Call) -> Result<Response, Error> {
    if response.status().is_success() {
        return Ok(response);
    }
    let failure = Failure::read(response, &[token.secret().expose()]).await;
    Err(failure.into_error(call.clone()))
}

/// Ids go into the URL path as single segments; `.`, `..` and empty ones would address
/// a different resource.
fn check_id(call: &Call, what: &str, id: &str) -> Result<(), Error> {
    if id.trim().is_empty() || id == "." || id == ".." {
        return Err(Error::InvalidRequest { call: call.clone(), detail: format!("the {what} {id:?} is not valid") });
    }
    Ok(())
}

/// serde_json's messages can quote values from the body (webhook header values may be
/// credentials), so only missing-field messages are kept verbatim.
fn describe_json_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    if message.starts_with("missing field") {
        format!("the body lacks a documented field: {message}")
    } else {
        format!(
            "the body is not the documented JSON ({:?} error at line {} column {})",
            err.classify(),
            err.line(),
            err.column()
        )
    }
}
