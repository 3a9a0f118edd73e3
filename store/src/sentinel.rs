//! Redis Sentinel: `redis+sentinel://[user:password@]h1:p1,h2:p2,h3:p3/<master>[/<db>]`
//! (`rediss+sentinel://` for TLS to the Sentinels and the data nodes alike).
//!
//! The connection asks the Sentinels, in turn, which server is the primary of `<master>`,
//! connects to it and checks with `ROLE` that it is one (a Sentinel cut off from the others
//! may name a demoted server), and uses it until something says it stopped being the
//! primary: a dropped or refused connection, a `READONLY` reply (it was demoted and now
//! replicates), or a `+switch-master` message from a Sentinel. Then the next command asks
//! the Sentinels again. Commands in flight when that happens fail (the relay answers 503 and
//! retries later); nothing is written to a replica, which would refuse it anyway.

use crate::conn::{ConnectOptions, TlsMaterial};
use futures::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisResult, Value,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The port a Sentinel listens on when the URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A discovery that failed is not retried for this long: requests arriving meanwhile fail
/// at once with its error instead of each asking every Sentinel again.
const FAILED_DISCOVERY_HOLD: Duration = Duration::from_millis(250);

/// What a `redis+sentinel://` URL names.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `rediss+sentinel://`: TLS to the Sentinels and to the data nodes.
    pub tls: bool,
    /// The Sentinels, in the URL's order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// Data nodes' ACL user and password (the URL's userinfo).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Database number on the data nodes.
    pub db: i64,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

/// Whether `url` is a Sentinel URL (`redis+sentinel://` or `rediss+sentinel://`).
pub fn is_sentinel_url(url: &str) -> bool {
    url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
}

/// Parses a Sentinel URL; `Ok(None)` for any other URL. Errors say what is wrong and never
/// repeat the URL (it may hold a password).
pub fn parse_sentinel_url(url: &str) -> Result<Option<SentinelTarget>, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        (true, rest)
    } else {
        return Ok(None);
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pw) = u.split_once(':').unwrap_or((u, ""));
            let user = percent_decode(user).ok_or("the user name in the Sentinel URL is not valid percent-encoding")?;
            let pw = percent_decode(pw).ok_or("the password in the Sentinel URL is not valid percent-encoding")?;
            (Some(user).filter(|u| !u.is_empty()), Some(pw).filter(|p| !p.is_empty()))
        }
    };
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err("the Sentinel URL has an empty host in its host list (give host:port,host:port)".into());
        }
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("Sentinel port {p:?} is not a port number"));
        let (h, port) = if let Some(v6) = host.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 Sentinel address has no closing ]")?;
            match after.strip_prefix(':') {
                Some(p) => (h, port_of(p)?),
                None if after.is_empty() => (h, DEFAULT_SENTINEL_PORT),
                None => return Err("an IPv6 Sentinel address has something other than :port after ]".into()),
            }
        } else {
            match host.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (host, DEFAULT_SENTINEL_PORT),
            }
        };
        if h.is_empty() {
            return Err("the Sentinel URL has a host list entry without a host".into());
        }
        sentinels.push((h.to_string(), port));
    }
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let master = parts.next().and_then(percent_decode).filter(|m| !m.is_empty()).ok_or(
        "the Sentinel URL names no master: end it with /<master name> (as in `sentinel monitor <master name> ...`)",
    )?;
    let db = match parts.next() {
        None => 0,
        Some(d) => d.parse::<i64>().map_err(|_| format!("database {d:?} after the master name is not a number"))?,
    };
    if parts.next().is_some() {
        return Err("the Sentinel URL's path has more than /<master>/<db>".into());
    }
    Ok(Some(SentinelTarget { tls, sentinels, master, username, password, db }))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A connection to whichever server the Sentinels say is the primary; clones share it.
