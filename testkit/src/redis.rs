//! Real `redis-server` processes on loopback ports: a single server with AOF on (plain or
//! TLS-only, optionally a replica of another), a 3-node Redis Cluster (or 3 primaries with a
//! replica each, for failovers), and three Redis Sentinels watching a primary. Each lives
//! in a temp dir and is killed on drop. A missing `redis-server` fails the test with a
//! message saying how to get one.

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

/// A Redis Cluster on loopback, killed on drop: 3 primaries, with or without one replica each.
pub struct RedisCluster {
    /// Every node as started: `--cluster create` decides which are primaries (see
    /// [`primary_of`](Self::primary_of)); a failover changes it.
    pub nodes: Vec<RedisServer>,
}

/// The cluster bus timeout of [`RedisCluster::start_with_replicas`]: a primary is failed over
/// this long (plus an election, ~1 s) after it stops answering.
pub const FAILOVER_NODE_TIMEOUT_MS: u32 = 1500;

impl RedisCluster {
    /// Starts three `--cluster-enabled yes` servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> Self {
        Self::start_tls(None)
    }

    /// Like [`start`](Self::start), TLS-only (the cluster bus too) when `tls` is given.
    pub fn start_tls(tls: Option<ServerTls>) -> Self {
        Self::create(tls, 0, 5000)
    }

    /// Six servers, `--cluster-replicas 1`: 3 primaries with one replica each, and a cluster
    /// node timeout of [`FAILOVER_NODE_TIMEOUT_MS`] so a killed primary's replica takes over
    /// within seconds (and `repl-diskless-sync-delay 0`, so a node that rejoins syncs at
    /// once). Returns once the cluster is ok and every replica is in sync.
    pub fn start_with_replicas() -> Self {
        Self::create(None, 1, FAILOVER_NODE_TIMEOUT_MS)
    }

    fn create(tls: Option<ServerTls>, replicas: usize, node_timeout_ms: u32) -> Self {
        let timeout = node_timeout_ms.to_string();
        let mut extra = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", &timeout];
        if replicas > 0 {
            // A replica's full sync starts at once, not after the 5 s that diskless sync
            // waits by default for more replicas to share it.
            extra.extend(["--repl-diskless-sync-delay", "0"]);
        }
        if tls.is_some() {
            extra.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count).map(|_| RedisServer::start_tls_with(tls.clone(), &extra)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = tls.as_ref().map(|t| t.cli_args()).unwrap_or_default();
        args.extend(["--cluster".to_string(), "create".to_string()]);
        args.extend(addrs.iter().cloned());
        args.extend(["--cluster-replicas".into(), replicas.to_string(), "--cluster-yes".into()]);
        let out = output_within(Command::new(redis_binary("redis-cli")).args(&args), Duration::from_secs(60))
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        if replicas == 0 {
            let first = cluster.nodes[0].port;
            assert!(
                wait_until(Duration::from_secs(30), || {
                    redis_cli_tls(first, tls.as_ref(), &["CLUSTER", "INFO"])
                        .is_ok_and(|s| s.contains("cluster_state:ok"))
                }),
                "redis cluster did not reach cluster_state:ok within 30s"
            );
        } else {
            cluster.wait_replicated(Duration::from_secs(30));
        }
        cluster
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

    /// Runs redis-cli against node `i`; an error when it is down or refuses.
    pub fn cli_at(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let n = &self.nodes[i];
        redis_cli_at(&n.host, n.port, n.tls.as_ref(), args)
    }

    /// Indexes of the nodes whose process runs (not [`kill_node`](Self::kill_node)ed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].pid().is_some()).collect()
    }

    /// The index in [`nodes`](Self::nodes) of the node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The cluster as node `i` sees it (`CLUSTER NODES`).
    pub fn view(&self, i: usize) -> Result<Vec<ClusterNode>, String> {
        self.cli_at(i, &["CLUSTER", "NODES"]).map(|t| ClusterNode::parse_all(&t))
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of a running node).
    pub fn keyslot(&self, key: &str) -> u16 {
        let i = *self.running().first().expect("no node of the cluster runs");
        let out = self.cli_at(i, &["CLUSTER", "KEYSLOT", key]).unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        out.trim().parse().unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} answered {out:?}"))
    }

    /// The node that every running node agrees is the primary serving `slot`, not failed:
    /// its index, or why there is none (yet).
    pub fn slot_primary(&self, slot: u16) -> Result<usize, String> {
        let mut owner = None;
        for i in self.running() {
            let view = self.view(i).map_err(|e| format!("node {}: {e}", self.nodes[i].port))?;
            let primaries: Vec<&ClusterNode> =
                view.iter().filter(|n| n.is_primary() && !n.is_failed() && n.serves(slot)).collect();
            let [p] = &primaries[..] else {
                return Err(format!("node {} sees {} primaries of slot {slot}", self.nodes[i].port, primaries.len()));
            };
            match owner {
                None => owner = Some(p.port),
                Some(o) if o == p.port => {}
                Some(o) => {
                    return Err(format!(
                        "nodes disagree on slot {slot}: {o} and {} (node {})",
                        p.port, self.nodes[i].port
                    ));
                }
            }
        }
        let port = owner.ok_or("no node runs")?;
        self.index_of_port(port).ok_or_else(|| format!("slot {slot} is served by {port}, not a node of this cluster"))
    }

    /// The index of the primary serving `key`'s slot; panics if the nodes do not agree on one.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = self.keyslot(key);
        self.slot_primary(slot).unwrap_or_else(|e| panic!("the primary of {key} (slot {slot}): {e}"))
    }

    /// The indexes of the replicas of node `primary`, as that node's view has them.
    pub fn replicas_of(&self, primary: usize) -> Vec<usize> {
        let view = self.view(primary).unwrap_or_else(|e| panic!("CLUSTER NODES of {}: {e}", self.nodes[primary].port));
        let id = &view.iter().find(|n| n.myself()).expect("a view without myself").id;
        view.iter().filter(|n| n.primary_id.as_ref() == Some(id)).filter_map(|n| self.index_of_port(n.port)).collect()
    }

    /// SIGKILL of node `i` (no final fsync, no goodbye on the cluster bus).
    pub fn kill_node(&mut self, i: usize) {
        assert!(self.nodes[i].pid().is_some(), "node {} is not running", self.nodes[i].port);
        self.nodes[i].kill();
    }

    /// Waits (up to `limit`) until every running node says `cluster_state:ok` and agrees
    /// that a running node other than `old` serves `key`'s slot as primary: a replica was
    /// promoted. Returns the new primary's index.
    pub fn wait_failover(&self, key: &str, old: usize, limit: Duration) -> usize {
        let slot = self.keyslot(key);
        let mut last = String::new();
        let mut promoted = None;
        let done = wait_until(limit, || {
            if let Some(bad) = self.running().into_iter().find(|i| !self.cluster_ok(*i)) {
                last = format!("node {} is not cluster_state:ok", self.nodes[bad].port);
                return false;
            }
            match self.slot_primary(slot) {
                Ok(p) if p != old && self.nodes[p].pid().is_some() => {
                    promoted = Some(p);
                    true
                }
                Ok(p) => {
                    last = format!("slot {slot} still served by {}", self.nodes[p].port);
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        let view = self.running().first().map(|i| self.cli_at(*i, &["CLUSTER", "NODES"])).unwrap_or(Ok(String::new()));
        assert!(
            done,
            "no failover of slot {slot} away from {} within {limit:?}: {last}; CLUSTER NODES:\n{}",
            self.nodes[old].port,
            view.unwrap_or_else(|e| e)
        );
        promoted.expect("set when done")
    }

    /// Starts node `i` again on its port and data dir (its `nodes.conf` too): a primary
    /// that was failed over rejoins as a replica of the one promoted in its place. Returns
    /// once every primary has a replica in sync again (bounded by `limit`).
    pub fn restart_node(&mut self, i: usize, limit: Duration) {
        self.nodes[i].start_again();
        self.wait_replicated(limit);
    }

    /// Waits (up to `limit`) until every running node says `cluster_state:ok`, every running
    /// primary has a replica `state=online`, every running replica's link is up, and every
    /// running node's `CLUSTER NODES` shows each primary with a replica that is not failed.
    pub fn wait_replicated(&self, limit: Duration) {
        let mut last = String::new();
        let done = wait_until(limit, || match self.replication_problem() {
            Some(p) => {
                last = p;
                false
            }
            None => true,
        });
        assert!(done, "the cluster's replicas were not in sync within {limit:?}: {last}");
    }

    fn cluster_ok(&self, i: usize) -> bool {
        self.cli_at(i, &["CLUSTER", "INFO"]).is_ok_and(|s| s.contains("cluster_state:ok"))
    }

    fn replication_problem(&self) -> Option<String> {
        for i in self.running() {
            let port = self.nodes[i].port;
            if !self.cluster_ok(i) {
                return Some(format!("node {port} is not cluster_state:ok"));
            }
            let info = match self.cli_at(i, &["INFO", "replication"]) {
                Ok(info) => info,
                Err(e) => return Some(format!("INFO replication of {port}: {e}")),
            };
            let in_sync = if info.contains("role:master") {
                info.lines().any(|l| l.starts_with("slave") && l.contains("state=online"))
            } else {
                info.contains("master_link_status:up")
            };
            if !in_sync {
                return Some(format!("node {port}: {}", info.replace("\r\n", " ").replace('\n', " ")));
            }
            // The bus spreads a node's new role after its replication link is up: wait
            // until this node's view, too, gives every primary a replica that is not failed.
            let view = match self.view(i) {
                Ok(view) => view,
                Err(e) => return Some(format!("CLUSTER NODES of {port}: {e}")),
            };
            let serving = view.iter().filter(|n| n.is_primary() && !n.is_failed() && !n.slots.is_empty());
            for p in serving {
                let replicated = view.iter().any(|r| r.primary_id.as_ref() == Some(&p.id) && !r.is_failed());
                if !replicated {
                    return Some(format!("node {port} sees no live replica of primary {}", p.port));
                }
            }
        }
        None
    }
}

/// One line of `CLUSTER NODES`: a node as another node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, ...
    pub flags: Vec<String>,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// Parses the output of `CLUSTER NODES`, skipping lines it cannot read.
    pub fn parse_all(text: &str) -> Vec<ClusterNode> {
        text.lines().filter_map(Self::parse).collect()
    }

    /// `<id> <ip:port@cport[,host]> <flags> <primary|-> <ping> <pong> <epoch> <link> <slot>...`
    fn parse(line: &str) -> Option<ClusterNode> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let addr = f[1].split(['@', ',']).next()?;
        let port = addr.rsplit_once(':')?.1.parse().ok()?;
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(ClusterNode {
            id: f[0].to_string(),
            port,
            flags: f[2].split(',').map(str::to_string).collect(),
            primary_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
        })
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn is_primary(&self) -> bool {
        self.has("master")
    }

    /// Marked failed (`fail`) or suspected (`fail?`) by the node whose view this is.
    pub fn is_failed(&self) -> bool {
        self.has("fail") || self.has("fail?")
    }

    /// Whether this line describes the node that answered.
    pub fn myself(&self) -> bool {
        self.has("myself")
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
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

/// Three Redis Sentinels on loopback monitoring a primary under one master name, each in
/// its own temp dir, killed on drop. `down-after-milliseconds` 1000 and `failover-timeout`
/// 3000, so a killed primary is replaced within a few seconds.
pub struct RedisSentinels {
    pub master: String,
    pub ports: Vec<u16>,
    /// The Sentinels' own password (`requirepass`), if any.
    pub password: Option<String>,
    procs: Vec<(tempfile::TempDir, Child)>,
}

impl RedisSentinels {
    /// Starts three Sentinels monitoring `primary` as `master` (quorum 2); `auth_pass` is
    /// the data nodes' password, `password` the Sentinels' own. Waits until each knows the
    /// other two and `replicas` replicas.
    pub fn start(
        primary: &RedisServer,
        master: &str,
        replicas: usize,
        auth_pass: Option<&str>,
        password: Option<&str>,
    ) -> Self {
        let mut s = RedisSentinels {
            master: master.to_string(),
            ports: Vec::new(),
            password: password.map(str::to_string),
            procs: Vec::new(),
        };
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\nlogfile sentinel.log\n\
                 sentinel monitor {master} {host} {pport} 2\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 3000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.path().display(),
                host = primary.host,
                pport = primary.port,
            );
            if let Some(pw) = auth_pass {
                conf.push_str(&format!("sentinel auth-pass {master} {pw}\n"));
            }
            if let Some(pw) = password {
                conf.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
            }
            let file = dir.path().join("sentinel.conf");
            std::fs::write(&file, conf).unwrap();
            let child = Command::new(redis_binary("redis-server"))
                .arg(&file)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting redis-server --sentinel: {e}; {HOW_TO_GET_REDIS}"));
            s.ports.push(port);
            s.procs.push((dir, child));
        }
        let ready = wait_until(Duration::from_secs(30), || {
            s.ports.iter().all(|&p| {
                let info = s.cli(p, &["SENTINEL", "MASTER", master]).unwrap_or_default();
                let field = |name: &str| {
                    let lines: Vec<&str> = info.lines().collect();
                    lines
                        .iter()
                        .position(|l| *l == name)
                        .and_then(|i| lines.get(i + 1))
                        .and_then(|v| v.parse::<usize>().ok())
                };
                field("num-other-sentinels") == Some(2) && field("num-slaves") == Some(replicas)
            })
        });
        assert!(ready, "the Sentinels did not find each other and {replicas} replica(s) within 30 s: {}", s.logs());
        s
    }

    /// Runs a redis-cli command against the Sentinel on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut full: Vec<&str> = Vec::new();
        if let Some(pw) = &self.password {
            full.extend(["--no-auth-warning", "-a", pw.as_str()]);
        }
        full.extend(args);
        redis_cli_at("127.0.0.1", port, None, &full)
    }

    /// `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<master>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    /// The port of the server the (first answering) Sentinel names as primary.
    pub fn primary_port(&self) -> Option<u16> {
        self.ports.iter().find_map(|&p| {
            let out = self.cli(p, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master]).ok()?;
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// Waits (at most `limit`) until the Sentinels name a primary other than `old_port`.
    pub fn wait_for_failover(&self, old_port: u16, limit: Duration) -> u16 {
        let mut now = None;
        let moved = wait_until(limit, || {
            now = self.primary_port();
            now.is_some_and(|p| p != old_port)
        });
        assert!(moved, "the Sentinels did not promote a replica within {limit:?} (primary {now:?}): {}", self.logs());
        now.unwrap()
    }

    /// The Sentinels' logs (for failure messages).
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(dir, _)| std::fs::read_to_string(dir.path().join("sentinel.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
