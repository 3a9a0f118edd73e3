//! The Helm chart `charts/webhook-relay` against real tools: `helm lint`, `helm template`
//! checked by kubeconform with the test control plane's own schemas, `values.schema.json`,
//! the chart's copy of the CRD, and `helm install` into the control plane
//! (the test cluster of `tests/cluster/up`), whose ServiceAccount is checked with `kubectl auth can-i`
//! under its own token and then runs the operator binary with exactly the chart's RBAC.
//!
//! Every external command runs under a deadline; every wait is bounded.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use testkit::kube::*;
use testkit::process::{root, text};
use testkit::wait::wait_for;

const CRD_FILE: &str = "webhookrelay.dev_webhookrelays.yaml";

fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: Option<&str>) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind && name_suffix.is_none_or(|s| d["metadata"]["name"].as_str().unwrap_or("").ends_with(s))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_suffix:?} rendered"))
}

// ------------------------------------------------------------------ offline checks

#[test]
fn chart_lints_strictly() {
    let out = Helm::new().run(&["lint", "--strict", CHART]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn chart_crd_is_a_copy_of_the_generated_crd() {
    let generated = root().join("crds").join(CRD_FILE);
    let copy = root().join(CHART).join("crds").join(CRD_FILE);
    let a = std::fs::read(&generated).unwrap_or_else(|e| panic!("{}: {e}", generated.display()));
    let b = std::fs::read(&copy).unwrap_or_default();
    assert!(
        a == b,
        "{CHART}/crds/{CRD_FILE} differs from crds/{CRD_FILE}: copy it with \
         `cp crds/{CRD_FILE} {CHART}/crds/` (after `make crds`) and commit both"
    );
    let others: Vec<_> = std::fs::read_dir(root().join(CHART).join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != CRD_FILE)
        .collect();
    assert!(others.is_empty(), "{CHART}/crds holds files that crds/ does not: {others:?}");
}

#[test]
fn values_schema_rejects_bad_values() {
    let helm = Helm::new();
    for (set, says) in [
        ("replicaCount=notanumber", "/replicaCount"),
        ("replicaCount=-1", "/replicaCount"),
        ("repicaCount=2", "repicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        // --set makes an all-digit tag a number; tags are strings (--set-string).
        ("image.tag=8", "/image/tag"),
        ("image.registry=ghcr.io", "registry"),
        ("logFormat=xml", "/logFormat"),
        ("refreshInterval=soon", "/refreshInterval"),
        ("genesysCheckInterval=5", "/genesysCheckInterval"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
        ("metrics.port=70000", "/metrics/port"),
        ("leaderElection.enabled=maybe", "/leaderElection/enabled"),
    ] {
        let out = helm.output(&["template", "whr", CHART, "--set", set]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "helm template --set {set} was accepted");
        assert!(err.contains("schema") && err.contains(says), "--set {set}: {err}");
    }
    let out =
        helm.output(&["template", "whr", CHART, "--set", "replicaCount=2", "--set", "leaderElection.enabled=false"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("needs leaderElection.enabled"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rendered_deployment_is_locked_down_and_runs_the_operator() {
    let helm = Helm::new();
    let docs = documents(&helm.template(&[]));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment"
        ],
        "default install"
    );
    let d = find(&docs, "Deployment", None);
    assert_eq!(d["spec"]["replicas"], 1);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "whr-webhook-relay");
    let psc = &pod["securityContext"];
    assert_eq!((psc["runAsNonRoot"].as_bool(), psc["runAsUser"].as_i64()), (Some(true), Some(65532)));
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["command"], serde_json::json!(["/usr/local/bin/webhook-relay-operator"]));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(c["image"], format!("ghcr.io/webhook-relay/webhook-relay:{version}"), "image tag = appVersion");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "run",
            &format!("--relay-image=ghcr.io/webhook-relay/webhook-relay:{version}"),
            "--metrics-addr=0.0.0.0:8080",
            "--refresh=30s",
            "--genesys-check-interval=5m",
            "--max-concurrent-reconciles=32",
            "--leader-elect",
            "--lease-name=whr-webhook-relay",
            "--log-json",
        ]
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    // Values reach the args; watchNamespace turns the ClusterRole into a Role there.
    let docs = documents(&helm.template(&[
        "replicaCount=2",
        "watchNamespace=cx",
        "relayImage.repository=registry.test/relay",
        "relayImage.tag=v9",
        "image.tag=v8",
        "logFormat=text",
        "logLevel=debug",
        "metrics.service.enabled=true",
        "refreshInterval=10s",
        "genesysCheckInterval=1h30m",
    ]));
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"));
    let role = find(&docs, "Role", Some("whr-webhook-relay"));
    assert_eq!(role["metadata"]["namespace"], "cx");
    let binding = find(&docs, "RoleBinding", Some("whr-webhook-relay"));
    assert_eq!(binding["metadata"]["namespace"], "cx");
    assert_eq!(binding["subjects"][0]["namespace"], "ops");
    let lease_role = find(&docs, "Role", Some("-leader-election"));
    assert_eq!(lease_role["metadata"]["namespace"], "ops");
    let svc = find(&docs, "Service", None);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let d = find(&docs, "Deployment", None);
    assert_eq!(d["spec"]["replicas"], 2);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/webhook-relay/webhook-relay:v8");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--relay-image=registry.test/relay:v9"), "{args:?}");
    assert!(args.contains(&"--namespace=cx") && !args.contains(&"--log-json"), "{args:?}");
    assert!(args.contains(&"--refresh=10s") && args.contains(&"--genesys-check-interval=1h30m"), "{args:?}");
    assert_eq!(c["env"][0], serde_json::json!({ "name": "RUST_LOG", "value": "debug" }));

    // Without leader election there is no Lease access at all.
    let docs = documents(&helm.template(&["leaderElection.enabled=false"]));
    assert!(!docs.iter().any(|d| d["kind"] == "Role"), "a Role without leader election");
}

// ------------------------------------------------------------------ against the control plane

#[test]
fn rendered_manifests_match_the_cluster_schemas() {
    let location = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", schemas().display());
    let helm = Helm::new();
    for set in [
        &[][..],
        &[
            "replicaCount=3",
            "watchNamespace=cx",
            "metrics.service.enabled=true",
            "podAnnotations.a=b",
            "nodeSelector.zone=z1",
        ][..],
        &[
            "leaderElection.enabled=false",
            "serviceAccount.create=false",
            "serviceAccount.name=ops",
            "rbac.create=false",
        ][..],
    ] {
        let rendered = helm.template(set);
        let count = documents(&rendered).len();
        let mut cmd = Command::new(tool("kubeconform"));
        cmd.args(["-strict", "-summary", "-schema-location", &location]);
        let out = run(cmd, Some(&rendered));
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "kubeconform --set {set:?}:\n{report}");
        // Nothing skipped: the CRD itself is checked against the apiserver's schema too.
        let want = format!("{count} resources found parsing stdin - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0");
        assert!(report.contains(&want), "--set {set:?}: want {want:?}, got:\n{report}");
        eprintln!("kubeconform --set {set:?}: {}", report.trim());
    }
}

