//! The test cluster through real tools and the real API: `kubectl` and `helm` under
//! deadlines, namespaces made and deleted per test, typed reads through kube-rs, the
//! operator binary as a process, ServiceAccount kubeconfigs. Every wait is bounded.
//!
//! The cluster is the one whose `KUBECONFIG` the environment names (`make test` starts it);
//! without one a test fails saying how to start it.

use crate::process::{ChildProcess, free_port, output_within_stdin, root, text, workspace_bin};
use crate::wait::{WAIT, wait_for, wait_for_within};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use webhook_relay_api::crd::WebhookRelay;

/// Longest any one kubectl/helm/kubeconform call may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// The chart, relative to the workspace root.
pub const CHART: &str = "charts/webhook-relay";
/// The relay image `make image` builds and the test cluster has imported.
pub const RELAY_IMAGE: &str = "localhost/webhook-relay:dev";

/// `KUBECONFIG` of the test cluster; fails the test with how to get one.
pub fn kubeconfig() -> PathBuf {
    match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() && Path::new(&k).is_file() => k.into(),
        _ => panic!(
            "KUBECONFIG is not set (or not a file): these tests need the test cluster; run \
             tests/cluster/up and export the KUBECONFIG it prints (make test does this)"
        ),
    }
}

/// kubectl, helm or kubeconform as built by tests/control-plane/build.
pub fn tool(name: &str) -> PathBuf {
    let p = root().join("target/control-plane/bin").join(name);
    assert!(p.is_file(), "{} missing: run tests/control-plane/build (make test does this)", p.display());
    p
}

/// Runs `cmd` (feeding it `stdin`) and returns its output, whatever its exit code; fails the
/// test if it takes longer than [`COMMAND_LIMIT`].
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    output_within_stdin(&mut cmd, stdin, COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails the test, with both streams, unless `out` succeeded; returns stdout.
pub fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what} failed ({}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// kubectl with the test cluster's KUBECONFIG (or `as_kubeconfig`).
pub fn kubectl_cmd(as_kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.env("KUBECONFIG", as_kubeconfig.map(Path::to_path_buf).unwrap_or_else(kubeconfig))
        .arg("--request-timeout=30s")
        .args(args);
    cmd
}

/// Runs kubectl with `args` (and `stdin`), returning its output whatever the exit code.
pub fn kubectl_output(args: &[&str], stdin: Option<&str>) -> Output {
    run(kubectl_cmd(None, args), stdin)
}

/// Runs kubectl and fails the test unless it succeeds; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    ok(&format!("kubectl {}", args.join(" ")), kubectl_output(args, None))
}

/// `kubectl apply -f -` of `yaml` in `ns`.
pub fn apply_yaml(ns: &str, yaml: &str) {
    ok("kubectl apply", kubectl_output(&["apply", "-n", ns, "-f", "-"], Some(yaml)));
}

/// A unique, DNS-safe name for objects made by this run.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xfffff)
}

/// Applies the WebhookRelay CRD from `crds/` (cluster-wide, idempotent) and waits until it is served.
pub fn install_crd() {
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", root().join("crds").to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/webhookrelays.webhookrelay.dev"]);
}

/// Typed, blocking access to the API (kube-rs on a runtime of its own).
pub struct Kube {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Kube {
    /// A client of the test cluster (`KUBECONFIG`).
    pub fn connect() -> Self {
        kubeconfig();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(kube::Client::try_default()).expect("a kube client from KUBECONFIG");
        Kube { rt, client }
    }

    /// Runs `f` with the client on this runtime.
    pub fn block_on<F: Future>(&self, f: impl FnOnce(kube::Client) -> F) -> F::Output {
        self.rt.block_on(f(self.client.clone()))
    }

    /// Object `name` of kind `K` in `ns`, if it exists.
    pub fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        self.rt.block_on(api.get_opt(name)).unwrap_or_else(|e| panic!("get {} {ns}/{name}: {e}", K::kind(&())))
    }

