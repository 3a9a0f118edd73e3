//! The built `webhook-relay` binary as a child process, the test config it runs with, and
//! signed Genesys Open Messaging events to send it.

use crate::process::{ChildProcess, free_port, workspace_bin};
use crate::wait::wait_until;
use std::process::Command;
use std::time::Duration;

/// The webhook signing secret of the test config (`RELAY_SIGNING_SECRET`).
pub const SECRET: &str = "test-signing-secret-0123456789";
/// The admin token of the test relays (`RELAY_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A Genesys Open Messaging outbound event body with id `id`.
pub fn event_body(id: &str) -> String {
    event_body_to(id, "cust-1")
}

/// The same for the conversation of customer `to` (`channel.to.id`).
pub fn event_body_to(id: &str, to: &str) -> String {
    format!(
        r#"{{"id":"{id}","channel":{{"platform":"Open","type":"Private","messageId":"{id}","to":{{"id":"{to}","idType":"Opaque"}},"from":{{"id":"bot","idType":"Opaque"}},"time":"2026-11-30T08:00:00.000Z"}},"type":"Text","text":"hello","direction":"Outbound"}}"#
    )
}

/// `X-Hub-Signature-256` of `body` under [`SECRET`], as Genesys signs.
pub fn sign(body: &str) -> String {
    webhook_relay_util::signature::sign_genesys(SECRET.as_bytes(), body.as_bytes())
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

/// POSTs a signed event with id `id`; returns (status, body), or why the request failed.
pub async fn send(client: &reqwest::Client, url: &str, id: &str) -> Result<(u16, String), String> {
    send_body(client, url, &event_body(id)).await
}

/// POSTs `body` signed under [`SECRET`]; returns (status, body), or why the request failed.
pub async fn send_body(client: &reqwest::Client, url: &str, body: &str) -> Result<(u16, String), String> {
    send_with_headers(client, url, body, &[]).await.map(|a| (a.status, a.body))
}

/// An answer of the relay's intake: status, headers, body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// POSTs `body` signed under [`SECRET`] with `headers` added (a `traceparent`, say);
/// returns the whole answer, or why the request failed.
pub async fn send_with_headers(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut r = client.post(url).header("content-type", "application/json").header("x-hub-signature-256", sign(body));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.body(body.to_string()).timeout(Duration::from_secs(10)).send().await.map_err(|e| e.to_string())?;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Ok(Answer { status, headers, body: r.text().await.unwrap_or_default() })
}

/// The relay binary running as a child process, killed on drop.
pub struct RelayProcess {
    /// `http://127.0.0.1:<listen>/webhooks/genesys`
    pub intake: String,
    /// `http://127.0.0.1:<admin>`
    pub admin: String,
    pub listen_port: u16,
    pub admin_port: u16,
    process: ChildProcess,
    env: Vec<(String, String)>,
    clear_env: bool,
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
        let mut env = vec![
            ("REDIS_URL".to_string(), redis_url.to_string()),
            ("RELAY_SIGNING_SECRET".to_string(), SECRET.to_string()),
            ("RELAY_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::launch(yaml, env, false, listen_port, admin_port)
    }

    /// Picks free ports and starts the relay with the test config.
    pub fn start_fresh(relay: &str, redis_url: &str, downstream: &str, delivery: &str) -> Self {
        let (l, a) = (free_port(), free_port());
        Self::start(&config(relay, l, a, downstream, delivery), redis_url, l, a)
    }

    /// Runs `yaml` with exactly the environment `env` and nothing else (what a pod would get).
    pub fn start_exact(yaml: &str, env: &[(String, String)], listen_port: u16, admin_port: u16) -> Self {
        Self::launch(yaml, env.to_vec(), true, listen_port, admin_port)
    }

    fn launch(yaml: &str, env: Vec<(String, String)>, clear_env: bool, listen_port: u16, admin_port: u16) -> Self {
        let dir = ChildProcess::prepare(&[("relay.yaml", yaml)]);
        let cmd = Self::command(dir.path(), &env, clear_env);
        let mut p = RelayProcess {
            intake: format!("http://127.0.0.1:{listen_port}/webhooks/genesys"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            listen_port,
            admin_port,
            process: ChildProcess::spawn("relay", dir, cmd),
            env,
            clear_env,
        };
        p.wait_healthy();
        p
    }

    fn command(dir: &std::path::Path, env: &[(String, String)], clear_env: bool) -> Command {
        let mut cmd = Command::new(workspace_bin("webhook-relay"));
        cmd.args(["serve", "--config"]).arg(dir.join("relay.yaml"));
        if clear_env {
            cmd.env_clear();
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env("RUST_LOG", "info");
        cmd
    }

    fn wait_healthy(&mut self) {
        let port = self.admin_port;
        let ok = wait_until(Duration::from_secs(20), || crate::http::get_status(port, "/healthz") == Some(200));
        assert!(ok, "relay did not answer /healthz within 20s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.process.log_path()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no chance to release leases or finish anything.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.terminate(limit)
    }

    /// Waits (bounded) for it to exit by itself, e.g. after a signal sent meanwhile.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(limit)
    }

    /// Starts the same binary again with the same config and ports.
    pub fn restart(&mut self) {
        let cmd = Self::command(self.process.dir(), &self.env, self.clear_env);
        self.process.respawn(cmd);
        self.wait_healthy();
    }

    /// The `/metrics` text of its admin listener.
    pub fn metrics(&self) -> String {
        crate::http::get(self.admin_port, "/metrics").map(|r| r.body).unwrap_or_default()
    }

    /// The sum of every `/metrics` series whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_sum(&self.metrics(), prefix)
    }
}

/// The sum of every series of a Prometheus text `body` whose line starts with `prefix`.
pub fn metric_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// One series of a Prometheus text body: its line (for its labels) and its value.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    line: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name` (empty when the series has none).
    pub fn label(&self, name: &str) -> &str {
        self.line.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("")
    }
}

/// Every series of family `name` with labels (`name{...} value`) in a Prometheus text body.
pub fn samples<'a>(body: &'a str, name: &str) -> impl Iterator<Item = Sample<'a>> {
    let prefix = format!("{name}{{");
    body.lines()
        .filter(move |l| l.starts_with(&prefix))
        .map(|line| Sample { line, value: line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0) })
}

/// A store view of relay `relay` on the Redis at `redis_url`, to check what the relay wrote.
#[cfg(feature = "store")]
pub async fn store(redis_url: &str, relay: &str) -> webhook_relay_store::Store {
    use webhook_relay_store::{Conn, ConnectOptions, Store};
    Store::new(Conn::connect(&ConnectOptions::new(redis_url)).await.expect("connect to redis"), relay)
}
