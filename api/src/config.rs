//! `RelayConfig`: the sidecar's runtime configuration (`relay.yaml`).
//!
//! Every default lives here, next to its field. Secrets never appear in this file:
//! fields ending in `Env` name the environment variable that holds them. Loading
//! ([`RelayConfig::from_yaml`]) parses and validates once; errors name the field.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// Why a config could not be loaded; the message names the field and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("relay config: {path}: {message}")]
    Parse { path: String, message: String },
    #[error("relay config: {field} {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// Identity of one relay: `<namespace>/<name>` when the operator renders it.
///
/// It becomes the Redis hash tag `{R}`, so it may not contain braces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayId(String);

impl RelayId {
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 200 {
            return Err("must be at most 200 characters".into());
        }
        if s.chars().any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} may not contain braces, spaces or control characters"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RelayId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(s)
    }
}

impl From<RelayId> for String {
    fn from(id: RelayId) -> String {
        id.0
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole `relay.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayConfig {
    /// Relay identity; the Redis hash tag of every key this relay uses.
    pub relay: RelayId,
    /// Intake listener (the address Genesys reaches through the Ingress).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Admin listener: health, metrics, the dead-letter API. Never exposed by the Ingress.
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: SocketAddr,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Optional Genesys Cloud client settings for delivery receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesys: Option<GenesysConfig>,
    /// Optional OTLP export of the relay's spans (intake, store, each delivery attempt). The
    /// W3C trace context of each event is sent on with every attempt with or without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

/// Where the relay's spans go: an OpenTelemetry collector's OTLP/HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`: spans are
    /// POSTed as OTLP JSON to `<otlpEndpoint>/v1/traces` (a URL already ending in
    /// `/v1/traces` is used as it is).
    pub otlp_endpoint: Url,
    /// `service.name` of the spans.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// A variable holding headers for the collector, such as an API key, as
    /// `OTEL_EXPORTER_OTLP_HEADERS` spells them: `key=value,key2=value2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_env: Option<String>,
}

impl TracingConfig {
    /// Where spans are POSTed.
    pub fn traces_url(&self) -> Url {
        let mut url = self.otlp_endpoint.clone();
        if !url.path().ends_with("/v1/traces") {
            let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url
    }
}

/// Where events come in and how they are checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// HTTP path that accepts `POST`s, e.g. `/webhooks/genesys`.
    #[serde(default = "defaults::source_path")]
    pub path: String,
    pub verify: VerifyConfig,
    /// JSON pointer (RFC 6901) to the event id used for dedup, e.g. `/id`.
    #[serde(default = "defaults::id_pointer")]
    pub id_pointer: String,
    /// Larger bodies are refused with 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// A repeat of an id within this window answers `duplicate` and is not delivered again.
    #[serde(default = "defaults::dedup_window", with = "crate::duration")]
    pub dedup_window: Duration,
    /// Time allowed to read a request's headers, and again its body: a slower client has
    /// its connection closed (headers) or gets a 408 (body), so it cannot hold a slot.
    #[serde(default = "defaults::read_timeout", with = "crate::duration")]
    pub read_timeout: Duration,
    /// Intake requests handled at once per process; beyond it, 503 with `Retry-After`.
    #[serde(default = "defaults::max_concurrent_requests")]
    pub max_concurrent_requests: u32,
    /// Request body bytes held in memory at once per process, across all requests (bodies
    /// are buffered before their signature can be checked). A request whose body would go
    /// beyond it is answered 503 with `Retry-After` before it is read, so what a client
    /// sends can never exhaust memory. At least `maxBodyBytes`.
    #[serde(default = "defaults::max_buffered_bytes")]
    pub max_buffered_bytes: u64,
    /// After SIGTERM, how long intake keeps taking events while `/readyz` already answers
    /// 503 "shutting down", so that load balancers (a Kubernetes Service, an Ingress
    /// controller) stop sending here before the listener closes. Then the drain begins.
    /// Default 0s; the operator sets 5s for relays it runs.
    #[serde(default, with = "crate::duration")]
    pub shutdown_delay: Duration,
}

/// How intake verifies a request's signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum VerifyConfig {
    /// `X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, body)>`, as Genesys signs.
    #[serde(rename_all = "camelCase")]
    GenesysOpenMessaging {
        #[serde(default = "defaults::signing_secret_env")]
        secret_env: String,
        /// During a rotation: the env var holding the previous secret, also accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_secret_env: Option<String>,
    },
    /// A generic HMAC-SHA256 signature in a header of your choice.
    #[serde(rename_all = "camelCase")]
    HmacSha256 {
        #[serde(default = "defaults::signing_secret_env")]
        secret_env: String,
        /// During a rotation: the env var holding the previous secret, also accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_secret_env: Option<String>,
        #[serde(default = "defaults::hmac_header")]
        header: String,
        #[serde(default)]
        encoding: SignatureEncoding,
        /// Text before the encoded digest, e.g. `sha256=`; empty for none.
        #[serde(default)]
        prefix: String,
    },
    /// No verification; for trusted networks and tests only.
    None,
}