    /// Objects of kind `K` in `ns` matching `labels` (a selector; empty for all).
    pub fn list<K>(&self, ns: &str, labels: &str) -> Vec<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let lp = if labels.is_empty() { ListParams::default() } else { ListParams::default().labels(labels) };
        self.rt.block_on(api.list(&lp)).unwrap_or_else(|e| panic!("list {} in {ns}: {e}", K::kind(&()))).items
    }
}

/// A test namespace with a unique name, deleted on drop.
pub struct Namespace {
    pub name: String,
    pub kube: Kube,
}

impl Namespace {
    /// Creates `<prefix>-<unique>` (and makes sure the WebhookRelay CRD is installed).
    pub fn create(prefix: &str) -> Self {
        install_crd();
        let name = unique(prefix);
        kubectl(&["create", "namespace", &name]);
        Namespace { name, kube: Kube::connect() }
    }

    /// Object `name` of kind `K` here, if it exists.
    pub fn get<K>(&self, name: &str) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        self.kube.get(&self.name, name)
    }

    /// Objects of kind `K` here matching `labels`.
    pub fn list<K>(&self, labels: &str) -> Vec<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        self.kube.list(&self.name, labels)
    }

    /// The WebhookRelay `name`.
    pub fn relay(&self, name: &str) -> Option<WebhookRelay> {
        self.get(name)
    }

    /// Any object as JSON (`kubectl get -o json`), for kinds without Rust types here.
    pub fn get_json(&self, kind: &str, name: &str) -> Option<Value> {
        let out = kubectl_output(&["get", "-n", &self.name, kind, name, "-o", "json"], None);
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).expect("kubectl json"));
        }
        let err = text(&out.stderr);
        assert!(err.contains("NotFound") || err.contains("not found"), "kubectl get {kind} {name}: {err}");
        None
    }

    /// kubectl with `-n <this namespace>`; fails the test unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    /// `kubectl apply -f -` of `yaml` here.
    pub fn apply(&self, yaml: &str) {
        apply_yaml(&self.name, yaml);
    }

    /// A condition of a WebhookRelay.
    pub fn condition(&self, relay: &str, type_: &str) -> Option<Condition> {
        self.relay(relay)?.status?.conditions.into_iter().find(|c| c.type_ == type_)
    }

    /// Waits until condition `type_` of `relay` has `status` (and `reason`, if given).
    pub fn wait_condition(&self, relay: &str, type_: &str, status: &str, reason: Option<&str>) -> Condition {
        self.wait_condition_within(WAIT, relay, type_, status, reason)
    }

    /// Like [`wait_condition`](Self::wait_condition) with its own limit.
    pub fn wait_condition_within(
        &self,
        limit: Duration,
        relay: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Condition {
        let start = Instant::now();
        loop {
            let last = self.condition(relay, type_);
            if let Some(c) = &last
                && c.status == status
                && reason.is_none_or(|want| c.reason == want)
            {
                return c.clone();
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {relay} {type_}={status} {reason:?}; last seen: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The reasons of the events recorded for WebhookRelay `relay`.
    pub fn event_reasons(&self, relay: &str) -> Vec<String> {
        use k8s_openapi::api::events::v1::Event;
        self.list::<Event>("")
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(relay) && r.kind.as_deref() == Some("WebhookRelay"))
            })
            .filter_map(|e| e.reason)
            .collect()
    }

    /// All events of the namespace as text (to check for leaked secrets).
    pub fn events_text(&self) -> String {
        self.kubectl(&["get", "events", "-o", "json"])
    }

    /// The value of `key` in Secret `name`.
    pub fn secret_value(&self, name: &str, key: &str) -> String {
        use k8s_openapi::api::core::v1::Secret;
        let s: Secret = self.get(name).unwrap_or_else(|| panic!("Secret {name} missing"));
        let bytes =
            s.data.and_then(|d| d.get(key).cloned()).unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
        String::from_utf8(bytes.0).unwrap()
    }

    /// `kubectl get whr <relay> -o jsonpath=<path>`.
    pub fn jsonpath(&self, relay: &str, path: &str) -> String {
        self.kubectl(&["get", "whr", relay, "-o", &format!("jsonpath={path}")])
    }

    /// Applies the example Secrets, with the Redis URL pointed at `redis_url`.
    pub fn example_secrets(&self, redis_url: &str) {
        self.apply(&example("secrets.yaml"));
        let patch = serde_json::json!({ "stringData": { "url": redis_url } }).to_string();
        self.kubectl(&["patch", "secret", "relay-redis", "--type", "merge", "-p", &patch]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl_output(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// The signing secret of `examples/secrets.yaml` (Secret `genesys-webhook`).
pub const EXAMPLE_SIGNING_SECRET: &str = "replace-with-the-integration-webhook-secret";

/// A WebhookRelay `name` over the example Secrets ([`Namespace::example_secrets`]: signing
/// secret, Redis URL, admin token) delivering to `destination`; `extra` are more lines of
/// its `spec` (each indented two spaces, newline-terminated).
pub fn relay_manifest(name: &str, destination: &str, extra: &str) -> String {
    format!(
        "apiVersion: webhookrelay.dev/v1alpha1\nkind: WebhookRelay\nmetadata: {{name: {name}}}\nspec:\n  \
         source: {{verify: {{scheme: genesys-open-messaging, secretRef: {{name: genesys-webhook, key: secret}}}}}}\n  \
         destination: {{url: '{destination}', timeout: 2s}}\n  \
         redis: {{urlSecretRef: {{name: relay-redis, key: url}}}}\n  \
         admin: {{tokenSecretRef: {{name: relay-admin, key: token}}}}\n{extra}"
    )
}

/// Reads a file of `examples/`.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(root().join("examples").join(name)).unwrap()
}

/// Cluster-scoped objects made by a test (`kind/name`), deleted on drop.
pub struct ClusterObjects(pub Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for o in &self.0 {
            let _ = kubectl_output(&["delete", o, "--ignore-not-found", "--wait=false"], None);
        }
    }
}

/// A kubeconfig that authenticates as ServiceAccount `sa` of namespace `ns` with a
/// TokenRequest token (`kubectl create token`, valid 1 h) instead of the admin's client
/// certificate, against the same server and CA; written into `dir`. Run the operator with it
/// to give it exactly the RBAC that ServiceAccount has.
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

/// Checks `kubectl auth can-i` answers under `kubeconfig`: each entry is (expected, verb,
/// resource, flags); fails listing every wrong answer.
pub fn assert_can_i(kubeconfig: &Path, checks: &[(bool, &str, String, Vec<String>)]) {
    let mut wrong = Vec::new();
    for (want, verb, resource, flags) in checks {
        let mut args = vec!["auth", "can-i", *verb, resource.as_str()];
        args.extend(flags.iter().map(String::as_str));
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
    assert!(wrong.is_empty(), "{}:\n  {}", kubeconfig.display(), wrong.join("\n  "));
}

/// The YAML documents of a multi-document stream, as JSON values (empty ones skipped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The kubeconform schema dir, written from the running apiserver if it is missing.
pub fn schemas() -> PathBuf {
    let dir = root().join("target/control-plane/schemas");
    if !dir.join("deployment-apps-v1.json").is_file()
        || !dir.join("customresourcedefinition-apiextensions-v1.json").is_file()
    {
        let mut cmd = Command::new(root().join("tests/control-plane/schemas"));
        cmd.env("KUBECONFIG", kubeconfig());
        ok("tests/control-plane/schemas (needs the running cluster)", run(cmd, None));
    }
    dir
}

/// helm with its own config, cache and data dirs (never the user's), against KUBECONFIG.
pub struct Helm {
    home: tempfile::TempDir,
}

impl Default for Helm {
    fn default() -> Self {
        Self::new()
    }
}

impl Helm {
    pub fn new() -> Self {
        Helm { home: tempfile::tempdir().unwrap() }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
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

    /// Runs helm; the output whatever the exit code.
    pub fn output(&self, args: &[&str]) -> Output {
        run(self.cmd(args), None)
    }

    /// Runs helm and fails the test unless it succeeds; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        ok(&format!("helm {}", args.join(" ")), self.output(args))
    }

    /// `helm template` of the chart with `set` values (`key=value`), CRDs included.
    pub fn template(&self, set: &[&str]) -> String {
        let mut args = vec!["template", "whr", CHART, "--namespace", "ops", "--include-crds"];
        for s in set {
            args.extend(["--set", s]);
        }
        self.run(&args)
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
    /// Installs the chart as `name` into `namespace` with `set` values (`key=value`);
    /// `extra` are more helm flags (`--wait`, ...).
    pub fn install(name: &str, namespace: &str, set: &[&str], extra: &[&str]) -> Self {
        let helm = Helm::new();
        let mut args = vec!["install", name, CHART, "--namespace", namespace, "--timeout", "90s"];
        for s in set {
            args.extend(["--set", s]);
        }
        args.extend_from_slice(extra);
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
        let d = m.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment in the release");
        d["metadata"]["name"].as_str().unwrap().to_string()
    }

    /// `helm upgrade` with `set` values.
    pub fn upgrade(&self, set: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["upgrade", &self.name, CHART, "--namespace", &self.namespace, "--timeout", "90s"];
        for s in set {
            args.extend(["--set", s]);
        }
        args.extend_from_slice(extra);
        self.helm.run(&args)
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

/// The operator binary running as a process against the test cluster; killed on drop.
pub struct Operator {
    process: ChildProcess,
    pub metrics_port: u16,
}

impl Operator {
    /// Starts `webhook-relay-operator run` watching `ns` with a 2 s status refresh, the relay
    /// image `relay_image` and `extra` flags, as the admin.
    pub fn start(ns: &str, relay_image: &str, extra: &[&str]) -> Self {
        Self::start_as(ns, &kubeconfig(), relay_image, extra)
    }

    /// Like [`start`](Self::start), with the credentials of `kubeconfig`.
    pub fn start_as(ns: &str, kubeconfig: &Path, relay_image: &str, extra: &[&str]) -> Self {
        let metrics_port = free_port();
        let mut cmd = Command::new(workspace_bin("webhook-relay-operator"));
        cmd.args(["run", "--namespace", ns, "--refresh", "2s", "--relay-image", relay_image])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,webhook_relay_operator=debug,kube=warn");
        let process = ChildProcess::spawn("operator", tempfile::tempdir().unwrap(), cmd);
        let op = Operator { process, metrics_port };
        wait_for("operator /healthz", || op.http_get("/healthz").filter(|b| b.contains("ok")));
        op
    }

    /// `GET path` on the operator's metrics address; the body on 200.
    pub fn http_get(&self, path: &str) -> Option<String> {
        crate::http::get(self.metrics_port, path).filter(|r| r.status == 200).map(|r| r.body)
    }

    /// A scratch directory that lives as long as the operator.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit.
    pub fn terminate(&mut self) {
        self.process.terminate(Duration::from_secs(20));
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

/// The container `name` of a Deployment's pod template.
pub fn container<'a>(
    d: &'a k8s_openapi::api::apps::v1::Deployment,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::Container> {
    d.spec.template.spec.as_ref()?.containers.iter().find(|c| c.name == name)
}

/// Annotation `key` of a Deployment's pod template.
pub fn template_annotation(d: &k8s_openapi::api::apps::v1::Deployment, key: &str) -> Option<String> {
    d.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(key).cloned()
}

/// The pod spec of a Deployment's template.
pub fn pod_spec(d: &k8s_openapi::api::apps::v1::Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec.template.spec.as_ref().expect("a pod template spec")
}

/// The test cluster's addresses (`STATE/env` of tests/cluster/up; `CLUSTER_ENV` names
/// another file): `HOST_IP`, `NODE_IP`, `POD_CIDR`, ... by name.
pub fn cluster_env() -> std::collections::HashMap<String, String> {
    let path = std::env::var("CLUSTER_ENV").map(PathBuf::from).unwrap_or_else(|_| {
        // Next to the KUBECONFIG up wrote, else the default state dir.
        kubeconfig().parent().map(|d| d.join("env")).unwrap_or_else(|| root().join("target/cluster/run/env"))
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; these tests need the test cluster (tests/cluster/up writes it; make test runs it)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export ").or(Some(l.trim())))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

/// The host's address on the cluster's network: servers a test starts there (Redis, a
/// fake Genesys) are reached by pods and by processes on the host alike.
pub fn host_ip() -> String {
    cluster_env().get("HOST_IP").cloned().expect("HOST_IP in the cluster env")
}

/// `kubectl port-forward` to `target` (`svc/name` or `pod/name`) `remote` port, from a free
/// local port; stopped on drop.
pub struct PortForward {
    pub local_port: u16,
    _process: ChildProcess,
}

impl PortForward {
    pub fn start(ns: &str, target: &str, remote: u16) -> Self {
        let local_port = free_port();
        let cmd = kubectl_cmd(None, &["port-forward", "-n", ns, target, &format!("{local_port}:{remote}")]);
        let process = ChildProcess::spawn("port-forward", tempfile::tempdir().unwrap(), cmd);
        let pf = PortForward { local_port, _process: process };
        wait_for(&format!("port-forward to {target}:{remote}"), || {
            pf._process.log_text().contains("Forwarding from").then_some(())
        });
        pf
    }

    /// `http://127.0.0.1:<local port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_port)
    }
}

/// The ClusterIP of Service `name` in `ns` (reachable from the host through its routes).
pub fn cluster_ip(ns: &Namespace, name: &str) -> String {
    use k8s_openapi::api::core::v1::Service;
    wait_for(&format!("Service {name}"), || ns.get::<Service>(name)?.spec?.cluster_ip)
}

/// Waits until Deployment `name` has `replicas` updated, available replicas; returns it.
pub fn wait_available(ns: &Namespace, name: &str, replicas: i32) -> k8s_openapi::api::apps::v1::Deployment {
    use k8s_openapi::api::apps::v1::Deployment;
    wait_for_within(Duration::from_secs(120), &format!("Deployment {name} {replicas}/{replicas} available"), || {
        let d = ns.get::<Deployment>(name)?;
        let s = d.status.as_ref()?;
        let current = s.observed_generation >= d.metadata.generation;
        (current
            && s.available_replicas == Some(replicas)
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas))
        .then_some(d)
    })
}

/// The pods of `ns` matching `labels`.
pub fn pods(ns: &Namespace, labels: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    ns.list(labels)
}

/// A Deployment and ClusterIP Service `name` of one test image: `image` listening on `port`,
/// with `args` and `env`, non-root with a read-only root filesystem. Returns once available.
pub fn run_app(ns: &Namespace, name: &str, image: &str, port: u16, args: &[&str], env: &[(&str, &str)]) {
    deploy_app(ns, name, image, port, args, env, false);
}

/// [`run_app`]; with `writable_data` the pod gets an emptyDir at `/data` (Redis' working
/// dir) and is replaced by `Recreate`, so two never share it.
fn deploy_app(
    ns: &Namespace,
    name: &str,
    image: &str,
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
    writable_data: bool,
) {
    let args = serde_json::to_string(args).unwrap();
    let env: Vec<Value> = env.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect();
    let env = serde_json::to_string(&env).unwrap();
    let (strategy, volumes, mounts) = if writable_data {
        ("{type: Recreate}", "[{name: data, emptyDir: {}}]", "[{name: data, mountPath: /data}]")
    } else {
        ("{type: RollingUpdate}", "[]", "[]")
    };
    ns.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  strategy: {strategy}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      enableServiceLinks: false
      automountServiceAccountToken: false
      volumes: {volumes}
      containers:
      - name: {name}
        image: {image}
        imagePullPolicy: Never
        args: {args}
        env: {env}
        ports: [{{containerPort: {port}}}]
        readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}
        volumeMounts: {mounts}
        securityContext: {{runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {port}, targetPort: {port}}}]
"#
    ));
    wait_available(ns, name, 1);
}

/// A Redis pod (`localhost/redis:dev`, AOF on, noeviction) with a Service `redis`; returns
/// the URL through the Service's ClusterIP, which pods and the host both reach.
pub fn run_redis(ns: &Namespace) -> String {
    deploy_app(
        ns,
        "redis",
        REDIS_IMAGE,
        6379,
        &["--protected-mode", "no", "--appendonly", "yes", "--maxmemory-policy", "noeviction"],
        &[],
        true,
    );
    format!("redis://{}:6379/", cluster_ip(ns, "redis"))
}

/// A Redis as production runs it: a StatefulSet pod `redis-0` (AOF on, `appendfsync
/// everysec`, noeviction) whose `/data` is a directory on the node, so the AOF outlives the
/// pod: `kubectl delete pod redis-0` stops Redis (which writes its AOF out on SIGTERM) and
/// the StatefulSet starts it again on the same data, only once the old pod is gone. Returns
/// the URL through the Service's ClusterIP. (No volume provisioner runs on the test
/// cluster; the directory lives in the node's `/var/lib` overlay, under the state dir, and
/// goes with `down`.)
pub fn run_redis_on_volume(ns: &Namespace) -> String {
    let dir = format!("/var/lib/whr-test/{}/redis", ns.name);
    let uid = 999; // the Redis image's user (scripts/image)
    node_exec(&["mkdir", "-p", &dir]);
    node_exec(&["chown", &format!("{uid}:{uid}"), &dir]);
    ns.apply(&format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: redis}}
spec:
  serviceName: redis
  replicas: 1
  selector: {{matchLabels: {{app: redis}}}}
  template:
    metadata: {{labels: {{app: redis}}}}
    spec:
      enableServiceLinks: false
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      volumes: [{{name: data, hostPath: {{path: '{dir}', type: Directory}}}}]
      containers:
      - name: redis
        image: {REDIS_IMAGE}
        imagePullPolicy: Never
        args: [--protected-mode, "no", --appendonly, "yes", --appendfsync, everysec, --maxmemory-policy, noeviction]
        ports: [{{containerPort: 6379}}]
        readinessProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1}}
        volumeMounts: [{{name: data, mountPath: /data}}]
        securityContext: {{runAsNonRoot: true, runAsUser: {uid}, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: redis}}
spec:
  selector: {{app: redis}}
  ports: [{{port: 6379, targetPort: 6379}}]
"#
    ));
    wait_for_within(Duration::from_secs(120), "StatefulSet redis 1/1 ready", || {
        use k8s_openapi::api::apps::v1::StatefulSet;
        (ns.get::<StatefulSet>("redis")?.status?.ready_replicas? == 1).then_some(())
    });
    format!("redis://{}:6379/", cluster_ip(ns, "redis"))
}

