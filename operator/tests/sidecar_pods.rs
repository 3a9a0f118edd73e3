//! Sidecar mode into a running app, on the test cluster: the app's pods roll and come back
//! 2/2 Ready with the relay container delivering to the app over the pod's loopback; when
//! the WebhookRelay is deleted they roll back to 1/1 with the app's container as it was.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashSet;
use std::time::Duration;
use testkit::downstream::RemoteDownstream;
use testkit::kube::*;
use testkit::relay::event_body;
use testkit::wait::{wait_for, wait_for_within};
use webhook_relay_operator::resources::{CONFIG_HASH_ANNOTATION, RELAY_LABEL, SIDECAR_OF_LABEL};
use webhook_relay_util::signature::sign_genesys;

/// The app's pods, with how many of their containers there are and are ready.
fn app_pods(ns: &Namespace) -> Vec<(String, usize, usize)> {
    pods(ns, "app=shop")
        .iter()
        .filter(|p: &&Pod| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
            let ready = statuses.iter().filter(|c| c.ready).count();
            (p.metadata.name.clone().unwrap(), p.spec.as_ref().unwrap().containers.len(), ready)
        })
        .collect()
}

/// Waits until the app runs exactly one pod, not one of `old`, with `containers` containers all ready.
fn wait_rolled(ns: &Namespace, old: &HashSet<String>, containers: usize) -> String {
    wait_for_within(
        Duration::from_secs(120),
        &format!("the app's pod rolled to {containers}/{containers} Ready"),
        || {
            let all = pods(ns, "app=shop");
            let now = app_pods(ns);
            (all.len() == 1
                && now.len() == 1
                && !old.contains(&now[0].0)
                && now[0].1 == containers
                && now[0].2 == containers)
                .then(|| now[0].0.clone())
        },
    )
}

#[test]
fn a_sidecar_joins_a_running_app_delivers_over_loopback_and_leaves_it_as_it_was() {
    let ns = Namespace::create("whr-sidecar");
    let redis_url = run_redis(&ns);
    ns.example_secrets(&redis_url);
    // The app: the scripted downstream on 8080, as a user's Deployment with its Service.
    run_app(&ns, "shop", DOWNSTREAM_IMAGE, 8080, &[], &[]);
    let app = RemoteDownstream { host: cluster_ip(&ns, "shop"), port: 8080 };
    let before = ns.get::<Deployment>("shop").unwrap();
    let app_container = serde_json::to_value(container(&before, "shop").unwrap()).unwrap();
    let first: HashSet<String> = app_pods(&ns).into_iter().map(|p| p.0).collect();
    println!("$ kubectl get pods -n {}   # the app alone\n{}", ns.name, ns.kubectl(&["get", "pods", "-l", "app=shop"]));

    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&relay_manifest(
        "orders",
        "http://127.0.0.1:8080/events",
        "  delivery: {initialDelay: 200ms, maxDelay: 1s}\n  \
         workload: {mode: Sidecar, targetRef: {name: shop}, ports: {http: 8780, admin: 9790}}\n",
    ));
    let with_relay = wait_rolled(&ns, &first, 2);
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    println!("$ kubectl get pods,whr -n {}   # the relay injected\n{}", ns.name, ns.kubectl(&["get", "pods,whr"]));
    let d = ns.get::<Deployment>("shop").unwrap();
    assert_eq!(
        serde_json::to_value(container(&d, "shop").unwrap()).unwrap(),
        app_container,
        "the app's container changed"
    );
    assert!(container(&d, "webhook-relay").is_some());
    let pod_labels = |d: &Deployment| d.spec.template.metadata.clone().unwrap_or_default().labels.unwrap_or_default();
    assert_eq!(
        pod_labels(&d).get(RELAY_LABEL).map(String::as_str),
        Some("orders"),
        "the PodMonitor finds relay pods by it"
    );

    // Events through the relay's Service reach the app from 127.0.0.1: the relay container
    // in the app's own pod.
    let svc = cluster_ip(&ns, "orders-relay");
    let ids: Vec<String> = (0..5).map(|i| format!("sidecar-{i}")).collect();
    for id in &ids {
        let body = event_body(id);
        let sig = sign_genesys(EXAMPLE_SIGNING_SECRET.as_bytes(), body.as_bytes());
        let r = wait_for("the relay Service to take an event", || {
            testkit::http::request(
                &svc,
                80,
                "POST",
                "/webhooks/genesys",
                &[("Content-Type", "application/json"), ("X-Hub-Signature-256", &sig)],
                &body,
            )
            .filter(|r| r.status == 200)
        });
        assert!(r.body.contains("accepted"), "{id}: {}", r.body);
    }
    let hits = wait_for("5 events delivered to the app", || {
        let hits = app.hits();
        let got: HashSet<&str> = hits.iter().filter(|h| h.status == 200).map(|h| h.id.as_str()).collect();
        ids.iter().all(|id| got.contains(id.as_str())).then_some(hits)
    });
    let events: Vec<_> = hits.iter().filter(|h| h.id.starts_with("sidecar-")).collect();
    assert!(
        events.iter().all(|h| h.peer.starts_with("127.0.0.1:")),
        "not over loopback: {:?}",
        events.iter().map(|h| &h.peer).collect::<Vec<_>>()
    );
    println!("{} events delivered to the app by its own pod's relay, from {}", events.len(), events[0].peer);

    // Deleting the WebhookRelay takes the relay out: the pods roll back to 1/1 and the
    // Deployment's pod template holds the app's container exactly as before.
    ns.kubectl(&["delete", "whr", "orders", "--wait=false"]);
    wait_for("the WebhookRelay gone (its finalizer released the sidecar)", || {
        ns.relay("orders").is_none().then_some(())
    });
    wait_rolled(&ns, &HashSet::from([with_relay]), 1);
    println!(
        "$ kubectl get pods -n {}   # the relay removed\n{}",
        ns.name,
        ns.kubectl(&["get", "pods", "-l", "app=shop"])
    );
    let after = ns.get::<Deployment>("shop").unwrap();
    let tmpl = after.spec.template.clone();
    let containers = &tmpl.spec.as_ref().unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(serde_json::to_value(&containers[0]).unwrap(), app_container, "the app's container changed");
    assert!(tmpl.spec.as_ref().unwrap().volumes.as_ref().is_none_or(|v| v.is_empty()), "volumes left: {:?}", tmpl.spec);
    assert!(template_annotation(&after, CONFIG_HASH_ANNOTATION).is_none(), "the config-hash annotation is left");
    assert!(!pod_labels(&after).contains_key(RELAY_LABEL), "the relay label is left on the app's pods");
    assert!(!after.metadata.labels.unwrap_or_default().contains_key(SIDECAR_OF_LABEL), "the sidecar-of label is left");
    // The app's new pod answers on its Service (hits() fails the test if it does not).
    assert!(app.hits().iter().all(|h| !h.id.starts_with("sidecar-")), "a fresh pod of the app");
}