impl VerifyConfig {
    /// The env vars of the signing secret and, during a rotation, of the previous one;
    /// `None` for scheme `none`.
    pub fn secret_envs(&self) -> Option<(&str, Option<&str>)> {
        match self {
            VerifyConfig::GenesysOpenMessaging { secret_env, previous_secret_env }
            | VerifyConfig::HmacSha256 { secret_env, previous_secret_env, .. } => {
                Some((secret_env.as_str(), previous_secret_env.as_deref()))
            }
            VerifyConfig::None => None,
        }
    }
}

/// How a signature digest is written in its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// Where events go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationConfig {
    /// The downstream endpoint; `http` or `https`.
    pub url: Url,
    /// Time allowed for one delivery attempt, connect to last byte.
    #[serde(default = "defaults::destination_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

/// Retry policy and worker sizing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Attempts in all, the first included; the last failed one dead-letters the event.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Backoff cap for the first retry.
    #[serde(default = "defaults::initial_delay", with = "crate::duration")]
    pub initial_delay: Duration,
    /// Backoff cap; also caps a downstream's `Retry-After`.
    #[serde(default = "defaults::max_delay", with = "crate::duration")]
    pub max_delay: Duration,
    /// Growth of the backoff cap per attempt.
    #[serde(default = "defaults::multiplier")]
    pub multiplier: f64,
    /// Deliveries in flight at once per relay process.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: u32,
    /// How long a claimed event stays leased to this process; must exceed
    /// `destination.timeout` so a live delivery is never taken over. Default: timeout + 30s.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_duration")]
    pub lease: Option<Duration>,
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// Attempts per second to the destination, for the relay as a whole (all replicas share
    /// it through Redis). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Stop attempting a destination that keeps failing, then probe it. Unset: no breaker
    /// (a 429 or 503 with `Retry-After` still pauses the destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Per-key ordered delivery. Unset: events are delivered in any order, each on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingConfig>,
}

/// `delivery.ordering`: events with the same key are delivered one at a time in the order received.
///
/// While the oldest event of a key waits for a retry, the later events of that key wait
/// behind it; events of other keys are not held up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderingConfig {
    /// A JSON pointer (RFC 6901) into the event body, e.g. `/channel/to/id` (for Genesys Open
    /// Messaging: the customer's conversation). Checked by [`check_key_pointer`].
    pub key_pointer: String,
    /// What intake does with an event that has nothing at `keyPointer`.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// What happens to a key when its oldest event is dead-lettered.
    #[serde(default)]
    pub on_dead_letter: OnDeadLetter,
}

/// `delivery.ordering.missingKey`: an event without a key at `keyPointer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Refused at intake with 400 naming the pointer, so the sender learns of it.
    #[default]
    Refuse,
    /// Accepted and delivered without ordering, like a relay without `delivery.ordering`.
    Unordered,
}

/// `delivery.ordering.onDeadLetter`: when the oldest event of a key is dead-lettered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadLetter {
    /// The next event of the key is released.
    #[default]
    Continue,
    /// The key stays blocked until the dead letter is replayed or deleted.
    Block,
}

/// Longest `delivery.ordering.keyPointer`, in bytes.
pub const MAX_KEY_POINTER_BYTES: usize = 256;

/// Checks a `delivery.ordering.keyPointer`: a JSON pointer (RFC 6901) to a member of the
/// event, so not empty (that would be the whole document), starting with `/`, `~` only as
/// `~0` or `~1`, at most [`MAX_KEY_POINTER_BYTES`] bytes. The error is the message that
/// follows the field name, and says what to write.
pub fn check_key_pointer(pointer: &str) -> Result<(), String> {
    const GENESYS: &str = "(for Genesys Open Messaging: \"/channel/to/id\")";
    if pointer.is_empty() {
        return Err(format!(
            "must not be empty: the empty pointer is the whole event, not a member of it; write the path to the key {GENESYS}"
        ));
    }
    if !pointer.starts_with('/') {
        return Err(format!("{pointer:?} is not a JSON pointer: start it with \"/\" {GENESYS}"));
    }
    if pointer.len() > MAX_KEY_POINTER_BYTES {
        return Err(format!("must be at most {MAX_KEY_POINTER_BYTES} bytes (got {})", pointer.len()));
    }
    let mut rest = pointer;
    while let Some(i) = rest.find('~') {
        rest = &rest[i + 1..];
        if !rest.starts_with(['0', '1']) {
            return Err(format!(
                "{pointer:?} is not a JSON pointer: \"~\" must be followed by 0 or 1; write \"~0\" for a \"~\" in a member name and \"~1\" for a \"/\""
            ));
        }
    }
    Ok(())
}

/// `delivery.rateLimit`: a token bucket shared by every replica of the relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Attempts per second in the long run (fractions allowed: 0.5 is one every 2 s).
    pub per_second: f64,
    /// Attempts that may start at once after a quiet spell. Default: `perSecond` rounded
    /// up (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    /// The bucket's size: `burst`, or `perSecond` rounded up (at least 1).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| (self.per_second.ceil() as u32).max(1))
    }
}

/// `delivery.circuitBreaker`: shared by every replica of the relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed attempts (5xx, 408, 429, timeouts, connection errors) that open it.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// How long it stays open before one probe attempt is let through.
    #[serde(default = "defaults::open_for", with = "crate::duration")]
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: defaults::failure_threshold(), open_for: defaults::open_for() }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            initial_delay: defaults::initial_delay(),
            max_delay: defaults::max_delay(),
            multiplier: defaults::multiplier(),
            concurrency: defaults::concurrency(),
            lease: None,
            dead_letter: DeadLetterConfig::default(),
            rate_limit: None,
            circuit_breaker: None,
            ordering: None,
        }
    }
}

