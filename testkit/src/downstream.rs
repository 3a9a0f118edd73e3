//! A downstream the relay delivers to: `POST /events` (any path, in fact) answered per a
//! script of (event id, attempt number), every request recorded. It runs inside the test's
//! runtime ([`Downstream::start`]) or on a runtime of its own for synchronous tests
//! ([`Downstream::start_blocking`]).

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the downstream answers for (event id, attempt): a status and an optional `Retry-After`.
pub type Script = Arc<dyn Fn(&str, u32) -> (u16, Option<&'static str>) + Send + Sync>;

/// Always `status`.
pub fn always(status: u16) -> Script {
    Arc::new(move |_, _| (status, None))
}

/// 503 with `Retry-After: 1` for the first `failures` attempts of every event, then 200.
pub fn ok_after(failures: u32) -> Script {
    Arc::new(move |_, attempt| if attempt <= failures { (503, Some("1")) } else { (200, None) })
}

/// `bad_status` for ids starting with `prefix`, 200 for the rest.
pub fn refuse_prefix(prefix: &'static str, bad_status: u16) -> Script {
    Arc::new(move |id, _| if id.starts_with(prefix) { (bad_status, None) } else { (200, None) })
}

/// A script as data, for the downstream running as its own process or pod
/// (`PUT /control/script`): the first rule whose prefix matches the event id decides, else
/// `status`; the first `failFirst` attempts of every event get 503 (without `Retry-After`,
/// which would pause the whole destination, not just that event).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScriptSpec {
    /// The answer when no rule matches (default 200).
    pub status: Option<u16>,
    pub rules: Vec<Rule>,
    pub fail_first: u32,
    /// Milliseconds to wait before answering each event (a slow downstream keeps
    /// deliveries in flight).
    pub delay_ms: u64,
}

/// `status` for event ids starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub prefix: String,
    pub status: u16,
}

impl ScriptSpec {
    /// The script this spec describes.
    pub fn script(&self) -> Script {
        let spec = self.clone();
        Arc::new(move |id, attempt| {
            if attempt <= spec.fail_first {
                return (503, None);
            }
            let status = spec.rules.iter().find(|r| id.starts_with(&r.prefix)).map(|r| r.status);
            (status.or(spec.status).unwrap_or(200), None)
        })
    }
}

/// One request the downstream saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hit {
    /// `X-Relay-Event-Id`.
    pub id: String,
    /// `X-Relay-Attempt`.
    pub attempt: u32,
    /// What it answered.
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Every request header, lower-case names.
    pub headers: Vec<(String, String)>,
    /// When it arrived, Unix ms (this host's clock).
    pub at_ms: i64,
    /// The address it came from (`127.0.0.1:<port>` from a relay in the same pod).
    #[serde(default)]
    pub peer: String,
}

impl Hit {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A request header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    delay: Arc<Mutex<Duration>>,
    log: Arc<Mutex<Vec<Hit>>>,
}

/// A running downstream; stops with the runtime it runs on.
pub struct Downstream {
    /// `http://<addr>/events`
    pub url: String,
    shared: Shared,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Downstream {
    /// Starts on 127.0.0.1, in the current runtime; `delay` is added before each answer.
    pub async fn start(script: Script, delay: Duration) -> Self {
        Self::start_on("127.0.0.1:0", script, delay).await
    }

    /// Starts on `addr` (e.g. an address pods of the test cluster reach).
    pub async fn start_on(addr: &str, script: Script, delay: Duration) -> Self {
        let shared =
            Shared { script: Arc::new(Mutex::new(script)), delay: Arc::new(Mutex::new(delay)), log: Arc::default() };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let app = Router::new().fallback(hit).with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        Downstream { url, shared, _runtime: None }
    }

    /// Starts on `addr` with the control endpoints of a downstream running as a process:
    /// `GET /control/hits` (every request so far, JSON), `PUT /control/script` (a
    /// [`ScriptSpec`]), `GET /healthz`. Every other request is an event.
    pub async fn start_controlled(addr: &str, spec: ScriptSpec) -> Self {
        let shared = Shared {
            script: Arc::new(Mutex::new(spec.script())),
            delay: Arc::new(Mutex::new(Duration::from_millis(spec.delay_ms))),
            log: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/control/hits",
                get(|State(s): State<Shared>| async move { axum::Json(s.log.lock().unwrap().clone()) }),
            )
            .route(
                "/control/script",
                axum::routing::put(|State(s): State<Shared>, axum::Json(spec): axum::Json<ScriptSpec>| async move {
                    *s.script.lock().unwrap() = spec.script();
                    *s.delay.lock().unwrap() = Duration::from_millis(spec.delay_ms);
                    StatusCode::NO_CONTENT
                }),
            )
            .fallback(hit)
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        Downstream { url, shared, _runtime: None }
    }

    /// Starts on a runtime of its own, for tests that are not async.
    pub fn start_blocking(addr: &str, script: Script) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut d = rt.block_on(Self::start_on(addr, script, Duration::ZERO));
        d._runtime = Some(rt);
        d
    }

    /// Replaces the script (a downstream that recovers, or starts failing).
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Count of 2xx answers per event id.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for h in self.shared.log.lock().unwrap().iter().filter(|h| (200..300).contains(&h.status)) {
            *m.entry(h.id.clone()).or_insert(0) += 1;
        }
        m
    }
}

async fn hit(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let id = value("x-relay-event-id");
    let attempt = value("x-relay-attempt").parse().unwrap_or(0);
    let content_type = value("content-type");
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let script = s.script.lock().unwrap().clone();
    let (status, retry_after) = script(&id, attempt);
    let all = headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let peer = peer.to_string();
    s.log.lock().unwrap().push(Hit {
        id,
        attempt,
        status,
        body: body.to_vec(),
        content_type,
        headers: all,
        at_ms,
        peer,
    });
    let mut r = (StatusCode::from_u16(status).unwrap(), "downstream says hi").into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

/// A downstream running elsewhere (a pod, a process) read and steered through its control
/// endpoints, from a synchronous test.
pub struct RemoteDownstream {
    pub host: String,
    pub port: u16,
}

impl RemoteDownstream {
    /// Every request it saw so far.
    pub fn hits(&self) -> Vec<Hit> {
        let r = crate::http::request(&self.host, self.port, "GET", "/control/hits", &[], "")
            .unwrap_or_else(|| panic!("downstream {}:{} did not answer", self.host, self.port));
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("hits: {e}: {}", r.body))
    }

    /// Count of 2xx answers per event id.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for h in self.hits().into_iter().filter(|h| (200..300).contains(&h.status)) {
            *m.entry(h.id).or_insert(0) += 1;
        }
        m
    }

    /// Replaces its script.
    pub fn set_script(&self, spec: &ScriptSpec) {
        let body = serde_json::to_string(spec).unwrap();
        let r = crate::http::request(
            &self.host,
            self.port,
            "PUT",
            "/control/script",
            &[("Content-Type", "application/json")],
            &body,
        );
        assert_eq!(r.map(|r| r.status), Some(204), "PUT /control/script");
    }
}
