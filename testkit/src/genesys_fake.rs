//! A fake Genesys Cloud that follows its documented API, for every test that talks to
//! Genesys: `POST /oauth/token` (Basic client credentials, form `grant_type=client_credentials`,
//! tokens that expire), `GET /api/v2/conversations/messaging/integrations/open/{id}` and
//! `POST /api/v2/conversations/messages/{id}/inbound/open/receipt` (Bearer; 404 for an unknown
//! integration), with request counters, a record of received receipts and per-route scripts
//! of canned answers (429 with Retry-After, 5xx, ...).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

/// Prefix of the access tokens the fake issues (tests check none leaks).
pub const TOKEN_PREFIX: &str = "fake-token-";

/// OAuth client the fake accepts.
pub const CLIENT_ID: &str = "3f1c5b2e-client";
/// Its secret; tests assert it never shows up in errors.
pub const CLIENT_SECRET: &str = "s3cr3t-VALUE-do-not-print";
/// An integration the fake knows.
pub const INTEGRATION_ID: &str = "6d1e0c7a-0000-4000-8000-00000000abcd";

/// The fake's routes, for scripts and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /oauth/token`
    Token,
    /// `GET /api/v2/conversations/messaging/integrations/open/{id}`
    Integration,
    /// `POST /api/v2/conversations/messages/{id}/inbound/open/receipt`
    Receipt,
}

/// A canned answer, served before the route's normal handling.
#[derive(Debug, Clone)]
pub struct Scripted {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl Scripted {
    /// A Platform API style error body for `status`.
    pub fn status(status: u16) -> Self {
        let code = match status {
            401 => "authentication.required",
            403 => "missing.permissions",
            429 => "too.many.requests.retry.after",
            501 => "not.implemented",
            s if s >= 500 => "service.unavailable",
            _ => "bad.request",
        };
        Self {
            status,
            headers: Vec::new(),
            body: json!({"message": format!("scripted {status}"), "code": code, "status": status, "contextId": "ctx-1"}),
        }
    }

    /// The documented 429: `Retry-After: <seconds>` and `too.many.requests.retry.after`.
    pub fn too_many_requests(retry_after_s: u64) -> Self {
        Self {
            status: 429,
            headers: vec![("retry-after", retry_after_s.to_string())],
            body: json!({
                "message": format!("Rate limit exceeded the maximum. Retry the request in [{retry_after_s}] seconds"),
                "code": "too.many.requests.retry.after",
                "status": 429
            }),
        }
    }

    /// Any status with this JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body }
    }

    fn into_response(self) -> Response {
        let mut response = (StatusCode::from_u16(self.status).unwrap(), axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
        }
        response
    }
}

#[derive(Default)]
struct Fake {
    expires_in: Mutex<Option<u64>>,
    token_delay: Mutex<Duration>,
    issued: Mutex<HashMap<String, Instant>>,
    tokens_issued: AtomicUsize,
    requests: Mutex<HashMap<Route, usize>>,
    unauthorized_answers: AtomicUsize,
    bearers_seen: Mutex<Vec<String>>,
    integrations: Mutex<HashMap<String, Value>>,
    receipts: Mutex<Vec<(String, Value)>>,
    scripts: Mutex<HashMap<Route, VecDeque<Scripted>>>,
    receipt_delay: Mutex<Duration>,
}

impl Fake {
    fn count(&self, route: Route) -> Option<Response> {
        *self.requests.lock().unwrap().entry(route).or_default() += 1;
        let scripted = self.scripts.lock().unwrap().get_mut(&route)?.pop_front()?;
        if scripted.status == 401 {
            self.unauthorized_answers.fetch_add(1, Ordering::SeqCst);
        }
        Some(scripted.into_response())
    }

