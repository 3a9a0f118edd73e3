//! The operator's output, run: the `relay.yaml` it rendered into the ConfigMap and the
//! Secrets its Deployment's `secretKeyRef`s name, read back through the API, drive the
//! real relay binary as a process (no kubelet runs here, so no pod would). An event goes
//! through it to a downstream, and the operator's status figures come from the same Redis.
//!
//! Needs the relay binary: `cargo build -p webhook-relay-sidecar --bin webhook-relay`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml::Value as Yaml;
use testkit::RedisServer;
use testkit::downstream::{Downstream, refuse_prefix};
use testkit::genesys_fake::{CLIENT_ID, CLIENT_SECRET, FakeGenesys};
use testkit::kube::*;
use testkit::relay::{RelayProcess, event_body};
use testkit::wait::wait_for;
use webhook_relay_operator::resources::{CONFIG_KEY, CONTAINER};
use webhook_relay_util::signature::sign_genesys;

const INTEGRATION: &str = "6d1e4f2a-0000-4000-8000-000000000001";

/// Environment of the relay container, each value read from the Secret key its
/// `secretKeyRef` names (as the kubelet would).
fn container_env(ns: &Namespace, deployment: &Deployment) -> Vec<(String, String)> {
    let relay = container(deployment, CONTAINER).expect("relay container");
    relay
        .env
        .iter()
        .flatten()
        .map(|e| {
            let r = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("a secretKeyRef");
            (e.name.clone(), ns.secret_value(&r.name, &r.key))
        })
        .collect()
}

fn get_whr(ns: &Namespace, wide: bool) -> String {
    let mut args = vec!["get", "whr"];
    if wide {
        args.extend(["-o", "wide"]);
    }
    ns.kubectl(&args)
}

#[test]
fn relay_runs_the_rendered_config_and_status_reads_its_redis() {
    testkit::workspace_bin("webhook-relay"); // fail early, before any setup, if it is not built
    let ns = Namespace::create("whr-process");
    let redis = RedisServer::start();
    let fake = FakeGenesys::start_blocking("127.0.0.1:0");
    fake.set_integration(INTEGRATION, "https://hooks.example.com/webhooks/genesys");
    ns.example_secrets(&redis.url());
    let patch =
        serde_json::json!({ "stringData": { "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET } }).to_string();
    ns.kubectl(&["patch", "secret", "genesys-oauth", "--type", "merge", "-p", &patch]);
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);

    // The example as a user applies it; only Genesys Cloud is pointed at the fake.
    let example = example("webhookrelay.yaml");
    let base = &fake.base_url;
    let yaml = example.replacen(
        "    region: us-east-1\n",
        &format!("    region: us-east-1\n    apiBaseUrl: '{base}'\n    loginBaseUrl: '{base}'\n"),
        1,
    );
    assert_ne!(yaml, example, "examples/webhookrelay.yaml no longer sets region: us-east-1");
    ns.apply(&yaml);
    ns.wait_condition("orders", "Ready", "True", None);
    ns.wait_condition("orders", "GenesysWebhookVerified", "True", Some("WebhookUrlMatches"));
    println!(
        "(examples/secrets.yaml and examples/webhookrelay.yaml, Genesys base URLs on the fake)\n$ kubectl get whr -n {0}\n{1}",
        ns.name,
        get_whr(&ns, false)
    );

    // What the operator rendered, read through the API.
    let cm = ns.get::<ConfigMap>("orders-relay").unwrap();
    let rendered = cm.data.as_ref().unwrap()[CONFIG_KEY].clone();
    let deployment = ns.get::<Deployment>("orders-relay").unwrap();
    let env = container_env(&ns, &deployment);
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["REDIS_URL", "RELAY_SIGNING_SECRET", "RELAY_ADMIN_TOKEN", "GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET"]
    );
    let signing_secret = env.iter().find(|(k, _)| k == "RELAY_SIGNING_SECRET").unwrap().1.clone();

    // Only the addresses change: there is no pod network or cluster DNS here, so the
    // listeners move to free loopback ports and the destination (orders.cx.svc, a
    // Service name) to a local downstream. Everything else is exactly as rendered.
    let downstream = Downstream::start_blocking("127.0.0.1:0", refuse_prefix("bad", 400));
    let (listen, admin) = (testkit::free_port(), testkit::free_port());
    let mut config: Yaml = serde_yaml::from_str(&rendered).unwrap();
    config["listen"] = Yaml::from(format!("127.0.0.1:{listen}"));
    config["adminListen"] = Yaml::from(format!("127.0.0.1:{admin}"));
    config["destination"]["url"] = Yaml::from(downstream.url.clone());
    let relay = RelayProcess::start_exact(&serde_yaml::to_string(&config).unwrap(), &env, listen, admin);

    // A signed Genesys event is accepted and delivered.
    let send = |id: &str| {
        let body = event_body(id);
        let sig = sign_genesys(signing_secret.as_bytes(), body.as_bytes());
        let r = testkit::http::post(
            listen,
            "/webhooks/genesys",
            &[("Content-Type", "application/json"), ("X-Hub-Signature-256", &sig)],
            &body,
        );
        (r.status, r.body)
    };
    let (status, body) = send("ok-1");
    assert_eq!(status, 200, "{body}\n{}", relay.log_text());
    assert!(body.contains("accepted"), "{body}");
    wait_for("ok-1 delivered", || downstream.hits().iter().any(|h| h.id == "ok-1" && h.status == 200).then_some(()));
    assert_eq!(downstream.hits()[0].text(), event_body("ok-1"));
    // A wrong signature is refused before anything is stored.
    let forged = testkit::http::post(
        listen,
        "/webhooks/genesys",
        &[("X-Hub-Signature-256", "sha256=AAAA")],
        &event_body("forged"),
    );
    assert_eq!(forged.status, 401);

    // One the downstream refuses (400) goes to the dead letters, and the operator, reading
    // the same Redis, shows DUE 0 DEAD 1; the relay posts a Failed receipt to Genesys.
    let (status, _) = send("bad-1");
    assert_eq!(status, 200);
    let row = wait_for("kubectl get whr to show DUE 0 DEAD 1", || {
        let out = ns.kubectl(&["get", "whr", "orders", "--no-headers"]);
        let cols: Vec<&str> = out.split_whitespace().collect();
        (cols.len() >= 4 && cols[1] == "True" && cols[2] == "0" && cols[3] == "1").then_some(out)
    });
    let queue = ns.relay("orders").unwrap().status.unwrap().queue.unwrap();
    assert_eq!((queue.dead, queue.in_flight), (1, 0));
    let receipts = wait_for("a Failed receipt", || {
        let r = fake.receipts();
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].0, INTEGRATION);
    assert_eq!(receipts[0].1["id"], "bad-1");
    assert_eq!(receipts[0].1["status"], "Failed");
    println!("$ kubectl get whr -n {}\n{}", ns.name, get_whr(&ns, false));
    println!("$ kubectl get whr -n {} -o wide\n{}", ns.name, get_whr(&ns, true));
    println!("$ kubectl get whr orders -o jsonpath='{{.status}}'\n{}\n", ns.jsonpath("orders", "{.status}"));
    assert!(row.contains("True"));
    assert!(!relay.log_text().contains(CLIENT_SECRET));
}
