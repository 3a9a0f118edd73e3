//! The `WebhookRelay` custom resource (`webhookrelay.dev/v1alpha1`): spec, status and the
//! schema rules the apiserver enforces before the operator ever sees an object.
//!
//! Optional fields stay `None` here; their defaults live once, in [`crate::config::defaults`],
//! and are applied by [`crate::render::relay_config`]. Secrets are only ever referenced
//! (`secretRef`s), never embedded.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of the resource.
pub const GROUP: &str = "webhookrelay.dev";
/// A duration with a unit, as Go and CEL's `duration()` read it: `5s`, `1h30m`, `250ms`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";
/// An absolute `http` or `https` URL with a host.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s/?#]+([/?#]\S*)?$";
/// A DNS subdomain (RFC 1123), the form of most Kubernetes object names.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A relay that receives signed webhooks (from Genesys Cloud or any HMAC signer), stores
/// them durably in Redis and delivers them to a destination with retries and dead letters.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "webhookrelay.dev",
    version = "v1alpha1",
    kind = "WebhookRelay",
    namespaced,
    shortname = "whr",
    status = "WebhookRelayStatus",
    derive = "PartialEq",
    doc = "A relay that durably accepts webhooks and delivers them with retries and dead letters",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Ready condition"
    ),
    printcolumn(name = "Due", type_ = "integer", json_path = ".status.queue.due", description = "Events waiting for an attempt"),
    printcolumn(name = "Dead", type_ = "integer", json_path = ".status.queue.dead", description = "Dead letters"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Blocked",
        type_ = "integer",
        json_path = ".status.queue.blocked",
        description = "Events waiting behind the first event of their ordering key (spec.delivery.ordering)",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why Ready is what it is (ApplyFailed, SecretNotFound, ...)",
        priority = 1
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "Where the webhook source should POST",
        priority = 1
    ),
    // 57: children are named `<name>-relay` and a Service name is at most 63 characters.
    validation = Rule::new("size(self.metadata.name) <= 57 && self.metadata.name.matches('^[a-z]')")
        .message("metadata.name must start with a letter and be at most 57 characters: it names the Service <name>-relay"),
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRelaySpec {
    /// Where events come in and how they are verified.
    pub source: SourceSpec,
    /// Where events are delivered.
    pub destination: DestinationSpec,
    /// Retry policy and dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// The Redis that holds the queue.
    pub redis: RedisSpec,
    /// The admin API (`/v1/` on the admin port). Without a token it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// Genesys Cloud client for delivery receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesys: Option<GenesysSpec>,
    /// How the relay runs: its own Deployment, or a container in yours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSpec>,
    /// Exposes the intake path through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// OTLP export of the relay's spans. The W3C trace context of each event is sent on with
    /// every delivery attempt with or without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

/// Span export to an OpenTelemetry collector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector.observability:4318`;
    /// spans are POSTed as OTLP JSON to `<otlpEndpoint>/v1/traces`.
    #[schemars(length(max = 2048), pattern(HTTP_URL_PATTERN))]
    pub otlp_endpoint: String,
    /// `service.name` of the spans (default `webhook-relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub service_name: Option<String>,
    /// Secret key holding headers for the collector, such as an API key, as
    /// `OTEL_EXPORTER_OTLP_HEADERS` spells them: `key=value,key2=value2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the relay's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A Secret in the relay's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Intake settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// HTTP path that accepts POSTs (default `/webhooks/genesys`); also the Ingress path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/[^\s?#]*$"))]
    pub path: Option<String>,
    /// How a request's signature is checked.
    pub verify: VerifySpec,
    /// JSON pointer (RFC 6901) to the event id used for dedup (default `/id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern("^/"))]
    pub id_pointer: Option<String>,
    /// Larger bodies are refused with 413 (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_body_bytes: Option<i64>,
    /// A repeat of an event id within this window is not delivered again (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub dedup_window: Option<String>,
    /// Request body bytes held in memory at once per relay process, across all requests;
    /// beyond it requests get 503 with Retry-After before their body is read (default 64 MiB,
    /// at least maxBodyBytes). Size the container memory limit above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967296i64))]
    pub max_buffered_bytes: Option<i64>,
    /// After SIGTERM, how long the relay keeps taking events while its readiness already
    /// fails, so the Service and the Ingress controller stop routing to the pod before it
    /// stops listening (default `5s`). The pod's terminationGracePeriodSeconds is set from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub shutdown_delay: Option<String>,
}

