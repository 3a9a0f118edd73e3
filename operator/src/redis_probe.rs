//! Reads what status reports about a relay's Redis: queue figures (through the store's
//! `stats()`, the same format the sidecar writes) and whether the server would keep an
//! acknowledged event (`appendonly yes`, `maxmemory-policy noeviction`), on the primary and
//! on each of its replicas, since a failover promotes one of them.
//!
//! The Redis URL is a secret: it is used to connect and never appears in a message.
//!
//! Connections are pooled by [`Pool`]: one per distinct Redis (URL, cluster flag, TLS
//! material), shared by every relay that uses it, so a thousand relays on one Redis cost
//! it one client connection, not one per relay or per reconcile.

use redis::{FromRedisValue, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use webhook_relay_store::{Conn, ConnectOptions, DestinationState, GatePolicy, Stats, Store, StoreError, TlsMaterial};

/// Time allowed for the whole probe of one relay.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the Redis would keep data across restarts and memory pressure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// `appendonly yes` and `maxmemory-policy noeviction`.
    Durable,
    /// AOF is off: a restart loses recent events.
    AppendOnlyOff,
    /// An evicting policy (named): memory pressure silently drops events.
    Eviction(String),
    /// `CONFIG GET` was refused (managed Redis, ACLs) or failed; the text says why.
    Unknown(String),
    /// The primary is [`Durable`](Self::Durable), but replica `replica` is not: promoted
    /// after a failover, it would lose what the primary kept. `problem` is one of the
    /// variants above other than `Durable` (built by [`persistence_across`] only).
    Replica { replica: ReplicaAddr, problem: Box<Persistence> },
}

impl Persistence {
    /// The same verdict with the URL and its password taken out of any text it carries.
    fn redacted(self, clean: &dyn Fn(&str) -> String) -> Self {
        match self {
            Persistence::Unknown(why) => Persistence::Unknown(clean(&why)),
            Persistence::Replica { replica, problem } => {
                Persistence::Replica { replica, problem: Box::new(problem.redacted(clean)) }
            }
            other => other,
        }
    }
}

/// What kind of failure kept a probe from reading Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No connection (refused, DNS, TLS handshake, authentication).
    Connect,
    /// Connected, but the figures could not be read (an error reply, a dropped connection).
    Read,
    /// No answer within [`PROBE_TIMEOUT`].
    Timeout,
}

/// Why a probe could not read Redis: the kind, and the error's text with the Redis URL and
/// its password taken out (client errors may echo either), fit for status and events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub kind: ProbeFailure,
    pub message: String,
}

impl ProbeError {
    fn new(kind: ProbeFailure, error: &dyn std::fmt::Display, url: &str) -> Self {
        ProbeError { kind, message: redact(&error.to_string(), url) }
    }
}

/// What one probe saw.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Queue figures, or why Redis could not be read.
    pub stats: Result<Stats, ProbeError>,
    /// Only meaningful when `stats` is `Ok`.
    pub persistence: Persistence,
    /// The relay's destination gate (circuit breaker, Retry-After pause) as its relays
    /// stored it; `None` when it could not be read.
    pub destination: Option<DestinationState>,
    /// The replicas of the primary holding the relay's keys (`INFO replication`), or why
    /// they could not be read.
    pub replication: Result<Replication, String>,
}

/// What `INFO replication` says of a primary's replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    /// `master`, or `slave` when the URL points at a replica.
    pub role: String,
    /// Replicas connected.
    pub connected: u32,
    /// Of those, the ones in sync: `state=online` and acknowledged within [`IN_SYNC_LAG`].
    pub in_sync: u32,
    /// The connected replicas' addresses, as they announce them (`ip`, `port`).
    pub replicas: Vec<ReplicaAddr>,
}

/// Where a replica listens, as the primary's `INFO replication` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaAddr {
    /// An IP address, or a host name when the replica announces one (`replica-announce-ip`).
    pub ip: String,
    pub port: u16,
}

