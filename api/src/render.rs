//! The one translation from a `WebhookRelay` to the sidecar's [`RelayConfig`], and the
//! one list of which Secret key becomes which environment variable.
//!
//! Both halves of the contract live here so the operator (which writes the ConfigMap and
//! the container's `env`) and the sidecar (which reads `relay.yaml` and its environment)
//! can never disagree on a name.

use crate::config::{
    AdminConfig, CircuitBreakerConfig, DeadLetterConfig, DeliveryConfig, DestinationConfig, GenesysConfig, MissingKey,
    OnDeadLetter, OrderingConfig, RateLimitConfig, ReceiptsConfig, RedisConfig, RedisSentinelConfig, RedisTlsConfig,
    RelayConfig, RelayId, SignatureEncoding, SourceConfig, TracingConfig, VerifyConfig, check_key_pointer, defaults,
};
use crate::crd::{
    MissingKeySpec, OnDeadLetterSpec, SignatureEncodingSpec, VerifyScheme, WebhookRelay, WebhookRelaySpec,
};
use crate::{ConfigError, duration};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Key of the Genesys OAuth client id in `spec.genesys.credentialsSecretRef`.
pub const GENESYS_CLIENT_ID_KEY: &str = "clientId";
/// Key of the Genesys OAuth client secret in `spec.genesys.credentialsSecretRef`.
pub const GENESYS_CLIENT_SECRET_KEY: &str = "clientSecret";
/// `source.shutdownDelay` of relays the operator runs unless `spec.source.shutdownDelay` says:
/// long enough for the EndpointSlice change of a terminating pod to reach kube-proxy and
/// the Ingress controller (Traefik batches provider updates for 2 s by default).
pub const DEFAULT_SHUTDOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
/// Where the relay container finds the Redis TLS files mounted from `spec.redis.tls`.
pub const REDIS_TLS_DIR: &str = "/var/run/webhook-relay/redis-tls";
/// File name of the CA certificate in [`REDIS_TLS_DIR`].
pub const REDIS_TLS_CA_FILE: &str = "ca.crt";
/// File name of the client certificate in [`REDIS_TLS_DIR`] (and its key in the Secret).
pub const REDIS_TLS_CERT_FILE: &str = "tls.crt";
/// File name of the client key in [`REDIS_TLS_DIR`] (and its key in the Secret).
pub const REDIS_TLS_KEY_FILE: &str = "tls.key";

/// Why a spec cannot become a relay config; `field` is the path in the resource
/// (`spec.destination.url`), `message` says what is wrong and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { field: field.into(), message: message.into() }
    }
}

/// One secret the relay container reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    /// Environment variable name, e.g. `REDIS_URL`.
    pub env: String,
    /// Secret name in the relay's namespace.
    pub secret: String,
    /// Key within the Secret.
    pub key: String,
    /// The spec field that references it, for messages (`spec.redis.urlSecretRef`).
    pub field: &'static str,
}

impl fmt::Display for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {:?} key {:?} ({})", self.secret, self.key, self.field)
    }
}

/// The relay id of a resource: `<namespace>/<name>`, the Redis hash tag of its keys.
pub fn relay_id(relay: &WebhookRelay) -> Result<RelayId, SpecError> {
    let ns = relay
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| SpecError::new("metadata.namespace", "is not set; WebhookRelay is a namespaced resource"))?;
    let name = relay.metadata.name.as_deref().unwrap_or_default();
    RelayId::new(format!("{ns}/{name}")).map_err(|e| SpecError::new("metadata.name", e))
}

/// Every Secret key the relay needs, with the environment variable it is passed as.
/// The values never leave the Secret: the operator writes `secretKeyRef`s.
/// The env var the operator gives the previous signing secret
/// (`spec.source.verify.previousSecretRef`).
pub const PREVIOUS_SIGNING_SECRET_ENV: &str = "RELAY_PREVIOUS_SIGNING_SECRET";
/// The env var the operator gives the OTLP collector's headers (`spec.tracing.headersSecretRef`).
pub const OTLP_HEADERS_ENV: &str = "RELAY_OTLP_HEADERS";
/// The env var the operator gives the Redis data nodes' password (`spec.redis.passwordSecretRef`).
pub const REDIS_PASSWORD_ENV: &str = "RELAY_REDIS_PASSWORD";
/// The env var the operator gives the Sentinels' password
/// (`spec.redis.sentinel.passwordSecretRef`).
pub const REDIS_SENTINEL_PASSWORD_ENV: &str = "RELAY_REDIS_SENTINEL_PASSWORD";

