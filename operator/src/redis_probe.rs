//! Reads what status reports about a relay's Redis: queue figures (through the store's
//! `stats()`, the same format the sidecar writes) and whether the server would keep an
//! acknowledged event (`appendonly yes`, `maxmemory-policy noeviction`).
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

/// Removes the URL and its password from `text` (a Redis client error may echo either).
pub fn redact(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "<redis url>");
    if let Ok(u) = url::Url::parse(url)
        && let Some(pw) = u.password()
        && !pw.is_empty()
    {
        out = out.replace(pw, "<redacted>");
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

async fn config_get(conn: &Conn, name: &str) -> Result<Option<String>, String> {
    let v = conn.clone().cmd(redis::cmd("CONFIG").arg("GET").arg(name)).await.map_err(|e| e.to_string())?;
    Ok(config_value(v, name))
}

async fn probe_inner(pool: &Pool, url: &str, cluster: bool, tls: Option<TlsMaterial>, relay_id: &str) -> Probe {
    let unreachable = |e: ProbeError| Probe {
        stats: Err(e),
        persistence: Persistence::Unknown("not reachable".into()),
        destination: None,
        replication: Err("not reachable".into()),
    };
    let conn = match pool.conn(url, cluster, tls).await {
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
    let persistence = match (config_get(&conn, "appendonly").await, config_get(&conn, "maxmemory-policy").await) {
        (Ok(a), Ok(p)) => persistence_of(a.as_deref(), p.as_deref()),
        (Err(e), _) | (_, Err(e)) => Persistence::Unknown(format!("CONFIG GET refused: {e}")),
    };
    let mut info = redis::cmd("INFO");
    info.arg("replication");
    let replication = match conn.clone().cmd_for_key(&store.keys().due, info).await {
        Ok(v) => String::from_redis_value(v).map(|text| replication_of(&text)).map_err(|e| e.to_string()),
        Err(e) => Err(format!("INFO replication refused: {}", redact(&e.to_string(), url))),
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
}

impl Pool {
    /// The pool's key: a digest, so the map holds no URL (password) or key material.
    fn key(url: &str, cluster: bool, tls: Option<&TlsMaterial>) -> [u8; 32] {
        let mut h = Sha256::new();
        let part = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(&mut h, url.as_bytes());
        part(&mut h, &[u8::from(cluster)]);
        let tls = tls.cloned().unwrap_or_default();
        part(&mut h, tls.ca_pem.as_deref().unwrap_or(b"-"));
        let (cert, key) = tls.client.unwrap_or_default();
        part(&mut h, &cert);
        part(&mut h, &key);
        h.finalize().into()
    }

    async fn conn(&self, url: &str, cluster: bool, tls: Option<TlsMaterial>) -> redis::RedisResult<Conn> {
        let key = Self::key(url, cluster, tls.as_ref());
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
        let conn = Conn::connect(&ConnectOptions::new(url).cluster(cluster).tls(tls)).await?;
        let mut conns = self.conns.lock().expect("pool lock");
        Ok(conns.entry(key).or_insert((conn, now)).0.clone())
    }

    fn discard(&self, url: &str, cluster: bool, tls: Option<&TlsMaterial>) {
        self.conns.lock().expect("pool lock").remove(&Self::key(url, cluster, tls));
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
        let inner = probe_inner(self, url, cluster, tls.clone(), relay_id);
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
            self.discard(url, cluster, tls.as_ref());
        }
        Probe {
            stats: p.stats,
            persistence: match p.persistence {
                Persistence::Unknown(e) => Persistence::Unknown(redact(&e, url)),
                other => other,
            },
            destination: p.destination,
            replication: p.replication.map_err(|e| redact(&e, url)),
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
        assert_eq!(replication_of(info), Replication { role: "master".into(), connected: 3, in_sync: 1 });
        let replica =
            "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.4\r\nslave_repl_offset:5\r\nslave_priority:100\r\n";
        assert_eq!(replication_of(replica), Replication { role: "slave".into(), connected: 0, in_sync: 0 });
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
    }
}
