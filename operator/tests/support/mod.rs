//! Cluster test support: the real control plane of `tests/control-plane/` through real
//! `kubectl`, the operator binary as a process, bounded waits. Each test gets its own
//! namespace and its own operator watching only that namespace.

#![allow(dead_code)]

pub mod servers;
pub mod sidecar;

use base64::Engine;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `KUBECONFIG` of the test control plane; fails the test with how to get one.
pub fn kubeconfig() -> String {
    match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() && Path::new(&k).is_file() => k,
        _ => panic!(
            "KUBECONFIG is not set (or not a file): these tests need the real control plane; \
             run tests/control-plane/up and export the KUBECONFIG it prints (make test does this)"
        ),
    }
}

fn kubectl_bin() -> PathBuf {
    if let Ok(k) = std::env::var("KUBECTL") {
        return k.into();
    }
    let p = root().join("target/control-plane/bin/kubectl");
    assert!(p.is_file(), "{} missing: run tests/control-plane/build (make test does)", p.display());
    p
}

/// Runs kubectl with `args` (and `stdin`), returning its output whatever the exit code.
pub fn kubectl_output(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kubectl_bin());
    cmd.env("KUBECONFIG", kubeconfig()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().expect("kubectl output")
}

/// Runs kubectl and fails the test unless it succeeds; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = kubectl_output(args, None);
    assert!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of `yaml` in `ns`.
pub fn apply_yaml(ns: &str, yaml: &str) {
    let out = kubectl_output(&["apply", "-n", ns, "-f", "-"], Some(yaml));
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

/// Polls `f` every 250 ms for up to [`WAIT`]; fails with `what` if it never yields.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A test namespace with a unique name, deleted on drop.
pub struct Namespace(pub String);

impl Namespace {
    pub fn create(prefix: &str) -> Self {
        // The CRD is cluster-wide and idempotent to apply; every test makes sure it is there.
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", root().join("crds").to_str().unwrap()]);
        kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/webhookrelays.webhookrelay.dev"]);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xfffff);
        kubectl(&["create", "namespace", &name]);
        Namespace(name)
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = kubectl_output(&["get", "-n", &self.0, kind, name, "-o", "json"], None);
        if out.status.success() {
            Some(serde_json::from_slice(&out.stdout).expect("kubectl json"))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("NotFound") || err.contains("not found"), "kubectl get {kind} {name}: {err}");
            None
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    /// A condition of a WebhookRelay: (status, reason, message).
    pub fn condition(&self, relay: &str, type_: &str) -> Option<(String, String, String)> {
        let r = self.get("webhookrelay", relay)?;
        let c = r["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        Some((s("status"), s("reason"), s("message")))
    }

    /// Waits until condition `type_` of `relay` has `status` (and `reason`, if given).
    pub fn wait_condition(
        &self,
        relay: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> (String, String, String) {
        let start = Instant::now();
        loop {
            let last = self.condition(relay, type_);
            if let Some(c) = &last
                && c.0 == status
                && reason.is_none_or(|want| c.1 == want)
            {
                return c.clone();
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for {relay} {type_}={status} {reason:?}; last seen: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The event reasons recorded for `relay`.
    pub fn event_reasons(&self, relay: &str) -> Vec<String> {
        let out = self.kubectl(&["get", "events", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["involvedObject"]["name"] == relay && e["involvedObject"]["kind"] == "WebhookRelay")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The value of `key` in Secret `name`, read through the API.
    pub fn secret_value(&self, name: &str, key: &str) -> String {
        let s = self.get("secret", name).unwrap_or_else(|| panic!("Secret {name} missing"));
        let b64 = s["data"][key].as_str().unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
    }

    /// `kubectl get whr <relay> -o jsonpath=<path>`.
    pub fn jsonpath(&self, relay: &str, path: &str) -> String {
        self.kubectl(&["get", "whr", relay, "-o", &format!("jsonpath={path}")])
    }

    /// All events of the namespace as text (to check for leaked secrets).
    pub fn events_text(&self) -> String {
        self.kubectl(&["get", "events", "-o", "json"])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

/// Applies the example Secrets into `ns`, with the Redis URL pointed at `redis_url`.
pub fn example_secrets(ns: &Namespace, redis_url: &str) {
    let yaml = std::fs::read_to_string(root().join("examples/secrets.yaml")).unwrap();
    apply_yaml(&ns.0, &yaml);
    let patch = serde_json::json!({ "stringData": { "url": redis_url } }).to_string();
    ns.kubectl(&["patch", "secret", "relay-redis", "--type", "merge", "-p", &patch]);
}

/// Reads an example file.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(root().join("examples").join(name)).unwrap()
}

/// The operator binary running as a process against the test control plane; killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub metrics_port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

pub const TEST_IMAGE: &str = "registry.test/webhook-relay:test";

impl Operator {
    /// Starts `webhook-relay-operator run` watching `ns`, with a short status refresh.
    pub fn start(ns: &str, extra: &[&str]) -> Self {
        Self::start_as(ns, &kubeconfig(), extra)
    }

    /// Like [`start`](Self::start), with the credentials of `kubeconfig`.
    pub fn start_as(ns: &str, kubeconfig: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let metrics_port = testkit::free_port();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_webhook-relay-operator"))
            .args(["run", "--namespace", ns, "--refresh", "2s", "--relay-image", TEST_IMAGE])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,webhook_relay_operator=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn webhook-relay-operator");
        let op = Operator { child: Some(child), metrics_port, log, dir };
        wait_for("operator /healthz", || op.http_get("/healthz").filter(|b| b.contains("ok")));
        op
    }

    /// `GET path` on the operator's metrics address; the body on 200.
    pub fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// A scratch directory that lives as long as the operator.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log (last 60 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A kubeconfig for ServiceAccount `sa` in `ns` (a TokenRequest token), written under `dir`.
pub fn service_account_kubeconfig(ns: &str, sa: &str, dir: &Path) -> String {
    let token = kubectl(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    let server = kubectl(&["config", "view", "--raw", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let ca = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: '{server}', certificate-authority-data: '{ca}'}}\n\
         users:\n- name: sa\n  user: {{token: '{}'}}\ncontexts:\n- name: sa\n  context: {{cluster: test, user: sa, namespace: {ns}}}\n\
         current-context: sa\n",
        token.trim()
    );
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Cluster-scoped objects made by a test, deleted on drop.
pub struct ClusterObjects(pub Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for o in &self.0 {
            let _ = kubectl_output(&["delete", o, "--ignore-not-found", "--wait=false"], None);
        }
    }
}