    /// Checks `Authorization: Bearer` against issued, unexpired tokens; the 401 to
    /// answer if it fails.
    fn reject_bearer(&self, headers: &HeaderMap) -> Option<Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        if let Some(token) = &token {
            self.bearers_seen.lock().unwrap().push(token.clone());
        }
        let valid = token
            .as_ref()
            .and_then(|t| self.issued.lock().unwrap().get(t).copied())
            .is_some_and(|expires_at| Instant::now() < expires_at);
        if valid {
            return None;
        }
        self.unauthorized_answers.fetch_add(1, Ordering::SeqCst);
        Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({
                    "message": "Authentication failed: the token is missing, invalid or expired",
                    "code": "authentication.required",
                    "status": 401
                })),
            )
                .into_response(),
        )
    }
}

/// A running fake Genesys Cloud; stops when dropped.
pub struct FakeGenesys {
    /// `http://<addr>`, for `apiBaseUrl` and `loginBaseUrl`.
    pub base_url: String,
    fake: Arc<Fake>,
    server: tokio::task::JoinHandle<()>,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FakeGenesys {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGenesys {
    /// Starts the fake on an ephemeral port of 127.0.0.1 with one integration,
    /// [`INTEGRATION_ID`], posting to `https://hooks.example.com/webhooks/genesys`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the fake on `addr` (e.g. an address pods of the test cluster reach).
    pub async fn start_on(addr: &str) -> Self {
        let fake = Arc::new(Fake::default());
        fake.integrations.lock().unwrap().insert(
            INTEGRATION_ID.to_owned(),
            integration_json(INTEGRATION_ID, "https://hooks.example.com/webhooks/genesys"),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, fake.clone()));
        Self { base_url, fake, server, _runtime: None }
    }

    /// Starts on a runtime of its own, for tests that are not async.
    pub fn start_blocking(addr: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut g = rt.block_on(Self::start_on(addr));
        g._runtime = Some(rt);
        g
    }

    /// Lifetime of tokens issued from now on; `None` omits `expires_in` (Genesys' 24 h).
    pub fn set_expires_in(&self, seconds: Option<u64>) {
        *self.fake.expires_in.lock().unwrap() = seconds;
    }

    /// Makes the token endpoint slow, to widen races.
    pub fn set_token_delay(&self, delay: Duration) {
        *self.fake.token_delay.lock().unwrap() = delay;
    }

    /// Queues canned answers for a route, served in order before normal handling.
    pub fn script(&self, route: Route, answers: impl IntoIterator<Item = Scripted>) {
        self.fake.scripts.lock().unwrap().entry(route).or_default().extend(answers);
    }

    /// Makes every token issued so far invalid, as if revoked.
    pub fn revoke_tokens(&self) {
        self.fake.issued.lock().unwrap().clear();
    }

    /// Requests that reached `route` (scripted ones included).
    pub fn requests(&self, route: Route) -> usize {
        self.fake.requests.lock().unwrap().get(&route).copied().unwrap_or(0)
    }

    /// Tokens issued.
    pub fn tokens_issued(&self) -> usize {
        self.fake.tokens_issued.load(Ordering::SeqCst)
    }

    /// 401s answered by the API routes.
    pub fn unauthorized_answers(&self) -> usize {
        self.fake.unauthorized_answers.load(Ordering::SeqCst)
    }

    /// Bearer tokens presented to the API routes, in order.
    pub fn bearers_seen(&self) -> Vec<String> {
        self.fake.bearers_seen.lock().unwrap().clone()
    }

    /// Receipts accepted, with the integration id from their path.
    pub fn receipts(&self) -> Vec<(String, Value)> {
        self.fake.receipts.lock().unwrap().clone()
    }

    /// Creates or changes integration `id`, posting outbound messages to `webhook_url`.
    pub fn set_integration(&self, id: &str, webhook_url: &str) {
        self.fake.integrations.lock().unwrap().insert(id.to_owned(), integration_json(id, webhook_url));
    }

    /// Integration lookups answered (any status).
    pub fn lookups(&self) -> usize {
        self.requests(Route::Integration)
    }

    /// Token requests answered (any status).
    pub fn token_requests(&self) -> usize {
        self.requests(Route::Token)
    }

    /// Makes the receipt endpoint take this long to answer.
    pub fn set_receipt_delay(&self, delay: Duration) {
        *self.fake.receipt_delay.lock().unwrap() = delay;
    }

    /// The ids of the receipts accepted with `status` (`Failed`, `Delivered`), in order.
    pub fn receipt_ids(&self, status: &str) -> Vec<String> {
        let r = self.fake.receipts.lock().unwrap();
        r.iter()
            .filter(|(_, v)| v["status"] == status)
            .filter_map(|(_, v)| v["id"].as_str().map(String::from))
            .collect()
    }

    /// Forgets the receipts received so far.
    pub fn clear_receipts(&self) {
        self.fake.receipts.lock().unwrap().clear();
    }
}

fn integration_json(id: &str, webhook_url: &str) -> Value {
    json!({
        "id": id,
        "name": "orders relay",
        "outboundNotificationWebhookUrl": webhook_url,
        "webhookHeaders": {"X-Relay": "orders"},
        "status": "Active",
        "createStatus": "Completed",
        "dateCreated": "2026-01-05T10:00:00.000Z",
        "selfUri": format!("/api/v2/conversations/messaging/integrations/open/{id}")
    })
}

/// The fake's Genesys Cloud routes.
fn routes() -> Router<Arc<Fake>> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/api/v2/conversations/messaging/integrations/open/{id}", get(integration))
        .route("/api/v2/conversations/messages/{id}/inbound/open/receipt", post(receipt))
}

