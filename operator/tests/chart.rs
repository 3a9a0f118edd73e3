//! The Helm chart `charts/webhook-relay` against real tools: `helm lint`, `helm template`
//! checked by kubeconform with the test control plane's own schemas, `values.schema.json`,
//! the chart's copy of the CRD, and `helm install` into the control plane
//! (`tests/control-plane/up`), whose ServiceAccount is checked with `kubectl auth can-i`
//! under its own token and then runs the operator binary with exactly the chart's RBAC.
//!
//! Every external command runs under a deadline; every wait is bounded.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::RedisServer;

const CHART: &str = "charts/webhook-relay";
const CRD_FILE: &str = "webhookrelay.dev_webhookrelays.yaml";
/// Longest any one helm/kubectl/kubeconform call may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// Longest any wait for the cluster or the operator may take.
const WAIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ tools

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `KUBECONFIG` of the test control plane; fails the test with how to get one.
pub fn kubeconfig() -> PathBuf {
    match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() && Path::new(&k).is_file() => k.into(),
        _ => panic!(
            "KUBECONFIG is not set (or not a file): run tests/control-plane/up and export KUBECONFIG \
             (make test does this)"
        ),
    }
}

/// helm, kubectl or kubeconform as built by tests/control-plane/build.
fn tool(name: &str) -> PathBuf {
    let p = root().join("target/control-plane/bin").join(name);
    assert!(p.is_file(), "{} missing: run tests/control-plane/build (make test does this)", p.display());
    p
}

/// Runs `cmd` (feeding it `stdin`) and returns its output, killing it after [`COMMAND_LIMIT`].
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails the test, with both streams, unless `out` succeeded; returns stdout.
fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what} failed ({}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// kubectl with the admin KUBECONFIG (or `as_kubeconfig`).
fn kubectl_cmd(as_kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.env("KUBECONFIG", as_kubeconfig.map(Path::to_path_buf).unwrap_or_else(kubeconfig))
        .arg("--request-timeout=30s")
        .args(args);
    cmd
}

fn kubectl(args: &[&str]) -> String {
    ok(&format!("kubectl {}", args.join(" ")), run(kubectl_cmd(None, args), None))
}

fn kubectl_stdin(args: &[&str], stdin: &str) -> String {
    ok(&format!("kubectl {}", args.join(" ")), run(kubectl_cmd(None, args), Some(stdin)))
}

/// helm with its own config, cache and data dirs (never the user's), against KUBECONFIG.
struct Helm {
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Self {
        Helm { home: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tool("helm"));
        let h = self.home.path();
        cmd.current_dir(root())
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_DATA_HOME", h.join("data"))
            .args(args);
        if let Ok(k) = std::env::var("KUBECONFIG") {
            cmd.env("KUBECONFIG", k);
        }
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        run(self.cmd(args), None)
    }

    fn run(&self, args: &[&str]) -> String {
        ok(&format!("helm {}", args.join(" ")), self.output(args))
    }

    /// `helm template` of the chart with `set` values (`key=value`), CRDs included.
    fn template(&self, set: &[&str]) -> String {
        let mut args = vec!["template", "whr", CHART, "--namespace", "ops", "--include-crds"];
        for s in set {
            args.extend(["--set", s]);
        }
        self.run(&args)
    }
}

/// A unique, DNS-safe suffix for names made by this run.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xfffff)
}

/// Polls `f` every 250 ms for up to [`WAIT`]; fails with `what` if it never yields.
fn wait_for<T>(what: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {}", what());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A namespace with a unique name, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn create(prefix: &str) -> Self {
        let name = unique(prefix);
        kubectl(&["create", "namespace", &name]);
        Namespace(name)
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = run(kubectl_cmd(None, &["get", "-n", &self.0, kind, name, "-o", "json"]), None);
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).unwrap());
        }
        let err = text(&out.stderr);
        assert!(err.contains("NotFound") || err.contains("not found"), "kubectl get {kind} {name}: {err}");
        None
    }

    fn apply(&self, yaml: &str) {
        kubectl_stdin(&["apply", "-n", &self.0, "-f", "-"], yaml);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(kubectl_cmd(None, &["delete", "namespace", &self.0, "--wait=false"]), None);
    }
}

/// A `helm install` of the chart, uninstalled on drop.
pub struct Release {
    helm: Helm,
    pub name: String,
    pub namespace: String,
    /// What `helm install` printed.
    pub install_output: String,
    uninstalled: bool,
}

