//! The README's "Try it on a cluster", on the test cluster: the chart with the README's
//! values, `examples/try-it.yaml`, `examples/secrets.yaml` and `examples/webhookrelay.yaml`
//! as they are (only their `cx` namespace is this test's), an event signed the way the
//! README signs it (openssl), sent through `kubectl port-forward`, delivered.

use std::time::Duration;
use testkit::downstream::RemoteDownstream;
use testkit::kube::*;
use testkit::wait::wait_for;

/// The README's test event.
const BODY: &str = r#"{"id":"try-1","channel":{"messageId":"try-1","to":{"id":"cust-1"}},"type":"Text","text":"hi","direction":"Outbound"}"#;

#[test]
fn the_readme_try_it_path_delivers_a_signed_test_event() {
    let ns = Namespace::create("whr-readme");
    let readme = std::fs::read_to_string(testkit::process::root().join("README.md")).unwrap();
    assert!(readme.contains(BODY), "README's test event changed: update this test with it");
    let in_ns = |file: &str| example(file).replace(".cx.svc", &format!(".{}.svc", ns.name));

    // helm install with the README's values (watching only this namespace, to leave the
    // other tests' relays alone).
    let watch = format!("watchNamespace={}", ns.name);
    let set = ["image.repository=localhost/webhook-relay", "image.tag=dev", &watch];
    let _release = Release::install(&unique("whr-readme"), &ns.name, &set, &["--wait"]);
    for file in ["try-it.yaml", "secrets.yaml", "webhookrelay.yaml"] {
        ns.apply(&in_ns(file));
    }
    ns.wait_condition_within(Duration::from_secs(180), "orders", "Ready", "True", None);

    // Signed as the README signs it.
    let sig = {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "printf '%s' \"$BODY\" | openssl dgst -sha256 -hmac \"$SECRET\" -binary | base64"])
            .env("BODY", BODY)
            .env("SECRET", EXAMPLE_SIGNING_SECRET);
        ok("openssl dgst", run(c, None)).trim().to_string()
    };
    let pf = PortForward::start(&ns.name, "svc/orders-relay", 80);
    let r = testkit::http::post(
        pf.local_port,
        "/webhooks/genesys",
        &[("Content-Type", "application/json"), ("X-Hub-Signature-256", &format!("sha256={sig}"))],
        BODY,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    println!("$ curl ... http://127.0.0.1:8080/webhooks/genesys\n{}", r.body);
    let orders = RemoteDownstream { host: cluster_ip(&ns, "orders"), port: 8080 };
    wait_for("try-1 delivered to the orders app", || orders.delivered().contains_key("try-1").then_some(()));
    wait_for("the status to count it delivered (DUE 0, DEAD 0)", || {
        let q = ns.relay("orders")?.status?.queue?;
        (q.due == 0 && q.dead == 0 && q.in_flight == 0).then_some(())
    });
    println!("$ kubectl get whr -n cx\n{}", ns.kubectl(&["get", "whr"]));
    println!("$ kubectl get pods -n cx\n{}", ns.kubectl(&["get", "pods"]));
    println!("$ kubectl get whr -n cx -o wide\n{}", ns.kubectl(&["get", "whr", "-o", "wide"]));
}