#[derive(Clone)]
pub struct SentinelConn {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

struct Shared {
    target: SentinelTarget,
    /// `redis.sentinel.passwordEnv`: the Sentinels' own password.
    sentinel_password: Option<String>,
    tls: Option<TlsMaterial>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The primary's connection and its generation (which discovery made it).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while asking the Sentinels (one discovery at a time); the last generation
    /// made, and when and why the last discovery failed.
    discovery: tokio::sync::Mutex<(u64, Option<(Instant, String)>)>,
    /// The Sentinel that answered last, asked first next time.
    next_sentinel: AtomicUsize,
    /// Primaries connected to so far (1 after the first; each failover followed adds one).
    switches: AtomicU64,
}

impl SentinelConn {
    /// Sets up the connection; nothing is contacted until the first command, so a process
    /// can start (and answer 503) while the Sentinels are still down. Starts the task that
    /// listens for `+switch-master`; it ends with the last clone.
    pub fn new(target: SentinelTarget, opts: &ConnectOptions) -> SentinelConn {
        let mut target = target;
        if let Some(pw) = &opts.password {
            target.password = Some(pw.clone());
        }
        let shared = Arc::new(Shared {
            target,
            sentinel_password: opts.sentinel_password.clone(),
            tls: opts.tls.clone(),
            connect_timeout: opts.connect_timeout,
            response_timeout: opts.response_timeout,
            current: Mutex::new(None),
            discovery: tokio::sync::Mutex::new((0, None)),
            next_sentinel: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
        });
        let watcher = tokio::spawn(watch_switches(shared.clone()));
        SentinelConn { inner: Arc::new(Inner { shared, watcher }) }
    }

    /// The master name the Sentinels were asked about.
    pub fn master_name(&self) -> &str {
        &self.inner.shared.target.master
    }

    /// How many primaries this connection has connected to (a failover followed adds one).
    pub fn primaries_connected(&self) -> u64 {
        self.inner.shared.switches.load(Ordering::Relaxed)
    }

    fn db(&self) -> i64 {
        self.inner.shared.target.db
    }
}

impl Shared {
    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn primary(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.lock_current().clone() {
            return Ok(c);
        }
        let mut discovery = self.discovery.lock().await;
        if let Some(c) = self.lock_current().clone() {
            return Ok(c);
        }
        if let Some((at, why)) = &discovery.1
            && at.elapsed() < FAILED_DISCOVERY_HOLD
        {
            return Err(unreachable(why.clone()));
        }
        match self.discover().await {
            Ok(conn) => {
                discovery.0 += 1;
                discovery.1 = None;
                self.switches.fetch_add(1, Ordering::Relaxed);
                let made = (discovery.0, conn);
                *self.lock_current() = Some(made.clone());
                Ok(made)
            }
            Err(why) => {
                discovery.1 = Some((Instant::now(), why.clone()));
                Err(unreachable(why))
            }
        }
    }

    /// Drops generation `generation` (if still current): the next command asks again.
    fn forget(&self, generation: u64) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    fn forget_any(&self) {
        *self.lock_current() = None;
    }

    /// Asks each Sentinel in turn (the last one that answered first) for the primary and
    /// connects to the first that `ROLE` confirms; the error lists what each one said.
    async fn discover(&self) -> Result<MultiplexedConnection, String> {
        let t = &self.target;
        let n = t.sentinels.len();
        let first = self.next_sentinel.load(Ordering::Relaxed) % n.max(1);
        let mut said = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let (host, port) = &t.sentinels[idx];
            match self.ask(host, *port).await {
                Ok(Some((ph, pp))) => match self.connect_primary(&ph, pp).await {
                    Ok(conn) => {
                        self.next_sentinel.store(idx, Ordering::Relaxed);
                        tracing::info!(master = %t.master, primary = %format!("{ph}:{pp}"), sentinel = %format!("{host}:{port}"), "connected to the Redis primary named by Sentinel");
                        return Ok(conn);
                    }
                    Err(e) => said.push(format!("sentinel {host}:{port} named {ph}:{pp}, which {e}")),
                },
                Ok(None) => said.push(format!("sentinel {host}:{port} does not monitor a master named {:?}", t.master)),
                Err(e) => said.push(format!("sentinel {host}:{port}: {e}")),
            }
        }
        Err(format!("no Redis primary for master {:?} through Sentinel: {}", t.master, said.join("; ")))
    }