/// Signature verification.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scheme == 'none' || has(self.secretRef)").message("secretRef is required unless scheme is none"))]
#[x_kube(
    validation = Rule::new("self.scheme == 'hmac-sha256' || (!has(self.header) && !has(self.encoding) && !has(self.prefix))")
        .message("header, encoding and prefix apply only to scheme hmac-sha256")
)]
pub struct VerifySpec {
    /// `genesys-open-messaging` (X-Hub-Signature-256, base64), `hmac-sha256` (configurable), or `none`.
    pub scheme: VerifyScheme,
    /// The shared signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// During a rotation of the signing secret: the previous one, also accepted until this
    /// is removed (`webhook_relay_signatures_previous_secret_total` counts its use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_ref: Option<SecretKeyRef>,
    /// hmac-sha256: header carrying the signature (default `X-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"))]
    pub header: Option<String>,
    /// hmac-sha256: how the digest is written (default `hex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncodingSpec>,
    /// hmac-sha256: text before the digest, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
}

/// Signature schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyScheme {
    GenesysOpenMessaging,
    HmacSha256,
    None,
}

/// Digest encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncodingSpec {
    Hex,
    Base64,
}

/// The downstream service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSpec {
    /// `http` or `https` URL events are POSTed to.
    #[schemars(length(min = 8, max = 2048), pattern(HTTP_URL_PATTERN))]
    pub url: String,
    /// Time allowed for one attempt, 10ms to 10m (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// Retry policy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.initialDelay) || !has(self.maxDelay) || duration(self.maxDelay) >= duration(self.initialDelay)")
        .message("maxDelay must be at least initialDelay")
)]
pub struct DeliverySpec {
    /// Attempts in all, the first included (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: Option<i32>,
    /// Backoff cap of the first retry (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub initial_delay: Option<String>,
    /// Largest backoff; also caps a downstream's Retry-After (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub max_delay: Option<String>,
    /// Growth of the backoff cap per attempt, 1 to 100 (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub multiplier: Option<f64>,
    /// Deliveries in flight at once per relay process (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub concurrency: Option<i32>,
    /// Bounds on the dead-letter set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Attempts per second to the destination, shared by all replicas. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Stop attempting a destination that keeps failing, then probe it. Unset: no breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Deliver events with the same key one at a time, in the order they were received,
    /// through retries. Unset: no ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
}

/// Per-key ordered delivery: while the oldest event of a key waits for a retry, the later
/// events of that key wait behind it; events of other keys flow on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderingSpec {
    /// JSON pointer (RFC 6901) into the event body to the key events are ordered by. For
    /// Genesys Open Messaging write `/channel/to/id`: the customer's conversation.
    #[schemars(length(min = 1, max = 256), pattern("^/"))]
    pub key_pointer: String,
    /// An event with nothing at keyPointer: `refuse` (default) answers 400 naming the
    /// pointer; `unordered` delivers it without ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_key: Option<MissingKeySpec>,
    /// When the oldest event of a key is dead-lettered: `continue` (default) releases the
    /// next one; `block` holds the key until the dead letter is replayed or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dead_letter: Option<OnDeadLetterSpec>,
}

/// What intake does with an event that has no ordering key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MissingKeySpec {
    Refuse,
    Unordered,
}

/// What happens to a key when its oldest event is dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDeadLetterSpec {
    Continue,
    Block,
}

/// A token bucket shared by all replicas of the relay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Attempts per second in the long run, 0.001 to 100000 (0.5: one every 2 s).
    #[schemars(range(min = 0.001, max = 100000))]
    pub per_second: f64,
    /// Attempts that may start at once after a quiet spell (default: perSecond rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<i32>,
}

/// Circuit breaker shared by all replicas of the relay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Consecutive failed attempts (5xx, 408, 429, timeouts, connection errors) that open it
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub failure_threshold: Option<i32>,
    /// How long it stays open before one probe is let through (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub open_for: Option<String>,
}

/// Dead-letter bounds; the oldest entries go first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// Dead letters older than this are dropped (default `168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub max_age: Option<String>,
    /// At most this many dead letters are kept (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_entries: Option<i64>,
}

/// The Redis holding the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the Redis URL (`redis://`, `rediss://`, `redis+cluster://`, or
    /// `redis+sentinel://host:port,host:port/<master>` for Sentinel).
    pub url_secret_ref: SecretKeyRef,
    /// Secret key holding the data nodes' password, used in place of the URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Redis Sentinel settings, for a `redis+sentinel://` URL (the URL names the Sentinels
    /// and the master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinelSpec>,
    /// Use the Redis Cluster client even for a plain `redis://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<bool>,
    /// TLS for a `rediss://` URL: the CA to trust and an optional client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsSpec>,
    /// Answer 200 only once this many replicas hold the event (`WAIT`; default 0: once the
    /// primary holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub wait_for_replicas: Option<i32>,
    /// How long an answer waits for those replicas before it is 503 + Retry-After (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub wait_timeout: Option<String>,
}

/// Redis Sentinel settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinelSpec {
    /// Secret key holding the Sentinels' own password (`requirepass` in sentinel.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Redis TLS settings; the Secrets are mounted into the relay pods read-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTlsSpec {
    /// Secret key holding the PEM CA certificate(s) that signed the server's certificate;
    /// unset: the image's system root certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) with a client certificate
    /// for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
}