pub fn secret_env(spec: &WebhookRelaySpec) -> Vec<SecretEnv> {
    let mut out = vec![SecretEnv {
        env: defaults::redis_url_env(),
        secret: spec.redis.url_secret_ref.name.clone(),
        key: spec.redis.url_secret_ref.key.clone(),
        field: "spec.redis.urlSecretRef",
    }];
    if let Some(p) = &spec.redis.password_secret_ref {
        out.push(SecretEnv {
            env: REDIS_PASSWORD_ENV.into(),
            secret: p.name.clone(),
            key: p.key.clone(),
            field: "spec.redis.passwordSecretRef",
        });
    }
    if let Some(p) = spec.redis.sentinel.as_ref().and_then(|s| s.password_secret_ref.as_ref()) {
        out.push(SecretEnv {
            env: REDIS_SENTINEL_PASSWORD_ENV.into(),
            secret: p.name.clone(),
            key: p.key.clone(),
            field: "spec.redis.sentinel.passwordSecretRef",
        });
    }
    if spec.source.verify.scheme != VerifyScheme::None
        && let Some(r) = &spec.source.verify.secret_ref
    {
        out.push(SecretEnv {
            env: defaults::signing_secret_env(),
            secret: r.name.clone(),
            key: r.key.clone(),
            field: "spec.source.verify.secretRef",
        });
        if let Some(p) = &spec.source.verify.previous_secret_ref {
            out.push(SecretEnv {
                env: PREVIOUS_SIGNING_SECRET_ENV.into(),
                secret: p.name.clone(),
                key: p.key.clone(),
                field: "spec.source.verify.previousSecretRef",
            });
        }
    }
    if let Some(admin) = &spec.admin {
        out.push(SecretEnv {
            env: defaults::admin_token_env(),
            secret: admin.token_secret_ref.name.clone(),
            key: admin.token_secret_ref.key.clone(),
            field: "spec.admin.tokenSecretRef",
        });
    }
    if let Some(g) = &spec.genesys {
        for (env, key) in [
            (defaults::genesys_client_id_env(), GENESYS_CLIENT_ID_KEY),
            (defaults::genesys_client_secret_env(), GENESYS_CLIENT_SECRET_KEY),
        ] {
            out.push(SecretEnv {
                env,
                secret: g.credentials_secret_ref.name.clone(),
                key: key.into(),
                field: "spec.genesys.credentialsSecretRef",
            });
        }
    }
    if let Some(h) = spec.tracing.as_ref().and_then(|t| t.headers_secret_ref.as_ref()) {
        out.push(SecretEnv {
            env: OTLP_HEADERS_ENV.into(),
            secret: h.name.clone(),
            key: h.key.clone(),
            field: "spec.tracing.headersSecretRef",
        });
    }
    out
}

/// One Secret key the relay container reads as a file (mounted read-only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    /// Secret name in the relay's namespace.
    pub secret: String,
    /// Key within the Secret.
    pub key: String,
    /// File name under [`REDIS_TLS_DIR`].
    pub file: &'static str,
    /// The spec field that references it, for messages.
    pub field: &'static str,
}

impl fmt::Display for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {:?} key {:?} ({})", self.secret, self.key, self.field)
    }
}

/// Every Secret key the relay reads as a file: the Redis TLS CA and client certificate.
pub fn secret_files(spec: &WebhookRelaySpec) -> Vec<SecretFile> {
    let mut out = vec![];
    let Some(tls) = &spec.redis.tls else { return out };
    if let Some(ca) = &tls.ca_secret_ref {
        out.push(SecretFile {
            secret: ca.name.clone(),
            key: ca.key.clone(),
            file: REDIS_TLS_CA_FILE,
            field: "spec.redis.tls.caSecretRef",
        });
    }
    if let Some(client) = &tls.client_cert_secret_ref {
        for file in [REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE] {
            out.push(SecretFile {
                secret: client.name.clone(),
                key: file.into(),
                file,
                field: "spec.redis.tls.clientCertSecretRef",
            });
        }
    }
    out
}

fn dur(field: &str, value: Option<&String>, default: fn() -> Duration) -> Result<Duration, SpecError> {
    match value {
        None => Ok(default()),
        Some(s) => duration::parse(s).map_err(|e| SpecError::new(field, e)),
    }
}

fn url(field: &str, value: &str) -> Result<Url, SpecError> {
    Url::parse(value).map_err(|e| {
        SpecError::new(
            field,
            format!("{value:?} is not a URL ({e}); write it like \"http://orders.cx.svc:8080/events\""),
        )
    })
}

fn unsigned<T: TryFrom<i64>>(field: &str, value: Option<i64>, default: fn() -> T) -> Result<T, SpecError> {
    match value {
        None => Ok(default()),
        Some(v) => T::try_from(v).map_err(|_| SpecError::new(field, format!("must be a positive number (got {v})"))),
    }
}

/// The relay container's listening ports (`spec.workload.ports`, else the ports of
/// [`defaults::listen`] and [`defaults::admin_listen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Intake port (`listen`).
    pub http: u16,
    /// Admin port (`adminListen`): probes, metrics, `/v1/`.
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports { http: defaults::listen().port(), admin: defaults::admin_listen().port() }
    }
}

