//! Relay pods that run, on the test cluster (tests/cluster: kubelet, containerd, images
//! built here): a Standalone relay's pods start locked down, take signed events through the
//! Service (`kubectl port-forward`), store them in a Redis pod and deliver them to a
//! downstream pod by its cluster DNS name; a deleted pod is replaced; a config change rolls
//! the pods onto the new `relay.yaml`; and what cannot run shows in `Ready`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashSet;
use std::time::Duration;
use testkit::downstream::{RemoteDownstream, Rule, ScriptSpec};
use testkit::kube::*;
use testkit::relay::event_body;
use testkit::wait::{wait_for, wait_for_within};
use webhook_relay_operator::resources::CONFIG_HASH_ANNOTATION;
use webhook_relay_util::signature::sign_genesys;

fn relay_yaml(ns: &Namespace, max_attempts: u32, image: Option<&str>) -> String {
    let image = image.map(|i| format!(", image: '{i}'")).unwrap_or_default();
    relay_manifest(
        "orders",
        &format!("http://downstream.{}.svc:8080/events", ns.name),
        &format!(
            "  delivery: {{maxAttempts: {max_attempts}, initialDelay: 200ms, maxDelay: 1s}}\n  workload: {{replicas: 2{image}}}\n"
        ),
    )
}

/// POSTs signed events to the relay's intake through `pf`; every answer must be 200.
fn send(pf: &PortForward, ids: &[String]) {
    for id in ids {
        let body = event_body(id);
        let sig = sign_genesys(EXAMPLE_SIGNING_SECRET.as_bytes(), body.as_bytes());
        let r = testkit::http::post(
            pf.local_port,
            "/webhooks/genesys",
            &[("Content-Type", "application/json"), ("X-Hub-Signature-256", &sig)],
            &body,
        );
        assert_eq!(r.status, 200, "{id}: {}", r.body);
    }
}

