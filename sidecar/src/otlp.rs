//! OTLP/HTTP export of the relay's spans (`tracing.otlpEndpoint`): one `intake` span per
//! webhook received (a server span, child of the sender's span when it sent a
//! `traceparent`), a `store` span for writing it to Redis, and one `attempt` span per delivery
//! attempt (a client span, child of the intake span, whose id is the one the attempt's
//! `traceparent` carries). Spans are POSTed as OTLP JSON (`application/json`, the protocol's
//! JSON encoding: hex ids, nanosecond times as strings) in batches of at most
//! [`BATCH`] every [`EVERY`].
//!
//! Export never slows intake or delivery: spans go to a bounded queue ([`QUEUE`]); when it is
//! full, or the collector fails, spans are dropped and counted
//! (`webhook_relay_spans_total{outcome}`). Only sampled traces are exported (the
//! `traceparent`'s sampled flag; a webhook without one starts a sampled trace).

use crate::metrics::{Metrics, SpanLabels};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use webhook_relay_api::config::TracingConfig;

/// Spans waiting for export, at most; beyond it new spans are dropped.
pub const QUEUE: usize = 4096;
/// Spans per export request, at most.
pub const BATCH: usize = 512;
/// Longest a span waits before its batch is sent.
pub const EVERY: Duration = Duration::from_secs(1);
/// Time allowed for one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP `SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Self {
        Attr::Str(s.to_string())
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Self {
        Attr::Str(s)
    }
}

impl From<i64> for Attr {
    fn from(n: i64) -> Self {
        Attr::Int(n)
    }
}

/// A finished span.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    /// Set: the span's status is an error with this message; unset: ok.
    pub error: Option<String>,
}

enum Msg {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

/// The exporter: cheap to call from any task; its own task sends the batches.
pub struct Exporter {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the export task (needs a Tokio runtime).
    pub fn start(
        cfg: &TracingConfig,
        relay: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let resource = resource(&cfg.service_name, relay);
        let target = Target { url: cfg.traces_url(), headers, http, resource, metrics: metrics.clone() };
        tracing::info!(endpoint = %target.url, "exporting spans over OTLP/HTTP");
        tokio::spawn(run(rx, target));
        Exporter { tx, metrics }
    }

    /// Queues a finished span; drops it (counted) when the queue is full.
    pub fn record(&self, span: Span) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.metrics.spans.get_or_create(&SpanLabels { outcome: "dropped_queue_full" }).inc();
        }
    }

    /// Sends what is queued now; waits for it at most `limit` (at shutdown).
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        let sent = async {
            if self.tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(limit, sent).await.is_err() {
            tracing::warn!(limit = ?limit, "spans not all exported before shutdown");
        }
    }
}

struct Target {
    url: url::Url,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    http: reqwest::Client,
    resource: Value,
    metrics: Arc<Metrics>,
}

async fn run(mut rx: mpsc::Receiver<Msg>, target: Target) {
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    let mut due = None::<tokio::time::Instant>;
    let mut warned = None::<Instant>;
    loop {
        let msg = match due {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    export(&target, &mut batch, &mut warned).await;
                    due = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match msg {
            Some(Msg::Span(s)) => {
                batch.push(*s);
                due.get_or_insert_with(|| tokio::time::Instant::now() + EVERY);
                if batch.len() >= BATCH {
                    export(&target, &mut batch, &mut warned).await;
                    due = None;
                }
            }
            Some(Msg::Flush(done)) => {
                export(&target, &mut batch, &mut warned).await;
                due = None;
                let _ = done.send(());
            }
            None => {
                export(&target, &mut batch, &mut warned).await;
                return;
            }
        }
    }
}

async fn export(target: &Target, batch: &mut Vec<Span>, warned: &mut Option<Instant>) {
    if batch.is_empty() {
        return;
    }
    let body = payload(&target.resource, batch);
    let n = batch.len() as u64;
    batch.clear();
    let mut request = target.http.post(target.url.clone()).timeout(EXPORT_TIMEOUT).json(&body);
    for (k, v) in &target.headers {
        request = request.header(k, v);
    }
    let failure = match request.send().await {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("the collector answered {}", r.status())),
        Err(e) => Some(webhook_relay_util::root_cause(&e)),
    };
    let outcome = if failure.is_some() { "dropped_export_failed" } else { "exported" };
    target.metrics.spans.get_or_create(&SpanLabels { outcome }).inc_by(n);
    if let Some(why) = failure {
        // One warning a minute at most: a collector that is down must not flood the log.
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *warned = Some(Instant::now());
            tracing::warn!(endpoint = %target.url, error = %why, spans = n, "could not export spans; dropped them");
        }
    }
}

fn resource(service: &str, relay: &str) -> Value {
    json!({ "attributes": [
        attr("service.name", &Attr::from(service)),
        attr("service.version", &Attr::from(env!("CARGO_PKG_VERSION"))),
        attr("webhook_relay.relay", &Attr::from(relay)),
    ]})
}

fn attr(key: &str, v: &Attr) -> Value {
    match v {
        Attr::Str(s) => json!({"key": key, "value": {"stringValue": s}}),
        // OTLP JSON writes 64-bit integers as strings.
        Attr::Int(n) => json!({"key": key, "value": {"intValue": n.to_string()}}),
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).to_string()
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding.
pub fn payload(resource: &Value, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut v = json!({
                "traceId": hex::encode(s.trace_id),
                "spanId": hex::encode(s.span_id),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter().map(|(k, a)| attr(k, a)).collect::<Vec<_>>(),
                "status": match &s.error {
                    None => json!({"code": 1}),
                    Some(m) => json!({"code": 2, "message": m}),
                },
            });
            if let Some(p) = s.parent_id {
                v["parentSpanId"] = json!(hex::encode(p));
            }
            v
        })
        .collect();
    json!({ "resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{ "scope": {"name": "webhook-relay", "version": env!("CARGO_PKG_VERSION")}, "spans": spans }],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span {
            trace_id: [0xab; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent_id: Some([9; 8]),
            name: "attempt",
            kind: SpanKind::Client,
            start: t0,
            end: t0 + Duration::from_millis(5),
            attributes: vec![("http.response.status_code", Attr::Int(503)), ("webhook_relay.event_id", "e1".into())],
            error: Some("503 Service Unavailable".into()),
        };
        let v = payload(&resource("svc", "ns/r"), &[span]);
        let rs = &v["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0], json!({"key": "service.name", "value": {"stringValue": "svc"}}));
        assert_eq!(rs["resource"]["attributes"][2]["value"]["stringValue"], "ns/r");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "abababababababababababababababab");
        assert_eq!(
            (s["spanId"].as_str(), s["parentSpanId"].as_str()),
            (Some("0102030405060708"), Some("0909090909090909"))
        );
        assert_eq!((s["kind"].as_i64(), s["name"].as_str()), (Some(3), Some("attempt")));
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000128456789");
        assert_eq!(s["attributes"][0], json!({"key": "http.response.status_code", "value": {"intValue": "503"}}));
        assert_eq!(s["status"], json!({"code": 2, "message": "503 Service Unavailable"}));
    }
}
