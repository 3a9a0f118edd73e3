//! Reads what status reports about a relay's Redis: queue figures (through the store's
//! `stats()`, the same format the sidecar writes) and whether the server would keep an
//! acknowledged event (`appendonly yes`, `maxmemory-policy noeviction`).
//!
//! The Redis URL is a secret: it is used to connect and never appears in a message.

use redis::{FromRedisValue, Value};
use std::time::Duration;
use webhook_relay_store::{Conn, ConnectOptions, Stats, Store, StoreError, TlsMaterial};

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

async fn probe_inner(url: &str, cluster: bool, tls: Option<TlsMaterial>, relay_id: &str) -> Probe {
    let unreachable =
        |e: ProbeError| Probe { stats: Err(e), persistence: Persistence::Unknown("not reachable".into()) };
    let conn = match Conn::connect(&ConnectOptions::new(url).cluster(cluster).tls(tls)).await {
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
    let persistence = match (config_get(&conn, "appendonly").await, config_get(&conn, "maxmemory-policy").await) {
        (Ok(a), Ok(p)) => persistence_of(a.as_deref(), p.as_deref()),
        (Err(e), _) | (_, Err(e)) => Persistence::Unknown(format!("CONFIG GET refused: {e}")),
    };
    Probe { stats, persistence }
}

/// Probes relay `relay_id`'s Redis at `url` within [`PROBE_TIMEOUT`], over TLS with `tls`
/// (what the relay's `redis.tls` files hold) for a `rediss` URL; messages are redacted.
pub async fn probe(url: &str, cluster: bool, tls: Option<TlsMaterial>, relay_id: &str) -> Probe {
    let p = match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(url, cluster, tls, relay_id)).await {
        Ok(p) => p,
        Err(_) => Probe {
            stats: Err(ProbeError {
                kind: ProbeFailure::Timeout,
                message: format!("no answer within {PROBE_TIMEOUT:?}"),
            }),
            persistence: Persistence::Unknown("not reachable".into()),
        },
    };
    Probe {
        stats: p.stats,
        persistence: match p.persistence {
            Persistence::Unknown(e) => Persistence::Unknown(redact(&e, url)),
            other => other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
