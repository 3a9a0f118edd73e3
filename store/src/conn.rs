//! One Redis connection per process: a reconnecting single-server connection, a Redis
//! Cluster connection, or a connection to the primary Redis Sentinel names (following its
//! failovers: [`crate::sentinel`]), over TLS (rustls) for `rediss` URLs. Scripts run with `EVALSHA`
//! and fall back to `EVAL` on `NOSCRIPT` (a restarted or failed-over server has an empty
//! script cache).

use crate::scripts::LuaScript;
use crate::sentinel::{SentinelConn, parse_sentinel_url};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, IntoConnectionInfo, RedisResult, Value};
use std::time::Duration;

/// How to reach Redis. Debug prints neither the URL nor the passwords (secrets).
#[derive(Clone)]
pub struct ConnectOptions {
    /// `redis://`, `rediss://`, `unix://`, `redis+cluster://host:port,host:port`
    /// (`rediss+cluster://` for TLS), or `redis+sentinel://host:port,host:port/<master>`
    /// (`rediss+sentinel://`).
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
    /// The data nodes' password (`redis.passwordEnv`), in place of the URL's.
    pub password: Option<String>,
    /// The Sentinels' own password (`redis.sentinel.passwordEnv`).
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("cluster", &self.cluster)
            .field("sentinel", &crate::sentinel::is_sentinel_url(&self.url))
            .field("tls", &self.is_tls())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            cluster: false,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
            tls: None,
            password: None,
            sentinel_password: None,
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

    pub fn password(mut self, password: Option<String>) -> Self {
        self.password = password;
        self
    }

    pub fn sentinel_password(mut self, password: Option<String>) -> Self {
        self.sentinel_password = password;
        self
    }

    /// Whether the URL asks for TLS (`rediss://`, `rediss+cluster://`, `rediss+sentinel://`).
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
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
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
    Sentinel(SentinelConn),
}

impl Conn {
    /// Connects. A single server connection is created lazily and reconnects by itself,
    /// so a process can start (and answer 503) while Redis is still down; so does the
    /// Sentinel connection; the cluster client needs the cluster up to learn its slots.
    pub async fn connect(opts: &ConnectOptions) -> RedisResult<Conn> {
        install_crypto_provider();
        match parse_sentinel_url(&opts.url) {
            Ok(Some(target)) => return Ok(Conn::Sentinel(SentinelConn::new(target, opts))),
            Ok(None) => {}
            Err(e) => return Err((ErrorKind::InvalidClientConfig, "invalid Sentinel URL", e).into()),
        }
        let (cluster, urls) = split_url(&opts.url, opts.cluster);
        let tls = opts.tls.as_ref().filter(|_| opts.is_tls());
        if cluster {
            let mut builder = ClusterClientBuilder::new(urls)
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.response_timeout);
            if let Some(tls) = tls {
                builder = builder.certs(tls.certificates());
            }
            if let Some(pw) = &opts.password {
                builder = builder.password(pw.clone());
            }
            let conn = builder.build()?.get_async_connection().await?;
            Ok(Conn::Cluster(conn))
        } else {
            let mut info = urls[0].as_str().into_connection_info()?;
            if let Some(pw) = &opts.password {
                let settings = info.redis_settings().clone().set_password(pw);
                info = info.set_redis_settings(settings);
            }
            let client = match tls {
                Some(tls) => redis::Client::build_with_tls(info, tls.certificates())?,
                None => redis::Client::open(info)?,
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
    /// commands that name no key themselves (`INFO`, `CONFIG GET`).
    pub async fn cmd_for_key(self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        let v = match self {
            Conn::Single(mut c) => c.req_packed_command(&cmd).await?,
            Conn::Sentinel(mut c) => c.req_packed_command(&cmd).await?,
            Conn::Cluster(mut c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let to = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await?
            }
        };
        v.extract_error()
    }

    /// Runs `script`, then `WAIT replicas timeout`, pipelined in one request on one
    /// connection to the primary holding `keys[0]`: the `WAIT` counts the replicas that hold
    /// what the script wrote. (Sent apart, a reconnection or a failover between the two
    /// could make the `WAIT` run on a fresh connection that wrote nothing and answer at once.)
    /// Returns the script's reply and the replicas that confirmed.
    pub async fn eval_and_wait(
        self,
        script: &LuaScript,
        keys: &[&str],
        args: &[&[u8]],
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<(Value, u32)> {
        let build = |verb: &str, first: &str| {
            let mut p = redis::pipe();
            p.cmd(verb).arg(first).arg(keys.len()).arg(keys).arg(args);
            p.add_command(wait_cmd(replicas, timeout));
            p
        };
        let key = keys.first().copied().unwrap_or_default();
        let mut replies = self.clone().pipeline_on(key, build("EVALSHA", script.hash())).await?;
        if matches!(&replies[0], Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript)) {
            replies = self.clone().pipeline_on(key, build("EVAL", script.source())).await?;
        }
        let mut replies = replies.into_iter();
        let (Some(reply), Some(confirmed)) = (replies.next(), replies.next()) else {
            return Err((ErrorKind::Parse, "a pipeline of two commands answered fewer than two replies").into());
        };
        let reply = reply.extract_error();
        if let (Conn::Cluster(_), Err(e)) = (&self, &reply)
            && matches!(e.kind(), ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask))
        {
            // A pipeline routed to one node does not follow redirects: a plain command on
            // the key does, and updates the slot map for the next request.
            let mut exists = redis::cmd("EXISTS");
            exists.arg(key);
            let _ = self.cmd(&exists).await;
        }
        let reply = reply?;
        let confirmed: u32 = redis::from_redis_value(confirmed.extract_error()?)?;
        Ok((reply, confirmed))
    }

    /// Sends `pipe` on the connection to the primary holding `key`.
    async fn pipeline_on(self, key: &str, pipe: redis::Pipeline) -> RedisResult<Vec<Value>> {
        let n = pipe.len();
        match self {
            Conn::Single(mut c) => c.req_packed_commands(&pipe, 0, n).await,
            Conn::Sentinel(mut c) => c.req_packed_commands(&pipe, 0, n).await,
            Conn::Cluster(mut c) => {
                use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                let to = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                c.route_pipeline(pipe, 0, n, to).await
            }
        }
    }
}

fn wait_cmd(replicas: u32, timeout: Duration) -> Cmd {
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(replicas).arg(timeout.as_millis().max(1) as u64);
    cmd
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
            Conn::Sentinel(c) => c.req_packed_command(cmd),
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
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_url_or_password() {
        let o = ConnectOptions::new("redis+sentinel://:url-pw@h:1/m")
            .password(Some("data-pw".into()))
            .sentinel_password(Some("sentinel-pw".into()));
        let d = format!("{o:?}");
        assert!(!d.contains("pw") && !d.contains("h:1"), "{d}");
        assert!(d.contains("sentinel: true"), "{d}");
    }

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
