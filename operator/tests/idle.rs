//! Idle relays cost the API server no writes: 50 relays whose spec, Secrets, pods and queue
//! do not change pass three refresh periods (2 s each) while the operator keeps reconciling
//! them. Counted twice: the API server counts no APPLY or PATCH (the verbs the operator
//! updates with) of WebhookRelays or their status, ConfigMaps, Deployments, Services,
//! Ingresses or PodDisruptionBudgets (`apiserver_request_total`, read from its /metrics; other
//! clients' creates and deletes, e.g. the garbage collector emptying an earlier test's
//! namespace, are not the operator's), and the operator's own request counter shows no write
//! of any verb. Two relays run a pod (their Deployments carry status that moves); 48 run
//! none (`replicas: 0`) so the test needs no 50 pods. Its own test binary, so no other
//! test's operator writes meanwhile.

use std::collections::BTreeMap;
use std::time::Duration;
use testkit::kube::*;
use testkit::wait::wait_for;
use webhook_relay_api::crd::WebhookRelay;

/// Resources (and subresource) whose writes the operator makes for a relay.
const WRITTEN: &[(&str, &str)] = &[
    ("webhookrelays", ""),
    ("webhookrelays", "status"),
    ("configmaps", ""),
    ("deployments", ""),
    ("services", ""),
    ("ingresses", ""),
    ("poddisruptionbudgets", ""),
];
const WRITE_VERBS: &[&str] = &["APPLY", "PATCH", "UPDATE", "CREATE", "DELETE", "POST", "PUT"];
/// The verbs the operator changes existing objects with (server-side apply, merge patch).
const UPDATE_VERBS: &[&str] = &["APPLY", "PATCH"];

/// The API server's request counts by (resource/subresource, verb), for [`WRITTEN`].
fn api_requests() -> BTreeMap<(String, String), f64> {
    let metrics = kubectl(&["get", "--raw", "/metrics"]);
    let mut counts = BTreeMap::new();
    for m in testkit::relay::samples(&metrics, "apiserver_request_total") {
        let (resource, subresource) = (m.label("resource"), m.label("subresource"));
        if WRITTEN.iter().any(|(r, s)| *r == resource && *s == subresource) {
            *counts.entry((format!("{resource}/{subresource}"), m.label("verb").to_string())).or_insert(0.0) += m.value;
        }
    }
    counts
}

/// Requests with one of `verbs` counted between `before` and `after`, by (resource, verb).
fn writes(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    verbs: &[&str],
) -> Vec<String> {
    after
        .iter()
        .filter(|((_, verb), _)| verbs.contains(&verb.as_str()))
        .filter_map(|(k, n)| {
            let d = n - before.get(k).unwrap_or(&0.0);
            (d > 0.0).then(|| format!("{} {}: {d}", k.0, k.1))
        })
        .collect()
}

/// The operator's own count of its API requests (`webhook_relay_operator_kube_requests_total`),
/// by (resource, verb).
fn operator_requests(op: &Operator) -> BTreeMap<(String, String), f64> {
    let body = op.http_get("/metrics").expect("operator metrics");
    testkit::relay::samples(&body, "webhook_relay_operator_kube_requests_total")
        .map(|m| ((m.label("resource").to_string(), m.label("verb").to_string()), m.value))
        .collect()
}

/// A counter of a running operator's /metrics.
fn counter(op: &Operator, name: &str) -> f64 {
    let body = op.http_get("/metrics").expect("operator metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} on the operator's /metrics"))
}

#[test]
fn fifty_idle_relays_get_no_writes_between_changes() {
    let ns = Namespace::create("whr-idle");
    let redis_url = run_redis(&ns);
    ns.example_secrets(&redis_url);
    let op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    let destination = format!("http://downstream.{}.svc:8080/events", ns.name);
    let manifests: Vec<String> = (0..50)
        .map(|i| {
            let replicas = if i < 2 { 1 } else { 0 };
            relay_manifest(&format!("idle-{i}"), &destination, &format!("  workload: {{replicas: {replicas}}}\n"))
        })
        .collect();
    ns.apply(&manifests.join("---\n"));
    for i in 0..2 {
        ns.wait_condition_within(Duration::from_secs(120), &format!("idle-{i}"), "Ready", "True", None);
        wait_available(&ns, &format!("idle-{i}-relay"), 1);
    }
    wait_for("all 50 relays to have a Ready condition", || {
        let relays = ns.list::<WebhookRelay>("");
        let with_ready = relays
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready")))
            .count();
        (with_ready == 50).then_some(())
    });
    // Settled: the last writes (status after the pods became available) are done.
    wait_for("the relays' writes to settle", || {
        let before = api_requests();
        std::thread::sleep(Duration::from_secs(3));
        writes(&before, &api_requests(), UPDATE_VERBS).is_empty().then_some(())
    });

    let (before, reconciles_before) = (api_requests(), counter(&op, "webhook_relay_operator_reconciliations_total"));
    let skipped_before = counter(&op, "webhook_relay_operator_applies_skipped_total");
    let own_before = operator_requests(&op);
    std::thread::sleep(Duration::from_secs(7)); // three refresh periods of 2 s (±20 %), and some
    let (after, reconciles_after) = (api_requests(), counter(&op, "webhook_relay_operator_reconciliations_total"));
    let skipped = counter(&op, "webhook_relay_operator_applies_skipped_total") - skipped_before;
    let own_after = operator_requests(&op);
    let reconciled = reconciles_after - reconciles_before;
    assert!(reconciled >= 100.0, "the operator kept refreshing the 50 relays: {reconciled} reconciles");
    let written = writes(&before, &after, UPDATE_VERBS);
    assert!(written.is_empty(), "updates of unchanged relays during {reconciled} reconciles: {written:?}");
    let own_writes = writes(&own_before, &own_after, WRITE_VERBS);
    assert!(own_writes.is_empty(), "the operator wrote during {reconciled} reconciles: {own_writes:?}");
    assert!(!own_after.is_empty(), "the operator counts its requests");
    // Each reconcile skips its ConfigMap, Deployment and Service (reconciles still running
    // at either end of the window blur the count a little).
    assert!(skipped >= 2.5 * reconciled, "{skipped} applies skipped in {reconciled} reconciles");
    let reads: f64 = after
        .iter()
        .filter(|((_, verb), _)| !WRITE_VERBS.contains(&verb.as_str()))
        .map(|(k, n)| n - before.get(k).unwrap_or(&0.0))
        .sum();
    println!(
        "idle: 50 relays, {reconciled} reconciles in 7 s, 0 writes, {skipped} applies skipped, \
         {reads} reads of the relays' own kinds (Secrets not counted)"
    );
}