impl std::fmt::Display for ReplicaAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ip.contains(':') {
            write!(f, "[{}]:{}", self.ip, self.port)
        } else {
            write!(f, "{}:{}", self.ip, self.port)
        }
    }
}

/// A replica whose last acknowledgement is older than this (seconds; replicas acknowledge
/// every second) is not counted as in sync.
pub const IN_SYNC_LAG: u64 = 2;

/// Reads `INFO replication` text.
pub fn replication_of(info: &str) -> Replication {
    let mut r = Replication::default();
    for line in info.lines().map(str::trim) {
        if let Some(role) = line.strip_prefix("role:") {
            r.role = role.to_string();
        } else if let Some(v) = line.strip_prefix("slave").and_then(|l| l.split_once(':')).map(|(_, v)| v)
            && v.contains("state=")
        {
            r.connected += 1;
            let field = |name: &str| v.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
            let lag = field("lag").and_then(|l| l.parse::<u64>().ok());
            if field("state") == Some("online") && lag.is_some_and(|l| l <= IN_SYNC_LAG) {
                r.in_sync += 1;
            }
            if let (Some(ip), Some(port)) = (field("ip"), field("port").and_then(|p| p.parse().ok())) {
                r.replicas.push(ReplicaAddr { ip: ip.to_string(), port });
            }
        }
    }
    r
}

/// Judges `CONFIG GET appendonly` / `maxmemory-policy` answers.
pub fn persistence_of(appendonly: Option<&str>, policy: Option<&str>) -> Persistence {
    match (appendonly, policy) {
        (Some(a), _) if !a.eq_ignore_ascii_case("yes") => Persistence::AppendOnlyOff,
        (_, Some(p)) if !p.eq_ignore_ascii_case("noeviction") => Persistence::Eviction(p.to_string()),
        (Some(_), Some(_)) => Persistence::Durable,
        _ => Persistence::Unknown("CONFIG GET returned no value".into()),
    }
}

/// At most this many of a primary's replicas have their settings read, each within
/// [`REPLICA_TIMEOUT`], all at once.
pub const MAX_REPLICAS_CHECKED: usize = 8;

/// Time allowed to connect to one replica and read its settings.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(1);

/// The verdict over a primary (`primary`) and its replicas: the primary's own problem
/// first, then a replica's definite problem (AOF off, eviction), then a replica whose
/// settings could not be read; `Durable` only when every node is.
pub fn persistence_across(primary: Persistence, replicas: Vec<(ReplicaAddr, Persistence)>) -> Persistence {
    if primary != Persistence::Durable {
        return primary;
    }
    let rank = |p: &Persistence| match p {
        Persistence::Durable => None,
        Persistence::AppendOnlyOff | Persistence::Eviction(_) => Some(0),
        Persistence::Unknown(_) | Persistence::Replica { .. } => Some(1),
    };
    // `min_by_key` keeps the first of equals: the first replica listed.
    let worst = replicas.into_iter().filter_map(|(r, p)| Some((rank(&p)?, r, p))).min_by_key(|(rank, ..)| *rank);
    match worst {
        Some((_, replica, problem)) => Persistence::Replica { replica, problem: Box::new(problem) },
        None => Persistence::Durable,
    }
}