    fn client(&self, host: &str, port: u16, settings: redis::RedisConnectionInfo) -> RedisResult<Client> {
        let addr = if self.target.tls {
            ConnectionAddr::TcpTls { host: host.to_string(), port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        };
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        match (&self.tls, self.target.tls) {
            (Some(tls), true) => Client::build_with_tls(info, tls.certificates()),
            _ => Client::open(info),
        }
    }

    fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }

    fn sentinel_client(&self, host: &str, port: u16) -> RedisResult<Client> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(pw) = &self.sentinel_password {
            settings = settings.set_password(pw);
        }
        self.client(host, port, settings)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the primary's address, `None` for an unknown name.
    async fn ask(&self, host: &str, port: u16) -> Result<Option<(String, u16)>, String> {
        let client = self.sentinel_client(host, port).map_err(|e| e.to_string())?;
        let mut conn =
            client.get_multiplexed_async_connection_with_config(&self.config()).await.map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.target.master);
        let addr: Option<(String, String)> = cmd.query_async(&mut conn).await.map_err(|e| e.to_string())?;
        match addr {
            None => Ok(None),
            Some((h, p)) => {
                let port = p.parse::<u16>().map_err(|_| format!("answered port {p:?}"))?;
                Ok(Some((h, port)))
            }
        }
    }

    /// Connects to the server a Sentinel named and checks it calls itself a primary.
    async fn connect_primary(&self, host: &str, port: u16) -> Result<MultiplexedConnection, String> {
        let t = &self.target;
        let mut settings = redis::RedisConnectionInfo::default().set_db(t.db);
        if let Some(user) = &t.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &t.password {
            settings = settings.set_password(pw);
        }
        let client = self.client(host, port, settings).map_err(|e| format!("could not be set up: {e}"))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.config())
            .await
            .map_err(|e| format!("could not be reached: {e}"))?;
        let role: Value = redis::cmd("ROLE").query_async(&mut conn).await.map_err(|e| format!("refused ROLE: {e}"))?;
        let role = match role {
            Value::Array(items) => items.into_iter().next().and_then(|v| redis::from_redis_value::<String>(v).ok()),
            _ => None,
        };
        match role.as_deref() {
            Some("master") => Ok(conn),
            Some(other) => Err(format!("is not a primary (ROLE says {other})")),
            None => Err("answered ROLE with something else".into()),
        }
    }

    /// Whether a reply means the connection no longer reaches the primary.
    fn lost_primary(result: Result<&Value, &RedisError>) -> bool {
        match result {
            Err(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            }
            Ok(Value::ServerError(se)) => {
                se.kind() == Some(redis::ServerErrorKind::ReadOnly) || se.code() == "MASTERDOWN"
            }
            Ok(_) => false,
        }
    }
}

fn unreachable(why: String) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

