//! Real `redis-server` processes on loopback ports: a single server with AOF on (plain or
//! TLS-only), or a 3-node Redis Cluster. Each lives in a temp dir and is killed on drop. A
//! missing `redis-server` fails the test with a message saying how to get one.

use crate::process::{free_port, output_within};
use crate::tls;
use crate::wait::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOW_TO_GET_REDIS: &str =
    "redis-server/redis-cli not found on PATH: run `make test` (installs them), or `apt-get install -y redis-server`";

fn redis_binary(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/local/bin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{HOW_TO_GET_REDIS}");
}

/// TLS settings of a test server: its certificate, the CA, whether clients must present one.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub server: tls::CertFiles,
    /// A client certificate for redis-cli (and tests) when clients must present one.
    pub client: tls::CertFiles,
    pub require_client_cert: bool,
}

impl ServerTls {
    /// Certificates from `ca` for a server on 127.0.0.1.
    pub fn new(ca: &tls::Ca, require_client_cert: bool) -> Self {
        ServerTls { ca: ca.cert(), server: ca.server("redis"), client: ca.client("redis-cli"), require_client_cert }
    }

    fn cli_args(&self) -> Vec<String> {
        let mut a = vec!["--tls".to_string(), "--cacert".to_string(), self.ca.display().to_string()];
        a.extend(["--cert".into(), self.client.cert.display().to_string()]);
        a.extend(["--key".into(), self.client.key.display().to_string()]);
        a
    }
}

fn redis_cli_tls(port: u16, tls: Option<&ServerTls>, args: &[&str]) -> Result<String, String> {
    redis_cli_at("127.0.0.1", port, tls, args)
}

fn redis_cli_at(host: &str, port: u16, tls: Option<&ServerTls>, args: &[&str]) -> Result<String, String> {
    let out = Command::new(redis_binary("redis-cli"))
        .args(["-h", host, "-p", &port.to_string()])
        .args(tls.map(|t| t.cli_args()).unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !text.starts_with("ERR") && !text.starts_with("Could not connect") {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// One `redis-server` process with AOF on, in its own temp dir, killed on drop.
pub struct RedisServer {
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`RedisServer::start_bound`]).
    pub host: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    tls: Option<ServerTls>,
}

impl RedisServer {
    /// Starts a standalone server with `appendonly yes` and `noeviction`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a replica of `primary` and waits until it has synced (`master_link_status:up`).
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let replica = Self::start_with(&["--replicaof", &primary.host, &primary.port.to_string()]);
        let linked = crate::wait::wait_until(std::time::Duration::from_secs(15), || {
            replica.cli(&["INFO", "replication"]).contains("master_link_status:up")
        });
        assert!(
            linked,
            "the replica did not sync with {}:{}: {}",
            primary.host,
            primary.port,
            replica.cli(&["INFO", "replication"])
        );
        replica
    }

    /// Starts a server with extra `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_tls_with(None, extra)
    }

    /// Starts a TLS-only server (`--port 0 --tls-port <port>`) with the certificates of `tls`.
    pub fn start_tls_with(tls: Option<ServerTls>, extra: &[&str]) -> Self {
        Self::start_full("127.0.0.1", tls, extra)
    }

    /// Starts a server listening on `host` (an address pods of the test cluster reach, say).
    pub fn start_bound(host: &str, extra: &[&str]) -> Self {
        Self::start_full(host, None, extra)
    }

    fn start_full(host: &str, tls: Option<ServerTls>, extra: &[&str]) -> Self {
        let mut s = RedisServer {
            port: free_port(),
            host: host.to_string(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        s.spawn();
        s
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}/", self.host, self.port)
    }

    /// The data dir (AOF, RDB, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().unwrap().to_string();
        let mut args: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port.clone()],
            Some(t) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.clone(),
                "--tls-cert-file".into(),
                t.server.cert.display().to_string(),
                "--tls-key-file".into(),
                t.server.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                t.ca.display().to_string(),
                "--tls-auth-clients".into(),
                (if t.require_client_cert { "yes" } else { "no" }).into(),
            ],
        };
        args.extend(
            [
                "--bind",
                self.host.as_str(),
                "--dir",
                &dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "redis.log",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(self.extra.iter().cloned());
        let child = Command::new(redis_binary("redis-server"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server: {e}; {HOW_TO_GET_REDIS}"));
        self.child = Some(child);
        let port = self.port;
        let tls = self.tls.clone();
        let host = self.host.clone();
        assert!(
            wait_until(Duration::from_secs(10), || redis_cli_at(&host, port, tls.as_ref(), &["PING"])
                .is_ok_and(|s| s == "PONG")),
            "redis-server on port {port} did not answer PING within 10s; log: {}",
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    /// Runs a redis-cli command against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli_at(&self.host, self.port, self.tls.as_ref(), args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// Kills the server with SIGKILL (no final AOF fsync beyond `everysec`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server the polite way (`SHUTDOWN`), which flushes the AOF.
    pub fn stop(&mut self) {
        let _ = redis_cli_at(&self.host, self.port, self.tls.as_ref(), &["SHUTDOWN"]);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data dir (the AOF is reloaded).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the server again after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback (no replicas), killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled yes` servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        Self::start_tls(None)
    }

    /// Like [`start`](Self::start), TLS-only (the cluster bus too) when `tls` is given.
    pub fn start_tls(tls: Option<ServerTls>) -> Self {
        let mut extra = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
        if tls.is_some() {
            extra.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_tls_with(tls.clone(), &extra)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = tls.as_ref().map(|t| t.cli_args()).unwrap_or_default();
        args.extend(["--cluster".to_string(), "create".to_string()]);
        args.extend(addrs.iter().cloned());
        args.extend(["--cluster-replicas".into(), "0".into(), "--cluster-yes".into()]);
        let out = output_within(Command::new(redis_binary("redis-cli")).args(&args), Duration::from_secs(60))
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let first = nodes[0].port;
        assert!(
            wait_until(Duration::from_secs(30), || {
                redis_cli_tls(first, tls.as_ref(), &["CLUSTER", "INFO"]).is_ok_and(|s| s.contains("cluster_state:ok"))
            }),
            "redis cluster did not reach cluster_state:ok within 30s"
        );
        RedisCluster { nodes }
    }

    /// `redis://127.0.0.1:<port>/` of every node (seed URLs for the cluster client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...` — the relay's cluster URL form
    /// (`rediss+cluster://` for a TLS cluster).
    pub fn cluster_url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let scheme = if self.nodes[0].tls.is_some() { "rediss+cluster" } else { "redis+cluster" };
        format!("{scheme}://{}", hosts.join(","))
    }
}

/// A single server or a 3-node cluster, for tests that run each scenario on both; keeps
/// the servers alive while it lives.
pub enum RedisBackend {
    Single(Box<RedisServer>),
    Cluster(RedisCluster),
}

impl RedisBackend {
    /// Starts a cluster when `cluster`, else one server.
    pub fn start(cluster: bool) -> Self {
        if cluster {
            RedisBackend::Cluster(RedisCluster::start())
        } else {
            RedisBackend::Single(Box::new(RedisServer::start()))
        }
    }

    /// The URL a client connects with (`redis+cluster://` for the cluster).
    pub fn url(&self) -> String {
        match self {
            RedisBackend::Single(s) => s.url(),
            RedisBackend::Cluster(c) => c.cluster_url(),
        }
    }
}