/// The URL of `replica` from the primary's `url`: the same scheme (so the same TLS),
/// credentials, database and options, with the host and port replaced (for a Sentinel
/// URL: the data nodes' scheme, user and database). `None` for `unix://`, which has no
/// address to replace.
fn replica_url(url: &str, replica: &ReplicaAddr) -> Option<String> {
    if let Ok(Some(t)) = webhook_relay_store::parse_sentinel_url(url) {
        // The data nodes' scheme, user and database; the password goes in the options.
        let scheme = if t.tls { "rediss" } else { "redis" };
        let user = t.username.map(|u| {
            let encoded: String = u
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{encoded}@")
        });
        return Some(format!("{scheme}://{}{replica}/{}", user.unwrap_or_default(), t.db));
    }
    let (scheme, rest) = url.split_once("://")?;
    // A cluster URL's nodes are `redis://` (`rediss://`) URLs.
    let scheme = match scheme {
        "redis" | "redis+cluster" => "redis",
        "rediss" | "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let credentials = authority.rsplit_once('@').map_or(String::new(), |(c, _)| format!("{c}@"));
    Some(format!("{scheme}://{credentials}{replica}{tail}"))
}

/// Reads `appendonly` and `maxmemory-policy` from one node: on a cluster connection, from
/// the primary of `key`'s slot (`CONFIG GET` alone would go to any node).
async fn node_persistence(conn: &Conn, key: &str) -> Persistence {
    match (config_get(conn, key, "appendonly").await, config_get(conn, key, "maxmemory-policy").await) {
        (Ok(a), Ok(p)) => persistence_of(a.as_deref(), p.as_deref()),
        // A single-server connection opens with its first command: a refused connection or
        // credentials show here, and are not a refusal of CONFIG.
        (Err(e), _) | (_, Err(e))
            if e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || webhook_relay_store::tls_problem(&e).is_some() =>
        {
            Persistence::Unknown(format!("not reachable from the operator: {e}"))
        }
        (Err(e), _) | (_, Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            Persistence::Unknown(format!("the Redis URL's credentials are refused (ACL users are per server): {e}"))
        }
        (Err(e), _) | (_, Err(e)) => Persistence::Unknown(format!("CONFIG GET refused: {e}")),
    }
}

/// Judges one replica of the primary at `url` on a connection of its own (same
/// credentials and TLS), closed afterwards, within [`REPLICA_TIMEOUT`].
async fn replica_persistence(primary: &ConnectOptions, replica: &ReplicaAddr) -> Persistence {
    let Some(replica_url) = replica_url(&primary.url, replica) else {
        return Persistence::Unknown(
            "not checked: the operator reaches replicas through redis://, rediss:// and redis+cluster:// URLs only"
                .into(),
        );
    };
    let check = async {
        let mut opts = ConnectOptions::new(replica_url.as_str()).tls(primary.tls.clone());
        // A Sentinel URL's password is the data nodes'; `redis.passwordEnv` overrides it.
        let url_password =
            webhook_relay_store::parse_sentinel_url(&primary.url).ok().flatten().and_then(|t| t.password);
        opts = opts.password(primary.password.clone().or(url_password));
        match Conn::connect(&opts).await {
            // A single-server connection: the key routes nothing.
            Ok(conn) => node_persistence(&conn, "").await,
            Err(e) => Persistence::Unknown(format!("not reachable from the operator: {e}")),
        }
    };
    let verdict = tokio::time::timeout(REPLICA_TIMEOUT, check).await.unwrap_or_else(|_| {
        Persistence::Unknown(format!("not reachable from the operator: no answer within {REPLICA_TIMEOUT:?}"))
    });
    verdict.redacted(&|t| redact(t, &replica_url))
}

/// Removes the URL and its password from `text` (a Redis client error may echo either).
pub fn redact(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "<redis url>");
    let password = match webhook_relay_store::parse_sentinel_url(url) {
        Ok(Some(t)) => t.password,
        _ => url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string)),
    };
    if let Some(pw) = password.filter(|p| !p.is_empty()) {
        out = out.replace(&pw, "<redacted>");
    }
    out
}

/// [`redact`], and the passwords of `opts` (from the relay's Secrets) taken out too.
fn redact_all(text: &str, opts: &ConnectOptions) -> String {
    let mut out = redact(text, &opts.url);
    for pw in [&opts.password, &opts.sentinel_password].into_iter().flatten().filter(|p| !p.is_empty()) {
        out = out.replace(pw.as_str(), "<redacted>");
    }
    out
}