/// Bounds on the dead-letter set: the oldest entries go first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterConfig {
    #[serde(default = "defaults::dead_max_age", with = "crate::duration")]
    pub max_age: Duration,
    #[serde(default = "defaults::dead_max_entries")]
    pub max_entries: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self { max_age: defaults::dead_max_age(), max_entries: defaults::dead_max_entries() }
    }
}

/// Redis connection; the URL itself is a secret and comes from the environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "defaults::redis_url_env")]
    pub url_env: String,
    /// Use the Redis Cluster client (also chosen by a `redis+cluster://` URL).
    #[serde(default)]
    pub cluster: bool,
    /// Environment variable holding the data nodes' password, used in place of the URL's
    /// (for a Sentinel URL, the primary's and replicas' password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Settings for a `redis+sentinel://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinelConfig>,
    /// TLS settings for a `rediss://` URL; without them the system's root certificates
    /// are trusted and no client certificate is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsConfig>,
    /// Answer 200 only once this many replicas hold the event (`WAIT` after each stored
    /// batch; on Redis Cluster, replicas of the relay's shard). 0: once the primary holds it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_for_replicas: u32,
    /// How long an answer waits for those replicas; past it the answer is 503 + Retry-After
    /// (the event stays stored, and the sender's retry, a duplicate, waits again).
    #[serde(default = "defaults::wait_timeout", with = "crate::duration")]
    pub wait_timeout: Duration,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url_env: defaults::redis_url_env(),
            cluster: false,
            password_env: None,
            sentinel: None,
            tls: None,
            wait_for_replicas: 0,
            wait_timeout: defaults::wait_timeout(),
        }
    }
}

/// Redis Sentinel settings (the Sentinels and the master name are in the URL:
/// `redis+sentinel://host:port,host:port/<master>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// Environment variable holding the Sentinels' own password (`requirepass` in
    /// sentinel.conf); unset: the Sentinels ask for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// Files the Redis TLS client reads at start (the operator mounts them from Secrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// PEM file of the CA certificate(s) to trust for the server's certificate; unset:
    /// the system's root certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM file of a client certificate (chain) for mutual TLS; needs `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key; needs `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
}

/// Admin API settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable holding the bearer token for `/v1/`.
    #[serde(default = "defaults::admin_token_env")]
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { token_env: defaults::admin_token_env() }
    }
}

/// Genesys Cloud client settings (delivery receipts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenesysConfig {
    /// A Genesys domain such as `mypurecloud.com`; or give `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// An AWS-style region such as `us-east-1`; or give `environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Overrides the API base URL (tests, private environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<Url>,
    /// Overrides the login base URL (tests, private environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_base_url: Option<Url>,
    #[serde(default = "defaults::genesys_client_id_env")]
    pub client_id_env: String,
    #[serde(default = "defaults::genesys_client_secret_env")]
    pub client_secret_env: String,
    /// The Open Messaging integration receipts are posted to.
    pub integration_id: String,
    #[serde(default)]
    pub receipts: ReceiptsConfig,
}

/// Which delivery receipts to send to Genesys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// Post a `Failed` receipt when an event is dead-lettered.
    #[serde(default = "defaults::yes")]
    pub on_dead_letter: bool,
    /// Post a `Delivered` receipt after a 2xx from downstream.
    #[serde(default)]
    pub on_delivered: bool,
}

/// Every default of the config, in one place.
pub mod defaults {
    use super::*;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9090))
    }
    pub fn source_path() -> String {
        "/webhooks/genesys".into()
    }
    pub fn id_pointer() -> String {
        "/id".into()
    }
    pub fn max_body_bytes() -> u64 {
        1024 * 1024
    }
    pub fn dedup_window() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn signing_secret_env() -> String {
        "RELAY_SIGNING_SECRET".into()
    }
    pub fn hmac_header() -> String {
        "X-Signature".into()
    }
    pub fn read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_concurrent_requests() -> u32 {
        1024
    }
    /// 64 MiB: with the default container memory limit (256 Mi) this leaves room for the
    /// process itself, its connections and the allocator's slack.
    pub fn max_buffered_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn destination_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_attempts() -> u32 {
        8
    }
    pub fn initial_delay() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_delay() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn multiplier() -> f64 {
        2.0
    }
    pub fn concurrency() -> u32 {
        64
    }
    pub fn failure_threshold() -> u32 {
        10
    }
    pub fn open_for() -> Duration {
        Duration::from_secs(30)
    }
    /// Extra lease time beyond the delivery timeout, for the ack round trip and clock skew.
    pub const LEASE_MARGIN: Duration = Duration::from_secs(30);
    /// Added to each drain bound: a store write or a receipt's last round trip.
    pub const DRAIN_SLACK: Duration = Duration::from_secs(5);
    /// How long `/readyz` keeps answering "shutting down" after the deliveries drained.
    pub const ADMIN_LINGER: Duration = Duration::from_millis(200);
    pub fn dead_max_age() -> Duration {
        Duration::from_secs(168 * 3600)
    }
    pub fn dead_max_entries() -> u64 {
        100_000
    }
    pub fn wait_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn redis_url_env() -> String {
        "REDIS_URL".into()
    }
    pub fn admin_token_env() -> String {
        "RELAY_ADMIN_TOKEN".into()
    }
    pub fn genesys_client_id_env() -> String {
        "GENESYS_CLIENT_ID".into()
    }
    pub fn genesys_client_secret_env() -> String {
        "GENESYS_CLIENT_SECRET".into()
    }
    pub fn service_name() -> String {
        "webhook-relay".into()
    }
    pub fn yes() -> bool {
        true
    }
}