/// The checks for a release whose RBAC covers namespace `ns` (or, `None`, the cluster),
/// with its Lease `lease` in `ops`.
fn operator_permissions(ns: &str, ops: &str, lease: &str) -> Vec<(bool, &'static str, String, Vec<String>)> {
    let n = |s: &str| vec!["-n".to_string(), s.to_string()];
    let mut c = Vec::new();
    let mut yes = |verb: &'static str, res: &str, flags: Vec<String>| c.push((true, verb, res.to_string(), flags));
    for v in ["get", "list", "watch", "patch"] {
        yes(v, "webhookrelays.webhookrelay.dev", n(ns));
    }
    yes("patch", "webhookrelays.webhookrelay.dev", [n(ns), vec!["--subresource=status".into()]].concat());
    yes("update", "webhookrelays.webhookrelay.dev", [n(ns), vec!["--subresource=finalizers".into()]].concat());
    for res in ["configmaps", "services"] {
        for v in ["get", "list", "watch", "create", "patch"] {
            yes(v, res, n(ns));
        }
    }
    for res in ["deployments.apps", "ingresses.networking.k8s.io", "poddisruptionbudgets.policy"] {
        for v in ["get", "list", "watch", "create", "patch", "delete"] {
            yes(v, res, n(ns));
        }
    }
    yes("get", "secrets", n(ns));
    // Pods: read only (the kubelet's reason for a relay pod that does not run).
    yes("get", "pods", n(ns));
    yes("list", "pods", n(ns));
    yes("create", "events.events.k8s.io", n(ns));
    yes("patch", "events.events.k8s.io", n(ns));
    yes("create", "leases.coordination.k8s.io", n(ops));
    yes("get", &format!("leases.coordination.k8s.io/{lease}"), n(ops));
    yes("update", &format!("leases.coordination.k8s.io/{lease}"), n(ops));

    let mut no = |verb: &'static str, res: &str, flags: Vec<String>| c.push((false, verb, res.to_string(), flags));
    // Secrets: only by name, never listed, watched or written.
    for v in ["list", "watch", "create", "update", "patch", "delete"] {
        no(v, "secrets", n(ns));
    }
    no("list", "secrets", vec!["--all-namespaces".into()]);
    // The relay resource itself belongs to its users.
    for v in ["create", "update", "delete", "deletecollection"] {
        no(v, "webhookrelays.webhookrelay.dev", n(ns));
    }
    no("update", "webhookrelays.webhookrelay.dev", [n(ns), vec!["--subresource=status".into()]].concat());
    no("delete", "configmaps", n(ns));
    no("delete", "services", n(ns));
    no("update", "deployments.apps", n(ns));
    no("deletecollection", "deployments.apps", n(ns));
    no("patch", "deployments.apps", [n(ns), vec!["--subresource=scale".into()]].concat());
    // Pods are never written nor exec'd into; no core Events (it records events.k8s.io ones).
    for v in ["watch", "create", "update", "patch", "delete"] {
        no(v, "pods", n(ns));
    }
    no("create", "pods", [n(ns), vec!["--subresource=exec".into()]].concat());
    no("create", "events", n(ns));
    no("create", "serviceaccounts", [n(ns), vec!["--subresource=token".into()]].concat());
    // Nothing cluster-level.
    no("delete", "namespaces", vec![]);
    no("create", "namespaces", vec![]);
    no("get", "nodes", vec![]);
    no("create", "clusterroles.rbac.authorization.k8s.io", vec![]);
    no("create", "clusterrolebindings.rbac.authorization.k8s.io", vec![]);
    no("bind", "clusterroles.rbac.authorization.k8s.io", vec![]);
    no("escalate", "clusterroles.rbac.authorization.k8s.io", vec![]);
    no("create", "rolebindings.rbac.authorization.k8s.io", n(ns));
    no("create", "customresourcedefinitions.apiextensions.k8s.io", vec![]);
    no("delete", "customresourcedefinitions.apiextensions.k8s.io", vec![]);
    no("impersonate", "users", vec![]);
    no("impersonate", "serviceaccounts", n(ns));
    // Only its own Lease, only in its own namespace.
    no("get", "leases.coordination.k8s.io/kube-controller-manager", vec!["-n".into(), "kube-system".into()]);
    no("update", "leases.coordination.k8s.io/someone-else", n(ops));
    no("list", "leases.coordination.k8s.io", n(ops));
    no("delete", &format!("leases.coordination.k8s.io/{lease}"), n(ops));
    no("create", "leases.coordination.k8s.io", vec!["-n".into(), "kube-system".into()]);
    c
}

