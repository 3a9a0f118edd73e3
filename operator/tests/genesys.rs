//! `GenesysWebhookVerified` on the test cluster, with the operator as a process and a fake
//! Genesys Cloud that the relay's `spec.genesys.apiBaseUrl`/`loginBaseUrl` point at.

use std::time::Duration;
use testkit::genesys_fake::{CLIENT_ID, CLIENT_SECRET, FakeGenesys, TOKEN_PREFIX};
use testkit::kube::*;
use testkit::wait::wait_for;

const INTEGRATION: &str = "6d1e4f2a-0000-4000-8000-0000000000aa";
const CONDITION: &str = "GenesysWebhookVerified";
const ENDPOINT: &str = "https://hooks.example.com/webhooks/genesys";
const WRONG_SECRET: &str = "not-the-oauth-secret-0000";

fn relay(fake: &FakeGenesys, host: &str, integration: &str) -> String {
    let base = &fake.base_url;
    format!(
        "apiVersion: webhookrelay.dev/v1alpha1\nkind: WebhookRelay\nmetadata: {{name: orders}}\nspec:\n  \
         source: {{verify: {{scheme: genesys-open-messaging, secretRef: {{name: genesys-webhook, key: secret}}}}}}\n  \
         destination: {{url: 'http://orders.cx.svc:8080/events'}}\n  \
         redis: {{urlSecretRef: {{name: relay-redis, key: url}}}}\n  \
         genesys:\n    region: us-east-1\n    apiBaseUrl: '{base}'\n    loginBaseUrl: '{base}'\n    \
         credentialsSecretRef: {{name: genesys-oauth}}\n    integrationId: '{integration}'\n  \
         ingress: {{host: {host}, className: nginx}}\n"
    )
}

/// Example Secrets, with the OAuth client the fake accepts.
fn secrets(ns: &Namespace, redis: &testkit::RedisServer) {
    ns.example_secrets(&redis.url());
    set_client_secret(ns, CLIENT_SECRET);
}

fn set_client_secret(ns: &Namespace, secret: &str) {
    let patch = serde_json::json!({ "stringData": { "clientId": CLIENT_ID, "clientSecret": secret } }).to_string();
    ns.kubectl(&["patch", "secret", "genesys-oauth", "--type", "merge", "-p", &patch]);
}