fn relay_pods(ns: &Namespace) -> Vec<Pod> {
    pods(ns, "app.kubernetes.io/instance=orders")
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn names(pods: &[Pod]) -> HashSet<String> {
    pods.iter().filter_map(|p| p.metadata.name.clone()).collect()
}

/// The uid of the host process serving a relay pod's intake (no PID namespace is made for
/// the node, so the relay's processes show in the host's /proc).
fn relay_uids() -> Vec<u32> {
    let mut uids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).next() == Some(b"/usr/local/bin/webhook-relay") {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if let Some(uid) = status.lines().find_map(|l| l.strip_prefix("Uid:")) {
                uids.push(uid.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
    }
    uids
}

#[test]
fn standalone_relay_pods_run_locked_down_deliver_survive_a_deleted_pod_and_roll_on_a_config_change() {
    let ns = Namespace::create("whr-pods");
    let redis_url = run_redis(&ns);
    run_app(&ns, "downstream", DOWNSTREAM_IMAGE, 8080, &[], &[]);
    let downstream = RemoteDownstream { host: cluster_ip(&ns, "downstream"), port: 8080 };
    ns.example_secrets(&redis_url);
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&relay_yaml(&ns, 8, None));

    // Ready once the relay pods are: 2/2 available, read-only root, non-root.
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    wait_available(&ns, "orders-relay", 2);
    wait_for("Ready to say 2/2 relay pods available", || {
        ns.condition("orders", "Ready")?.message.contains("2/2 relay pods available").then_some(())
    });
    let pods = relay_pods(&ns);
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert!(c.ready && c.restart_count == 0, "{c:?}");
        let sc = p.spec.as_ref().unwrap().containers[0].security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.run_as_non_root), (Some(true), Some(true)));
    }
    let uids = relay_uids();
    assert!(uids.len() >= 2 && uids.iter().all(|u| *u == 65532), "relay processes run as {uids:?}");

    // Signed events through the Service, stored in the Redis pod, delivered to the downstream pod.
    let pf = PortForward::start(&ns.name, "svc/orders-relay", 80);
    let ids: Vec<String> = (0..5).map(|i| format!("pod-ev-{i}")).collect();
    send(&pf, &ids);
    wait_for("5 events delivered to the downstream pod", || {
        let d = downstream.delivered();
        ids.iter().all(|id| d.contains_key(id)).then_some(())
    });
    let hit = downstream.hits().into_iter().find(|h| h.id == "pod-ev-0").unwrap();
    assert_eq!(hit.text(), event_body("pod-ev-0"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen: Vec<String> = rt.block_on(async {
        let store = testkit::relay::store(&redis_url, &format!("{}/orders", ns.name)).await;
        let v = store.conn().cmd(redis::cmd("ZRANGE").arg(&store.keys().seen).arg(0).arg(-1)).await.unwrap();
        redis::from_redis_value(v).unwrap()
    });
    assert!(ids.iter().all(|id| seen.contains(id)), "the Redis pod holds their dedup entries: {seen:?}");
    println!("$ kubectl get pods,whr -n {}\n{}", ns.name, ns.kubectl(&["get", "pods,whr"]));

    // A deleted relay pod is replaced; the relay keeps accepting.
    let before = names(&relay_pods(&ns));
    let victim = before.iter().next().unwrap().clone();
    drop(pf);
    ns.kubectl(&["delete", "pod", &victim, "--wait=false"]);
    wait_for_within(Duration::from_secs(120), "a replacement relay pod", || {
        let now = relay_pods(&ns);
        let ready = now
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|c| c.iter().all(|c| c.ready))
            })
            .count();
        (!names(&now).contains(&victim) && ready == 2).then_some(())
    });
    let pf = PortForward::start(&ns.name, "svc/orders-relay", 80);
    let more: Vec<String> = (0..5).map(|i| format!("after-delete-{i}")).collect();
    send(&pf, &more);
    wait_for("events after the pod was replaced delivered", || {
        let d = downstream.delivered();
        more.iter().all(|id| d.contains_key(id)).then_some(())
    });

    // A config change (maxAttempts 8 -> 2) rolls the pods onto the new relay.yaml: an event
    // the downstream always refuses with 503 is dead-lettered after exactly 2 attempts.
    let hash_before = template_annotation(&ns.get::<Deployment>("orders-relay").unwrap(), CONFIG_HASH_ANNOTATION);
    let pods_before = names(&relay_pods(&ns));
    drop(pf);
    ns.apply(&relay_yaml(&ns, 2, None));
    wait_for_within(Duration::from_secs(120), "the relay pods to roll onto the new config", || {
        let d = ns.get::<Deployment>("orders-relay")?;
        let rolled = template_annotation(&d, CONFIG_HASH_ANNOTATION) != hash_before;
        // Old pods too must be gone, not only terminating: they keep delivering, with the
        // old config, for their shutdownDelay.
        let now = testkit::kube::pods(&ns, "app.kubernetes.io/instance=orders");
        let all_new = !now.is_empty() && names(&now).is_disjoint(&pods_before);
        (rolled && all_new).then_some(())
    });
    wait_available(&ns, "orders-relay", 2);
    downstream
        .set_script(&ScriptSpec { rules: vec![Rule { prefix: "fail-".into(), status: 503 }], ..ScriptSpec::default() });
    let pf = PortForward::start(&ns.name, "svc/orders-relay", 80);
    send(&pf, &["fail-after-roll".to_string()]);
    wait_for("the failing event dead-lettered (DEAD 1)", || {
        (ns.relay("orders")?.status?.queue?.dead == 1).then_some(())
    });
    let attempts = downstream.hits().iter().filter(|h| h.id == "fail-after-roll").count();
    assert_eq!(attempts, 2, "the new pods run maxAttempts: 2");
    println!("$ kubectl get whr -n {}\n{}", ns.name, ns.kubectl(&["get", "whr"]));
}