/// The ports of `spec.workload.ports` with their defaults; each in 1024..=65535 and the
/// two different, as the CRD schema also demands.
pub fn ports(spec: &WebhookRelaySpec) -> Result<Ports, SpecError> {
    let set = spec.workload.as_ref().and_then(|w| w.ports).unwrap_or_default();
    let d = Ports::default();
    let port = |field: &str, value: Option<i32>, default: u16| -> Result<u16, SpecError> {
        match value {
            None => Ok(default),
            Some(v) => u16::try_from(v)
                .ok()
                .filter(|p| *p >= 1024)
                .ok_or_else(|| SpecError::new(field, format!("must be a port between 1024 and 65535 (got {v})"))),
        }
    };
    let p = Ports {
        http: port("spec.workload.ports.http", set.http, d.http)?,
        admin: port("spec.workload.ports.admin", set.admin, d.admin)?,
    };
    if p.http == p.admin {
        return Err(SpecError::new(
            "spec.workload.ports",
            format!("http and admin must be different ports (both are {})", p.http),
        ));
    }
    Ok(p)
}

/// Translates a `WebhookRelay` into the sidecar's `relay.yaml`, validated with
/// [`RelayConfig::validate`]. Secrets appear only as the environment variable names of
/// [`secret_env`]; unset fields take the defaults of [`crate::config::defaults`].
pub fn relay_config(relay: &WebhookRelay) -> Result<RelayConfig, SpecError> {
    let spec = &relay.spec;
    let ports = ports(spec)?;
    let src = &spec.source;
    let verify = match src.verify.scheme {
        VerifyScheme::None => VerifyConfig::None,
        scheme => {
            if src.verify.secret_ref.is_none() {
                return Err(SpecError::new(
                    "spec.source.verify.secretRef",
                    "is required unless scheme is none: name the Secret key holding the signing secret",
                ));
            }
            let secret_env = defaults::signing_secret_env();
            let previous_secret_env =
                src.verify.previous_secret_ref.as_ref().map(|_| PREVIOUS_SIGNING_SECRET_ENV.to_string());
            match scheme {
                VerifyScheme::GenesysOpenMessaging => {
                    VerifyConfig::GenesysOpenMessaging { secret_env, previous_secret_env }
                }
                _ => VerifyConfig::HmacSha256 {
                    secret_env,
                    previous_secret_env,
                    header: src.verify.header.clone().unwrap_or_else(defaults::hmac_header),
                    encoding: match src.verify.encoding {
                        Some(SignatureEncodingSpec::Base64) => SignatureEncoding::Base64,
                        Some(SignatureEncodingSpec::Hex) | None => SignatureEncoding::Hex,
                    },
                    prefix: src.verify.prefix.clone().unwrap_or_default(),
                },
            }
        }
    };
    let source = SourceConfig {
        path: relay.source_path(),
        verify,
        id_pointer: src.id_pointer.clone().unwrap_or_else(defaults::id_pointer),
        max_body_bytes: unsigned("spec.source.maxBodyBytes", src.max_body_bytes, defaults::max_body_bytes)?,
        dedup_window: dur("spec.source.dedupWindow", src.dedup_window.as_ref(), defaults::dedup_window)?,
        read_timeout: defaults::read_timeout(),
        max_concurrent_requests: defaults::max_concurrent_requests(),
        max_buffered_bytes: unsigned(
            "spec.source.maxBufferedBytes",
            src.max_buffered_bytes,
            defaults::max_buffered_bytes,
        )?,
        shutdown_delay: dur("spec.source.shutdownDelay", src.shutdown_delay.as_ref(), || DEFAULT_SHUTDOWN_DELAY)?,
    };
    let destination = DestinationConfig {
        url: url("spec.destination.url", &spec.destination.url)?,
        timeout: dur("spec.destination.timeout", spec.destination.timeout.as_ref(), defaults::destination_timeout)?,
    };
    let d = spec.delivery.clone().unwrap_or_default();
    let dl = d.dead_letter.clone().unwrap_or_default();
    let delivery = DeliveryConfig {
        max_attempts: unsigned("spec.delivery.maxAttempts", d.max_attempts.map(i64::from), defaults::max_attempts)?,
        initial_delay: dur("spec.delivery.initialDelay", d.initial_delay.as_ref(), defaults::initial_delay)?,
        max_delay: dur("spec.delivery.maxDelay", d.max_delay.as_ref(), defaults::max_delay)?,
        multiplier: d.multiplier.unwrap_or_else(defaults::multiplier),
        concurrency: unsigned("spec.delivery.concurrency", d.concurrency.map(i64::from), defaults::concurrency)?,
        lease: None,
        dead_letter: DeadLetterConfig {
            max_age: dur("spec.delivery.deadLetter.maxAge", dl.max_age.as_ref(), defaults::dead_max_age)?,
            max_entries: unsigned("spec.delivery.deadLetter.maxEntries", dl.max_entries, defaults::dead_max_entries)?,
        },
        rate_limit: match &d.rate_limit {
            None => None,
            Some(r) => Some(RateLimitConfig {
                per_second: r.per_second,
                burst: r
                    .burst
                    .map(|b| unsigned("spec.delivery.rateLimit.burst", Some(i64::from(b)), || 0u32))
                    .transpose()?,
            }),
        },
        circuit_breaker: match &d.circuit_breaker {
            None => None,
            Some(b) => Some(CircuitBreakerConfig {
                failure_threshold: unsigned(
                    "spec.delivery.circuitBreaker.failureThreshold",
                    b.failure_threshold.map(i64::from),
                    defaults::failure_threshold,
                )?,
                open_for: dur("spec.delivery.circuitBreaker.openFor", b.open_for.as_ref(), defaults::open_for)?,
            }),
        },
        ordering: match &d.ordering {
            None => None,
            Some(o) => {
                check_key_pointer(&o.key_pointer)
                    .map_err(|m| SpecError::new("spec.delivery.ordering.keyPointer", m))?;
                Some(OrderingConfig {
                    key_pointer: o.key_pointer.clone(),
                    missing_key: match o.missing_key {
                        Some(MissingKeySpec::Unordered) => MissingKey::Unordered,
                        Some(MissingKeySpec::Refuse) | None => MissingKey::Refuse,
                    },
                    on_dead_letter: match o.on_dead_letter {
                        Some(OnDeadLetterSpec::Block) => OnDeadLetter::Block,
                        Some(OnDeadLetterSpec::Continue) | None => OnDeadLetter::Continue,
                    },
                })
            }
        },
    };
    let genesys = match &spec.genesys {
        None => None,
        Some(g) => Some(GenesysConfig {
            environment: g.environment.clone(),
            region: g.region.clone(),
            api_base_url: g.api_base_url.as_deref().map(|u| url("spec.genesys.apiBaseUrl", u)).transpose()?,
            login_base_url: g.login_base_url.as_deref().map(|u| url("spec.genesys.loginBaseUrl", u)).transpose()?,
            client_id_env: defaults::genesys_client_id_env(),
            client_secret_env: defaults::genesys_client_secret_env(),
            integration_id: g.integration_id.clone(),
            receipts: {
                let r = g.receipts.clone().unwrap_or_default();
                ReceiptsConfig {
                    on_dead_letter: r.on_dead_letter.unwrap_or_else(defaults::yes),
                    on_delivered: r.on_delivered.unwrap_or_default(),
                }
            },
        }),
    };
    let config = RelayConfig {
        relay: relay_id(relay)?,
        listen: SocketAddr::new(defaults::listen().ip(), ports.http),
        admin_listen: SocketAddr::new(defaults::admin_listen().ip(), ports.admin),
        source,
        destination,
        delivery,
        redis: RedisConfig {
            url_env: defaults::redis_url_env(),
            cluster: spec.redis.cluster.unwrap_or_default(),
            password_env: spec.redis.password_secret_ref.as_ref().map(|_| REDIS_PASSWORD_ENV.to_string()),
            sentinel: spec.redis.sentinel.as_ref().map(|s| RedisSentinelConfig {
                password_env: s.password_secret_ref.as_ref().map(|_| REDIS_SENTINEL_PASSWORD_ENV.to_string()),
            }),
            tls: spec.redis.tls.as_ref().map(|t| {
                let file = |name: &str| std::path::Path::new(REDIS_TLS_DIR).join(name);
                let client = t.client_cert_secret_ref.is_some();
                RedisTlsConfig {
                    ca_file: t.ca_secret_ref.as_ref().map(|_| file(REDIS_TLS_CA_FILE)),
                    cert_file: client.then(|| file(REDIS_TLS_CERT_FILE)),
                    key_file: client.then(|| file(REDIS_TLS_KEY_FILE)),
                }
            }),
            wait_for_replicas: u32::try_from(spec.redis.wait_for_replicas.unwrap_or(0))
                .map_err(|_| SpecError::new("spec.redis.waitForReplicas", "must be between 0 and 16"))?,
            wait_timeout: dur("spec.redis.waitTimeout", spec.redis.wait_timeout.as_ref(), defaults::wait_timeout)?,
        },
        admin: AdminConfig { token_env: defaults::admin_token_env() },
        genesys,
        tracing: match &spec.tracing {
            None => None,
            Some(t) => Some(TracingConfig {
                otlp_endpoint: url("spec.tracing.otlpEndpoint", &t.otlp_endpoint)?,
                service_name: t.service_name.clone().unwrap_or_else(defaults::service_name),
                headers_env: t.headers_secret_ref.as_ref().map(|_| OTLP_HEADERS_ENV.to_string()),
            }),
        },
    };
    config.validate().map_err(|e| match e {
        ConfigError::Invalid { field, message } => SpecError::new(spec_field(field), message),
        ConfigError::Parse { path, message } => SpecError::new(format!("spec.{path}"), message),
    })?;
    Ok(config)
}