/// Admin API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    /// Secret key holding the bearer token for `/v1/`.
    pub token_secret_ref: SecretKeyRef,
}

/// Genesys Cloud client settings.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.region) && has(self.environment))").message("give region or environment, not both"))]
#[x_kube(
    validation = Rule::new("has(self.region) || has(self.environment) || (has(self.apiBaseUrl) && has(self.loginBaseUrl))")
        .message("needs region (e.g. us-east-1) or environment (e.g. mypurecloud.com), or both apiBaseUrl and loginBaseUrl")
)]
pub struct GenesysSpec {
    /// AWS-style region such as `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z]{2}-[a-z]+-[0-9]+$"))]
    pub region: Option<String>,
    /// Genesys domain such as `mypurecloud.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub environment: Option<String>,
    /// Overrides the API base URL (tests, private environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(HTTP_URL_PATTERN))]
    pub api_base_url: Option<String>,
    /// Overrides the login base URL (tests, private environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(HTTP_URL_PATTERN))]
    pub login_base_url: Option<String>,
    /// Secret with keys `clientId` and `clientSecret` (OAuth client credentials).
    pub credentials_secret_ref: SecretRef,
    /// The Open Messaging integration receipts are posted to.
    #[schemars(length(min = 1, max = 128))]
    pub integration_id: String,
    /// Which receipts to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<ReceiptsSpec>,
}

/// Delivery receipts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptsSpec {
    /// Post a Failed receipt when an event is dead-lettered (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dead_letter: Option<bool>,
    /// Post a Delivered receipt after a 2xx (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delivered: Option<bool>,
}

/// How the relay runs.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.mode) && self.mode == 'Sidecar') == has(self.targetRef)")
        .message("targetRef (a Deployment) is required in Sidecar mode and not allowed in Standalone mode")
)]
#[x_kube(
    validation = Rule::new("!(has(self.mode) && self.mode == 'Sidecar' && has(self.replicas))")
        .message("replicas applies to Standalone mode; in Sidecar mode the target Deployment sets them")
)]
pub struct WorkloadSpec {
    /// `Standalone` (default): a Deployment of its own. `Sidecar`: a container in `targetRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
    /// Standalone replicas (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// The Deployment to add the relay container to (Sidecar mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// Relay image; overrides the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Container resources (defaults: requests 50m CPU / 64Mi, limit 256Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Ports the relay container listens on (defaults: http 8080, admin 9090). Set them in
    /// Sidecar mode when the target's containers already use 8080 or 9090: containers of a
    /// pod share one network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<WorkloadPorts>,
}

/// Container ports of the relay.
#[derive(KubeSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.http) ? self.http : 8080) != (has(self.admin) ? self.admin : 9090)")
        .message("http and admin must be different ports (defaults: http 8080, admin 9090)")
)]
pub struct WorkloadPorts {
    /// Intake port (default 8080); the Service still serves it on port 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub http: Option<i32>,
    /// Admin port: health probes, metrics, `/v1/` (default 9090); the Service serves it on the same port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub admin: Option<i32>,
}

/// How the relay runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadMode {
    #[default]
    Standalone,
    Sidecar,
}

/// A Deployment in the relay's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Deployment name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Ingress for the intake path (the admin port is never exposed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub host: String,
    /// IngressClass name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// TLS Secret for `host`; without it no TLS section is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub tls_secret_name: Option<String>,
    /// Annotations for the Ingress (controller settings, cert-manager issuers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the operator observed.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRelayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the webhook source should POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Queue figures read from Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
    /// Ready, RedisReachable, RedisPersistent and, with spec.genesys, GenesysWebhookVerified
    /// (whether the Open Messaging integration's webhook URL is status.endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Queue figures as Redis saw them at the last reconcile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Events waiting for an attempt.
    pub due: i64,
    /// Events being delivered now.
    pub in_flight: i64,
    /// Dead letters.
    pub dead: i64,
    /// Age of the oldest undelivered event; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_due_age_seconds: Option<i64>,
    /// Events waiting behind the first event of their ordering key (`spec.delivery.ordering`).
    #[serde(default)]
    pub blocked: i64,
    /// Ordering keys with events waiting; a key that stays here is held by a retrying or
    /// (with `onDeadLetter: block`) dead-lettered event.
    #[serde(default)]
    pub waiting_keys: i64,
}

impl WebhookRelay {
    /// The spec's workload mode (Standalone when unset).
    pub fn mode(&self) -> WorkloadMode {
        self.spec.workload.as_ref().and_then(|w| w.mode).unwrap_or_default()
    }

    /// The intake path (`source.path` or its default).
    pub fn source_path(&self) -> String {
        self.spec.source.path.clone().unwrap_or_else(crate::config::defaults::source_path)
    }

    /// A condition of the status by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }
}
