//! Desired objects: pure functions from a `WebhookRelay` (and its rendered config) to the
//! ConfigMap, Deployment, PodDisruptionBudget, Service and Ingress the operator applies, and to the patch that
//! injects the relay container into a target Deployment in Sidecar mode.
//!
//! Nothing here talks to the cluster; unit tests call these directly.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use webhook_relay_api::RelayConfig;
use webhook_relay_api::crd::WebhookRelay;
use webhook_relay_api::render::{Ports, REDIS_TLS_DIR, ports as render_ports, secret_env, secret_files};

/// Field manager for every object the operator owns outright.
pub const MANAGER: &str = "webhook-relay-operator";
/// Name of the relay container, in its own Deployment and when injected.
pub const CONTAINER: &str = "webhook-relay";
/// Volume holding `relay.yaml`.
pub const CONFIG_VOLUME: &str = "webhook-relay-config";
/// Where the config is mounted.
pub const CONFIG_DIR: &str = "/etc/webhook-relay";
/// Volume holding the Redis TLS files of `spec.redis.tls` (mounted at [`REDIS_TLS_DIR`]).
pub const REDIS_TLS_VOLUME: &str = "webhook-relay-redis-tls";
/// Key of the rendered config in the ConfigMap.
pub const CONFIG_KEY: &str = "relay.yaml";
/// Pod template annotation whose change rolls the pods when the config changes.
pub const CONFIG_HASH_ANNOTATION: &str = "webhookrelay.dev/config-hash";
/// Pod template annotation whose change rolls the pods when a Secret the relay reads
/// changes; see [`secrets_hash`].
pub const SECRETS_HASH_ANNOTATION: &str = "webhookrelay.dev/secrets-hash";
/// Label on a Deployment the relay container was injected into; value: the relay's name.
pub const SIDECAR_OF_LABEL: &str = "webhookrelay.dev/sidecar-of";
/// Finalizer held while a relay container is injected into a Deployment (Sidecar mode).
pub const SIDECAR_FINALIZER: &str = "webhookrelay.dev/sidecar-cleanup";
/// Port of the Service that leads to the relay's intake port.
pub const SERVICE_HTTP_PORT: i32 = 80;
/// Standalone replicas when the spec does not say.
pub const DEFAULT_REPLICAS: i32 = 2;
/// The user id the relay runs as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;

/// Operator-wide defaults of the relay workloads (flags of the operator).
#[derive(Clone, Debug)]
pub struct WorkloadDefaults {
    /// Relay image used unless `spec.workload.image` overrides it.
    pub relay_image: String,
}

/// Name of every child object of relay `name`: `<name>-relay`.
pub fn child_name(relay: &WebhookRelay) -> String {
    format!("{}-relay", relay.name_any())
}

/// Field manager that owns only the injected container of one relay (Sidecar mode).
pub fn sidecar_manager(relay: &WebhookRelay) -> String {
    format!("{MANAGER}/sidecar/{}", relay.name_any())
}

/// The label naming a child's WebhookRelay: on every child object, and on the pods of a
/// Deployment the relay is injected into.
pub const RELAY_LABEL: &str = "webhookrelay.dev/relay";

/// Labels on every child object.
pub fn labels(relay: &WebhookRelay) -> BTreeMap<String, String> {
    let mut l = selector_labels(relay);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.insert(RELAY_LABEL.into(), relay.name_any());
    l
}

/// The labels the Standalone Deployment selects its pods by (stable for the object's life).
pub fn selector_labels(relay: &WebhookRelay) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "webhook-relay".to_string()),
        ("app.kubernetes.io/instance".to_string(), relay.name_any()),
    ])
}

fn owner(relay: &WebhookRelay) -> OwnerReference {
    relay.controller_owner_ref(&()).expect("a WebhookRelay read from the API has a name and uid")
}

fn meta(relay: &WebhookRelay) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(relay)),
        namespace: relay.namespace(),
        labels: Some(labels(relay)),
        owner_references: Some(vec![owner(relay)]),
        ..ObjectMeta::default()
    }
}