impl Release {
    /// Installs the chart as `name` into `namespace` with `set` values (`key=value`).
    /// Nothing waits for pods: no kubelet runs in the test control plane.
    pub fn install(name: &str, namespace: &str, set: &[&str]) -> Self {
        let helm = Helm::new();
        let mut args = vec!["install", name, CHART, "--namespace", namespace, "--timeout", "60s"];
        for s in set {
            args.extend(["--set", s]);
        }
        let install_output = helm.run(&args);
        Release { helm, name: name.into(), namespace: namespace.into(), install_output, uninstalled: false }
    }

    /// The installed objects, as `helm get manifest` prints them, parsed.
    pub fn manifest(&self) -> Vec<Value> {
        documents(&self.helm.run(&["get", "manifest", &self.name, "--namespace", &self.namespace]))
    }

    /// The release's full name (ServiceAccount, Deployment, ClusterRole, Lease).
    pub fn fullname(&self) -> String {
        let m = self.manifest();
        let d = find(&m, "Deployment", None);
        d["metadata"]["name"].as_str().unwrap().to_string()
    }

    /// `helm uninstall`, failing the test if it fails.
    pub fn uninstall(&mut self) -> String {
        self.uninstalled = true;
        self.helm.run(&["uninstall", &self.name, "--namespace", &self.namespace, "--timeout", "60s"])
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = self.helm.output(&["uninstall", &self.name, "--namespace", &self.namespace, "--timeout", "60s"]);
        }
    }
}

/// A kubeconfig that authenticates as ServiceAccount `sa` of namespace `ns` with a
/// TokenRequest token (`kubectl create token`, valid 1 h) instead of the admin's client
/// certificate, against the same server and CA as KUBECONFIG; written into `dir`.
/// Run the operator with it to give it exactly the RBAC the chart grants.
pub fn service_account_kubeconfig(ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = kubectl(&["create", "token", sa, "--namespace", ns, "--duration=1h"]);
    let view: Value = serde_json::from_str(&kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])).unwrap();
    let cluster = &view["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{ "name": sa, "user": { "token": token.trim() } }],
        "contexts": [{ "name": sa, "context": { "cluster": "test", "user": sa, "namespace": ns } }],
        "current-context": sa,
    });
    let path = dir.join(format!("{ns}-{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// The YAML documents of a multi-document stream, as JSON values (empty ones skipped).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: Option<&str>) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind && name_suffix.is_none_or(|s| d["metadata"]["name"].as_str().unwrap_or("").ends_with(s))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_suffix:?} rendered"))
}