mod optional_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::duration::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => crate::duration::parse(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RelayConfig {
    /// Parses and validates a `relay.yaml`.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: RelayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse {
                path: if path == "." { "(top level)".into() } else { path },
                message: e.into_inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Renders the config as YAML (what the operator puts into the ConfigMap).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("RelayConfig always serializes")
    }

    /// How long intake's open connections may finish their requests once it stops taking
    /// events: reading a body (`source.readTimeout`) and storing it.
    pub fn intake_drain(&self) -> Duration {
        self.source.read_timeout + defaults::DRAIN_SLACK
    }

    /// How long in-flight deliveries may finish at shutdown before their leases are released.
    pub fn delivery_drain(&self) -> Duration {
        self.destination.timeout + defaults::DRAIN_SLACK
    }

    /// How long the receipts still queued at shutdown may take to send.
    pub fn receipts_drain(&self) -> Duration {
        self.destination.timeout + defaults::DRAIN_SLACK
    }

    /// The longest a relay takes from SIGTERM to exit: `source.shutdownDelay`, then intake
    /// and deliveries draining side by side, then the receipts, then the admin listener's
    /// last answers. A pod's `terminationGracePeriodSeconds` must be longer, or the kubelet
    /// kills the relay mid-drain (nothing is lost then, but deliveries are repeated).
    pub fn shutdown_budget(&self) -> Duration {
        self.source.shutdown_delay
            + self.intake_drain().max(self.delivery_drain())
            + self.receipts_drain()
            + defaults::ADMIN_LINGER
    }

    /// The lease on a claimed event: `delivery.lease`, or the delivery timeout plus a margin.
    pub fn lease(&self) -> Duration {
        self.delivery.lease.unwrap_or(self.destination.timeout + defaults::LEASE_MARGIN)
    }

    /// Checks what serde cannot: ranges, relations between fields, names of variables.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.source;
        if !s.path.starts_with('/') {
            return Err(invalid("source.path", format!("must start with '/' (got {:?})", s.path)));
        }
        if !s.id_pointer.is_empty() && !s.id_pointer.starts_with('/') {
            return Err(invalid(
                "source.idPointer",
                format!("must be a JSON pointer starting with '/', like \"/id\" (got {:?})", s.id_pointer),
            ));
        }
        if s.id_pointer.is_empty() {
            return Err(invalid("source.idPointer", "must not be empty; the default is \"/id\""));
        }
        if s.max_body_bytes == 0 || s.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid("source.maxBodyBytes", "must be between 1 and 67108864 (64 MiB)"));
        }
        if s.read_timeout < Duration::from_millis(100) || s.read_timeout > Duration::from_secs(300) {
            return Err(invalid("source.readTimeout", "must be between 100ms and 5m"));
        }
        if s.max_concurrent_requests == 0 || s.max_concurrent_requests > 100_000 {
            return Err(invalid("source.maxConcurrentRequests", "must be between 1 and 100000"));
        }
        if s.shutdown_delay > Duration::from_secs(300) {
            return Err(invalid("source.shutdownDelay", "must be at most 5m"));
        }
        if s.max_buffered_bytes > 4 * 1024 * 1024 * 1024 {
            return Err(invalid("source.maxBufferedBytes", "must be at most 4294967296 (4 GiB)"));
        }
        if s.max_buffered_bytes < s.max_body_bytes {
            return Err(invalid(
                "source.maxBufferedBytes",
                format!(
                    "must be at least source.maxBodyBytes ({}), or a body of the largest allowed size could never be read",
                    s.max_body_bytes
                ),
            ));
        }
        if let Some((current, previous)) = s.verify.secret_envs() {
            check_env("source.verify.secretEnv", current)?;
            if let Some(previous) = previous {
                check_env("source.verify.previousSecretEnv", previous)?;
                if previous == current {
                    return Err(invalid(
                        "source.verify.previousSecretEnv",
                        format!(
                            "names the same variable as source.verify.secretEnv ({current}); name the one holding the secret being replaced"
                        ),
                    ));
                }
            }
        }
        if let VerifyConfig::HmacSha256 { header, .. } = &s.verify
            && http_header_name_ok(header).is_err()
        {
            return Err(invalid("source.verify.header", format!("{header:?} is not a valid HTTP header name")));
        }
        let d = &self.destination;
        if !matches!(d.url.scheme(), "http" | "https") {
            return Err(invalid("destination.url", format!("must be http or https (got {})", d.url)));
        }
        if d.url.host_str().is_none() {
            return Err(invalid("destination.url", format!("has no host ({})", d.url)));
        }
        if d.timeout < Duration::from_millis(10) || d.timeout > Duration::from_secs(600) {
            return Err(invalid("destination.timeout", "must be between 10ms and 10m"));
        }
        let p = &self.delivery;
        if p.max_attempts == 0 || p.max_attempts > 1000 {
            return Err(invalid(
                "delivery.maxAttempts",
                format!("must be between 1 and 1000 (got {})", p.max_attempts),
            ));
        }
        if p.initial_delay.is_zero() {
            return Err(invalid("delivery.initialDelay", "must be more than 0s"));
        }
        if p.max_delay < p.initial_delay {
            return Err(invalid("delivery.maxDelay", "must be at least delivery.initialDelay"));
        }
        if !(1.0..=100.0).contains(&p.multiplier) || !p.multiplier.is_finite() {
            return Err(invalid("delivery.multiplier", format!("must be between 1 and 100 (got {})", p.multiplier)));
        }
        if p.concurrency == 0 || p.concurrency > 10_000 {
            return Err(invalid("delivery.concurrency", "must be between 1 and 10000"));
        }
        if let Some(lease) = p.lease
            && lease <= d.timeout
        {
            return Err(invalid(
                "delivery.lease",
                "must be longer than destination.timeout, or another replica could take over a live delivery",
            ));
        }
        if p.dead_letter.max_entries == 0 {
            return Err(invalid("delivery.deadLetter.maxEntries", "must be at least 1"));
        }
        if p.dead_letter.max_age.is_zero() {
            return Err(invalid("delivery.deadLetter.maxAge", "must be more than 0s"));
        }
        if let Some(r) = &p.rate_limit {
            if !r.per_second.is_finite() || r.per_second < 0.001 || r.per_second > 100_000.0 {
                return Err(invalid(
                    "delivery.rateLimit.perSecond",
                    format!("must be between 0.001 and 100000 (got {})", r.per_second),
                ));
            }
            if let Some(b) = r.burst
                && !(1..=100_000).contains(&b)
            {
                return Err(invalid("delivery.rateLimit.burst", format!("must be between 1 and 100000 (got {b})")));
            }
        }
        if let Some(b) = &p.circuit_breaker {
            if !(1..=10_000).contains(&b.failure_threshold) {
                return Err(invalid(
                    "delivery.circuitBreaker.failureThreshold",
                    format!("must be between 1 and 10000 (got {})", b.failure_threshold),
                ));
            }
            if b.open_for < Duration::from_millis(100) || b.open_for > Duration::from_secs(86_400) {
                return Err(invalid("delivery.circuitBreaker.openFor", "must be between 100ms and 24h"));
            }
        }
        if let Some(o) = &p.ordering {
            check_key_pointer(&o.key_pointer).map_err(|m| invalid("delivery.ordering.keyPointer", m))?;
        }
        check_env("redis.urlEnv", &self.redis.url_env)?;
        if let Some(p) = &self.redis.password_env {
            check_env("redis.passwordEnv", p)?;
        }
        if let Some(p) = self.redis.sentinel.as_ref().and_then(|s| s.password_env.as_ref()) {
            check_env("redis.sentinel.passwordEnv", p)?;
        }
        if self.redis.sentinel.is_some() && self.redis.cluster {
            return Err(invalid(
                "redis.sentinel",
                "cannot be used with redis.cluster: Sentinel watches one primary, Redis Cluster has its own failover",
            ));
        }
        if self.redis.wait_for_replicas > 16 {
            return Err(invalid("redis.waitForReplicas", "must be between 0 and 16"));
        }
        if self.redis.wait_timeout < Duration::from_millis(10) || self.redis.wait_timeout > Duration::from_secs(2) {
            return Err(invalid(
                "redis.waitTimeout",
                "must be between 10ms and 2s (the sender gets an answer within Redis's reply timeout, 3s)",
            ));
        }
        if let Some(tls) = &self.redis.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            let (set, unset) = if tls.cert_file.is_some() { ("certFile", "keyFile") } else { ("keyFile", "certFile") };
            return Err(invalid(
                "redis.tls",
                format!("{set} is set but {unset} is not: mutual TLS needs both the client certificate and its key"),
            ));
        }
        check_env("admin.tokenEnv", &self.admin.token_env)?;
        if let Some(g) = &self.genesys {
            if g.environment.is_none() && g.region.is_none() {
                match (&g.api_base_url, &g.login_base_url) {
                    (None, None) => {
                        return Err(invalid(
                            "genesys",
                            "needs environment (e.g. mypurecloud.com) or region (e.g. us-east-1)",
                        ));
                    }
                    (Some(_), None) => {
                        return Err(invalid(
                            "genesys.loginBaseUrl",
                            "is required with apiBaseUrl when neither region nor environment is set (the login URL cannot be derived)",
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(invalid(
                            "genesys.apiBaseUrl",
                            "is required with loginBaseUrl when neither region nor environment is set (the API URL cannot be derived)",
                        ));
                    }
                    (Some(_), Some(_)) => {}
                }
            }
            if g.environment.is_some() && g.region.is_some() {
                return Err(invalid("genesys", "give environment or region, not both"));
            }
            if g.integration_id.trim().is_empty() {
                return Err(invalid("genesys.integrationId", "must not be empty"));
            }
            check_env("genesys.clientIdEnv", &g.client_id_env)?;
            check_env("genesys.clientSecretEnv", &g.client_secret_env)?;
        }
        if let Some(t) = &self.tracing {
            if !matches!(t.otlp_endpoint.scheme(), "http" | "https") {
                return Err(invalid(
                    "tracing.otlpEndpoint",
                    format!(
                        "must be an http or https URL (OTLP/HTTP), like http://otel-collector:4318 (got {})",
                        t.otlp_endpoint
                    ),
                ));
            }
            if t.service_name.trim().is_empty() || t.service_name.len() > 255 {
                return Err(invalid("tracing.serviceName", "must be 1 to 255 characters"));
            }
            if let Some(h) = &t.headers_env {
                check_env("tracing.headersEnv", h)?;
            }
        }
        Ok(())
    }
}