/// Hash of the rendered config; a pod template annotation, so pods roll when it changes.
pub fn config_hash(config_yaml: &str) -> String {
    hex::encode(&Sha256::digest(config_yaml.as_bytes())[..16])
}

/// Hash over the `metadata.resourceVersion` of every Secret the relay reads, keyed by
/// Secret name (`secret_env` names them); a pod template annotation, so pods roll when a
/// Secret is rotated. The relay reads Secrets only as env vars at start, so without a roll
/// a new signing secret or Redis URL would not take effect.
///
/// It hashes resource versions, never values: the annotation is readable by anyone who can
/// read the Deployment, and a hash of a short secret could be guessed offline. The cost is
/// a roll on a metadata-only change of such a Secret (its labels, say).
///
/// The operator does not watch Secrets (its RBAC on them is `get` only), so a rotation is
/// seen at the relay's next periodic reconcile (`--refresh`, 30 s by default), not at once.
pub fn secrets_hash(versions: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, version) in versions {
        // NUL never occurs in a Secret name or a resourceVersion, so the encoding is unambiguous.
        h.update(name.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The hashes on the relay's pod template: pods roll when either changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateHashes {
    /// [`config_hash`] of the rendered `relay.yaml`.
    pub config: String,
    /// [`secrets_hash`] of the referenced Secrets.
    pub secrets: String,
}

impl TemplateHashes {
    /// The pod template annotations carrying the hashes.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CONFIG_HASH_ANNOTATION.to_string(), self.config.clone()),
            (SECRETS_HASH_ANNOTATION.to_string(), self.secrets.clone()),
        ])
    }
}

/// The ConfigMap holding `relay.yaml`.
pub fn config_map(relay: &WebhookRelay, config: &RelayConfig) -> ConfigMap {
    ConfigMap {
        metadata: meta(relay),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config.to_yaml())])),
        ..ConfigMap::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// The relay's container ports (`spec.workload.ports` with defaults), as rendered into
/// `listen` and `adminListen`. The controller renders the config first and stops on an
/// invalid spec, so the fallback to the defaults is never what a pod runs with.
pub fn ports(relay: &WebhookRelay) -> Ports {
    render_ports(&relay.spec).unwrap_or_default()
}