fn reconciles(op: &Operator) -> u64 {
    let m = op.http_get("/metrics").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("webhook_relay_operator_reconciliations_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn assert_no_secrets(ns: &Namespace, op: &Operator) {
    let status = ns.kubectl(&["get", "whr", "orders", "-o", "yaml"]);
    let events = ns.events_text();
    for (what, text) in [("status", status.as_str()), ("events", events.as_str()), ("operator log", op.log().as_str())]
    {
        for secret in [CLIENT_SECRET, WRONG_SECRET, TOKEN_PREFIX] {
            assert!(!text.contains(secret), "{secret:?} leaked into the {what}");
        }
    }
}

#[test]
fn genesys_webhook_url_is_verified_and_problems_are_reported() {
    let ns = Namespace::create("whr-genesys");
    let redis = cluster_redis();
    let fake = FakeGenesys::start_blocking("127.0.0.1:0");
    fake.set_integration(INTEGRATION, ENDPOINT);
    secrets(&ns, &redis);
    // A long period: every re-check below is caused by a change, not by the clock.
    let op = Operator::start(&ns.name, RELAY_IMAGE, &["--genesys-check-interval", "1h"]);
    ns.apply(&relay(&fake, "hooks.example.com", INTEGRATION));

    // The integration posts to status.endpoint: True.
    let msg = ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches")).message;
    assert!(msg.contains(INTEGRATION) && msg.contains(ENDPOINT), "{msg}");
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    println!(
        "$ kubectl get whr orders -o jsonpath='{{.status.conditions[?(@.type==\"{CONDITION}\")]}}'\n{}\n",
        ns.jsonpath("orders", &format!("{{.status.conditions[?(@.type==\"{CONDITION}\")]}}"))
    );

    // Reconciles (every 2 s here) reuse the verdict: no lookup until something changes.
    let (lookups, runs) = (fake.lookups(), reconciles(&op));
    wait_for("two more reconciles", || (reconciles(&op) >= runs + 2).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fake.lookups(), lookups, "the integration was looked up again without a change");

    // The endpoint changes (Ingress host): checked at once, a mismatch naming both URLs.
    ns.kubectl(&[
        "patch",
        "whr",
        "orders",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ingress":{"host":"hooks2.example.com"}}}"#,
    ]);
    let msg = ns.wait_condition("orders", CONDITION, "False", Some("WebhookUrlMismatch")).message;
    assert!(msg.contains(ENDPOINT) && msg.contains("https://hooks2.example.com/webhooks/genesys"), "{msg}");
    // A wrong webhook URL is a warning, not an outage: the relay still takes events.
    assert_eq!(ns.condition("orders", "Ready").unwrap().status, "True");
    println!(
        "$ kubectl get whr orders -o jsonpath='{{.status.conditions[?(@.type==\"{CONDITION}\")]}}'\n{}\n",
        ns.jsonpath("orders", &format!("{{.status.conditions[?(@.type==\"{CONDITION}\")]}}"))
    );
    ns.kubectl(&[
        "patch",
        "whr",
        "orders",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ingress":{"host":"hooks.example.com"}}}"#,
    ]);
    ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches"));

    // An integration id Genesys does not know: 404.
    let patch = r#"{"spec":{"genesys":{"integrationId":"6d1e4f2a-0000-4000-8000-00000000dead"}}}"#;
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", patch]);
    let msg = ns.wait_condition("orders", CONDITION, "False", Some("IntegrationNotFound")).message;
    assert!(msg.contains("00000000dead") && msg.contains("404"), "{msg}");
    let patch = format!(r#"{{"spec":{{"genesys":{{"integrationId":"{INTEGRATION}"}}}}}}"#);
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", &patch]);
    ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches"));

    // Credentials Genesys refuses (401 invalid_client): a Secret change is noticed at the
    // next reconcile, without a spec change.
    set_client_secret(&ns, WRONG_SECRET);
    let msg = ns.wait_condition("orders", CONDITION, "False", Some("Unauthorized")).message;
    assert!(msg.contains(CLIENT_ID) && msg.contains("genesys-oauth"), "{msg}");
    println!(
        "$ kubectl get whr orders -o jsonpath='{{.status.conditions[?(@.type==\"{CONDITION}\")]}}'\n{}\n",
        ns.jsonpath("orders", &format!("{{.status.conditions[?(@.type==\"{CONDITION}\")]}}"))
    );

    // No credentials Secret: SecretNotFound here and on Ready.
    ns.kubectl(&["delete", "secret", "genesys-oauth"]);
    let msg = ns.wait_condition("orders", CONDITION, "False", Some("SecretNotFound")).message;
    assert!(msg.contains("genesys-oauth") && msg.contains("clientSecret"), "{msg}");
    ns.wait_condition("orders", "Ready", "False", Some("SecretNotFound"));
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "genesys-oauth",
        &format!("--from-literal=clientId={CLIENT_ID}"),
        &format!("--from-literal=clientSecret={CLIENT_SECRET}"),
    ]);
    ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches"));
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);

    // Each change of the result was announced; no secret value went anywhere.
    let want = [
        "GenesysWebhookVerified",
        "GenesysWebhookUrlMismatch",
        "GenesysIntegrationNotFound",
        "GenesysUnauthorized",
        "GenesysSecretNotFound",
    ];
    let reasons = wait_for("Genesys events", || {
        let r = ns.event_reasons("orders");
        want.iter().all(|w| r.iter().any(|x| x == w)).then_some(r)
    });
    println!("event reasons: {reasons:?}\n");
    println!(
        "$ kubectl get events --field-selector involvedObject.name=orders\n{}",
        ns.kubectl(&["get", "events", "--field-selector", "involvedObject.name=orders"])
    );
    assert_no_secrets(&ns, &op);
    let metrics = op.http_get("/metrics").unwrap();
    assert!(
        metrics.contains(r#"webhook_relay_operator_genesys_webhook_checks_total{reason="Unauthorized"}"#),
        "{metrics}"
    );

    // Without spec.genesys there is no such condition.
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", r#"{"spec":{"genesys":null}}"#]);
    wait_for("GenesysWebhookVerified removed", || ns.condition("orders", CONDITION).is_none().then_some(()));
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
}

#[test]
fn genesys_webhook_is_rechecked_on_its_period() {
    let ns = Namespace::create("whr-genesys-period");
    let redis = cluster_redis();
    let fake = FakeGenesys::start_blocking("127.0.0.1:0");
    fake.set_integration(INTEGRATION, ENDPOINT);
    secrets(&ns, &redis);
    let op = Operator::start(&ns.name, RELAY_IMAGE, &["--genesys-check-interval", "3s"]);
    ns.apply(&relay(&fake, "hooks.example.com", INTEGRATION));
    ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches"));

    // Someone edits the integration in Genesys Cloud; nothing changes in the cluster.
    fake.set_integration(INTEGRATION, "https://old-hooks.example.com/genesys");
    let msg = ns.wait_condition("orders", CONDITION, "False", Some("WebhookUrlMismatch")).message;
    assert!(msg.contains("https://old-hooks.example.com/genesys") && msg.contains(ENDPOINT), "{msg}");
    fake.set_integration(INTEGRATION, &format!("{ENDPOINT}/"));
    let msg = ns.wait_condition("orders", CONDITION, "True", Some("WebhookUrlMatches")).message;
    assert!(msg.contains(ENDPOINT), "{msg}");
    assert!(fake.token_requests() >= 3, "a token per check");
    assert_no_secrets(&ns, &op);
}