/// Listens on one Sentinel at a time for `+switch-master` of our master and drops the
/// primary's connection when it comes (before any command has to fail on it).
async fn watch_switches(shared: Arc<Shared>) {
    let n = shared.target.sentinels.len();
    let mut idx = 0usize;
    loop {
        let (host, port) = shared.target.sentinels[idx % n].clone();
        idx += 1;
        let listen = async {
            let client = shared.sentinel_client(&host, port)?;
            let mut pubsub =
                tokio::time::timeout(shared.connect_timeout, client.get_async_pubsub()).await.map_err(|_| {
                    unreachable(format!("sentinel {host}:{port}: no connection within the connect timeout"))
                })??;
            pubsub.subscribe("+switch-master").await?;
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = msg.get_payload().unwrap_or_default();
                // `<master name> <old ip> <old port> <new ip> <new port>`
                let mut fields = payload.split(' ');
                if fields.next() == Some(shared.target.master.as_str()) {
                    let rest: Vec<&str> = fields.collect();
                    tracing::warn!(master = %shared.target.master, moved = %rest.join(" "), "Sentinel switched the Redis primary; reconnecting");
                    shared.forget_any();
                }
            }
            RedisResult::Ok(())
        };
        if let Err(e) = listen.await {
            tracing::debug!(sentinel = %format!("{host}:{port}"), error = %e, "not listening to this Sentinel");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move {
            let shared = &self.inner.shared;
            let (generation, mut conn) = shared.primary().await?;
            let reply = conn.req_packed_command(cmd).await;
            if Shared::lost_primary(reply.as_ref()) {
                shared.forget(generation);
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let shared = &self.inner.shared;
            let (generation, mut conn) = shared.primary().await?;
            let reply = conn.req_packed_commands(cmd, offset, count).await;
            let lost = match &reply {
                Err(e) => Shared::lost_primary(Err(e)),
                Ok(values) => values.iter().any(|v| Shared::lost_primary(Ok(v))),
            };
            if lost {
                shared.forget(generation);
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_db() {
        let t =
            parse_sentinel_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,sentinel-3/mymaster").unwrap().unwrap();
        assert!(!t.tls);
        assert_eq!(
            t.sentinels,
            vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380), ("sentinel-3".into(), DEFAULT_SENTINEL_PORT)]
        );
        assert_eq!(t.master, "mymaster");
        assert_eq!((t.db, t.username.as_deref(), t.password.as_deref()), (0, None, None));

        let t = parse_sentinel_url("rediss+sentinel://app:p%40ss%3Aw@[::1]:5000,h:1/m%20x/3").unwrap().unwrap();
        assert!(t.tls);
        assert_eq!(t.sentinels, vec![("::1".into(), 5000), ("h".into(), 1)]);
        assert_eq!((t.master.as_str(), t.db), ("m x", 3));
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("app"), Some("p@ss:w")));
        assert!(!format!("{t:?}").contains("p@ss"), "Debug hides the password");

        let t = parse_sentinel_url("redis+sentinel://[fd00::2]/m").unwrap().unwrap();
        assert_eq!(t.sentinels, vec![("fd00::2".into(), DEFAULT_SENTINEL_PORT)]);
        let t = parse_sentinel_url("redis+sentinel://:secret@h:1/m").unwrap().unwrap();
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (None, Some("secret")));
        assert_eq!(parse_sentinel_url("redis://h:6379/0").unwrap(), None);
    }

    #[test]
    fn malformed_sentinel_urls_say_what_is_wrong_without_repeating_the_url() {
        let cases = [
            ("redis+sentinel://h:1", "names no master"),
            ("redis+sentinel://h:1/", "names no master"),
            ("redis+sentinel://h:x/m", "not a port number"),
            ("redis+sentinel://h:1,,h:2/m", "empty host"),
            ("redis+sentinel://:pw@h:1/m/zero", "not a number"),
            ("redis+sentinel://h:1/m/0/extra", "more than"),
            ("redis+sentinel://:p%zz@h:1/m", "percent-encoding"),
        ];
        for (url, expect) in cases {
            let e = parse_sentinel_url(url).expect_err(url);
            assert!(e.contains(expect), "{url}: {e}");
            assert!(!e.contains("pw") && !e.contains("p%zz"), "{url}: {e}");
        }
    }

    #[test]
    fn a_readonly_reply_or_a_dropped_connection_means_the_primary_is_lost() {
        let readonly = redis::RedisError::from((ErrorKind::Server(redis::ServerErrorKind::ReadOnly), "READONLY"));
        assert!(Shared::lost_primary(Err(&readonly)));
        assert!(Shared::lost_primary(Err(&unreachable("x".into()))));
        let script_error = redis::RedisError::from((ErrorKind::Server(redis::ServerErrorKind::NoScript), "NOSCRIPT"));
        assert!(!Shared::lost_primary(Err(&script_error)));
        assert!(!Shared::lost_primary(Ok(&Value::Okay)));
    }
}