/// Runs `args` in the test cluster's node (its network and mount namespaces:
/// `tests/cluster/node-exec`); fails the test if it fails.
pub fn node_exec(args: &[&str]) -> String {
    let mut cmd = Command::new(root().join("tests/cluster/node-exec"));
    cmd.args(args);
    if let Some(state) = kubeconfig().parent() {
        cmd.env("CLUSTER_DIR", state);
    }
    ok(&format!("node-exec {}", args.join(" ")), run(cmd, None))
}

/// The IP of a running pod.
pub fn pod_ip(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a running pod has an IP")
}

/// Asks the API once to evict pod `name` (what `kubectl drain` does, honouring
/// PodDisruptionBudgets): `Ok` when it is evicted, else the API's refusal (`TooManyRequests`
/// and its message when a budget forbids it). Through `kubectl create --raw`, as kube-rs'
/// client retries a 429 until it passes.
pub fn evict(ns: &Namespace, name: &str) -> Result<(), String> {
    let body = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": { "name": name, "namespace": ns.name }
    });
    let path = format!("/api/v1/namespaces/{}/pods/{name}/eviction", ns.name);
    let out = kubectl_output(&["create", "--raw", &path, "-f", "-"], Some(&body.to_string()));
    if out.status.success() { Ok(()) } else { Err(text(&out.stderr).trim().to_string()) }
}

/// The Redis image of the test cluster.
pub const REDIS_IMAGE: &str = "localhost/redis:dev";
/// The scripted downstream (`testkit`'s `test-downstream`) as an image.
pub const DOWNSTREAM_IMAGE: &str = "localhost/test-downstream:dev";
/// The fake Genesys Cloud (`testkit`'s `fake-genesys`) as an image.
pub const FAKE_GENESYS_IMAGE: &str = "localhost/fake-genesys:dev";

/// A Redis on the host's cluster address (AOF on): pods and host processes reach it alike.
pub fn cluster_redis() -> crate::redis::RedisServer {
    crate::redis::RedisServer::start_bound(&host_ip(), &[])
}
