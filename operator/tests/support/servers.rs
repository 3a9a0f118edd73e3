//! HTTP servers the cluster tests talk to, on 127.0.0.1, each with a runtime of its own
//! (the tests themselves are synchronous): a fake Genesys Cloud following the documented
//! API, and a scripted downstream for the relay to deliver to.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

/// OAuth client the fake Genesys accepts.
pub const CLIENT_ID: &str = "relay-oauth-client";
/// Its secret; tests check it appears in no status, event or log.
pub const CLIENT_SECRET: &str = "oauth-s3cret-VALUE-never-printed";
/// Prefix of the access tokens the fake issues (also checked not to leak).
pub const TOKEN_PREFIX: &str = "fake-access-token-";

fn serve(app: Router) -> (String, Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, rt)
}

#[derive(Default)]
struct Genesys {
    /// Integration id -> its outbound notification webhook URL.
    integrations: Mutex<HashMap<String, String>>,
    tokens: Mutex<HashSet<String>>,
    token_requests: AtomicUsize,
    lookups: AtomicUsize,
    receipts: Mutex<Vec<(String, Value)>>,
}

/// A fake Genesys Cloud: `POST /oauth/token` (Basic client credentials, form
/// `grant_type=client_credentials`; anything else is 401 `invalid_client`),
/// `GET /api/v2/conversations/messaging/integrations/open/{id}` (Bearer; 404 for an
/// unknown id) and `POST /api/v2/conversations/messages/{id}/inbound/open/receipt` (Bearer).
/// Stops when dropped.
pub struct FakeGenesys {
    /// `http://127.0.0.1:<port>`, for `apiBaseUrl` and `loginBaseUrl`.
    pub base_url: String,
    state: Arc<Genesys>,
    _rt: Runtime,
}

impl FakeGenesys {
    pub fn start() -> Self {
        let state = Arc::new(Genesys::default());
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v2/conversations/messaging/integrations/open/{id}", get(integration))
            .route("/api/v2/conversations/messages/{id}/inbound/open/receipt", post(receipt))
            .with_state(state.clone());
        let (base_url, rt) = serve(app);
        FakeGenesys { base_url, state, _rt: rt }
    }

    /// Creates or changes integration `id`, posting outbound messages to `webhook_url`.
    pub fn set_integration(&self, id: &str, webhook_url: &str) {
        self.state.integrations.lock().unwrap().insert(id.into(), webhook_url.into());
    }

    /// Integration lookups answered (any status).
    pub fn lookups(&self) -> usize {
        self.state.lookups.load(Ordering::SeqCst)
    }

    /// Token requests answered (any status).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Receipts accepted: (integration id, body).
    pub fn receipts(&self) -> Vec<(String, Value)> {
        self.state.receipts.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn token(State(g): State<Arc<Genesys>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = g.token_requests.fetch_add(1, Ordering::SeqCst);
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let grant: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !form.starts_with("application/x-www-form-urlencoded")
        || grant != [("grant_type".into(), "client_credentials".into())]
    {
        return error(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"}));
    }
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "description": "client authentication failed"}),
        );
    }
    let token = format!("{TOKEN_PREFIX}{n}");
    g.tokens.lock().unwrap().insert(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "bearer", "expires_in": 86400})).into_response()
}

fn bearer_ok(g: &Genesys, headers: &HeaderMap) -> bool {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    token.is_some_and(|t| g.tokens.lock().unwrap().contains(t))
}

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        json!({"message": "authentication required", "code": "authentication.required", "status": 401}),
    )
}

async fn integration(State(g): State<Arc<Genesys>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    g.lookups.fetch_add(1, Ordering::SeqCst);
    if !bearer_ok(&g, &headers) {
        return unauthenticated();
    }
    let Some(url) = g.integrations.lock().unwrap().get(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"message": format!("integration {id} not found"), "code": "not.found", "status": 404}),
        );
    };
    axum::Json(json!({
        "id": id,
        "name": "orders relay",
        "outboundNotificationWebhookUrl": url,
        "webhookHeaders": {},
        "status": "Active",
        "createStatus": "Completed"
    }))
    .into_response()
}

async fn receipt(State(g): State<Arc<Genesys>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if !bearer_ok(&g, &headers) {
        return unauthenticated();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, json!({"message": "not JSON", "code": "bad.request", "status": 400}));
    };
    g.receipts.lock().unwrap().push((id, v));
    (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
}

/// One request the downstream saw: event id (`X-Relay-Event-Id`), status answered, body.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub status: u16,
    pub body: String,
}

/// A downstream at `POST /events` answering per `script(event id)`, recording every request.
pub struct Downstream {
    /// `http://127.0.0.1:<port>/events`
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    _rt: Runtime,
}

type Script = fn(&str) -> u16;

impl Downstream {
    pub fn start(script: Script) -> Self {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let app = Router::new().route("/events", post(deliver)).with_state((script, hits.clone()));
        let (base, rt) = serve(app);
        Downstream { url: format!("{base}/events"), hits, _rt: rt }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn deliver(
    State((script, hits)): State<(Script, Arc<Mutex<Vec<Hit>>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = headers.get("x-relay-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let status = script(&id);
    hits.lock().unwrap().push(Hit { id, status, body: String::from_utf8_lossy(&body).into_owned() });
    StatusCode::from_u16(status).unwrap()
}