/// The spec path of a `relay.yaml` field (the names match but for the `...Env` fields,
/// which the spec writes as Secret references).
fn spec_field(config_field: &str) -> String {
    let field = match config_field {
        "source.verify.secretEnv" => "source.verify.secretRef",
        "redis.urlEnv" => "redis.urlSecretRef",
        "admin.tokenEnv" => "admin.tokenSecretRef",
        "redis.tls" => "redis.tls.clientCertSecretRef",
        "genesys.clientIdEnv" | "genesys.clientSecretEnv" => "genesys.credentialsSecretRef",
        "tracing.headersEnv" => "tracing.headersSecretRef",
        "redis.passwordEnv" => "redis.passwordSecretRef",
        "redis.sentinel.passwordEnv" => "redis.sentinel.passwordSecretRef",
        other => other,
    };
    format!("spec.{field}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{WebhookRelay, WorkloadMode};

    const DESIGN_EXAMPLE: &str = r#"
apiVersion: webhookrelay.dev/v1alpha1
kind: WebhookRelay
metadata: { name: orders, namespace: cx }
spec:
  source: { path: /webhooks/genesys, verify: { scheme: genesys-open-messaging,
            secretRef: { name: genesys-webhook, key: secret } } }
  destination: { url: "http://orders.cx.svc:8080/events", timeout: 5s }
  delivery: { maxAttempts: 8, initialDelay: 1s, maxDelay: 1h }
  redis: { urlSecretRef: { name: relay-redis, key: url } }
  admin: { tokenSecretRef: { name: relay-admin, key: token } }
  genesys:
    region: us-east-1
    credentialsSecretRef: { name: genesys-oauth }
    integrationId: 6d1e0000-0000-0000-0000-000000000000
    receipts: { onDeadLetter: true, onDelivered: false }
  workload:
    mode: Standalone
    replicas: 2
  ingress: { host: hooks.example.com, className: nginx, tlsSecretName: hooks-tls }
"#;

    fn relay(yaml: &str) -> WebhookRelay {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn with(edit: impl FnOnce(&mut WebhookRelay)) -> WebhookRelay {
        let mut r = relay(DESIGN_EXAMPLE);
        edit(&mut r);
        r
    }

    #[test]
    fn a_previous_signing_secret_becomes_an_env_var_and_a_config_setting() {
        let r = with(|r| {
            r.spec.source.verify.previous_secret_ref =
                Some(crate::crd::SecretKeyRef { name: "genesys-webhook-old".into(), key: "secret".into() });
        });
        let c = relay_config(&r).unwrap();
        assert_eq!(c.source.verify.secret_envs(), Some(("RELAY_SIGNING_SECRET", Some(PREVIOUS_SIGNING_SECRET_ENV))));
        let env = secret_env(&r.spec);
        let previous = env.iter().find(|e| e.env == PREVIOUS_SIGNING_SECRET_ENV).expect("the previous secret's env");
        assert_eq!((previous.secret.as_str(), previous.key.as_str()), ("genesys-webhook-old", "secret"));
        assert_eq!(previous.field, "spec.source.verify.previousSecretRef");
        assert!(c.to_yaml().contains("previousSecretEnv: RELAY_PREVIOUS_SIGNING_SECRET"), "{}", c.to_yaml());
        // Without it, neither appears.
        let plain = relay_config(&relay(DESIGN_EXAMPLE)).unwrap();
        assert!(!plain.to_yaml().contains("previousSecretEnv"));
    }

    #[test]
    fn design_example_translates() {
        let r = relay(DESIGN_EXAMPLE);
        assert_eq!(r.mode(), WorkloadMode::Standalone);
        let c = relay_config(&r).unwrap();
        assert_eq!(c.relay.as_str(), "cx/orders");
        assert_eq!(c.source.path, "/webhooks/genesys");
        assert_eq!(
            c.source.verify,
            VerifyConfig::GenesysOpenMessaging { secret_env: "RELAY_SIGNING_SECRET".into(), previous_secret_env: None }
        );
        assert_eq!(c.destination.url.as_str(), "http://orders.cx.svc:8080/events");
        assert_eq!(c.destination.timeout, Duration::from_secs(5));
        assert_eq!(c.delivery.max_delay, Duration::from_secs(3600));
        assert_eq!(c.delivery.concurrency, defaults::concurrency());
        assert_eq!(c.redis.url_env, "REDIS_URL");
        assert_eq!(c.admin.token_env, "RELAY_ADMIN_TOKEN");
        let g = c.genesys.as_ref().unwrap();
        assert_eq!(g.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            (g.client_id_env.as_str(), g.client_secret_env.as_str()),
            ("GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET")
        );
        // What the operator writes is what the sidecar loads.
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
    }

    #[test]
    fn rendered_yaml_never_holds_secret_names_or_keys() {
        let yaml = relay_config(&relay(DESIGN_EXAMPLE)).unwrap().to_yaml();
        for s in ["relay-redis", "genesys-webhook", "relay-admin", "genesys-oauth", "secretRef", "clientId:"] {
            assert!(!yaml.contains(s), "{s} in\n{yaml}");
        }
    }

    #[test]
    fn secrets_map_to_fixed_env_names() {
        let envs = secret_env(&relay(DESIGN_EXAMPLE).spec);
        let pairs: Vec<(&str, &str, &str)> =
            envs.iter().map(|e| (e.env.as_str(), e.secret.as_str(), e.key.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("REDIS_URL", "relay-redis", "url"),
                ("RELAY_SIGNING_SECRET", "genesys-webhook", "secret"),
                ("RELAY_ADMIN_TOKEN", "relay-admin", "token"),
                ("GENESYS_CLIENT_ID", "genesys-oauth", "clientId"),
                ("GENESYS_CLIENT_SECRET", "genesys-oauth", "clientSecret"),
            ]
        );
        let minimal = with(|r| {
            r.spec.admin = None;
            r.spec.genesys = None;
            r.spec.source.verify.scheme = VerifyScheme::None;
        });
        assert_eq!(secret_env(&minimal.spec).len(), 1);
    }

    #[test]
    fn tracing_renders_an_endpoint_and_its_headers_as_a_secret_env() {
        let r = with(|r| {
            r.spec.tracing = Some(crate::crd::TracingSpec {
                otlp_endpoint: "http://otel.observability:4318".into(),
                service_name: None,
                headers_secret_ref: Some(crate::crd::SecretKeyRef { name: "otlp".into(), key: "headers".into() }),
            })
        });
        let c = relay_config(&r).unwrap();
        let t = c.tracing.as_ref().unwrap();
        assert_eq!(t.traces_url().as_str(), "http://otel.observability:4318/v1/traces");
        assert_eq!((t.service_name.as_str(), t.headers_env.as_deref()), ("webhook-relay", Some(OTLP_HEADERS_ENV)));
        let env = secret_env(&r.spec);
        let last = env.last().unwrap();
        assert_eq!((last.env.as_str(), last.secret.as_str(), last.key.as_str()), (OTLP_HEADERS_ENV, "otlp", "headers"));
        assert!(!c.to_yaml().contains("otlp\n") && !c.to_yaml().contains("headers:"), "{}", c.to_yaml());
        let bad = with(|r| {
            r.spec.tracing = Some(crate::crd::TracingSpec {
                otlp_endpoint: "otel:4317".into(),
                service_name: None,
                headers_secret_ref: None,
            })
        });
        let e = relay_config(&bad).unwrap_err().to_string();
        assert!(e.contains("spec.tracing.otlpEndpoint"), "{e}");
    }

    #[test]
    fn redis_passwords_render_as_secret_envs_never_as_values() {
        let key = |name: &str| Some(crate::crd::SecretKeyRef { name: name.into(), key: "password".into() });
        let r = with(|r| {
            r.spec.redis.password_secret_ref = key("redis-data");
            r.spec.redis.sentinel = Some(crate::crd::RedisSentinelSpec { password_secret_ref: key("redis-sentinel") });
        });
        let c = relay_config(&r).unwrap();
        assert_eq!(c.redis.password_env.as_deref(), Some(REDIS_PASSWORD_ENV));
        assert_eq!(c.redis.sentinel.as_ref().unwrap().password_env.as_deref(), Some(REDIS_SENTINEL_PASSWORD_ENV));
        let env: Vec<(String, String, &str)> =
            secret_env(&r.spec).into_iter().map(|e| (e.env, e.secret, e.field)).collect();
        assert!(env.contains(&(REDIS_PASSWORD_ENV.into(), "redis-data".into(), "spec.redis.passwordSecretRef")));
        assert!(env.contains(&(
            REDIS_SENTINEL_PASSWORD_ENV.into(),
            "redis-sentinel".into(),
            "spec.redis.sentinel.passwordSecretRef"
        )));
        let unset = with(|r| r.spec.redis.sentinel = Some(Default::default()));
        let c = relay_config(&unset).unwrap();
        assert_eq!((c.redis.password_env.as_deref(), c.redis.sentinel.unwrap().password_env), (None, None));
        let both = with(|r| {
            r.spec.redis.cluster = Some(true);
            r.spec.redis.sentinel = Some(Default::default());
        });
        let e = relay_config(&both).unwrap_err().to_string();
        assert!(e.contains("spec.redis.sentinel"), "{e}");
    }

    #[test]
    fn minimal_spec_gets_config_defaults() {
        let r = relay(
            "apiVersion: webhookrelay.dev/v1alpha1\nkind: WebhookRelay\nmetadata: {name: a, namespace: b}\n\
             spec: {source: {verify: {scheme: none}}, destination: {url: 'https://x.example/'}, redis: {urlSecretRef: {name: r, key: url}}}\n",
        );
        let c = relay_config(&r).unwrap();
        assert_eq!(c.relay.as_str(), "b/a");
        assert_eq!(c.source.path, defaults::source_path());
        assert_eq!(c.source.dedup_window, defaults::dedup_window());
        assert_eq!(c.delivery, DeliveryConfig::default());
        assert_eq!(c.source.verify, VerifyConfig::None);
        assert!(c.genesys.is_none());
    }

    #[test]
    fn hmac_settings_carry_over() {
        let r = with(|r| {
            let v = &mut r.spec.source.verify;
            v.scheme = VerifyScheme::HmacSha256;
            v.header = Some("X-Sig".into());
            v.encoding = Some(SignatureEncodingSpec::Base64);
            v.prefix = Some("sha256=".into());
        });
        match relay_config(&r).unwrap().source.verify {
            VerifyConfig::HmacSha256 { secret_env, header, encoding, prefix, .. } => {
                assert_eq!(
                    (secret_env.as_str(), header.as_str(), prefix.as_str()),
                    ("RELAY_SIGNING_SECRET", "X-Sig", "sha256=")
                );
                assert_eq!(encoding, SignatureEncoding::Base64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn workload_ports_reach_listen_and_admin_listen() {
        let c = relay_config(&relay(DESIGN_EXAMPLE)).unwrap();
        assert_eq!((c.listen, c.admin_listen), (defaults::listen(), defaults::admin_listen()));
        assert_eq!(
            (c.listen.to_string().as_str(), c.admin_listen.to_string().as_str()),
            ("0.0.0.0:8080", "0.0.0.0:9090")
        );
        let set = |http, admin| {
            with(|r| r.spec.workload.as_mut().unwrap().ports = Some(crate::crd::WorkloadPorts { http, admin }))
        };
        let c = relay_config(&set(Some(8780), Some(9790))).unwrap();
        let yaml = c.to_yaml();
        assert!(yaml.contains("listen: 0.0.0.0:8780\n"), "{yaml}");
        assert!(yaml.contains("adminListen: 0.0.0.0:9790\n"), "{yaml}");
        assert_eq!(RelayConfig::from_yaml(&yaml).unwrap(), c);
        // One set, the other defaulted.
        let c = relay_config(&set(None, Some(9791))).unwrap();
        assert_eq!((c.listen.port(), c.admin_listen.port()), (8080, 9791));
        assert_eq!(ports(&set(Some(8781), None).spec).unwrap(), Ports { http: 8781, admin: 9090 });
        // Out of range or clashing: named after the spec field.
        assert_eq!(field_of(&set(Some(80), None)), "spec.workload.ports.http");
        assert_eq!(field_of(&set(None, Some(70000))), "spec.workload.ports.admin");
        assert_eq!(field_of(&set(Some(9090), None)), "spec.workload.ports");
        assert_eq!(field_of(&set(Some(8780), Some(8780))), "spec.workload.ports");
    }

    fn field_of(r: &WebhookRelay) -> String {
        relay_config(r).unwrap_err().field
    }

    #[test]
    fn rate_limit_and_circuit_breaker_are_rendered_into_delivery() {
        let c = relay_config(&with(|r| {
            let d = r.spec.delivery.as_mut().unwrap();
            d.rate_limit = Some(crate::crd::RateLimitSpec { per_second: 20.0, burst: Some(5) });
            d.circuit_breaker =
                Some(crate::crd::CircuitBreakerSpec { failure_threshold: Some(4), open_for: Some("15s".into()) });
        }))
        .unwrap();
        assert_eq!(c.delivery.rate_limit, Some(RateLimitConfig { per_second: 20.0, burst: Some(5) }));
        assert_eq!(
            c.delivery.circuit_breaker,
            Some(CircuitBreakerConfig { failure_threshold: 4, open_for: Duration::from_secs(15) })
        );
        let yaml = c.to_yaml();
        assert!(yaml.contains("rateLimit:") && yaml.contains("circuitBreaker:"), "{yaml}");
        // Unset: neither, and an empty breaker gets the defaults.
        assert_eq!(relay_config(&with(|_| {})).unwrap().delivery.rate_limit, None);
        let c = relay_config(&with(|r| {
            r.spec.delivery.as_mut().unwrap().circuit_breaker = Some(crate::crd::CircuitBreakerSpec::default())
        }))
        .unwrap();
        assert_eq!(c.delivery.circuit_breaker, Some(CircuitBreakerConfig::default()));
        let d = |f: fn(&mut crate::crd::DeliverySpec)| with(|r| f(r.spec.delivery.as_mut().unwrap()));
        use crate::crd::{CircuitBreakerSpec as Breaker, RateLimitSpec as Rate};
        assert_eq!(
            field_of(&d(|d| d.rate_limit = Some(Rate { per_second: 0.0, burst: None }))),
            "spec.delivery.rateLimit.perSecond"
        );
        assert_eq!(
            field_of(&d(|d| d.rate_limit = Some(Rate { per_second: 5.0, burst: Some(-1) }))),
            "spec.delivery.rateLimit.burst"
        );
        assert_eq!(
            field_of(&d(
                |d| d.circuit_breaker = Some(Breaker { failure_threshold: None, open_for: Some("1ms".into()) })
            )),
            "spec.delivery.circuitBreaker.openFor"
        );
    }

    #[test]
    fn ordering_is_rendered_into_delivery() {
        use crate::crd::OrderingSpec;
        let ordering = |key_pointer: &str, missing_key, on_dead_letter| {
            let key_pointer = key_pointer.to_string();
            with(move |r| {
                r.spec.delivery.as_mut().unwrap().ordering =
                    Some(OrderingSpec { key_pointer, missing_key, on_dead_letter })
            })
        };
        let c = relay_config(&ordering("/channel/to/id", None, None)).unwrap();
        assert_eq!(
            c.delivery.ordering,
            Some(OrderingConfig {
                key_pointer: "/channel/to/id".into(),
                missing_key: MissingKey::Refuse,
                on_dead_letter: OnDeadLetter::Continue,
            })
        );
        assert!(c.to_yaml().contains("keyPointer: /channel/to/id"), "{}", c.to_yaml());
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        let c =
            relay_config(&ordering("/channel/to/id", Some(MissingKeySpec::Unordered), Some(OnDeadLetterSpec::Block)))
                .unwrap();
        let o = c.delivery.ordering.as_ref().unwrap();
        assert_eq!((o.missing_key, o.on_dead_letter), (MissingKey::Unordered, OnDeadLetter::Block));
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        let c = relay_config(&ordering("/id", Some(MissingKeySpec::Refuse), Some(OnDeadLetterSpec::Continue))).unwrap();
        assert_eq!(c.delivery.ordering.unwrap().missing_key, MissingKey::Refuse);
        // Unset: no ordering.
        assert_eq!(relay_config(&with(|_| {})).unwrap().delivery.ordering, None);
        // A spec written as YAML reads the same.
        let r = relay(&DESIGN_EXAMPLE.replace(
            "delivery: { maxAttempts: 8, initialDelay: 1s, maxDelay: 1h }",
            "delivery: { ordering: { keyPointer: /channel/to/id, onDeadLetter: block } }",
        ));
        assert_eq!(relay_config(&r).unwrap().delivery.ordering.unwrap().on_dead_letter, OnDeadLetter::Block);
        for bad in ["channel/to/id", "", "/a~2", "/~"] {
            let e = relay_config(&ordering(bad, None, None)).unwrap_err();
            assert_eq!(e.field, "spec.delivery.ordering.keyPointer", "{bad}: {e}");
            assert_eq!(Err(e.message), check_key_pointer(bad), "{bad}");
        }
        let e = relay_config(&ordering("channel/to/id", None, None)).unwrap_err().to_string();
        assert!(e.contains(r#"start it with "/" (for Genesys Open Messaging: "/channel/to/id")"#), "{e}");
    }

    #[test]
    fn errors_name_the_spec_field() {
        assert_eq!(field_of(&with(|r| r.spec.destination.url = "not a url".into())), "spec.destination.url");
        assert_eq!(field_of(&with(|r| r.spec.destination.url = "ftp://x/".into())), "spec.destination.url");
        assert_eq!(field_of(&with(|r| r.spec.destination.timeout = Some("5".into()))), "spec.destination.timeout");
        assert_eq!(field_of(&with(|r| r.spec.destination.timeout = Some("1h".into()))), "spec.destination.timeout");
        let d = |f: fn(&mut crate::crd::DeliverySpec)| with(|r| f(r.spec.delivery.as_mut().unwrap()));
        assert_eq!(field_of(&d(|d| d.max_attempts = Some(0))), "spec.delivery.maxAttempts");
        assert_eq!(field_of(&d(|d| d.max_attempts = Some(-3))), "spec.delivery.maxAttempts");
        assert_eq!(field_of(&d(|d| d.max_delay = Some("10ms".into()))), "spec.delivery.maxDelay");
        assert_eq!(field_of(&d(|d| d.multiplier = Some(0.5))), "spec.delivery.multiplier");
        assert_eq!(field_of(&with(|r| r.spec.source.path = Some("hooks".into()))), "spec.source.path");
        assert_eq!(field_of(&with(|r| r.spec.source.max_body_bytes = Some(-1))), "spec.source.maxBodyBytes");
        assert_eq!(field_of(&with(|r| r.spec.source.verify.secret_ref = None)), "spec.source.verify.secretRef");
        assert_eq!(
            field_of(&with(|r| r.spec.genesys.as_mut().unwrap().environment = Some("mypurecloud.ie".into()))),
            "spec.genesys"
        );
        assert_eq!(
            field_of(&with(|r| r.spec.genesys.as_mut().unwrap().integration_id = " ".into())),
            "spec.genesys.integrationId"
        );
        assert_eq!(field_of(&with(|r| r.metadata.namespace = None)), "metadata.namespace");
        let e = relay_config(&with(|r| r.spec.destination.url = "ftp://x/".into())).unwrap_err().to_string();
        assert!(e.starts_with("spec.destination.url: must be http or https"), "{e}");
    }
}
