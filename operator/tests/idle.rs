//! Idle relays cost the API server no status writes: five Ready relays whose spec, Secrets,
//! pods and queue do not change pass three refresh periods (2 s each) while the operator
//! keeps reconciling them, and the API server counts no status write for WebhookRelays
//! (`apiserver_request_total`, read from its /metrics). Its own test binary, so no other
//! test's operator writes meanwhile.

use std::time::Duration;
use testkit::kube::*;
use testkit::wait::wait_for;

/// The API server's request count for `resource`/`subresource`, by verb.
fn api_requests(resource: &str, subresource: &str) -> std::collections::BTreeMap<String, f64> {
    let metrics = kubectl(&["get", "--raw", "/metrics"]);
    let mut by_verb = std::collections::BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string()
        };
        if label("resource") == resource && label("subresource") == subresource {
            let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *by_verb.entry(label("verb")).or_insert(0.0) += n;
        }
    }
    by_verb
}

/// `webhook_relay_operator_reconciliations_total` of a running operator.
fn reconciliations(op: &Operator) -> f64 {
    let body = op.http_get("/metrics").expect("operator metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("webhook_relay_operator_reconciliations_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the reconciliations counter")
}

#[test]
fn idle_relays_get_no_status_writes_between_changes() {
    let ns = Namespace::create("whr-idle");
    let redis_url = run_redis(&ns);
    ns.example_secrets(&redis_url);
    let op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    let names: Vec<String> = (0..5).map(|i| format!("idle-{i}")).collect();
    for n in &names {
        let destination = format!("http://downstream.{}.svc:8080/events", ns.name);
        ns.apply(&relay_manifest(n, &destination, "  workload: {replicas: 1}\n"));
    }
    for n in &names {
        ns.wait_condition_within(Duration::from_secs(120), n, "Ready", "True", None);
        wait_available(&ns, &format!("{n}-relay"), 1);
    }
    // Settled: one status write after the pods became available, then none.
    wait_for("the relays' statuses to settle", || {
        let before = api_requests("webhookrelays", "status");
        std::thread::sleep(Duration::from_secs(3));
        (api_requests("webhookrelays", "status") == before).then_some(())
    });

    let (writes_before, reconciles_before) = (api_requests("webhookrelays", "status"), reconciliations(&op));
    let children_before = api_requests("deployments", "");
    std::thread::sleep(Duration::from_secs(7)); // three refresh periods of 2 s, and some
    let (writes_after, reconciles_after) = (api_requests("webhookrelays", "status"), reconciliations(&op));
    let children_after = api_requests("deployments", "");
    let reconciled = reconciles_after - reconciles_before;
    assert!(reconciled >= 10.0, "the operator kept refreshing the 5 relays: {reconciled} reconciles");
    assert_eq!(writes_after, writes_before, "status requests for unchanged relays ({reconciled} reconciles)");
    let applies = children_after.get("APPLY").unwrap_or(&0.0) - children_before.get("APPLY").unwrap_or(&0.0);
    println!(
        "idle: 5 relays, {reconciled} reconciles in 7 s, 0 status writes; Deployment applies meanwhile: {applies} \
         (no-op applies of unchanged children are not skipped yet)"
    );
}