fn config_value(v: Value, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = match v {
        Value::Map(m) => m
            .into_iter()
            .filter_map(|(k, v)| Some((String::from_redis_value(k).ok()?, String::from_redis_value(v).ok()?)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((String::from_redis_value_ref(k).ok()?, String::from_redis_value_ref(v).ok()?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    pairs.into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn config_get(conn: &Conn, key: &str, name: &str) -> redis::RedisResult<Option<String>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    Ok(config_value(conn.clone().cmd_for_key(key, cmd).await?, name))
}

async fn probe_inner(pool: &Pool, opts: &ConnectOptions, relay_id: &str) -> Probe {
    let url = opts.url.as_str();
    let unreachable = |e: ProbeError| Probe {
        stats: Err(e),
        persistence: Persistence::Unknown("not reachable".into()),
        destination: None,
        replication: Err("not reachable".into()),
    };
    let conn = match pool.conn(opts).await {
        Ok(c) => c,
        Err(e) => return unreachable(ProbeError::new(ProbeFailure::Connect, &e, url)),
    };
    let store = Store::new(conn.clone(), relay_id).with_timeout(Duration::from_secs(3));
    let stats = match store.stats().await {
        Ok(s) => s,
        Err(e) => {
            // The single-server connection is opened lazily, by the first command.
            let kind = match &e {
                StoreError::Timeout(_) => ProbeFailure::Timeout,
                StoreError::Redis(re)
                    if re.is_io_error()
                        || re.is_connection_refusal()
                        || re.kind() == redis::ErrorKind::AuthenticationFailed
                        || webhook_relay_store::tls_problem(re).is_some() =>
                {
                    ProbeFailure::Connect
                }
                _ => ProbeFailure::Read,
            };
            return unreachable(ProbeError::new(kind, &e, url));
        }
    };
    let stats = Ok(stats);
    let destination = store.destination(&GatePolicy::default()).await.ok();
    let mut info = redis::cmd("INFO");
    info.arg("replication");
    let replication = match conn.clone().cmd_for_key(&store.keys().due, info).await {
        Ok(v) => String::from_redis_value(v).map(|text| replication_of(&text)).map_err(|e| e.to_string()),
        Err(e) => Err(format!("INFO replication refused: {}", redact(&e.to_string(), url))),
    };
    let persistence = match node_persistence(&conn, &store.keys().due).await {
        // The replicas matter only when the primary itself would keep events.
        Persistence::Durable => {
            let replicas = replication.as_ref().map_or(&[][..], |r| &r.replicas);
            let checks = replicas
                .iter()
                .take(MAX_REPLICAS_CHECKED)
                .map(|r| async { (r.clone(), pool.replica_persistence(opts, r).await) });
            persistence_across(Persistence::Durable, futures::future::join_all(checks).await)
        }
        primary => primary,
    };
    Probe { stats, persistence, destination, replication }
}

/// A pooled connection unused this long is closed.
pub const POOL_IDLE: Duration = Duration::from_secs(600);

/// One Redis connection per distinct (URL, cluster flag, TLS material), reused by every
/// probe of every relay that uses it. The connections reconnect by themselves; one whose
/// probe could not reach Redis is dropped so the next probe starts afresh (a cluster's
/// nodes may have moved), and one unused for [`POOL_IDLE`] is closed.
#[derive(Default)]
pub struct Pool {
    conns: Mutex<HashMap<[u8; 32], (Conn, Instant)>>,
    /// Replicas' persistence verdicts, by (connection key, replica address), kept for
    /// [`REPLICA_VERDICT_TTL`]: a thousand relays on one Redis cost each replica one short
    /// connection per TTL, not one per relay and probe.
    replica_verdicts: Mutex<HashMap<ReplicaKey, (Persistence, Instant)>>,
}

/// A pooled connection's key and a replica's address.
type ReplicaKey = ([u8; 32], String);

/// How long a replica's persistence verdict is reused.
pub const REPLICA_VERDICT_TTL: Duration = Duration::from_secs(60);

impl Pool {
    /// The pool's key: a digest, so the map holds no URL (password) or key material.
    fn key(opts: &ConnectOptions) -> [u8; 32] {
        let mut h = Sha256::new();
        let part = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(&mut h, opts.url.as_bytes());
        part(&mut h, &[u8::from(opts.cluster)]);
        for pw in [&opts.password, &opts.sentinel_password] {
            part(&mut h, pw.as_deref().map_or(b"-".as_slice(), |p| p.as_bytes()));
        }
        let tls = opts.tls.clone().unwrap_or_default();
        part(&mut h, tls.ca_pem.as_deref().unwrap_or(b"-"));
        let (cert, key) = tls.client.unwrap_or_default();
        part(&mut h, &cert);
        part(&mut h, &key);
        h.finalize().into()
    }

    async fn conn(&self, opts: &ConnectOptions) -> redis::RedisResult<Conn> {
        let key = Self::key(opts);
        let now = Instant::now();
        {
            let mut conns = self.conns.lock().expect("pool lock");
            conns.retain(|_, (_, used)| now.duration_since(*used) < POOL_IDLE);
            if let Some((conn, used)) = conns.get_mut(&key) {
                *used = now;
                return Ok(conn.clone());
            }
        }
        // Two reconciles may both connect here; the first connection stored wins.
        let conn = Conn::connect(opts).await?;
        let mut conns = self.conns.lock().expect("pool lock");
        Ok(conns.entry(key).or_insert((conn, now)).0.clone())
    }

    /// [`replica_persistence`], reused for [`REPLICA_VERDICT_TTL`].
    async fn replica_persistence(&self, primary: &ConnectOptions, replica: &ReplicaAddr) -> Persistence {
        let key = (Self::key(primary), replica.to_string());
        let now = Instant::now();
        {
            let mut verdicts = self.replica_verdicts.lock().expect("pool lock");
            verdicts.retain(|_, (_, at)| now.duration_since(*at) < REPLICA_VERDICT_TTL);
            if let Some((v, _)) = verdicts.get(&key) {
                return v.clone();
            }
        }
        let verdict = replica_persistence(primary, replica).await;
        self.replica_verdicts.lock().expect("pool lock").insert(key, (verdict.clone(), now));
        verdict
    }

    fn discard(&self, opts: &ConnectOptions) {
        self.conns.lock().expect("pool lock").remove(&Self::key(opts));
    }

    /// How many connections the pool holds.
    pub fn len(&self) -> usize {
        self.conns.lock().expect("pool lock").len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Probes relay `relay_id`'s Redis at `url` within [`PROBE_TIMEOUT`], over TLS with
    /// `tls` (what the relay's `redis.tls` files hold) for a `rediss` URL; messages are
    /// redacted.
    pub async fn probe(&self, url: &str, cluster: bool, tls: Option<TlsMaterial>, relay_id: &str) -> Probe {
        self.probe_with(&ConnectOptions::new(url).cluster(cluster).tls(tls), relay_id).await
    }

    /// [`probe`](Self::probe) with every connection option (the passwords the relay reads
    /// from its Secrets: `spec.redis.passwordSecretRef`, `spec.redis.sentinel.passwordSecretRef`).
    pub async fn probe_with(&self, opts: &ConnectOptions, relay_id: &str) -> Probe {
        let inner = probe_inner(self, opts, relay_id);
        let p = match tokio::time::timeout(PROBE_TIMEOUT, inner).await {
            Ok(p) => p,
            Err(_) => Probe {
                stats: Err(ProbeError {
                    kind: ProbeFailure::Timeout,
                    message: format!("no answer within {PROBE_TIMEOUT:?}"),
                }),
                persistence: Persistence::Unknown("not reachable".into()),
                destination: None,
                replication: Err("not reachable".into()),
            },
        };
        if p.stats.as_ref().is_err_and(|e| e.kind != ProbeFailure::Read) {
            self.discard(opts);
        }
        let clean = |t: &str| redact_all(t, opts);
        Probe {
            stats: p.stats.map_err(|e| ProbeError { message: clean(&e.message), ..e }),
            persistence: p.persistence.redacted(&clean),
            destination: p.destination,
            replication: p.replication.map_err(|e| clean(&e)),
        }
    }
}

/// [`Pool::probe`] on a connection of its own (closed afterwards).
pub async fn probe(url: &str, cluster: bool, tls: Option<TlsMaterial>, relay_id: &str) -> Probe {
    Pool::default().probe(url, cluster, tls, relay_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replicas_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
            slave0:ip=10.0.0.5,port=6379,state=online,offset=1234,lag=0\r\n\
            slave1:ip=10.0.0.6,port=6379,state=online,offset=1200,lag=7\r\n\
            slave2:ip=10.0.0.7,port=6379,state=wait_bgsave,offset=0,lag=0\r\n\
            master_failover_state:no-failover\r\nmaster_replid:abc\r\nslave_read_only:1\r\n";
        let at = |ip: &str| ReplicaAddr { ip: ip.into(), port: 6379 };
        assert_eq!(
            replication_of(info),
            Replication {
                role: "master".into(),
                connected: 3,
                in_sync: 1,
                replicas: vec![at("10.0.0.5"), at("10.0.0.6"), at("10.0.0.7")],
            }
        );
        let replica =
            "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.4\r\nslave_repl_offset:5\r\nslave_priority:100\r\n";
        assert_eq!(replication_of(replica), Replication { role: "slave".into(), ..Replication::default() });
    }

    #[test]
    fn reads_replica_addresses_ipv6_and_announced_names() {
        let info = "role:master\nconnected_slaves:3\n\
            slave0:ip=::1,port=6380,state=online,offset=1,lag=0\n\
            slave1:ip=redis-1.redis.cx.svc,port=6379,state=online,offset=1,lag=0\n\
            slave2:ip=10.0.0.9,port=bogus,state=online,offset=1,lag=0\n";
        let r = replication_of(info);
        assert_eq!(r.connected, 3);
        let addrs: Vec<String> = r.replicas.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["[::1]:6380", "redis-1.redis.cx.svc:6379"], "a line without a port gives no address");
    }

    #[test]
    fn a_replicas_url_keeps_scheme_credentials_and_options() {
        let r = ReplicaAddr { ip: "10.0.0.6".into(), port: 6380 };
        let url = |primary: &str| replica_url(primary, &r);
        assert_eq!(url("redis://:pw@redis.cx.svc:6379/2").as_deref(), Some("redis://:pw@10.0.0.6:6380/2"));
        assert_eq!(
            url("rediss://relay:p%40ss@redis.cx.svc:6380").as_deref(),
            Some("rediss://relay:p%40ss@10.0.0.6:6380")
        );
        assert_eq!(url("redis://redis?protocol=resp3").as_deref(), Some("redis://10.0.0.6:6380?protocol=resp3"));
        assert_eq!(url("rediss+cluster://:pw@a:7000,b:7001/").as_deref(), Some("rediss://:pw@10.0.0.6:6380/"));
        let v6 = ReplicaAddr { ip: "fd00::6".into(), port: 6379 };
        assert_eq!(replica_url("redis://:pw@[fd00::5]:6379/", &v6).as_deref(), Some("redis://:pw@[fd00::6]:6379/"));
        assert_eq!(url("unix:///run/redis.sock"), None);
        assert_eq!(url("redis+sentinel://:pw@s1:26379,s2:26379/mymaster").as_deref(), Some("redis://10.0.0.6:6380/0"));
    }

    #[test]
    fn persistence_across_nodes_reports_the_first_problem() {
        let r = |port| ReplicaAddr { ip: "127.0.0.1".into(), port };
        let replica = |port, problem| Persistence::Replica { replica: r(port), problem: Box::new(problem) };
        let unknown = || Persistence::Unknown("not reachable from the operator: connection refused".into());
        assert_eq!(persistence_across(Persistence::Durable, vec![]), Persistence::Durable);
        assert_eq!(
            persistence_across(Persistence::Durable, vec![(r(1), Persistence::Durable), (r(2), Persistence::Durable)]),
            Persistence::Durable
        );
        // The primary's own problem comes first, as before.
        assert_eq!(
            persistence_across(Persistence::AppendOnlyOff, vec![(r(1), Persistence::Eviction("allkeys-lru".into()))]),
            Persistence::AppendOnlyOff
        );
        assert_eq!(
            persistence_across(
                Persistence::Durable,
                vec![(r(1), Persistence::Durable), (r(2), Persistence::AppendOnlyOff)]
            ),
            replica(2, Persistence::AppendOnlyOff)
        );
        // A replica known to lose events outweighs one whose settings are unknown.
        assert_eq!(
            persistence_across(
                Persistence::Durable,
                vec![(r(1), unknown()), (r(2), Persistence::Eviction("volatile-lru".into()))]
            ),
            replica(2, Persistence::Eviction("volatile-lru".into()))
        );
        assert_eq!(
            persistence_across(Persistence::Durable, vec![(r(1), Persistence::Durable), (r(2), unknown())]),
            replica(2, unknown())
        );
    }

    #[test]
    fn judges_persistence_settings() {
        assert_eq!(persistence_of(Some("yes"), Some("noeviction")), Persistence::Durable);
        assert_eq!(persistence_of(Some("no"), Some("noeviction")), Persistence::AppendOnlyOff);
        assert_eq!(persistence_of(Some("yes"), Some("allkeys-lru")), Persistence::Eviction("allkeys-lru".into()));
        assert!(matches!(persistence_of(None, None), Persistence::Unknown(_)));
    }

    #[test]
    fn parses_config_get_in_resp2_and_resp3() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            config_value(Value::Array(vec![bulk("appendonly"), bulk("yes")]), "appendonly").as_deref(),
            Some("yes")
        );
        assert_eq!(
            config_value(Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]), "maxmemory-policy")
                .as_deref(),
            Some("noeviction")
        );
        assert_eq!(config_value(Value::Array(vec![]), "appendonly"), None);
    }

    #[test]
    fn redaction_hides_url_and_password() {
        let url = "redis://:hunter2@redis.cx.svc:6379/";
        let msg = redact(&format!("failed to connect to {url}: auth hunter2 wrong"), url);
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("<redis url>"), "{msg}");
        let replica = ReplicaAddr { ip: "10.0.0.6".into(), port: 6379 };
        let verdict =
            Persistence::Replica { replica, problem: Box::new(Persistence::Unknown("AUTH hunter2 failed".into())) };
        assert_eq!(format!("{:?}", verdict.redacted(&|t| redact(t, url))).matches("hunter2").count(), 0);
    }

    #[test]
    fn sentinel_urls_and_secret_passwords_are_redacted_and_give_replica_urls() {
        let url = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/2";
        assert!(!redact("AUTH s3cret refused", url).contains("s3cret"));
        let opts = ConnectOptions::new(url).password(Some("data-pw".into())).sentinel_password(Some("sent-pw".into()));
        let msg = redact_all("data-pw and sent-pw and s3cret", &opts);
        assert_eq!(msg, "<redacted> and <redacted> and <redacted>");
        let r = ReplicaAddr { ip: "10.0.0.7".into(), port: 6380 };
        assert_eq!(replica_url(url, &r).as_deref(), Some("redis://10.0.0.7:6380/2"));
        let tls_user = "rediss+sentinel://app%20x:pw@h:1/m";
        assert_eq!(replica_url(tls_user, &r).as_deref(), Some("rediss://app%20x@10.0.0.7:6380/0"));
    }
}