fn check(kubeconfig: &Path, checks: Vec<(bool, &'static str, String, Vec<String>)>) {
    assert_can_i(kubeconfig, &checks);
}

#[test]
fn helm_install_grants_the_operator_exactly_what_it_needs() {
    let ops = Namespace::create("whr-chart");
    let elsewhere = Namespace::create("whr-chart-app");
    let release = unique("whr");
    // No operator pod (replicaCount 0): this test checks RBAC only, and an operator watching
    // every namespace would reconcile the other tests' relays.
    let mut rel = Release::install(&release, &ops.name, &["metrics.service.enabled=true", "replicaCount=0"], &[]);
    assert!(rel.install_output.contains("STATUS: deployed"), "{}", rel.install_output);
    let fullname = rel.fullname();
    let selector = format!("app.kubernetes.io/instance={release}");
    let listed = kubectl(&["get", "deploy,sa,svc,role,rolebinding", "-n", &ops.name, "-l", &selector, "-o", "name"]);
    let cluster = kubectl(&["get", "clusterrole,clusterrolebinding", "-l", &selector, "-o", "name"]);
    for want in [
        format!("deployment.apps/{fullname}"),
        format!("serviceaccount/{fullname}"),
        format!("service/{fullname}-metrics"),
        format!("role.rbac.authorization.k8s.io/{fullname}-leader-election"),
        format!("rolebinding.rbac.authorization.k8s.io/{fullname}-leader-election"),
    ] {
        assert!(listed.lines().any(|l| l == want), "{want} not installed:\n{listed}");
    }
    assert!(cluster.contains(&format!("clusterrole.rbac.authorization.k8s.io/{fullname}")), "{cluster}");
    kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/webhookrelays.webhookrelay.dev"]);

    let scratch = tempfile::tempdir().unwrap();
    let sa = service_account_kubeconfig(&ops.name, &fullname, scratch.path());
    check(&sa, operator_permissions(&elsewhere.name, &ops.name, &fullname));
    // The ClusterRole reaches every namespace: the operator watches them all by default.
    check(
        &sa,
        [
            "webhookrelays.webhookrelay.dev",
            "deployments.apps",
            "configmaps",
            "services",
            "ingresses.networking.k8s.io",
            "poddisruptionbudgets.policy",
        ]
        .iter()
        .flat_map(|r| ["list", "watch"].map(|v| (true, v, r.to_string(), vec!["--all-namespaces".to_string()])))
        .collect(),
    );
    // And a real request is refused, not only predicted.
    let denied = run(kubectl_cmd(Some(&sa), &["get", "secrets", "-n", &elsewhere.name]), None);
    assert!(!denied.status.success() && text(&denied.stderr).contains("Forbidden"), "{}", text(&denied.stderr));

    let out = rel.uninstall();
    assert!(out.contains("uninstalled"), "{out}");
    wait_for(&format!("ClusterRole {fullname} to go"), || {
        let left = kubectl(&["get", "clusterrole,clusterrolebinding", "-l", &selector, "-o", "name"]);
        left.trim().is_empty().then_some(())
    });
    // helm keeps CRDs on uninstall (they hold users' data).
    kubectl(&["get", "crd", "webhookrelays.webhookrelay.dev", "-o", "name"]);
}

#[test]
fn watch_namespace_confines_the_operator_to_that_namespace() {
    let ops = Namespace::create("whr-chart-ops");
    let watched = Namespace::create("whr-chart-watched");
    let other = Namespace::create("whr-chart-other");
    let release = unique("whr");
    let rel =
        Release::install(&release, &ops.name, &[&format!("watchNamespace={}", watched.name), "replicaCount=0"], &[]);
    let fullname = rel.fullname();
    let scratch = tempfile::tempdir().unwrap();
    let sa = service_account_kubeconfig(&ops.name, &fullname, scratch.path());
    check(&sa, operator_permissions(&watched.name, &ops.name, &fullname));
    let mut outside = Vec::new();
    for (verb, res) in [
        ("list", "webhookrelays.webhookrelay.dev"),
        ("patch", "deployments.apps"),
        ("get", "secrets"),
        ("create", "events.events.k8s.io"),
    ] {
        outside.push((false, verb, res.to_string(), vec!["-n".to_string(), other.name.clone()]));
        outside.push((false, verb, res.to_string(), vec!["--all-namespaces".to_string()]));
    }
    check(&sa, outside);
    let cluster = kubectl(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ]);
    assert!(cluster.trim().is_empty(), "watchNamespace still installs {cluster}");
}

