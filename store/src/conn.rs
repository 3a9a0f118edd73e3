//! One Redis connection per process: a reconnecting single-server connection, or a Redis
//! Cluster connection, over TLS (rustls) for `rediss://` URLs. Scripts run with `EVALSHA`
//! and fall back to `EVAL` on `NOSCRIPT` (a restarted or failed-over server has an empty
//! script cache).

use crate::scripts::LuaScript;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisResult, Value};
use std::time::Duration;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `redis://`, `rediss://`, `unix://`, or `redis+cluster://host:port,host:port`
    /// (`rediss+cluster://` for TLS).
    pub url: String,
    /// Use the cluster client even for a plain `redis://` URL.
    pub cluster: bool,
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for one reply.
    pub response_timeout: Duration,
    /// What a `rediss://` connection trusts and presents; `None`: the system's roots, no
    /// client certificate.
    pub tls: Option<TlsMaterial>,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            cluster: false,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
            tls: None,
        }
    }

    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn tls(mut self, tls: Option<TlsMaterial>) -> Self {
        self.tls = tls;
        self
    }

    /// Whether the URL asks for TLS (`rediss://` or `rediss+cluster://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss:") || self.url.starts_with("rediss+")
    }
}

/// TLS material, PEM-encoded, already read from its files.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA certificate(s) to trust instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("client", &self.client.as_ref().map(|_| "***"))
            .finish()
    }
}

impl TlsMaterial {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// Makes aws-lc-rs the process's rustls provider (idempotent). More than one provider is
/// compiled into the workspace, and rustls then refuses to pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A TLS failure only a change of settings fixes (not an outage that passes by itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsProblem {
    /// The server's certificate is not trusted: wrong or missing CA, wrong host name, expired.
    UntrustedServer,
    /// The server refused the handshake for want of an acceptable client certificate.
    ClientCertificateRefused,
}

/// What kind of TLS setup problem `e` is, if any.
pub fn tls_problem(e: &redis::RedisError) -> Option<TlsProblem> {
    let text = format!("{e:?} {e}");
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&["invalid peer certificate", "UnknownIssuer", "NotValidForName", "BadSignature", "certificate verify"]) {
        Some(TlsProblem::UntrustedServer)
    } else if has(&["CertificateRequired", "BadCertificate", "UnknownCA", "AccessDenied", "HandshakeFailure"]) {
        Some(TlsProblem::ClientCertificateRefused)
    } else {
        None
    }
}

/// A shared connection; clones are cheap and multiplex onto the same socket(s).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects. A single server connection is created lazily and reconnects by itself,
    /// so a process can start (and answer 503) while Redis is still down; the cluster
    /// client needs the cluster up to learn its slots.
    pub async fn connect(opts: &ConnectOptions) -> RedisResult<Conn> {
        install_crypto_provider();
        let (cluster, urls) = split_url(&opts.url, opts.cluster);
        let tls = opts.tls.as_ref().filter(|_| opts.is_tls());
        if cluster {
            let mut builder = ClusterClientBuilder::new(urls)
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.response_timeout);
            if let Some(tls) = tls {
                builder = builder.certs(tls.certificates());
            }
            let conn = builder.build()?.get_async_connection().await?;
            Ok(Conn::Cluster(conn))
        } else {
            let client = match tls {
                Some(tls) => redis::Client::build_with_tls(urls[0].as_str(), tls.certificates())?,
                None => redis::Client::open(urls[0].as_str())?,
            };
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            Ok(Conn::Single(ConnectionManager::new_lazy_with_config(client, cfg)?))
        }
    }

    /// Runs `script` by hash, loading it with `EVAL` when the server does not know it.
    pub async fn eval(mut self, script: &LuaScript, keys: &[&str], args: &[&[u8]]) -> RedisResult<Value> {
        let build = |verb: &str, first: &str| {
            let mut c = redis::cmd(verb);
            c.arg(first).arg(keys.len()).arg(keys).arg(args);
            c
        };
        let by_hash = build("EVALSHA", script.hash());
        // Server errors arrive as `Value::ServerError`; `extract_error` turns them into `Err`.
        match self.req_packed_command(&by_hash).await.and_then(Value::extract_error) {
            Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let full = build("EVAL", script.source());
                self.req_packed_command(&full).await.and_then(Value::extract_error)
            }
            other => other,
        }
    }

    /// Runs one plain command (for tools and tests).
    pub async fn cmd(mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.req_packed_command(cmd).await.and_then(Value::extract_error)
    }

    /// Runs `cmd` on the primary holding `key` (on a single server: the server), for
    /// commands that name no key themselves (`WAIT`, `INFO`).
    pub async fn cmd_for_key(self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        let v = match self {
            Conn::Single(mut c) => c.req_packed_command(&cmd).await?,
            Conn::Cluster(mut c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let to = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await?
            }
        };
        v.extract_error()
    }

    /// `WAIT replicas timeout` on the connection that wrote `key` (on Redis Cluster: the
    /// primary of its slot, not every primary): how many replicas hold every write this
    /// connection made so far.
    pub async fn wait_replicas(self, key: &str, replicas: u32, timeout: Duration) -> RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        redis::from_redis_value(self.cmd_for_key(key, cmd).await?).map_err(Into::into)
    }
}

/// Splits a `redis+cluster://a:1,b:2` URL into one `redis://` URL per node.
pub fn split_url(url: &str, force_cluster: bool) -> (bool, Vec<String>) {
    if let Some(rest) = url.strip_prefix("redis+cluster://").or_else(|| url.strip_prefix("rediss+cluster://")) {
        let scheme = if url.starts_with("rediss") { "rediss" } else { "redis" };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let urls = hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}://{auth}{h}")).collect();
        (true, urls)
    } else {
        (force_cluster, vec![url.to_string()])
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_split_per_node() {
        let (c, urls) = split_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/", false);
        assert!(c);
        assert_eq!(urls, vec!["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]);
        let (c, urls) = split_url("redis://127.0.0.1:6379/", false);
        assert!(!c);
        assert_eq!(urls, vec!["redis://127.0.0.1:6379/"]);
        assert!(split_url("redis://127.0.0.1:6379/", true).0);
    }
}