fn check_env(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if is_env_name(name) {
        Ok(())
    } else {
        Err(invalid(field, format!("{name:?} is not an environment variable name (letters, digits, '_')")))
    }
}

fn http_header_name_ok(s: &str) -> Result<(), ()> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !s.is_empty() && s.chars().all(token) { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
relay: cx/orders
listen: 0.0.0.0:8080
adminListen: 0.0.0.0:9090
source:
  path: /webhooks/genesys
  verify: { scheme: genesys-open-messaging, secretEnv: RELAY_SIGNING_SECRET }
  idPointer: /id
  maxBodyBytes: 1048576
  dedupWindow: 24h
destination:
  url: http://127.0.0.1:9000/events
  timeout: 5s
delivery:
  maxAttempts: 8
  initialDelay: 1s
  maxDelay: 1h
  multiplier: 2
  deadLetter: { maxAge: 168h, maxEntries: 100000 }
redis:
  urlEnv: REDIS_URL
admin:
  tokenEnv: RELAY_ADMIN_TOKEN
genesys:
  environment: mypurecloud.com
  apiBaseUrl: null
  loginBaseUrl: null
  clientIdEnv: GENESYS_CLIENT_ID
  clientSecretEnv: GENESYS_CLIENT_SECRET
  integrationId: 6d1e0000-0000-0000-0000-000000000000
  receipts: { onDeadLetter: true, onDelivered: false }
"#;

    #[test]
    fn design_example_loads_with_its_values() {
        let c = RelayConfig::from_yaml(FULL).unwrap();
        assert_eq!(c.relay.as_str(), "cx/orders");
        assert_eq!(c.source.dedup_window, Duration::from_secs(86400));
        assert_eq!(c.delivery.max_delay, Duration::from_secs(3600));
        assert_eq!(c.delivery.dead_letter.max_entries, 100_000);
        assert_eq!(c.lease(), Duration::from_secs(35));
        assert!(matches!(c.source.verify, VerifyConfig::GenesysOpenMessaging { .. }));
        assert!(c.genesys.as_ref().unwrap().receipts.on_dead_letter);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c =
            RelayConfig::from_yaml("relay: a\nsource: {verify: {scheme: none}}\ndestination: {url: 'http://x:1/'}\n")
                .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.admin_listen.port(), 9090);
        assert_eq!(c.source.path, "/webhooks/genesys");
        assert_eq!(c.source.id_pointer, "/id");
        assert_eq!(c.destination.timeout, Duration::from_secs(5));
        assert_eq!(c.source.read_timeout, Duration::from_secs(10));
        assert_eq!(c.source.max_concurrent_requests, 1024);
        assert_eq!(c.delivery.max_attempts, 8);
        assert_eq!(c.redis.url_env, "REDIS_URL");
        assert_eq!(c.admin.token_env, "RELAY_ADMIN_TOKEN");
    }

    #[test]
    fn yaml_round_trip_is_lossless() {
        let c = RelayConfig::from_yaml(FULL).unwrap();
        let again = RelayConfig::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(c, again);
    }

    fn err(yaml: &str) -> String {
        RelayConfig::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let e = err(&base("delivery: {maxAttempts: 0}"));
        assert!(e.contains("delivery.maxAttempts"), "{e}");
        let e = err(&base("delivery: {initialDelay: 5}"));
        assert!(e.contains("delivery.initialDelay") && e.contains("unit"), "{e}");
        let e = err(&base("delivery: {initialDelay: 10s, maxDelay: 1s}"));
        assert!(e.contains("delivery.maxDelay"), "{e}");
        let e = err(
            "relay: a\nsource: {verify: {scheme: none}, maxConcurrentRequests: 0}\ndestination: {url: 'http://x/'}\n",
        );
        assert!(e.contains("source.maxConcurrentRequests"), "{e}");
        let e = err("relay: a\nsource: {verify: {scheme: none}, readTimeout: 1ms}\ndestination: {url: 'http://x/'}\n");
        assert!(e.contains("source.readTimeout"), "{e}");
        let e = err(&base("delivery: {lease: 1s}"));
        assert!(e.contains("delivery.lease"), "{e}");
        let e = err(&base("redis: {urlEnv: 'not a name'}"));
        assert!(e.contains("redis.urlEnv"), "{e}");
        let e = err(&base("delivery: {maxAtempts: 3}"));
        assert!(e.contains("delivery") && e.contains("maxAtempts"), "{e}");
        let e = err("relay: a\nsource: {verify: {scheme: none}}\ndestination: {url: 'ftp://x/'}\n");
        assert!(e.contains("destination.url"), "{e}");
        let e = err("relay: a\nsource: {verify: {scheme: none}}\ndestination: {url: 'not a url'}\n");
        assert!(e.contains("destination.url"), "{e}");
        let e = err("relay: 'a{b}'\nsource: {verify: {scheme: none}}\ndestination: {url: 'http://x/'}\n");
        assert!(e.contains("relay") && e.contains("braces"), "{e}");
        let e = err("relay: a\nsource: {verify: {scheme: rot13}}\ndestination: {url: 'http://x/'}\n");
        assert!(e.contains("source.verify"), "{e}");
        let e = err("relay: a\nsource: {path: nope, verify: {scheme: none}}\ndestination: {url: 'http://x/'}\n");
        assert!(e.contains("source.path"), "{e}");
    }

    #[test]
    fn rate_limit_and_circuit_breaker_have_defaults_and_bounds() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let c = RelayConfig::from_yaml(&base("delivery: {rateLimit: {perSecond: 2.5}, circuitBreaker: {}}")).unwrap();
        let r = c.delivery.rate_limit.as_ref().unwrap();
        assert_eq!((r.per_second, r.burst()), (2.5, 3), "burst defaults to perSecond rounded up");
        assert_eq!(c.delivery.circuit_breaker, Some(CircuitBreakerConfig::default()));
        assert_eq!(CircuitBreakerConfig::default().failure_threshold, 10);
        assert_eq!(CircuitBreakerConfig::default().open_for, Duration::from_secs(30));
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        let tiny = RelayConfig::from_yaml(&base("delivery: {rateLimit: {perSecond: 0.2}}")).unwrap();
        assert_eq!(tiny.delivery.rate_limit.unwrap().burst(), 1);
        for (extra, field) in [
            ("delivery: {rateLimit: {perSecond: 0}}", "delivery.rateLimit.perSecond"),
            ("delivery: {rateLimit: {perSecond: 1000000}}", "delivery.rateLimit.perSecond"),
            ("delivery: {rateLimit: {perSecond: 5, burst: 0}}", "delivery.rateLimit.burst"),
            ("delivery: {circuitBreaker: {failureThreshold: 0}}", "delivery.circuitBreaker.failureThreshold"),
            ("delivery: {circuitBreaker: {openFor: 10ms}}", "delivery.circuitBreaker.openFor"),
            ("delivery: {rateLimit: {burst: 5}}", "perSecond"),
            ("delivery: {circuitBreaker: {threshold: 5}}", "threshold"),
        ] {
            let e = err(&base(extra));
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn ordering_is_off_by_default_and_has_defaults_when_set() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let c = RelayConfig::from_yaml(&base("")).unwrap();
        assert_eq!(c.delivery.ordering, None);
        assert!(!c.to_yaml().contains("ordering"), "{}", c.to_yaml());
        let c = RelayConfig::from_yaml(&base("delivery: {ordering: {keyPointer: /channel/to/id}}")).unwrap();
        assert_eq!(
            c.delivery.ordering,
            Some(OrderingConfig {
                key_pointer: "/channel/to/id".into(),
                missing_key: MissingKey::Refuse,
                on_dead_letter: OnDeadLetter::Continue,
            })
        );
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        let c = RelayConfig::from_yaml(&base(
            "delivery:\n  ordering:\n    keyPointer: /a~1b/~0c\n    missingKey: unordered\n    onDeadLetter: block\n",
        ))
        .unwrap();
        let o = c.delivery.ordering.as_ref().unwrap();
        assert_eq!((o.missing_key, o.on_dead_letter), (MissingKey::Unordered, OnDeadLetter::Block));
        let yaml = c.to_yaml();
        assert!(yaml.contains("missingKey: unordered") && yaml.contains("onDeadLetter: block"), "{yaml}");
        assert_eq!(RelayConfig::from_yaml(&yaml).unwrap(), c);
    }

    #[test]
    fn ordering_key_pointer_must_be_a_json_pointer_to_a_member() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        for ok in ["/id", "/channel/to/id", "/a~0b/~1", "/", "//", "/0", "/é"] {
            assert_eq!(check_key_pointer(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_key_pointer(&format!("/{}", "a".repeat(MAX_KEY_POINTER_BYTES - 1))), Ok(()));
        let long = format!("/{}", "a".repeat(MAX_KEY_POINTER_BYTES));
        for (pointer, says) in [
            ("''", "must not be empty"),
            (
                "channel/to/id",
                r#""channel/to/id" is not a JSON pointer: start it with "/" (for Genesys Open Messaging: "/channel/to/id")"#,
            ),
            ("'#/channel'", "start it with \"/\""),
            ("/a~b", "\"~\" must be followed by 0 or 1"),
            ("/a~", "\"~\" must be followed by 0 or 1"),
            ("/~2", "\"~0\""),
            (long.as_str(), "at most 256 bytes"),
        ] {
            let e = err(&base(&format!("delivery: {{ordering: {{keyPointer: {pointer}}}}}")));
            assert!(e.starts_with("relay config: delivery.ordering.keyPointer "), "{pointer}: {e}");
            assert!(e.contains(says), "{pointer}: {e}");
        }
        for (extra, field) in [
            ("delivery: {ordering: {}}", "keyPointer"),
            ("delivery: {ordering: {keyPointer: /id, missingKey: drop}}", "missingKey"),
            ("delivery: {ordering: {keyPointer: /id, onDeadLetter: skip}}", "onDeadLetter"),
            ("delivery: {ordering: {keyPointer: /id, key: /id}}", "key"),
        ] {
            let e = err(&base(extra));
            assert!(e.contains("delivery.ordering") && e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn tracing_has_defaults_a_traces_url_and_checked_fields() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let c = RelayConfig::from_yaml(&base("tracing: {otlpEndpoint: 'http://otel:4318'}")).unwrap();
        let t = c.tracing.as_ref().unwrap();
        assert_eq!((t.service_name.as_str(), t.headers_env.as_deref()), ("webhook-relay", None));
        assert_eq!(t.traces_url().as_str(), "http://otel:4318/v1/traces");
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        for (endpoint, url) in [
            ("https://otel.example/otlp/", "https://otel.example/otlp/v1/traces"),
            ("http://otel:4318/v1/traces", "http://otel:4318/v1/traces"),
        ] {
            let c = RelayConfig::from_yaml(&base(&format!("tracing: {{otlpEndpoint: '{endpoint}'}}"))).unwrap();
            assert_eq!(c.tracing.unwrap().traces_url().as_str(), url);
        }
        for (extra, field) in [
            ("tracing: {otlpEndpoint: 'grpc://otel:4317'}", "tracing.otlpEndpoint"),
            ("tracing: {otlpEndpoint: 'http://otel:4318', serviceName: ''}", "tracing.serviceName"),
            ("tracing: {otlpEndpoint: 'http://otel:4318', headersEnv: 'not a name'}", "tracing.headersEnv"),
            ("tracing: {endpoint: 'http://otel:4318'}", "endpoint"),
        ] {
            let e = err(&base(extra));
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn waiting_for_replicas_is_off_by_default_and_bounded() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let c = RelayConfig::from_yaml(&base("")).unwrap();
        assert_eq!((c.redis.wait_for_replicas, c.redis.wait_timeout), (0, Duration::from_secs(1)));
        let c = RelayConfig::from_yaml(&base("redis: {waitForReplicas: 1, waitTimeout: 250ms}")).unwrap();
        assert_eq!((c.redis.wait_for_replicas, c.redis.wait_timeout), (1, Duration::from_millis(250)));
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        for (extra, field) in [
            ("redis: {waitForReplicas: 17}", "redis.waitForReplicas"),
            ("redis: {waitForReplicas: 1, waitTimeout: 5s}", "redis.waitTimeout"),
            ("redis: {waitForReplicas: 1, waitTimeout: 1ms}", "redis.waitTimeout"),
        ] {
            let e = err(&base(extra));
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn redis_passwords_come_from_named_env_vars_and_sentinel_excludes_cluster() {
        let base = |extra: &str| {
            format!("relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x:1/'}}\n{extra}")
        };
        let c = RelayConfig::from_yaml(&base("redis: {passwordEnv: REDIS_PW, sentinel: {passwordEnv: SENTINEL_PW}}"))
            .unwrap();
        assert_eq!(c.redis.password_env.as_deref(), Some("REDIS_PW"));
        assert_eq!(c.redis.sentinel.as_ref().and_then(|s| s.password_env.as_deref()), Some("SENTINEL_PW"));
        assert_eq!(RelayConfig::from_yaml(&c.to_yaml()).unwrap(), c);
        assert_eq!(RelayConfig::from_yaml(&base("")).unwrap().redis.sentinel, None);
        for (extra, field) in [
            ("redis: {passwordEnv: 'not a name'}", "redis.passwordEnv"),
            ("redis: {sentinel: {passwordEnv: '1X'}}", "redis.sentinel.passwordEnv"),
            ("redis: {cluster: true, sentinel: {}}", "redis.sentinel"),
            ("redis: {sentinel: {password: x}}", "password"),
        ] {
            let e = err(&base(extra));
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn genesys_base_urls_without_a_region_come_in_pairs() {
        let g = |extra: &str| {
            format!(
                "relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x/'}}\n\
                 genesys: {{integrationId: i, {extra}}}\n"
            )
        };
        let e = err(&g("apiBaseUrl: 'http://g.test/'"));
        assert!(e.contains("genesys.loginBaseUrl") && e.contains("apiBaseUrl"), "{e}");
        let e = err(&g("loginBaseUrl: 'http://g.test/'"));
        assert!(e.contains("genesys.apiBaseUrl"), "{e}");
        RelayConfig::from_yaml(&g("apiBaseUrl: 'http://g.test/', loginBaseUrl: 'http://g.test/'")).unwrap();
        RelayConfig::from_yaml(&g("region: us-east-1, apiBaseUrl: 'http://g.test/'")).unwrap();
    }

    #[test]
    fn hmac_scheme_has_defaults() {
        let c = RelayConfig::from_yaml(
            "relay: a\nsource: {verify: {scheme: hmac-sha256, encoding: base64, prefix: 'sha256='}}\ndestination: {url: 'http://x/'}\n",
        )
        .unwrap();
        match c.source.verify {
            VerifyConfig::HmacSha256 { secret_env, previous_secret_env, header, encoding, prefix } => {
                assert_eq!(secret_env, "RELAY_SIGNING_SECRET");
                assert_eq!(previous_secret_env, None);
                assert_eq!(header, "X-Signature");
                assert_eq!(encoding, SignatureEncoding::Base64);
                assert_eq!(prefix, "sha256=");
            }
            other => panic!("{other:?}"),
        }
    }
}