/// A probe of the admin listener, by the container port's name, so it follows
/// `spec.workload.ports.admin`.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The relay container: image, args, ports, probes, secrets as `secretKeyRef` env, the
/// config mount and a locked-down security context.
pub fn relay_container(relay: &WebhookRelay, defaults: &WorkloadDefaults) -> Container {
    let workload = relay.spec.workload.clone().unwrap_or_default();
    let ports = ports(relay);
    let env = secret_env(&relay.spec)
        .into_iter()
        .map(|s| EnvVar {
            name: s.env,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: s.secret, key: s.key, optional: Some(false) }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    Container {
        name: CONTAINER.into(),
        image: Some(workload.image.unwrap_or_else(|| defaults.relay_image.clone())),
        args: Some(vec!["serve".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_KEY}")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: ports.http.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ports.admin.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(env),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        // Failing within 4 s, inside the default 5 s shutdownDelay: the pod turns NotReady
        // while the relay still takes events.
        readiness_probe: Some(probe("/readyz", 2, 2)),
        resources: Some(workload.resources.unwrap_or_else(default_resources)),
        volume_mounts: Some(volume_mounts(relay)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn volume_mounts(relay: &WebhookRelay) -> Vec<VolumeMount> {
    let mut mounts = vec![VolumeMount {
        name: CONFIG_VOLUME.into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if !secret_files(&relay.spec).is_empty() {
        mounts.push(VolumeMount {
            name: REDIS_TLS_VOLUME.into(),
            mount_path: REDIS_TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The relay's volumes: its config, and the Redis TLS files from their Secrets (one
/// projected volume, each key under its fixed file name).
fn volumes(relay: &WebhookRelay) -> Vec<Volume> {
    let mut out = vec![Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource { name: child_name(relay), ..ConfigMapVolumeSource::default() }),
        ..Volume::default()
    }];
    let files = secret_files(&relay.spec);
    if !files.is_empty() {
        let mut by_secret: BTreeMap<String, Vec<KeyToPath>> = BTreeMap::new();
        for f in files {
            by_secret.entry(f.secret).or_default().push(KeyToPath {
                key: f.key,
                path: f.file.into(),
                ..KeyToPath::default()
            });
        }
        let sources = by_secret
            .into_iter()
            .map(|(name, items)| VolumeProjection {
                secret: Some(SecretProjection { name, items: Some(items), optional: Some(false) }),
                ..VolumeProjection::default()
            })
            .collect();
        out.push(Volume {
            name: REDIS_TLS_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: Some(0o444),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    out
}

/// Standalone replicas: `spec.workload.replicas` or [`DEFAULT_REPLICAS`].
pub fn replicas(relay: &WebhookRelay) -> i32 {
    relay.spec.workload.as_ref().and_then(|w| w.replicas).unwrap_or(DEFAULT_REPLICAS)
}

/// The pod's `terminationGracePeriodSeconds`: the relay's whole shutdown
/// ([`RelayConfig::shutdown_budget`]: `source.shutdownDelay`, the drains of intake and of
/// in-flight deliveries, the receipts) plus [`GRACE_MARGIN_SECONDS`], so the kubelet never
/// has to kill a relay that is still finishing its work.
pub fn termination_grace_seconds(config: &RelayConfig) -> i64 {
    config.shutdown_budget().as_secs_f64().ceil() as i64 + GRACE_MARGIN_SECONDS
}

/// Seconds beyond the relay's own shutdown bound in [`termination_grace_seconds`].
pub const GRACE_MARGIN_SECONDS: i64 = 5;

/// Spread the relay's pods across zones and nodes when the scheduler can
/// (`ScheduleAnyway`: on one node, or one zone, they still schedule). `pod-template-hash`
/// keeps a roll's new pods from being counted against the old ones.
fn topology_spread(relay: &WebhookRelay) -> Vec<TopologySpreadConstraint> {
    ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(relay)),
                ..LabelSelector::default()
            }),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

/// The PodDisruptionBudget of a Standalone relay with 2 or more replicas: voluntary
/// disruptions (a node drain, a cluster upgrade) take at most one relay pod at a time.
/// Pods that are not ready may always be evicted, so a crash-looping relay never blocks a
/// drain. `None` with fewer replicas: a budget over one pod would block every drain.
pub fn pod_disruption_budget(relay: &WebhookRelay) -> Option<PodDisruptionBudget> {
    (replicas(relay) >= 2).then(|| PodDisruptionBudget {
        metadata: meta(relay),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(relay)), ..LabelSelector::default() }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// The relay's own Deployment (Standalone mode).
pub fn deployment(
    relay: &WebhookRelay,
    defaults: &WorkloadDefaults,
    hashes: &TemplateHashes,
    config: &RelayConfig,
) -> Deployment {
    let replicas = replicas(relay);
    let mut pod_labels = labels(relay);
    pod_labels.extend(selector_labels(relay));
    Deployment {
        metadata: meta(relay),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(relay)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(hashes.annotations()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![relay_container(relay, defaults)],
                    volumes: Some(volumes(relay)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(termination_grace_seconds(config)),
                    topology_spread_constraints: Some(topology_spread(relay)),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The server-side apply body that adds the relay container, its config volume and the
/// config and Secrets hashes to `target` (Sidecar mode). Applied under [`sidecar_manager`], it owns only
/// these fields; applying [`sidecar_release`] under the same manager removes them again.
pub fn sidecar_patch(
    relay: &WebhookRelay,
    defaults: &WorkloadDefaults,
    target: &str,
    hashes: &TemplateHashes,
) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": target,
            "namespace": relay.namespace(),
            "labels": { SIDECAR_OF_LABEL: relay.name_any() },
        },
        "spec": {
            "template": {
                // The relay label marks the pods that run a relay, in both modes (a
                // PodMonitor selects them by it); released with the container.
                "metadata": { "annotations": hashes.annotations(), "labels": { RELAY_LABEL: relay.name_any() } },
                "spec": {
                    "containers": [relay_container(relay, defaults)],
                    "volumes": volumes(relay),
                },
            },
        },
    })
}

/// The apply body that gives up every field [`sidecar_patch`] set on `target`.
pub fn sidecar_release(namespace: &str, target: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": target, "namespace": namespace },
    })
}

/// The Service in front of the relay: port 80 to the intake port, the admin port (9090 by
/// default) to itself. `selector` is the
/// relay's own pods (Standalone) or the target Deployment's (Sidecar).
pub fn service(relay: &WebhookRelay, selector: BTreeMap<String, String>) -> Service {
    let port = |name: &str, port: i32, target: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let p = ports(relay);
    Service {
        metadata: meta(relay),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![
                port("http", SERVICE_HTTP_PORT, p.http.into()),
                port("admin", p.admin.into(), p.admin.into()),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Ingress for the intake path, if the spec asks for one. Only `source.path` is
/// routed, so the admin port is never reachable from outside.
pub fn ingress(relay: &WebhookRelay) -> Option<Ingress> {
    let spec = relay.spec.ingress.as_ref()?;
    let mut metadata = meta(relay);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(relay.source_path()),
                        path_type: "Exact".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: child_name(relay),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS { hosts: Some(vec![spec.host.clone()]), secret_name: Some(secret.clone()) }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// Where the webhook source should POST: the Ingress URL, else the in-cluster Service URL.
pub fn endpoint(relay: &WebhookRelay) -> String {
    let path = relay.source_path();
    match &relay.spec.ingress {
        Some(i) => format!("https://{}{path}", i.host),
        None => format!("http://{}.{}.svc{path}", child_name(relay), relay.namespace().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use webhook_relay_api::render::relay_config;

    pub(crate) const EXAMPLE: &str = include_str!("../../examples/webhookrelay.yaml");

    fn relay() -> WebhookRelay {
        let mut r: WebhookRelay = serde_yaml::from_str(EXAMPLE).unwrap();
        r.metadata.namespace = Some("cx".into());
        r.metadata.uid = Some("0b9a3c4e-1111-2222-3333-444455556666".into());
        r
    }

    fn settings() -> WorkloadDefaults {
        WorkloadDefaults { relay_image: "registry.example/webhook-relay:1.2.3".into() }
    }

    fn hashes(config: &str, secrets: &str) -> TemplateHashes {
        TemplateHashes { config: config.into(), secrets: secrets.into() }
    }

    #[test]
    fn config_map_holds_the_rendered_config() {
        let r = relay();
        let cfg = relay_config(&r).unwrap();
        let cm = config_map(&r, &cfg);
        assert_eq!(cm.metadata.name.as_deref(), Some("orders-relay"));
        let text = &cm.data.as_ref().unwrap()[CONFIG_KEY];
        assert_eq!(RelayConfig::from_yaml(text).unwrap(), cfg);
        let owners = cm.metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "WebhookRelay");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn deployment_runs_the_relay_locked_down() {
        let r = relay();
        let d = deployment(&r, &settings(), &hashes("abc", "def"), &relay_config(&r).unwrap());
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(2));
        let tmpl = spec.template;
        let annotations = tmpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "abc");
        assert_eq!(annotations[SECRETS_HASH_ANNOTATION], "def");
        let selector = spec.selector.match_labels.unwrap();
        let pod_labels = tmpl.metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        let pod = tmpl.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.name, "webhook-relay");
        assert_eq!(c.image.as_deref(), Some("registry.example/webhook-relay:1.2.3"));
        assert_eq!(c.args.as_ref().unwrap(), &["serve", "--config", "/etc/webhook-relay/relay.yaml"]);
        let ports: Vec<_> =
            c.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
        assert_eq!(ports, [("http".to_string(), 8080), ("admin".to_string(), 9090)]);
        assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(), &["ALL"]);
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let res = c.resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "64Mi");
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/webhook-relay", Some(true)));
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(vol.config_map.as_ref().unwrap().name, "orders-relay");
    }

    #[test]
    fn pods_outlive_the_relays_shutdown_spread_out_and_a_budget_keeps_one_up() {
        let mut r = relay();
        let cfg = relay_config(&r).unwrap();
        // 5s shutdownDelay + max(10s read + 5s, 5s timeout + 5s) + (5s + 5s) receipts + 0.2s.
        assert_eq!(cfg.source.shutdown_delay, Duration::from_secs(5));
        assert_eq!(cfg.shutdown_budget(), Duration::from_millis(30_200));
        let pod = deployment(&r, &settings(), &hashes("h", "s"), &cfg).spec.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(31 + GRACE_MARGIN_SECONDS));
        // A longer delivery timeout and shutdown delay: a longer grace period.
        r.spec.destination.timeout = Some("20s".into());
        r.spec.source.shutdown_delay = Some("10s".into());
        let cfg = relay_config(&r).unwrap();
        assert_eq!(cfg.shutdown_budget(), Duration::from_millis(10_000 + 25_000 + 25_000 + 200));
        assert_eq!(termination_grace_seconds(&cfg), 61 + GRACE_MARGIN_SECONDS);

        let spread = pod.topology_spread_constraints.unwrap();
        let keys: Vec<&str> = spread.iter().map(|c| c.topology_key.as_str()).collect();
        assert_eq!(keys, ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]);
        for c in &spread {
            assert_eq!((c.max_skew, c.when_unsatisfiable.as_str()), (1, "ScheduleAnyway"));
            assert_eq!(c.label_selector.as_ref().unwrap().match_labels.as_ref(), Some(&selector_labels(&r)));
        }

        // 2 replicas (the default): a budget of one pod at a time over the relay's pods.
        let pdb = pod_disruption_budget(&relay()).unwrap();
        assert_eq!(pdb.metadata.name.as_deref(), Some("orders-relay"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.selector.unwrap().match_labels, Some(selector_labels(&r)));
        assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
        // One replica: no budget (it would block every drain).
        r.spec.workload.get_or_insert_with(Default::default).replicas = Some(1);
        assert!(pod_disruption_budget(&r).is_none());
        r.spec.workload.as_mut().unwrap().replicas = Some(3);
        assert!(pod_disruption_budget(&r).is_some());
    }

    #[test]
    fn redis_tls_secrets_are_mounted_where_the_rendered_config_reads_them() {
        let mut r = relay();
        r.spec.redis.tls = Some(webhook_relay_api::crd::RedisTlsSpec {
            ca_secret_ref: Some(webhook_relay_api::crd::SecretKeyRef { name: "redis-ca".into(), key: "ca.pem".into() }),
            client_cert_secret_ref: Some(webhook_relay_api::crd::SecretRef { name: "relay-redis-client".into() }),
        });
        let cfg = relay_config(&r).unwrap();
        let tls = cfg.redis.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("/var/run/webhook-relay/redis-tls/ca.crt")));
        assert_eq!(tls.cert_file.as_deref(), Some(std::path::Path::new("/var/run/webhook-relay/redis-tls/tls.crt")));
        assert_eq!(tls.key_file.as_deref(), Some(std::path::Path::new("/var/run/webhook-relay/redis-tls/tls.key")));
        let d = deployment(&r, &settings(), &hashes("h", "s"), &relay_config(&r).unwrap());
        let pod = d.spec.template.spec.unwrap();
        let mount =
            pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == REDIS_TLS_VOLUME).unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (REDIS_TLS_DIR, Some(true)));
        let vol = pod.volumes.unwrap().into_iter().find(|v| v.name == REDIS_TLS_VOLUME).unwrap();
        let sources = vol.projected.unwrap().sources.unwrap();
        let items: Vec<(String, String, String)> = sources
            .iter()
            .flat_map(|s| {
                let sec = s.secret.as_ref().unwrap();
                sec.items.as_ref().unwrap().iter().map(|i| (sec.name.clone(), i.key.clone(), i.path.clone()))
            })
            .collect();
        assert_eq!(
            items,
            [
                ("redis-ca".to_string(), "ca.pem".to_string(), "ca.crt".to_string()),
                ("relay-redis-client".into(), "tls.crt".into(), "tls.crt".into()),
                ("relay-redis-client".into(), "tls.key".into(), "tls.key".into()),
            ]
        );
        // Without spec.redis.tls: no such volume.
        let plain = deployment(&relay(), &settings(), &hashes("h", "s"), &relay_config(&relay()).unwrap())
            .spec
            .template
            .spec
            .unwrap();
        assert!(plain.volumes.unwrap().iter().all(|v| v.name != REDIS_TLS_VOLUME));
    }

    #[test]
    fn secrets_reach_the_container_only_as_secret_key_refs() {
        let r = relay();
        let c = relay_container(&r, &settings());
        let env = c.env.unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["REDIS_URL", "RELAY_SIGNING_SECRET", "RELAY_ADMIN_TOKEN", "GENESYS_CLIENT_ID", "GENESYS_CLIENT_SECRET"]
        );
        for e in &env {
            assert!(e.value.is_none(), "{} has a literal value", e.name);
            assert!(e.value_from.as_ref().unwrap().secret_key_ref.is_some(), "{}", e.name);
        }
        let redis = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((redis.name.as_str(), redis.key.as_str()), ("relay-redis", "url"));
    }

    #[test]
    fn workload_image_and_resources_override_defaults() {
        let mut r = relay();
        let w = r.spec.workload.get_or_insert_with(Default::default);
        w.image = Some("mine:2".into());
        w.replicas = Some(5);
        w.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("cpu".to_string(), Quantity("1".into()))])),
            ..ResourceRequirements::default()
        });
        let d = deployment(&r, &settings(), &hashes("h", "s"), &relay_config(&r).unwrap());
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(5));
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("mine:2"));
        assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0, "1");
    }

    #[test]
    fn config_hash_follows_the_config() {
        let r = relay();
        let a = relay_config(&r).unwrap().to_yaml();
        let mut r2 = relay();
        r2.spec.destination.url = "http://elsewhere.cx.svc:8080/events".into();
        let b = relay_config(&r2).unwrap().to_yaml();
        assert_eq!(config_hash(&a), config_hash(&a));
        assert_ne!(config_hash(&a), config_hash(&b));
    }

    #[test]
    fn secrets_hash_follows_the_secrets_resource_versions() {
        let versions = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        let base = secrets_hash(&versions(&[("relay-redis", "100"), ("genesys-webhook", "101")]));
        // Same Secrets at the same versions, in any order: same hash, so no roll.
        assert_eq!(base, secrets_hash(&versions(&[("genesys-webhook", "101"), ("relay-redis", "100")])));
        assert_eq!(base.len(), 32);
        // One Secret rotated (new resourceVersion): a new hash, so the pods roll.
        assert_ne!(base, secrets_hash(&versions(&[("relay-redis", "100"), ("genesys-webhook", "205")])));
        // A Secret added to or dropped from the spec changes it too.
        assert_ne!(base, secrets_hash(&versions(&[("relay-redis", "100")])));
        assert_ne!(
            base,
            secrets_hash(&versions(&[("relay-redis", "100"), ("genesys-webhook", "101"), ("relay-admin", "7")]))
        );
        // Name and version cannot run into each other.
        assert_ne!(secrets_hash(&versions(&[("a", "12")])), secrets_hash(&versions(&[("a1", "2")])));
    }

    #[test]
    fn service_exposes_intake_on_80_and_admin_separately() {
        let r = relay();
        assert_eq!(
            service_ports(service(&r, selector_labels(&r))),
            [("http".to_string(), 80, IntOrString::Int(8080)), ("admin".to_string(), 9090, IntOrString::Int(9090))]
        );
    }

    /// (name, containerPort) of each container port, and the port each probe resolves to.
    fn container_ports(c: &Container) -> (Vec<(String, i32)>, Vec<i32>) {
        let ports: Vec<_> =
            c.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
        let resolve = |probe: &Option<Probe>| match &probe.as_ref().unwrap().http_get.as_ref().unwrap().port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => ports.iter().find(|(n, _)| n == name).expect("probe names a container port").1,
        };
        let probes = vec![resolve(&c.liveness_probe), resolve(&c.readiness_probe)];
        (ports, probes)
    }

    fn service_ports(s: Service) -> Vec<(String, i32, IntOrString)> {
        s.spec.unwrap().ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap())).collect()
    }

    #[test]
    fn workload_ports_move_container_ports_probes_and_service_targets() {
        // Defaults: as before the field existed.
        let r = relay();
        assert_eq!(ports(&r), Ports { http: 8080, admin: 9090 });
        let (cp, probes) = container_ports(&relay_container(&r, &settings()));
        assert_eq!(cp, [("http".to_string(), 8080), ("admin".to_string(), 9090)]);
        assert_eq!(probes, [9090, 9090]);

        let mut r = relay();
        r.spec.workload.get_or_insert_with(Default::default).ports =
            Some(webhook_relay_api::crd::WorkloadPorts { http: Some(8780), admin: Some(9790) });
        let cfg = relay_config(&r).unwrap();
        assert_eq!((cfg.listen.port(), cfg.admin_listen.port()), (8780, 9790));
        let (cp, probes) = container_ports(&relay_container(&r, &settings()));
        assert_eq!(cp, [("http".to_string(), 8780), ("admin".to_string(), 9790)]);
        assert_eq!(probes, [9790, 9790]);
        assert_eq!(
            service_ports(service(&r, selector_labels(&r))),
            [("http".to_string(), 80, IntOrString::Int(8780)), ("admin".to_string(), 9790, IntOrString::Int(9790))]
        );
        // The injected container carries the same ports.
        let p = sidecar_patch(&r, &settings(), "orders-api", &hashes("h", "s"));
        let injected: Vec<i64> = p["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        assert_eq!(injected, [8780, 9790]);
    }

    #[test]
    fn ingress_routes_only_the_source_path() {
        let r = relay();
        let i = ingress(&r).unwrap();
        let spec = i.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("hooks.example.com"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(path.path.as_deref(), Some("/webhooks/genesys"));
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, "orders-relay");
        assert_eq!(backend.port.as_ref().unwrap().name.as_deref(), Some("http"));
        assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("hooks-tls"));
        assert_eq!(endpoint(&r), "https://hooks.example.com/webhooks/genesys");

        let mut plain = relay();
        plain.spec.ingress.as_mut().unwrap().tls_secret_name = None;
        assert!(ingress(&plain).unwrap().spec.unwrap().tls.is_none());
        plain.spec.ingress = None;
        assert!(ingress(&plain).is_none());
        assert_eq!(endpoint(&plain), "http://orders-relay.cx.svc/webhooks/genesys");
    }

    #[test]
    fn sidecar_patch_carries_only_the_relay_container_and_its_volume() {
        let r = relay();
        let p = sidecar_patch(&r, &settings(), "orders-api", &hashes("h1", "s1"));
        assert_eq!(p["metadata"]["name"], "orders-api");
        assert_eq!(p["metadata"]["labels"][SIDECAR_OF_LABEL], "orders");
        let spec = &p["spec"];
        assert!(spec.get("selector").is_none() && spec.get("replicas").is_none(), "{spec}");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod["containers"][0]["name"], "webhook-relay");
        assert_eq!(pod["volumes"][0]["name"], CONFIG_VOLUME);
        assert_eq!(spec["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION], "h1");
        assert_eq!(spec["template"]["metadata"]["annotations"][SECRETS_HASH_ANNOTATION], "s1");
        assert_eq!(spec["template"]["metadata"]["labels"][RELAY_LABEL], "orders", "relay pods are found by it");
        let release = sidecar_release("cx", "orders-api");
        assert!(release.get("spec").is_none());
        assert_eq!(sidecar_manager(&r), "webhook-relay-operator/sidecar/orders");
    }
}
