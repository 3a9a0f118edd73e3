//! Prometheus metrics and the operator's own HTTP endpoint (`/metrics`, `/healthz`,
//! `/readyz`), built as one axum `Router` from its state.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

/// Label of the error counter: the error's `metric_label()`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// Label of the Genesys check counter: the verdict's condition reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Labels of the Kubernetes API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// GET, LIST, WATCH, APPLY, PATCH, CREATE, UPDATE, DELETE (the API server's verbs).
    pub verb: String,
    /// `deployments`, `webhookrelays/status`, ...
    pub resource: String,
}

/// The API server's name for a request: (verb, resource[/subresource]), from its method,
/// path, query and content type.
pub fn classify_request(method: &str, path: &str, query: &str, content_type: &str) -> RequestLabels {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() >= 2 => &segments[2..],
        Some(&"apis") if segments.len() >= 3 => &segments[3..],
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, named) = match rest {
        [] => (path.to_string(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    };
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match method {
        "GET" if watch => "WATCH",
        "GET" if named => "GET",
        "GET" => "LIST",
        "PATCH" if content_type.starts_with("application/apply-patch") => "APPLY",
        "PATCH" => "PATCH",
        "POST" => "CREATE",
        "PUT" => "UPDATE",
        "DELETE" => "DELETE",
        other => other,
    };
    RequestLabels { verb: verb.to_string(), resource }
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciliations: Counter,
    /// Reconciles that ended in an error, by kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Time one reconcile takes.
    pub duration: Histogram,
    /// 1 while this process holds the leader lease (or runs without election).
    pub leader: Gauge,
    /// Genesys Cloud integration lookups, by the resulting condition reason.
    pub genesys_checks: Family<ReasonLabels, Counter>,
    /// Applies of children not sent because nothing would change.
    pub applies_skipped: Counter,
    /// Requests this process sent to the Kubernetes API server.
    pub kube_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("webhook_relay_operator");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let leader = Gauge::default();
        let genesys_checks = Family::<ReasonLabels, Counter>::default();
        let applies_skipped = Counter::default();
        let kube_requests = Family::<RequestLabels, Counter>::default();
        registry.register("reconciliations", "Reconciles started", reconciliations.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by error kind", failures.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile takes", duration.clone());
        registry.register(
            "leader",
            "Whether this process runs the controller (1) or waits as a standby (0)",
            leader.clone(),
        );
        registry.register(
            "genesys_webhook_checks",
            "Genesys Cloud integration lookups (GenesysWebhookVerified), by condition reason",
            genesys_checks.clone(),
        );
        registry.register(
            "applies_skipped",
            "Server-side applies of children not sent: the same object was applied last time and the child is untouched",
            applies_skipped.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests sent to the Kubernetes API server, by verb and resource",
            kube_requests.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            genesys_checks,
            applies_skipped,
            kube_requests,
        }
    }
}

impl Metrics {
    /// Counts a failed reconcile under `label`.
    pub fn failed(&self, label: &str) {
        self.failures.get_or_create(&ErrorLabels { error: label.to_string() }).inc();
    }

    /// Counts a Genesys integration lookup that ended with condition `reason`.
    pub fn genesys_checked(&self, reason: &str) {
        self.genesys_checks.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Counts a request to the Kubernetes API server.
    pub fn kube_request<B>(&self, req: &http::Request<B>) {
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let uri = req.uri();
        let labels = classify_request(req.method().as_str(), uri.path(), uri.query().unwrap_or(""), content_type);
        self.kube_requests.get_or_create(&labels).inc();
    }

    /// Starts timing a reconcile; the time is recorded when the guard drops.
    pub fn timer(&self) -> ReconcileTimer<'_> {
        self.reconciliations.inc();
        ReconcileTimer { metrics: self, start: Instant::now() }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

/// The operator's HTTP app: `/metrics`, and `/healthz` and `/readyz` for its probes.
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(|| async { (StatusCode::OK, "ok\n") }))
        .with_state(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_the_api_server_names_them() {
        let c = |m, p, q, ct| {
            let l = classify_request(m, p, q, ct);
            format!("{} {}", l.verb, l.resource)
        };
        assert_eq!(c("GET", "/api/v1/namespaces/cx/secrets/relay-redis", "", ""), "GET secrets");
        assert_eq!(c("GET", "/apis/apps/v1/namespaces/cx/deployments", "labelSelector=a", ""), "LIST deployments");
        assert_eq!(c("GET", "/apis/apps/v1/deployments", "watch=true&resourceVersion=5", ""), "WATCH deployments");
        assert_eq!(
            c(
                "PATCH",
                "/apis/webhookrelay.dev/v1alpha1/namespaces/cx/webhookrelays/orders/status",
                "fieldManager=x",
                "application/apply-patch+yaml"
            ),
            "APPLY webhookrelays/status"
        );
        assert_eq!(
            c("PATCH", "/api/v1/namespaces/cx/services/orders-relay", "", "application/merge-patch+json"),
            "PATCH services"
        );
        assert_eq!(c("POST", "/apis/events.k8s.io/v1/namespaces/cx/events", "", "application/json"), "CREATE events");
        assert_eq!(
            c("DELETE", "/apis/networking.k8s.io/v1/namespaces/cx/ingresses/orders-relay", "", ""),
            "DELETE ingresses"
        );
        assert_eq!(
            c("PUT", "/apis/coordination.k8s.io/v1/namespaces/op/leases/webhook-relay-operator", "", ""),
            "UPDATE leases"
        );
        assert_eq!(c("GET", "/api/v1/namespaces/cx", "", ""), "GET namespaces");
    }

    #[test]
    fn exports_counters_with_error_labels() {
        let m = Metrics::default();
        drop(m.timer());
        m.failed("secret_not_found");
        m.genesys_checked("WebhookUrlMatches");
        let text = m.encode();
        assert!(text.contains("webhook_relay_operator_reconciliations_total 1"), "{text}");
        assert!(
            text.contains(r#"webhook_relay_operator_reconcile_errors_total{error="secret_not_found"} 1"#),
            "{text}"
        );
        assert!(text.contains("webhook_relay_operator_reconcile_duration_seconds_count 1"), "{text}");
        assert!(
            text.contains(r#"webhook_relay_operator_genesys_webhook_checks_total{reason="WebhookUrlMatches"} 1"#),
            "{text}"
        );
    }
}
