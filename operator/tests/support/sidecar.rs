//! The relay binary (`webhook-relay`, package webhook-relay-sidecar) as a process, fed the
//! config the operator rendered; and signed Genesys-style events to send it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/webhook-relay`, found next to this test executable as
/// `testkit::workspace_bin` does; fails saying how to build it.
pub fn relay_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary> -> target/<profile>/webhook-relay
    let p = exe.parent().unwrap().parent().unwrap().join("webhook-relay");
    assert!(
        p.is_file(),
        "{} not built: run `cargo build -p webhook-relay-sidecar --bin webhook-relay` first (make test does)",
        p.display()
    );
    p
}

/// The relay running as a child process; killed on drop (its log printed if the test failed).
pub struct RelayProcess {
    pub admin_port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    /// Runs `webhook-relay serve --config <relay.yaml>` with exactly `env` (plus `RUST_LOG`),
    /// and waits for `/healthz` on `admin_port`.
    pub fn start(relay_yaml: &str, env: &[(String, String)], admin_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.yaml");
        std::fs::write(&config, relay_yaml).unwrap();
        let log = dir.path().join("relay.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(relay_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn webhook-relay");
        let p = RelayProcess { admin_port, child: Some(child), log, _dir: dir };
        let start = Instant::now();
        while testkit::http_get_status(admin_port, "/healthz") != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "relay did not answer /healthz within 20s; log:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- relay log ---\n{}", self.log_text());
        }
    }
}

/// `sha256=<base64 HMAC-SHA256(secret, body)>`, the `X-Hub-Signature-256` Genesys sends:
/// the relay's own signing function, so tests and relay cannot disagree on the format.
#[allow(unused_imports)] // each test file compiles this module; only some sign events
pub use webhook_relay_sidecar::signature::sign_genesys;

/// A Genesys Open Messaging outbound message with id `id`.
pub fn event_body(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","channel":{{"platform":"Open","type":"Private","messageId":"{id}","to":{{"id":"cust-1","idType":"Opaque"}},"from":{{"id":"bot","idType":"Opaque"}},"time":"2026-11-30T08:00:00.000Z"}},"type":"Text","text":"hello","direction":"Outbound"}}"#
    )
}

/// `POST http://127.0.0.1:<port><path>` with `headers` and `body`; returns (status, body).
pub fn http_post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