#[test]
fn what_cannot_run_shows_in_ready_with_the_reason() {
    let ns = Namespace::create("whr-badpods");
    let redis_url = run_redis(&ns);
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);

    // A missing Secret: nothing is rolled out, Ready False saying which.
    ns.apply(&relay_yaml(&ns, 8, None));
    let c = ns.wait_condition("orders", "Ready", "False", Some("SecretNotFound"));
    assert!(c.message.contains("relay-redis") && c.message.contains("spec.redis.urlSecretRef"), "{}", c.message);
    assert!(ns.get::<Deployment>("orders-relay").is_none(), "a Deployment without its Secrets");
    assert!(relay_pods(&ns).is_empty());

    // An image the node does not have (pull policy Never here): the kubelet's reason.
    ns.example_secrets(&redis_url);
    ns.apply(&relay_yaml(&ns, 8, Some("localhost/no-such-image:1")));
    let c = wait_for_within(Duration::from_secs(120), "Ready False with the kubelet's reason", || {
        let c = ns.condition("orders", "Ready")?;
        (c.status == "False" && ["ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull"].contains(&c.reason.as_str()))
            .then_some(c)
    });
    assert!(c.message.contains("0/2 relay pods available"), "{}", c.message);
    println!("Ready: {} {}: {}", c.status, c.reason, c.message);
    println!("$ kubectl get whr -n {}\n{}", ns.name, ns.kubectl(&["get", "whr"]));

    // Fixed: the relay image runs and Ready turns True by itself.
    ns.apply(&relay_yaml(&ns, 8, None));
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
}

/// A ValidatingAdmissionPolicy refusing Services in one namespace, removed on drop.
struct DenyServices(String);

impl DenyServices {
    fn start(ns: &Namespace) -> Self {
        let name = format!("deny-services-{}", ns.name);
        apply_yaml(
            &ns.name,
            &format!(
                r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [services]}}
  validations:
  - {{expression: "false", message: "no Services in this namespace (test policy)"}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
"#,
                ns = ns.name
            ),
        );
        // In force once a Service of our own is refused.
        wait_for("the test policy refuses Services", || {
            let out = kubectl_output(&["-n", &ns.name, "create", "service", "clusterip", "probe", "--tcp=80"], None);
            if out.status.success() {
                kubectl(&["-n", &ns.name, "delete", "service", "probe"]);
                None
            } else {
                String::from_utf8_lossy(&out.stderr).contains("test policy").then_some(())
            }
        });
        DenyServices(name)
    }
}

impl Drop for DenyServices {
    fn drop(&mut self) {
        let kinds = "validatingadmissionpolicybinding,validatingadmissionpolicy";
        let _ = kubectl_output(&["delete", kinds, &self.0, "--ignore-not-found"], None);
    }
}

#[test]
fn a_child_the_api_server_refuses_shows_in_ready_and_clears_by_itself() {
    let ns = Namespace::create("whr-refused");
    let redis_url = run_redis(&ns);
    ns.example_secrets(&redis_url);
    let policy = DenyServices::start(&ns);
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&relay_yaml(&ns, 8, None));

    // The Service is refused: Ready False naming it, with the API server's message.
    let c = ns.wait_condition("orders", "Ready", "False", Some("ApplyFailed"));
    assert!(c.message.contains("Service orders-relay"), "{}", c.message);
    assert!(c.message.contains("no Services in this namespace (test policy)"), "{}", c.message);
    println!("Ready: {} {}: {}", c.status, c.reason, c.message);
    let wide = ns.kubectl(&["get", "whr", "-o", "wide"]);
    println!("$ kubectl get whr -o wide -n {}\n{wide}", ns.name);
    assert!(
        wide.lines().any(|l| l.starts_with("orders") && l.contains("False") && l.contains("ApplyFailed")),
        "{wide}"
    );
    wait_for("an ApplyFailed event", || ns.event_reasons("orders").iter().any(|r| r == "ApplyFailed").then_some(()));

    // The policy goes: the operator's retry applies the Service and Ready turns True.
    drop(policy);
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    assert!(ns.get::<k8s_openapi::api::core::v1::Service>("orders-relay").is_some());
}