/// Serves the fake's routes on `listener` until dropped.
async fn serve(listener: tokio::net::TcpListener, fake: Arc<Fake>) {
    axum::serve(listener, routes().with_state(fake)).await.unwrap();
}

/// What `POST /control/send` sends: signed Open Messaging events, as Genesys posts them to
/// an integration's Outbound Notification Webhook URL.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    /// The webhook URL (an Ingress host and path).
    pub url: String,
    /// Connect to this address for the URL's host (`ip:port`), as DNS would answer.
    #[serde(default)]
    pub resolve: Option<String>,
    /// Accept the server's certificate whatever signed it (a test Ingress's self-signed one).
    #[serde(default)]
    pub insecure: bool,
    /// The integration's signature secret.
    pub secret: String,
    /// One event per id, in order.
    pub ids: Vec<String>,
    /// `channel.to.id` of the events (the customer).
    #[serde(default)]
    pub to: Option<String>,
}

/// What each sent event was answered: (id, status; 0 when the request failed).
pub type SendResults = Vec<(String, u16)>;

/// Sends the events of `req` one after the other.
pub async fn send_events(req: &SendRequest) -> Result<SendResults, String> {
    let mut client =
        reqwest::Client::builder().danger_accept_invalid_certs(req.insecure).timeout(Duration::from_secs(10));
    if let Some(addr) = &req.resolve {
        let host = url::Url::parse(&req.url).map_err(|e| e.to_string())?.host_str().unwrap_or_default().to_string();
        client = client.resolve(&host, addr.parse().map_err(|e| format!("resolve {addr}: {e}"))?);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(req.ids.len());
    for id in &req.ids {
        let body = crate::relay::event_body_to(id, req.to.as_deref().unwrap_or("cust-1"));
        let sig = webhook_relay_util::signature::sign_genesys(req.secret.as_bytes(), body.as_bytes());
        let status = client
            .post(&req.url)
            .header("content-type", "application/json")
            .header(webhook_relay_util::signature::GENESYS_HEADER, sig)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        out.push((id.clone(), status));
    }
    Ok(out)
}

impl FakeGenesys {
    /// Starts the fake on `addr` with the control endpoints of a fake running as a process
    /// or pod: `PUT /control/integrations/{id}` (`{"webhookUrl": ...}`), `GET
    /// /control/receipts`, `GET /control/requests`, `POST /control/send` (a [`SendRequest`];
    /// answers [`SendResults`]) and `GET /healthz`.
    pub async fn start_controlled(addr: &str) -> Self {
        let fake = Arc::new(Fake::default());
        fake.integrations.lock().unwrap().insert(
            INTEGRATION_ID.to_owned(),
            integration_json(INTEGRATION_ID, "https://hooks.example.com/webhooks/genesys"),
        );
        let app = routes()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/control/integrations/{id}",
                axum::routing::put(|State(f): State<Arc<Fake>>, Path(id): Path<String>, axum::Json(v): axum::Json<Value>| async move {
                    let url = v["webhookUrl"].as_str().unwrap_or_default().to_string();
                    f.integrations.lock().unwrap().insert(id.clone(), integration_json(&id, &url));
                    StatusCode::NO_CONTENT
                }),
            )
            .route("/control/receipts", get(|State(f): State<Arc<Fake>>| async move { axum::Json(f.receipts.lock().unwrap().clone()) }))
            .route(
                "/control/requests",
                get(|State(f): State<Arc<Fake>>| async move {
                    let r = f.requests.lock().unwrap();
                    let n = |route| r.get(&route).copied().unwrap_or(0);
                    axum::Json(json!({"token": n(Route::Token), "integration": n(Route::Integration), "receipt": n(Route::Receipt)}))
                }),
            )
            .route(
                "/control/send",
                post(|axum::Json(req): axum::Json<SendRequest>| async move {
                    match send_events(&req).await {
                        Ok(results) => axum::Json(results).into_response(),
                        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
                    }
                }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base_url, fake, server, _runtime: None }
    }
}

async fn token(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(scripted) = fake.count(Route::Token) {
        return scripted;
    }
    let delay = *fake.token_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let grant = url::form_urlencoded::parse(&body).find(|(k, _)| k == "grant_type").map(|(_, v)| v.into_owned());
    if !form_encoded || grant.as_deref() != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type must be client_credentials");
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    if credentials.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    }
    let n = fake.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let access_token = format!("{TOKEN_PREFIX}{n}");
    let expires_in = *fake.expires_in.lock().unwrap();
    let lifetime = Duration::from_secs(expires_in.unwrap_or(86_400));
    fake.issued.lock().unwrap().insert(access_token.clone(), Instant::now() + lifetime);
    let mut body = json!({"access_token": access_token, "token_type": "bearer"});
    if let Some(seconds) = expires_in {
        body["expires_in"] = json!(seconds);
    }
    axum::Json(body).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "description": description, "error_description": description})))
        .into_response()
}

async fn integration(State(fake): State<Arc<Fake>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(scripted) = fake.count(Route::Integration) {
        return scripted;
    }
    if let Some(unauthorized) = fake.reject_bearer(&headers) {
        return unauthorized;
    }
    match fake.integrations.lock().unwrap().get(&id) {
        Some(found) => axum::Json(found.clone()).into_response(),
        None => not_found(&id),
    }
}

async fn receipt(State(fake): State<Arc<Fake>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(scripted) = fake.count(Route::Receipt) {
        return scripted;
    }
    let delay = *fake.receipt_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if let Some(unauthorized) = fake.reject_bearer(&headers) {
        return unauthorized;
    }
    if !fake.integrations.lock().unwrap().contains_key(&id) {
        return not_found(&id);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Ok(receipt) = serde_json::from_slice::<Value>(&body) else {
        return Scripted::status(400).into_response();
    };
    if !is_json {
        return Scripted::status(415).into_response();
    }
    fake.receipts.lock().unwrap().push((id, receipt.clone()));
    (StatusCode::ACCEPTED, axum::Json(receipt)).into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "message": format!("Open messaging integration {id} not found"),
            "code": "not.found",
            "status": 404,
            "contextId": "ctx-404"
        })),
    )
        .into_response()
}