/// Checks `can-i` answers under `kubeconfig`: each entry is (expected, verb, resource, flags).
fn assert_can_i(kubeconfig: &Path, checks: &[(bool, &str, &str, &[&str])]) {
    let mut wrong = Vec::new();
    for (want, verb, resource, flags) in checks {
        let mut args = vec!["auth", "can-i", *verb, *resource];
        args.extend_from_slice(flags);
        let out = run(kubectl_cmd(Some(kubeconfig), &args), None);
        let answer = text(&out.stdout).trim().to_string();
        let got = match answer.split_whitespace().next() {
            Some("yes") => true,
            Some("no") => false,
            _ => panic!("kubectl {}: {answer} {}", args.join(" "), text(&out.stderr)),
        };
        if got != *want {
            wrong.push(format!("{} {verb} {resource} {}", if got { "CAN" } else { "CANNOT" }, flags.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "the chart's ServiceAccount:\n  {}", wrong.join("\n  "));
}

/// The kubeconform schema dir, written from the running apiserver if it is missing.
fn schemas() -> PathBuf {
    let dir = root().join("target/control-plane/schemas");
    if !dir.join("deployment-apps-v1.json").is_file()
        || !dir.join("customresourcedefinition-apiextensions-v1.json").is_file()
    {
        let mut cmd = Command::new(root().join("tests/control-plane/schemas"));
        cmd.env("KUBECONFIG", kubeconfig());
        ok("tests/control-plane/schemas (needs the running control plane)", run(cmd, None));
    }
    dir
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
    for res in ["deployments.apps", "ingresses.networking.k8s.io"] {
        for v in ["get", "list", "watch", "create", "patch", "delete"] {
            yes(v, res, n(ns));
        }
    }
    yes("get", "secrets", n(ns));
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
    // No pods, no exec, no core Events (it records events.k8s.io ones).
    for v in ["get", "list", "create", "delete"] {
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
    let owned: Vec<(bool, &str, &str, Vec<&str>)> =
        checks.iter().map(|(w, v, r, f)| (*w, *v, r.as_str(), f.iter().map(String::as_str).collect())).collect();
    let borrowed: Vec<(bool, &str, &str, &[&str])> = owned.iter().map(|(w, v, r, f)| (*w, *v, *r, &f[..])).collect();
    assert_can_i(kubeconfig, &borrowed);
}

#[test]
fn helm_install_grants_the_operator_exactly_what_it_needs() {
    let ops = Namespace::create("whr-chart");
    let elsewhere = Namespace::create("whr-chart-app");
    let release = unique("whr");
    let mut rel = Release::install(&release, &ops.0, &["metrics.service.enabled=true"]);
    assert!(rel.install_output.contains("STATUS: deployed"), "{}", rel.install_output);
    let fullname = rel.fullname();
    let selector = format!("app.kubernetes.io/instance={release}");
    let listed = kubectl(&["get", "deploy,sa,svc,role,rolebinding", "-n", &ops.0, "-l", &selector, "-o", "name"]);
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
    let sa = service_account_kubeconfig(&ops.0, &fullname, scratch.path());
    check(&sa, operator_permissions(&elsewhere.0, &ops.0, &fullname));
    // The ClusterRole reaches every namespace: the operator watches them all by default.
    check(
        &sa,
        ["webhookrelays.webhookrelay.dev", "deployments.apps", "configmaps", "services", "ingresses.networking.k8s.io"]
            .iter()
            .flat_map(|r| ["list", "watch"].map(|v| (true, v, r.to_string(), vec!["--all-namespaces".to_string()])))
            .collect(),
    );
    // And a real request is refused, not only predicted.
    let denied = run(kubectl_cmd(Some(&sa), &["get", "secrets", "-n", &elsewhere.0]), None);
    assert!(!denied.status.success() && text(&denied.stderr).contains("Forbidden"), "{}", text(&denied.stderr));

    let out = rel.uninstall();
    assert!(out.contains("uninstalled"), "{out}");
    wait_for(
        || format!("ClusterRole {fullname} to go"),
        || {
            let left = kubectl(&["get", "clusterrole,clusterrolebinding", "-l", &selector, "-o", "name"]);
            left.trim().is_empty().then_some(())
        },
    );
    // helm keeps CRDs on uninstall (they hold users' data).
    kubectl(&["get", "crd", "webhookrelays.webhookrelay.dev", "-o", "name"]);
}

#[test]
fn watch_namespace_confines_the_operator_to_that_namespace() {
    let ops = Namespace::create("whr-chart-ops");
    let watched = Namespace::create("whr-chart-watched");
    let other = Namespace::create("whr-chart-other");
    let release = unique("whr");
    let rel = Release::install(&release, &ops.0, &[&format!("watchNamespace={}", watched.0)]);
    let fullname = rel.fullname();
    let scratch = tempfile::tempdir().unwrap();
    let sa = service_account_kubeconfig(&ops.0, &fullname, scratch.path());
    check(&sa, operator_permissions(&watched.0, &ops.0, &fullname));
    let mut outside = Vec::new();
    for (verb, res) in [
        ("list", "webhookrelays.webhookrelay.dev"),
        ("patch", "deployments.apps"),
        ("get", "secrets"),
        ("create", "events.events.k8s.io"),
    ] {
        outside.push((false, verb, res.to_string(), vec!["-n".to_string(), other.0.clone()]));
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

/// `webhook-relay-operator` started with the args and env the chart renders, under the
/// chart ServiceAccount's token; killed on drop (its log printed if the test failed).
struct Operator {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Operator {
    fn http_ok(&self, path: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.log());
        }
    }
}

#[test]
fn operator_reconciles_with_the_chart_rbac() {
    let ops = Namespace::create("whr-chart-run");
    let app = Namespace::create("whr-chart-cx");
    let release = unique("whr");
    let rel = Release::install(&release, &ops.0, &["relayImage.repository=registry.test/relay", "relayImage.tag=t1"]);
    kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/webhookrelays.webhookrelay.dev"]);
    let fullname = rel.fullname();
    let scratch = tempfile::tempdir().unwrap();
    let sa = service_account_kubeconfig(&ops.0, &fullname, scratch.path());

    // The container's args and plain env as installed; the downward-API env filled in as
    // the kubelet would; only the listen address and the watched namespace changed (the
    // operator watches all namespaces by default; this test must not touch the others').
    let manifest = rel.manifest();
    let c = &find(&manifest, "Deployment", None)["spec"]["template"]["spec"]["containers"][0];
    let port = testkit::free_port();
    let mut args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| !a.starts_with("--metrics-addr=") && a != "--log-json")
        .collect();
    args.push(format!("--metrics-addr=127.0.0.1:{port}"));
    args.push(format!("--namespace={}", app.0));
    let identity = format!("{fullname}-7d4b9c-x2x5z");
    let log = scratch.path().join("operator.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhook-relay-operator"));
    cmd.args(&args)
        .env_clear()
        .env("KUBECONFIG", &sa)
        .env("POD_NAMESPACE", &ops.0)
        .env("POD_NAME", &identity)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for e in c["env"].as_array().unwrap() {
        if let Some(v) = e["value"].as_str() {
            cmd.env(e["name"].as_str().unwrap(), v);
        }
    }
    let op = Operator { child: cmd.spawn().expect("spawn webhook-relay-operator"), log, port };
    wait_for(|| "operator /healthz".into(), || op.http_ok("/healthz").then_some(()));

    // It wins the chart's Lease...
    wait_for(
        || format!("Lease {fullname} held by {identity}"),
        || {
            let l = ops.get("lease", &fullname)?;
            (l["spec"]["holderIdentity"] == identity.as_str()).then_some(())
        },
    );

    // ...and reconciles both workload modes end to end.
    let redis = RedisServer::start();
    app.apply(&std::fs::read_to_string(root().join("examples/secrets.yaml")).unwrap());
    let patch = serde_json::json!({ "stringData": { "url": redis.url() } }).to_string();
    kubectl(&["patch", "secret", "relay-redis", "-n", &app.0, "--type", "merge", "-p", &patch]);
    app.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders-api}\nspec:\n  selector: {matchLabels: {app: orders-api}}\n  \
         template:\n    metadata: {labels: {app: orders-api}}\n    spec: {containers: [{name: app, image: 'orders-api:1'}]}\n",
    );
    app.apply(&std::fs::read_to_string(root().join("examples/webhookrelay.yaml")).unwrap());
    app.apply(&std::fs::read_to_string(root().join("examples/webhookrelay-sidecar.yaml")).unwrap());
    for relay in ["orders", "orders-sidecar"] {
        wait_for(
            || {
                format!(
                    "{relay} Ready=True (status: {})",
                    app.get("webhookrelay", relay).map(|r| r["status"].clone()).unwrap_or_default()
                )
            },
            || {
                let r = app.get("webhookrelay", relay)?;
                let ready = r["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
                (ready["status"] == "True").then_some(())
            },
        );
    }
    for (kind, name) in [
        ("configmap", "orders-relay"),
        ("deployment", "orders-relay"),
        ("service", "orders-relay"),
        ("ingress", "orders-relay"),
    ] {
        assert!(app.get(kind, name).is_some(), "{kind}/{name} missing");
    }
    let relay_deploy = app.get("deployment", "orders-relay").unwrap();
    assert_eq!(
        relay_deploy["spec"]["template"]["spec"]["containers"][0]["image"], "registry.test/relay:t1",
        "relayImage value"
    );
    wait_for(
        || "events.k8s.io Events from the operator".into(),
        || {
            let ev: Value =
                serde_json::from_str(&kubectl(&["get", "events.events.k8s.io", "-n", &app.0, "-o", "json"])).ok()?;
            ev["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["reportingController"] == "webhook-relay-operator" && e["reportingInstance"] == identity.as_str()
                })
                .then_some(())
        },
    );
    // Deleting children (Ingress) and releasing a sidecar through the finalizer.
    kubectl(&["patch", "whr", "orders", "-n", &app.0, "--type", "merge", "-p", r#"{"spec":{"ingress":null}}"#]);
    wait_for(|| "Ingress deleted".into(), || app.get("ingress", "orders-relay").is_none().then_some(()));
    kubectl(&["delete", "whr", "orders-sidecar", "-n", &app.0, "--wait=false"]);
    wait_for(
        || "relay container removed from orders-api and the WebhookRelay gone".into(),
        || {
            let d = app.get("deployment", "orders-api")?;
            let containers = d["spec"]["template"]["spec"]["containers"].as_array()?.len();
            (containers == 1 && app.get("webhookrelay", "orders-sidecar").is_none()).then_some(())
        },
    );
    let log = op.log();
    for bad in ["forbidden", "Forbidden"] {
        assert!(!log.contains(bad), "the operator was refused something under the chart's RBAC:\n{log}");
    }
}