// ------------------------------------------------------------------ the operator under the chart's RBAC

#[test]
fn the_operator_runs_in_cluster_under_the_chart_and_reconciles() {
    let ops = Namespace::create("whr-chart-run");
    let app = Namespace::create("whr-chart-cx");
    let release = unique("whr");
    // As a user installs it with the image `make image` built; it watches one namespace so
    // it leaves the other tests' relays alone.
    let set = [
        "image.repository=localhost/webhook-relay",
        "image.tag=dev",
        "image.pullPolicy=Never",
        &format!("watchNamespace={}", app.name),
        "refreshInterval=2s",
    ];
    let rel = Release::install(&release, &ops.name, &set, &["--wait"]);
    println!(
        "$ helm install {release} charts/webhook-relay -n {} --set image.repository=localhost/webhook-relay,image.tag=dev,image.pullPolicy=Never --wait\n{}",
        ops.name, rel.install_output
    );
    let fullname = rel.fullname();
    let operator_pods: Vec<Pod> = pods(&ops, &format!("app.kubernetes.io/instance={release}"));
    assert_eq!(operator_pods.len(), 1);
    let pod = &operator_pods[0];
    let pod_name = pod.metadata.name.clone().unwrap();
    let status = pod.status.as_ref().unwrap();
    assert!(status.container_statuses.as_ref().unwrap()[0].ready, "operator pod not ready: {status:?}");
    assert_eq!(pod.spec.as_ref().unwrap().service_account_name.as_deref(), Some(fullname.as_str()));

    // It wins the chart's Lease under its pod name...
    wait_for(&format!("Lease {fullname} held by {pod_name}"), || {
        (ops.get::<Lease>(&fullname)?.spec?.holder_identity? == pod_name).then_some(())
    });

    // ...and reconciles both workload modes end to end: relay pods run with the image the
    // chart gave it, reach a Redis the host runs, and report Ready.
    let redis = cluster_redis();
    app.example_secrets(&redis.url());
    app.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: orders-api}}\nspec:\n  selector: {{matchLabels: {{app: orders-api}}}}\n  \
         template:\n    metadata: {{labels: {{app: orders-api}}}}\n    spec: {{containers: [{{name: app, image: '{DOWNSTREAM_IMAGE}', \
         imagePullPolicy: Never, env: [{{name: LISTEN, value: '0.0.0.0:8081'}}]}}]}}\n"
    ));
    app.apply(&example("webhookrelay.yaml"));
    app.apply(&example("webhookrelay-sidecar.yaml"));
    for relay in ["orders", "orders-sidecar"] {
        app.wait_condition_within(std::time::Duration::from_secs(120), relay, "Ready", "True", None);
    }
    assert!(app.get::<ConfigMap>("orders-relay").is_some(), "ConfigMap missing");
    assert!(app.get::<Service>("orders-relay").is_some(), "Service missing");
    assert!(app.get::<Ingress>("orders-relay").is_some(), "Ingress missing");
    let relay_deploy = app.get::<Deployment>("orders-relay").expect("Deployment");
    assert_eq!(pod_spec(&relay_deploy).containers[0].image.as_deref(), Some(RELAY_IMAGE), "relay image = image.*");
    wait_for("events.k8s.io Events from the operator pod", || {
        use k8s_openapi::api::events::v1::Event;
        app.list::<Event>("")
            .iter()
            .any(|e| {
                e.reporting_controller.as_deref() == Some("webhook-relay-operator")
                    && e.reporting_instance.as_deref() == Some(pod_name.as_str())
            })
            .then_some(())
    });
    wait_available(&app, "orders-relay", 2);
    wait_available(&app, "orders-api", 1);
    wait_for("only the rolled orders-api pod left", || (pods(&app, "app=orders-api").len() == 1).then_some(()));
    println!("$ kubectl get pods,whr -n {}\n{}", app.name, app.kubectl(&["get", "pods,whr"]));
    println!("$ kubectl get pods -n {}\n{}", ops.name, ops.kubectl(&["get", "pods"]));
    // Deleting children (Ingress) and releasing a sidecar through the finalizer.
    app.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", r#"{"spec":{"ingress":null}}"#]);
    wait_for("Ingress deleted", || app.get::<Ingress>("orders-relay").is_none().then_some(()));
    app.kubectl(&["delete", "whr", "orders-sidecar", "--wait=false"]);
    wait_for("relay container removed from orders-api and the WebhookRelay gone", || {
        let d = app.get::<Deployment>("orders-api")?;
        (pod_spec(&d).containers.len() == 1 && app.relay("orders-sidecar").is_none()).then_some(())
    });
    let log = ops.kubectl(&["logs", &pod_name]);
    for bad in ["forbidden", "Forbidden"] {
        assert!(!log.contains(bad), "the operator was refused something under the chart's RBAC:\n{log}");
    }
}
