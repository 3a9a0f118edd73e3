//! Process-test support: the built `webhook-relay` binary as a child process, a scripted
//! downstream server, and a signed Genesys-style event sender. All on 127.0.0.1.

#![allow(dead_code)]

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{free_port, wait_until};

pub const SECRET: &str = "test-signing-secret-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// What the downstream answers for (event id, attempt number).
pub type Script = Arc<dyn Fn(&str, u32) -> (u16, Option<&'static str>) + Send + Sync>;

/// A downstream that answers per a script and records every request.
#[derive(Clone)]
pub struct Downstream {
    pub url: String,
    log: Arc<Mutex<Vec<Hit>>>,
}

/// One request the downstream saw.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub attempt: u32,
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: String,
}

#[derive(Clone)]
struct DsState {
    script: Script,
    delay: Duration,
    log: Arc<Mutex<Vec<Hit>>>,
}

impl Downstream {
    /// Starts a downstream on a free port; `delay` is added before each answer.
    pub async fn start(script: Script, delay: Duration) -> Self {
        let log: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let state = DsState { script, delay, log: log.clone() };
        let app = Router::new().route("/events", post(hit)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Downstream { url, log }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.log.lock().unwrap().clone()
    }

    /// Count of 2xx answers per event id.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for h in self.log.lock().unwrap().iter().filter(|h| (200..300).contains(&h.status)) {
            *m.entry(h.id.clone()).or_insert(0) += 1;
        }
        m
    }
}

async fn hit(State(s): State<DsState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let id = headers.get("x-relay-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let attempt = headers.get("x-relay-attempt").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let (status, retry_after) = (s.script)(&id, attempt);
    s.log.lock().unwrap().push(Hit { id, attempt, status, body: body.to_vec(), content_type });
    let mut r = (StatusCode::from_u16(status).unwrap(), "downstream says hi").into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

/// The relay binary running as a child process, killed on drop.
pub struct RelayProcess {
    pub intake: String,
    pub admin: String,
    pub listen_port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

/// Relay config for tests: Genesys signature scheme, the given downstream, and extra YAML
/// merged into `delivery:` (already indented by two spaces per line).
pub fn config(relay: &str, listen: u16, admin: u16, downstream: &str, delivery: &str) -> String {
    format!(
        r#"relay: {relay}
listen: 127.0.0.1:{listen}
adminListen: 127.0.0.1:{admin}
source:
  path: /webhooks/genesys
  verify: {{ scheme: genesys-open-messaging, secretEnv: RELAY_SIGNING_SECRET }}
  dedupWindow: 1h
destination:
  url: {downstream}
  timeout: 2s
delivery:
{delivery}
"#
    )
}

impl RelayProcess {
    /// Starts the relay with `yaml` (from [`config`]) against `redis_url`; waits for `/healthz`.
    pub fn start(yaml: &str, redis_url: &str, listen_port: u16, admin_port: u16) -> Self {
        Self::start_with_env(yaml, redis_url, listen_port, admin_port, &[])
    }

    /// Like [`start`](Self::start) with extra environment variables (e.g. Genesys credentials).
    pub fn start_with_env(
        yaml: &str,
        redis_url: &str,
        listen_port: u16,
        admin_port: u16,
        extra: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
        let mut env = vec![
            ("REDIS_URL".to_string(), redis_url.to_string()),
            ("RELAY_SIGNING_SECRET".to_string(), SECRET.to_string()),
            ("RELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log = dir.path().join("relay.log");
        let mut p = RelayProcess {
            intake: format!("http://127.0.0.1:{listen_port}/webhooks/genesys"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            listen_port,
            admin_port,
            dir,
            child: None,
            env,
            log,
        };
        p.spawn();
        p
    }

    /// Picks free ports and starts the relay.
    pub fn start_fresh(relay: &str, redis_url: &str, downstream: &str, delivery: &str) -> Self {
        let (l, a) = (free_port(), free_port());
        Self::start(&config(relay, l, a, downstream, delivery), redis_url, l, a)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_webhook-relay"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("relay.yaml"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn webhook-relay");
        self.child = Some(child);
        let port = self.admin_port;
        let ok = wait_until(Duration::from_secs(20), || testkit::http_get_status(port, "/healthz") == Some(200));
        assert!(ok, "relay did not answer /healthz within 20s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to release leases or finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the same binary again with the same config and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Genesys Open Messaging outbound event body with id `id`.
pub fn event_body(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","channel":{{"platform":"Open","type":"Private","messageId":"{id}","to":{{"id":"cust-1","idType":"Opaque"}},"from":{{"id":"bot","idType":"Opaque"}},"time":"2026-11-30T08:00:00.000Z"}},"type":"Text","text":"hello","direction":"Outbound"}}"#
    )
}

/// POSTs a signed event; returns (status, body) or an error string if the connection failed.
pub async fn send(client: &reqwest::Client, url: &str, id: &str) -> Result<(u16, String), String> {
    let body = event_body(id);
    let sig = webhook_relay_sidecar::signature::sign_genesys(SECRET.as_bytes(), body.as_bytes());
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.unwrap_or_default()))
}

/// Polls an async condition every 50 ms up to `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// Connects a store view on the same Redis, for checking what the relay wrote.
pub async fn store(redis_url: &str, relay: &str) -> webhook_relay_store::Store {
    let conn = webhook_relay_store::Conn::connect(&webhook_relay_store::ConnectOptions::new(redis_url)).await.unwrap();
    webhook_relay_store::Store::new(conn, relay)
}
