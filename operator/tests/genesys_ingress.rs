//! The Genesys path, all of it on the test cluster: the fake Genesys Cloud as a pod posts
//! signed Open Messaging events to the relay's Ingress host over HTTPS (Traefik, with the
//! TLS Secret of `spec.ingress`); the relay pods, run by the operator installed with helm,
//! store them in the Redis pod and deliver them to the downstream pod by its DNS name; an
//! event the downstream refuses with 400 becomes one `Failed` receipt at the fake; and
//! `GenesysWebhookVerified` is True because the integration posts to the Ingress endpoint.

use serde_json::{Value, json};
use std::time::Duration;
use testkit::downstream::{RemoteDownstream, Rule, ScriptSpec};
use testkit::genesys_fake::{CLIENT_ID, CLIENT_SECRET, INTEGRATION_ID, SendRequest};
use testkit::kube::*;
use testkit::relay::event_body;
use testkit::wait::{wait_for, wait_for_within};
use webhook_relay_util::signature::sign_genesys;

#[test]
fn genesys_posts_through_the_ingress_and_a_refused_event_comes_back_as_one_failed_receipt() {
    let ns = Namespace::create("whr-e2e");
    let host = format!("hooks.{}.test", ns.name);
    let endpoint = format!("https://{host}/webhooks/genesys");
    let redis_url = run_redis(&ns);
    run_app(&ns, "downstream", DOWNSTREAM_IMAGE, 8080, &[], &[]);
    run_app(&ns, "genesys", FAKE_GENESYS_IMAGE, 8080, &[], &[]);
    let downstream = RemoteDownstream { host: cluster_ip(&ns, "downstream"), port: 8080 };
    downstream
        .set_script(&ScriptSpec { rules: vec![Rule { prefix: "refused-".into(), status: 400 }], ..Default::default() });
    let genesys = cluster_ip(&ns, "genesys");
    let control = |method: &str, path: &str, body: &Value| {
        let r = testkit::http::request(
            &genesys,
            8080,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
        .unwrap_or_else(|| panic!("fake Genesys {method} {path}: no answer"));
        assert!(r.status < 300, "fake Genesys {method} {path}: {} {}", r.status, r.body);
        r.body
    };
    // The Open Messaging integration posts outbound messages to the relay's Ingress endpoint.
    control("PUT", &format!("/control/integrations/{INTEGRATION_ID}"), &json!({ "webhookUrl": endpoint }));

    ns.example_secrets(&redis_url);
    let oauth = json!({ "stringData": { "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET } }).to_string();
    ns.kubectl(&["patch", "secret", "genesys-oauth", "--type", "merge", "-p", &oauth]);
    let ca = testkit::tls::Ca::new("whr-e2e-ca");
    let cert = ca.server_for("hooks", &host);
    ns.kubectl(&[
        "create",
        "secret",
        "tls",
        "hooks-tls",
        &format!("--cert={}", cert.cert.display()),
        &format!("--key={}", cert.key.display()),
    ]);

    // The operator as users install it, watching this namespace only.
    let release = unique("whr-e2e");
    let watch = format!("watchNamespace={}", ns.name);
    let set = [
        "image.repository=localhost/webhook-relay",
        "image.tag=dev",
        "image.pullPolicy=Never",
        &watch,
        "refreshInterval=2s",
    ];
    let _operator = Release::install(&release, &ns.name, &set, &["--wait"]);

    let genesys_url = format!("http://genesys.{}.svc:8080", ns.name);
    ns.apply(&relay_manifest(
        "orders",
        &format!("http://downstream.{}.svc:8080/events", ns.name),
        &format!(
            "  delivery: {{maxAttempts: 3, initialDelay: 200ms, maxDelay: 1s}}\n  \
             genesys: {{region: us-east-1, apiBaseUrl: '{genesys_url}', loginBaseUrl: '{genesys_url}', \
             credentialsSecretRef: {{name: genesys-oauth}}, integrationId: '{INTEGRATION_ID}', receipts: {{onDeadLetter: true}}}}\n  \
             ingress: {{host: {host}, className: traefik, tlsSecretName: hooks-tls}}\n  \
             workload: {{replicas: 2}}\n"
        ),
    ));
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    let verified = ns.wait_condition_within(
        Duration::from_secs(60),
        "orders",
        "GenesysWebhookVerified",
        "True",
        Some("WebhookUrlMatches"),
    );
    assert!(verified.message.contains(&endpoint), "{}", verified.message);
    assert_eq!(ns.jsonpath("orders", "{.status.endpoint}"), endpoint);

    // From the host, with the test CA: the Ingress serves the Secret's certificate for the
    // host and routes the path to the relay.
    let env = cluster_env();
    let (ingress_ip, https_port) = (env["INGRESS_IP"].clone(), env["INGRESS_HTTPS_PORT"].clone());
    let body = event_body("tls-check");
    let sig = sign_genesys(EXAMPLE_SIGNING_SECRET.as_bytes(), body.as_bytes());
    let url = format!("https://{host}:{https_port}/webhooks/genesys");
    let curl = wait_for_within(Duration::from_secs(60), "the Ingress to route the relay's path over HTTPS", || {
        let out = run(
            {
                let mut c = std::process::Command::new("curl");
                c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
                    .args(["--resolve", &format!("{host}:{https_port}:{ingress_ip}")])
                    .args(["--cacert", &ca.cert().display().to_string()])
                    .args(["-H", "Content-Type: application/json", "-H", &format!("X-Hub-Signature-256: {sig}")])
                    .args(["--data-binary", &body, &url]);
                c
            },
            None,
        );
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        (code == "200").then_some(code)
    });
    println!("curl --cacert <test CA> {url}: {curl}");

    // The fake Genesys pod posts as Genesys does: signed, to the integration's webhook URL.
    let ids: Vec<String> = (1..=5).map(|i| format!("gen-{i}")).chain(["refused-1".to_string()]).collect();
    let send = SendRequest {
        url: if https_port == "443" { endpoint.clone() } else { url.clone() },
        resolve: Some(format!("{ingress_ip}:{https_port}")),
        insecure: true,
        secret: EXAMPLE_SIGNING_SECRET.into(),
        ids: ids.clone(),
        to: None,
    };
    let results: Vec<(String, u16)> =
        serde_json::from_str(&control("POST", "/control/send", &serde_json::to_value(&send).unwrap())).unwrap();
    assert!(results.iter().all(|(_, s)| *s == 200), "Genesys' posts answered {results:?}");
    println!("fake Genesys posted {} events to {}: {results:?}", results.len(), send.url);

    // Delivered to the downstream pod by its DNS name...
    wait_for("gen-1..gen-5 and tls-check delivered", || {
        let d = downstream.delivered();
        ids.iter()
            .filter(|id| id.starts_with("gen-"))
            .chain(["tls-check".to_string()].iter())
            .all(|id| d.contains_key(id))
            .then_some(())
    });
    // ...and the refused one dead-lettered, reported to Genesys as one Failed receipt.
    let receipts = || -> Vec<Value> {
        let all: Vec<(String, Value)> =
            serde_json::from_str(&control("GET", "/control/receipts", &Value::Null)).unwrap();
        all.into_iter().map(|(_, v)| v).filter(|v| v["status"] == "Failed").collect()
    };
    let failed = wait_for("a Failed receipt for refused-1", || {
        let r = receipts();
        (!r.is_empty()).then_some(r)
    });
    wait_for("DEAD 1", || (ns.relay("orders")?.status?.queue?.dead == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    let failed_later = receipts();
    assert_eq!(failed_later.len(), 1, "exactly one Failed receipt: {failed_later:?}");
    assert_eq!(failed[0]["id"], "refused-1", "{failed:?}");
    let attempts = downstream.hits().iter().filter(|h| h.id == "refused-1").count();
    assert_eq!(attempts, 1, "a 400 is not retried");
    println!("Failed receipt at the fake Genesys: {}", failed[0]);
    println!("$ kubectl get whr,ingress -n {} -o wide\n{}", ns.name, ns.kubectl(&["get", "whr,ingress", "-o", "wide"]));
}
