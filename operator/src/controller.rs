//! The reconciler: read the WebhookRelay and what it references, compute the desired
//! children (see [`crate::resources`]), server-side apply them, probe Redis, check the
//! Genesys integration's webhook URL when it is due (see [`crate::genesys_check`]), write status.
//!
//! Problems the user must fix (invalid spec, missing Secret or target) are not crashes:
//! they become `Ready=False` with a reason, a Warning event, and a retry with backoff.

use crate::children::{Applied, Caches, SecretReads, Writers};
use crate::error::{Error, Result, SecretUse};
use crate::genesys_check::Checker;
use crate::metrics::Metrics;
use crate::redis_probe::{Persistence, Pool};
use crate::resources::{
    self, MANAGER, SECRETS_HASH_ANNOTATION, SIDECAR_FINALIZER, SIDECAR_OF_LABEL, TemplateHashes, WorkloadDefaults,
};
use crate::status::{self, Outcome};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use webhook_relay_api::RelayConfig;
use webhook_relay_api::crd::{WebhookRelay, WebhookRelayStatus, WorkloadMode};
use webhook_relay_api::render::SpecError;
use webhook_relay_api::render::{
    REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE, relay_config, relay_id, secret_env, secret_files,
};
use webhook_relay_store::{ConnectOptions, TlsMaterial};
use webhook_relay_util::retry::{Backoff, Jitter};

/// Wait before reconciling a failing relay again: 5 s after the first failure, doubling
/// per consecutive failure up to 5 minutes.
pub const RETRY_BACKOFF: Backoff = Backoff::doubling(Duration::from_secs(5), Duration::from_secs(300), Jitter::None);

/// Reconciles run at once by default: enough to keep the API server busy, few enough that
/// a thousand relays created together do not open a thousand connections to it.
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub defaults: WorkloadDefaults,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Period of the status refresh (queue figures) for a healthy relay.
    pub refresh: Duration,
    /// Reconciles run at once, at most (0: no limit).
    pub concurrency: u16,
    /// The Genesys webhook check and its last verdict per relay.
    pub genesys: Checker,
    /// One Redis connection per distinct Redis, for the status probes.
    pub redis: Pool,
    /// Metadata of the relays' children, from the controller's watches.
    pub children: Caches,
    /// What was last applied to each child, so unchanged children are not applied again.
    pub applied: Applied,
    /// Reads of Secrets, coalesced across relays.
    pub secret_reads: SecretReads,
    writers: Mutex<Option<Writers>>,
    failures: Retries,
}

impl Context {
    pub fn new(
        client: Client,
        defaults: WorkloadDefaults,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        refresh: Duration,
        genesys: Checker,
    ) -> Self {
        let (children, writers) = Caches::new();
        Context {
            client,
            defaults,
            recorder,
            metrics,
            refresh,
            concurrency: DEFAULT_CONCURRENCY,
            genesys,
            redis: Pool::default(),
            children,
            applied: Applied::default(),
            secret_reads: SecretReads::default(),
            writers: Mutex::new(Some(writers)),
            failures: Retries::default(),
        }
    }

    /// The refresh period with ±20 % jitter, so relays created together do not keep
    /// refreshing (probing Redis, reading Secrets) in the same instant.
    fn refresh_jittered(&self) -> Duration {
        use rand::Rng;
        self.refresh.mul_f64(rand::rng().random_range(0.8..=1.2))
    }

    fn backoff(&self, key: &str) -> Duration {
        self.failures.failed(key, Instant::now())
    }

    fn succeeded(&self, key: &str) {
        self.failures.succeeded(key);
    }

    async fn event(&self, relay: &WebhookRelay, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &relay.object_ref(&())).await {
            warn!(error = %e, "could not publish event");
        }
    }
}

/// Consecutive failed reconciles of each relay, for [`RETRY_BACKOFF`]. A failure counts
/// only when the retry scheduled by the previous one was due: reconciles a watch event
/// started meanwhile (the status write, a child changing) fail again without pushing the
/// retry further out, so the delay grows with retries, not with how often the relay's
/// objects changed (seven such in 3 s once put the next retry 300 s away).
#[derive(Default)]
pub struct Retries(Mutex<HashMap<String, (u32, Instant)>>);

impl Retries {
    /// A failed reconcile of `key` at `now`: how long until it is retried.
    pub fn failed(&self, key: &str, now: Instant) -> Duration {
        let mut m = self.0.lock().expect("retries lock");
        let (n, due) = m.entry(key.to_string()).or_insert((0, now));
        if *n > 0 && now < *due {
            return *due - now;
        }
        *n = n.saturating_add(1);
        let delay = RETRY_BACKOFF.delay(*n);
        *due = now + delay;
        delay
    }

    /// A reconcile of `key` succeeded: the next failure starts the backoff over.
    pub fn succeeded(&self, key: &str) {
        self.0.lock().expect("retries lock").remove(key);
    }
}

fn key(relay: &WebhookRelay) -> String {
    format!("{}/{}", relay.namespace().unwrap_or_default(), relay.name_any())
}

/// One server-side apply of a relay's child.
struct ChildApply<'a, T> {
    /// Object `name` of the Api's kind.
    name: &'a str,
    /// What to apply.
    obj: &'a T,
    /// The child's metadata now (`None`: absent), from a read or a watch cache.
    current: Option<&'a ObjectMeta>,
    manager: &'a str,
    /// The child as messages name it: `Service orders-relay`.
    what: String,
}

/// Server-side applies a child, unless this process applied the same object last time and
/// the child has not been touched since (see [`crate::children`]): the child as the API
/// server returned it, or `None` when skipped. A refusal by the API server names the child
/// ([`Error::ApplyFailed`]).
async fn apply<K, T>(ctx: &Context, relay: &WebhookRelay, api: &Api<K>, child: ChildApply<'_, T>) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    T: Serialize + Debug,
{
    let relay_uid = relay.uid().unwrap_or_default();
    let key = format!("{}:{}/{}", child.manager, K::kind(&()), child.name);
    let desired = crate::children::digest(child.obj);
    if ctx.applied.unchanged(&relay_uid, &key, &desired, child.current) {
        ctx.metrics.applies_skipped.inc();
        return Ok(None);
    }
    let pp = PatchParams::apply(child.manager).force();
    match api.patch(child.name, &pp, &Patch::Apply(child.obj)).await {
        Ok(after) => {
            ctx.applied.record(&relay_uid, &key, desired, after.meta());
            Ok(Some(after))
        }
        Err(e) => {
            ctx.applied.forget_child(&relay_uid, &key);
            Err(Error::applying(child.what, e))
        }
    }
}

/// Deletes `name` (whose metadata is `current`, `None` when absent) if this relay is its
/// controller.
async fn delete_owned<K>(api: &Api<K>, name: &str, relay: &WebhookRelay, current: Option<&ObjectMeta>) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let Some(meta) = current else { return Ok(false) };
    let ours = meta.owner_references.iter().flatten().any(|o| Some(&o.uid) == relay.meta().uid.as_ref());
    if ours {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            // Already gone: the cache had not seen the deletion yet.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ours)
}

async fn set_finalizer(api: &Api<WebhookRelay>, relay: &WebhookRelay, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = relay.finalizers().iter().filter(|f| *f != SIDECAR_FINALIZER).cloned().collect();
    if present {
        finalizers.push(SIDECAR_FINALIZER.into());
    }
    // The resourceVersion makes this a compare-and-swap on the finalizer list.
    let patch = json!({ "metadata": { "resourceVersion": relay.resource_version(), "finalizers": finalizers } });
    api.patch(&relay.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Where the Deployments carrying a relay's container are looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// The watch cache: enough where a miss is caught up by the next reconcile (the watch
    /// triggers one when the cache learns of the Deployment).
    Cache,
    /// A list call: before the finalizer goes, nothing may be missed.
    Fresh,
}

/// Takes the relay container out of every Deployment it was injected into, but `keep`.
async fn release_sidecars(
    ctx: &Context,
    relay: &WebhookRelay,
    ns: &str,
    keep: Option<&str>,
    lookup: Lookup,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let carriers: Vec<String> = match lookup {
        Lookup::Fresh => {
            let lp = ListParams::default().labels(&format!("{SIDECAR_OF_LABEL}={}", relay.name_any()));
            api.list_metadata(&lp).await?.into_iter().map(|d| d.name_any()).collect()
        }
        Lookup::Cache => ctx
            .children
            .sidecars
            .state()
            .iter()
            .filter(|d| {
                d.namespace().as_deref() == Some(ns) && d.labels().get(SIDECAR_OF_LABEL) == Some(&relay.name_any())
            })
            .map(|d| d.name_any())
            .collect(),
    };
    for name in carriers {
        if Some(name.as_str()) == keep {
            continue;
        }
        let body = resources::sidecar_release(ns, &name);
        api.patch(&name, &PatchParams::apply(&resources::sidecar_manager(relay)).force(), &Patch::Apply(&body)).await?;
        info!(deployment = %name, "removed the relay container");
        ctx.event(
            relay,
            EventType::Normal,
            "SidecarRemoved",
            "Release",
            format!("removed the relay container from Deployment {name}"),
        )
        .await;
    }
    Ok(())
}

/// The value of pod template annotation `key` of `d`.
fn template_annotation(d: &Deployment, key: &str) -> Option<String> {
    d.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(key).cloned()
}

/// What one reconcile reads from the cluster, before it decides anything: every Secret the
/// relay references (each read once, by name; `None` when missing), the target Deployment
/// (Sidecar mode) and the relay's current children.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// `spec.workload.targetRef`'s Deployment, in Sidecar mode.
    pub target: Option<Deployment>,
    /// The relay's own Deployment (Standalone mode, or left from it).
    pub own_deployment: Option<Deployment>,
    /// The ConfigMap holding the rendered `relay.yaml`.
    pub config_map: Option<ConfigMap>,
    /// How many relay pods run, as the workload's Deployment reports it.
    pub workload: Option<WorkloadState>,
}

/// How the Deployment running the relay container stands: replicas wanted and available,
/// and, when some are missing, what the kubelet says about the relay container of each pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadState {
    pub deployment: String,
    pub desired: i32,
    pub available: i32,
    /// (pod, reason, message) of relay containers that do not run or are not ready.
    pub problems: Vec<(String, String, String)>,
}

impl WorkloadState {
    /// What Deployment `d` says of its replicas (no pod problems: those need a list).
    pub fn of(d: &Deployment) -> Self {
        WorkloadState {
            deployment: d.name_any(),
            desired: d.spec.replicas.unwrap_or(1),
            available: d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
            problems: vec![],
        }
    }
}

/// The kubelet's view of the relay container in `pod`, when it is not running and ready:
/// (reason, message), e.g. `ErrImageNeverPull`, `CrashLoopBackOff`, `Unschedulable`.
pub fn pod_problem(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let relay = status.container_statuses.iter().flatten().find(|c| c.name == resources::CONTAINER);
    if let Some(c) = relay {
        if c.ready {
            return None;
        }
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            return Some((w.reason.clone().unwrap_or("Waiting".into()), w.message.clone().unwrap_or_default()));
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            let why = t.message.clone().unwrap_or_else(|| format!("exit code {}", t.exit_code));
            return Some((t.reason.clone().unwrap_or("Terminated".into()), why));
        }
        return Some(("NotReady".into(), "the relay container runs but /readyz fails (Redis cannot store?)".into()));
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unschedulable {
        return Some((c.reason.clone().unwrap_or("Unschedulable".into()), c.message.clone().unwrap_or_default()));
    }
    Some(("Pending".into(), format!("pod phase {}", status.phase.as_deref().unwrap_or("unknown"))))
}

impl Observed {
    /// The Secret `name`, if it exists.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).and_then(Option::as_ref)
    }
}

/// The Secrets a relay references: its env, its files and its Genesys credentials.
fn referenced_secrets(relay: &WebhookRelay) -> Vec<String> {
    let mut names: Vec<String> = secret_env(&relay.spec).into_iter().map(|s| s.secret).collect();
    names.extend(secret_files(&relay.spec).into_iter().map(|f| f.secret));
    names.extend(relay.spec.genesys.as_ref().map(|g| g.credentials_secret_ref.name.clone()));
    names.sort();
    names.dedup();
    names
}

/// Reads what [`plan`] needs.
async fn observe(relay: &WebhookRelay, ctx: &Context) -> Result<Observed> {
    let ns = relay.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut observed = Observed::default();
    for name in referenced_secrets(relay) {
        let secret = ctx.secret_reads.get(&secrets, &ns, &name).await?;
        observed.secrets.insert(name, secret);
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    if relay.mode() == WorkloadMode::Sidecar
        && let Some(t) = relay.spec.workload.as_ref().and_then(|w| w.target_ref.as_ref())
    {
        observed.target = deployments.get_opt(&t.name).await?;
    }
    let name = resources::child_name(relay);
    // The relay's own children from the watch caches: as fresh as the watch event that
    // triggered this reconcile.
    observed.own_deployment = ctx.children.deployments.get(&ObjectRef::new(&name).within(&ns)).map(|d| (*d).clone());
    observed.config_map = ctx.children.config_maps.get(&ObjectRef::new(&name).within(&ns)).map(|c| (*c).clone());
    let running = if relay.mode() == WorkloadMode::Sidecar { &observed.target } else { &observed.own_deployment };
    if let Some(d) = running {
        let mut state = WorkloadState::of(d);
        let (desired, available) = (state.desired, state.available);
        // Only a workload short of pods costs a list call: its pods say why.
        if available < desired {
            let selector = d.spec.selector.match_labels.clone().unwrap_or_default();
            let labels = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), &ns);
            for pod in pods.list(&ListParams::default().labels(&labels)).await? {
                if let Some((reason, message)) = pod_problem(&pod) {
                    state.problems.push((pod.name_any(), reason, message));
                }
            }
        }
        observed.workload = Some(state);
    }
    Ok(observed)
}

/// How the relay reaches its Redis, with the secret values read from the observed Secrets
/// (Debug prints none of them).
#[derive(Clone)]
pub struct RedisAccess {
    pub url: String,
    pub cluster: bool,
    pub tls: Option<TlsMaterial>,
    /// `spec.redis.passwordSecretRef`'s value: the data nodes' password.
    pub password: Option<String>,
    /// `spec.redis.sentinel.passwordSecretRef`'s value: the Sentinels' password.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl RedisAccess {
    /// How the operator's probe connects: as the relay does.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new(self.url.clone())
            .cluster(self.cluster)
            .tls(self.tls.clone())
            .password(self.password.clone())
            .sentinel_password(self.sentinel_password.clone())
    }
}

/// Where the relay container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Its own Deployment `<name>-relay`.
    Standalone,
    /// Injected into Deployment `target`, whose pods `selector` selects.
    Sidecar { target: String, selector: BTreeMap<String, String>, injected: bool },
}

/// What the relay's children must be, computed once per reconcile from the spec and what
/// was observed. Pure: no I/O, unit tested without a cluster.
#[derive(Clone, Debug)]
pub struct Plan {
    pub config: RelayConfig,
    /// `config` as YAML: the ConfigMap's `relay.yaml`.
    pub yaml: String,
    pub hashes: TemplateHashes,
    pub workload: Workload,
    pub redis: RedisAccess,
    /// The rendered config differs from the ConfigMap's.
    pub config_changed: bool,
    /// A referenced Secret changed since the running pods were started (not on the first apply).
    pub secrets_changed: bool,
    /// Names of the Secrets the relay reads, for messages.
    pub secret_names: Vec<String>,
}

/// Decides the relay's children from `relay` and `observed`; an error the user must fix
/// (invalid spec, missing Secret, key or target) stops it before anything is applied.
pub fn plan(relay: &WebhookRelay, observed: &Observed) -> Result<Plan> {
    let ns = relay.namespace().unwrap_or_default();
    let config = relay_config(relay)?;
    let yaml = config.to_yaml();
    // Every referenced Secret key must exist before anything is rolled out with it. Their
    // resourceVersions go into the pod template (see `resources::secrets_hash`), so the pods
    // roll when one is rotated: not at once (Secrets are not watched) but at the next
    // periodic reconcile, `--refresh` (30 s by default).
    let mut versions = BTreeMap::new();
    let read = |use_: SecretUse, versions: &mut BTreeMap<String, String>| -> Result<Vec<u8>> {
        let Some(secret) = observed.secret(&use_.secret) else {
            return Err(Error::SecretNotFound { secret: use_, namespace: ns.clone() });
        };
        versions.insert(use_.secret.clone(), secret.resource_version().unwrap_or_default());
        let value = secret.data.as_ref().and_then(|d| d.get(&use_.key)).map(|b| b.0.clone());
        value.ok_or(Error::SecretKeyNotFound { secret: use_ })
    };
    let (mut redis_url, mut password, mut sentinel_password) = (String::new(), None, None);
    for s in secret_env(&relay.spec) {
        let value = read(SecretUse::from(&s), &mut versions)?;
        let text = || String::from_utf8_lossy(&value).trim().to_string();
        if s.env == config.redis.url_env {
            redis_url = text();
        } else if config.redis.password_env.as_deref() == Some(s.env.as_str()) {
            password = Some(text());
        } else if config.redis.sentinel.as_ref().and_then(|x| x.password_env.as_deref()) == Some(s.env.as_str()) {
            sentinel_password = Some(text());
        }
    }
    // What the relay would refuse at start about its Redis URL, said here instead (the
    // message never holds the URL).
    let url_problem = match webhook_relay_store::parse_sentinel_url(&redis_url) {
        Err(why) => Some(("spec.redis.urlSecretRef", format!("holds an invalid Sentinel URL: {why}"))),
        Ok(Some(_)) if config.redis.cluster => Some((
            "spec.redis.cluster",
            "cannot be true with a redis+sentinel:// URL (Redis Cluster fails over by itself)".to_string(),
        )),
        Ok(None) if config.redis.sentinel.is_some() => Some((
            "spec.redis.sentinel",
            "is set but spec.redis.urlSecretRef holds no redis+sentinel:// URL; give redis+sentinel://host:port,host:port/<master> or remove spec.redis.sentinel".to_string(),
        )),
        Ok(_) => None,
    };
    if let Some((field, message)) = url_problem {
        return Err(Error::InvalidSpec(SpecError { field: field.into(), message }));
    }
    // The Redis TLS files, mounted into the pods; the probe trusts the same CA.
    let mut files = BTreeMap::new();
    for f in secret_files(&relay.spec) {
        files.insert(f.file, read(SecretUse::from(&f), &mut versions)?);
    }
    let tls = relay.spec.redis.tls.as_ref().map(|_| TlsMaterial {
        ca_pem: files.get(REDIS_TLS_CA_FILE).cloned(),
        client: files.get(REDIS_TLS_CERT_FILE).cloned().zip(files.get(REDIS_TLS_KEY_FILE).cloned()),
    });
    let workload = match relay.mode() {
        WorkloadMode::Standalone => Workload::Standalone,
        WorkloadMode::Sidecar => {
            let Some(wanted) = relay.spec.workload.as_ref().and_then(|w| w.target_ref.as_ref()) else {
                return Err(Error::InvalidSpec(SpecError {
                    field: "spec.workload.targetRef".into(),
                    message: "is required in Sidecar mode: name the Deployment to add the relay container to".into(),
                }));
            };
            let Some(target) = &observed.target else {
                return Err(Error::TargetNotFound { name: wanted.name.clone(), namespace: ns });
            };
            let selector = target.spec.selector.match_labels.clone().unwrap_or_default();
            if selector.is_empty() {
                return Err(Error::InvalidSpec(SpecError {
                    field: "spec.workload.targetRef".into(),
                    message: format!(
                        "Deployment {} has no spec.selector.matchLabels for the relay Service to use",
                        wanted.name
                    ),
                }));
            }
            let injected = target
                .spec
                .template
                .spec
                .as_ref()
                .is_some_and(|p| p.containers.iter().any(|c| c.name == resources::CONTAINER));
            Workload::Sidecar { target: wanted.name.clone(), selector, injected }
        }
    };
    let hashes = TemplateHashes { config: resources::config_hash(&yaml), secrets: resources::secrets_hash(&versions) };
    // What the workload's pods were started with; absent on the first apply (no roll to report).
    let running = match &workload {
        Workload::Sidecar { .. } => observed.target.as_ref(),
        Workload::Standalone => observed.own_deployment.as_ref(),
    };
    let previous_secrets = running.and_then(|d| template_annotation(d, SECRETS_HASH_ANNOTATION));
    let current_yaml = observed.config_map.as_ref().and_then(|cm| cm.data.as_ref()?.get(resources::CONFIG_KEY));
    Ok(Plan {
        config_changed: current_yaml != Some(&yaml),
        secrets_changed: previous_secrets.is_some_and(|p| p != hashes.secrets),
        redis: RedisAccess { url: redis_url, cluster: config.redis.cluster, tls, password, sentinel_password },
        secret_names: versions.into_keys().collect(),
        config,
        yaml,
        hashes,
        workload,
    })
}

/// Applies the Standalone children: the relay's own Deployment (returned when it was
/// applied); any sidecar it had is released.
async fn apply_standalone(
    ctx: &Context,
    relay: &WebhookRelay,
    plan: &Plan,
    observed: &Observed,
) -> Result<(BTreeMap<String, String>, Option<Deployment>)> {
    let ns = relay.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let name = resources::child_name(relay);
    let deployment = resources::deployment(relay, &ctx.defaults, &plan.hashes, &plan.config);
    let current = observed.own_deployment.as_ref().map(|d| &d.metadata);
    let what = format!("Deployment {name}");
    let applied =
        apply(ctx, relay, &deployments, ChildApply { name: &name, obj: &deployment, current, manager: MANAGER, what })
            .await?;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    let current = Caches::get(&ctx.children.budgets, &ns, &name);
    match resources::pod_disruption_budget(relay) {
        Some(pdb) => {
            let what = format!("PodDisruptionBudget {name}");
            let child = ChildApply { name: &name, obj: &pdb, current: current.as_ref(), manager: MANAGER, what };
            drop(apply(ctx, relay, &budgets, child).await?)
        }
        None => drop(delete_owned(&budgets, &name, relay, current.as_ref()).await?),
    }
    release_sidecars(ctx, relay, &ns, None, Lookup::Cache).await?;
    if relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
        set_finalizer(&Api::namespaced(ctx.client.clone(), &ns), relay, false).await?;
    }
    Ok((resources::selector_labels(relay), applied))
}

/// Injects the relay container into `target` (holding the finalizer that takes it out
/// again), and removes the relay's own Deployment left from Standalone mode.
async fn apply_sidecar(
    ctx: &Context,
    relay: &WebhookRelay,
    plan: &Plan,
    observed: &Observed,
    (target, injected): (&str, bool),
) -> Result<()> {
    let ns = relay.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    if !relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
        set_finalizer(&Api::namespaced(ctx.client.clone(), &ns), relay, true).await?;
    }
    let patch = resources::sidecar_patch(relay, &ctx.defaults, target, &plan.hashes);
    let manager = resources::sidecar_manager(relay);
    let current = observed.target.as_ref().map(|d| &d.metadata);
    let what = format!("the relay container in Deployment {target}");
    apply(ctx, relay, &deployments, ChildApply { name: target, obj: &patch, current, manager: &manager, what }).await?;

    if !injected {
        ctx.event(
            relay,
            EventType::Normal,
            "SidecarInjected",
            "Inject",
            format!("added the relay container to Deployment {target}"),
        )
        .await;
    }
    // The relay's own Deployment and budget, left from Standalone mode; the target's pods
    // are the app's, and so is their disruption budget.
    let name = resources::child_name(relay);
    delete_owned(&deployments, &name, relay, observed.own_deployment.as_ref().map(|d| &d.metadata)).await?;
    let budget = Caches::get(&ctx.children.budgets, &ns, &name);
    let budgets = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns);
    delete_owned(&budgets, &name, relay, budget.as_ref()).await?;
    release_sidecars(ctx, relay, &ns, Some(target), Lookup::Cache).await?;
    Ok(())
}

/// Applies `plan`: the ConfigMap, the workload, the Service and the Ingress (deleted when
/// the spec has none), then reports rolls and config changes as events. Children that
/// would not change are not applied (see [`apply`]). Returns the relay's own Deployment
/// when it was applied.
async fn apply_plan(
    ctx: &Context,
    relay: &WebhookRelay,
    plan: &Plan,
    observed: &Observed,
) -> Result<Option<Deployment>> {
    let ns = relay.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    let name = resources::child_name(relay);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config_map = resources::config_map(relay, &plan.config);
    let current = observed.config_map.as_ref().map(|c| &c.metadata);
    let what = format!("ConfigMap {name}");
    apply(ctx, relay, &config_maps, ChildApply { name: &name, obj: &config_map, current, manager: MANAGER, what })
        .await?;
    let (selector, own_deployment, workload, rolled) = match &plan.workload {
        Workload::Standalone => {
            let (selector, applied) = apply_standalone(ctx, relay, plan, observed).await?;
            (selector, applied, format!("Deployment {name}"), name.clone())
        }
        Workload::Sidecar { target, selector, injected } => {
            apply_sidecar(ctx, relay, plan, observed, (target, *injected)).await?;
            (selector.clone(), None, format!("the relay container in Deployment {target}"), target.clone())
        }
    };
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = resources::service(relay, selector);
    let current = Caches::get(&ctx.children.services, &ns, &name);
    let what = format!("Service {name}");
    let child = ChildApply { name: &name, obj: &service, current: current.as_ref(), manager: MANAGER, what };
    apply(ctx, relay, &services, child).await?;

    let ingresses: Api<Ingress> = Api::namespaced(client, &ns);
    let current = Caches::get(&ctx.children.ingresses, &ns, &name);
    match resources::ingress(relay) {
        Some(ing) => {
            let what = format!("Ingress {name}");
            let child = ChildApply { name: &name, obj: &ing, current: current.as_ref(), manager: MANAGER, what };
            drop(apply(ctx, relay, &ingresses, child).await?)
        }
        None => drop(delete_owned(&ingresses, &name, relay, current.as_ref()).await?),
    }
    if plan.secrets_changed {
        info!(deployment = %rolled, secrets_hash = %plan.hashes.secrets, "a referenced Secret changed; rolling the pods");
        ctx.event(
            relay,
            EventType::Normal,
            "SecretsChanged",
            "Roll",
            format!(
                "a Secret the relay reads ({}) changed; rolling the pods of Deployment {rolled}",
                plan.secret_names.join(", ")
            ),
        )
        .await;
    }
    if plan.config_changed {
        let hash = &plan.hashes.config;
        info!(config_hash = %hash, "applied relay config");
        ctx.event(
            relay,
            EventType::Normal,
            "ConfigApplied",
            "Apply",
            format!("relay.yaml (config hash {hash}) applied to ConfigMap {name} and {workload}"),
        )
        .await;
    }
    Ok(own_deployment)
}

async fn write_status(relay: &WebhookRelay, ctx: &Context, status: &WebhookRelayStatus) -> Result<()> {
    // Unchanged (same conditions, transition times carried, same queue figures): no write,
    // so a thousand idle relays cost the API server nothing between changes.
    if relay.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<WebhookRelay> = Api::namespaced(ctx.client.clone(), &relay.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": WebhookRelay::api_version(&()),
        "kind": WebhookRelay::kind(&()),
        "status": status,
    });
    api.patch_status(&relay.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Warning and Normal events for condition changes worth a human's attention.
async fn announce(relay: &WebhookRelay, ctx: &Context, new: &WebhookRelayStatus) {
    let old = relay.status.as_ref();
    let changed = |t: &str| {
        let (o, n) = (status::find(old, t), status::find(Some(new), t));
        match (o, n) {
            (_, None) => None,
            (Some(o), Some(n)) if o.status == n.status && o.reason == n.reason && o.message == n.message => None,
            (_, Some(n)) => Some(n.clone()),
        }
    };
    if let Some(c) = changed(status::READY) {
        if c.status == "True" {
            ctx.event(relay, EventType::Normal, "Ready", "Reconcile", c.message).await;
        } else {
            ctx.event(relay, EventType::Warning, &c.reason, "Reconcile", c.message).await;
        }
    }
    if let Some(c) = changed(status::REDIS_PERSISTENT)
        && c.status == "False"
    {
        ctx.event(relay, EventType::Warning, &c.reason, "CheckRedis", c.message).await;
    }
    // The recorder folds events of one reason into a series that keeps the first note, so
    // each failure reason gets an event reason of its own: GenesysWebhookUrlMismatch, ...
    if let Some(c) = changed(status::GENESYS_WEBHOOK_VERIFIED) {
        if c.status == "True" {
            ctx.event(relay, EventType::Normal, status::GENESYS_WEBHOOK_VERIFIED, "CheckGenesys", c.message).await;
        } else {
            ctx.event(relay, EventType::Warning, &format!("Genesys{}", c.reason), "CheckGenesys", c.message).await;
        }
    }
}

/// Reconciles one WebhookRelay: observe, plan, apply, probe Redis, write status.
#[tracing::instrument(skip_all, fields(relay = %key(&relay)))]
pub async fn reconcile(relay: Arc<WebhookRelay>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer();
    let k = key(&relay);
    let ns = relay.namespace().unwrap_or_default();

    if relay.meta().deletion_timestamp.is_some() {
        ctx.genesys.forget(&relay.uid().unwrap_or_default());
        if relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
            release_sidecars(&ctx, &relay, &ns, None, Lookup::Fresh).await?;
            let api: Api<WebhookRelay> = Api::namespaced(ctx.client.clone(), &ns);
            set_finalizer(&api, &relay, false).await?;
        }
        return Ok(Action::await_change());
    }

    let endpoint = resources::endpoint(&relay);
    ctx.children.ready().await;
    let observed = observe(&relay, &ctx).await?;
    let credentials = relay.spec.genesys.as_ref().and_then(|g| observed.secret(&g.credentials_secret_ref.name));
    let outcome = async {
        let plan = plan(&relay, &observed)?;
        let applied = apply_plan(&ctx, &relay, &plan, &observed).await?;
        let r = &plan.redis;
        let probe = ctx.redis.probe_with(&r.connect_options(), relay_id(&relay)?.as_str()).await;
        Ok::<_, Error>((probe, applied))
    };
    // The Genesys check (a call to Genesys Cloud when due) runs alongside apply and probe.
    let (probed, genesys) = tokio::join!(outcome, ctx.genesys.check(&relay, &endpoint, credentials, &ctx.metrics));
    match probed {
        Ok((probe, applied)) => {
            // A Deployment this reconcile created is judged from the API server's answer,
            // not reported as missing until the watch brings it.
            let workload = observed.workload.clone().or_else(|| applied.as_ref().map(WorkloadState::of));
            let outcome = Outcome::Probed { probe: &probe, workload: workload.as_ref() };
            let s = status::desired_status(&relay, &outcome, endpoint, genesys.as_ref(), Timestamp::now());
            write_status(&relay, &ctx, &s).await?;
            announce(&relay, &ctx, &s).await;
            if let Persistence::Unknown(why) = &probe.persistence {
                debug!(why = %why, "Redis persistence unknown");
            }
            if status::is_ready(Some(&s)) {
                ctx.succeeded(&k);
                Ok(Action::requeue(ctx.refresh_jittered()))
            } else {
                ctx.metrics.failed("redis_unreachable");
                Ok(Action::requeue(ctx.backoff(&k).min(ctx.refresh_jittered())))
            }
        }
        Err(e) if e.reason().is_some() => {
            ctx.metrics.failed(e.metric_label());
            warn!(error = %e, "relay needs a fix");
            let s = status::desired_status(&relay, &Outcome::Blocked(&e), endpoint, genesys.as_ref(), Timestamp::now());
            write_status(&relay, &ctx, &s).await?;
            announce(&relay, &ctx, &s).await;
            Ok(Action::requeue(ctx.backoff(&k)))
        }
        Err(e) => Err(e),
    }
}

/// Transient failures (API errors): count, log, retry with backoff.
pub fn error_policy(relay: Arc<WebhookRelay>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(err.metric_label());
    let k = key(&relay);
    warn!(relay = %k, error = %err, "reconcile failed");
    Action::requeue(ctx.backoff(&k))
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until a shutdown signal arrives.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let relays: Api<WebhookRelay> = api_for(&client, ns);
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let (reader, writer) = reflector::store();
    // Only spec changes (and deletion) trigger a reconcile; status writes do not, or the
    // queue figures would keep every relay reconciling in a loop. A period refreshes them.
    let relay_stream = watcher(relays, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    // The children's watches trigger reconciles of their owner and, for the kinds read
    // only to decide whether an apply or delete is needed, fill `ctx.children`.
    let writers = ctx.writers.lock().expect("writers lock").take().expect("controller::run is called once");
    let services = watcher(api_for::<PartialObjectMeta<Service>>(&client, ns), owned.clone())
        .default_backoff()
        .reflect(writers.services)
        .touched_objects();
    let budgets = watcher(api_for::<PartialObjectMeta<PodDisruptionBudget>>(&client, ns), owned.clone())
        .default_backoff()
        .reflect(writers.budgets)
        .touched_objects();
    let ingresses = watcher(api_for::<PartialObjectMeta<Ingress>>(&client, ns), owned.clone())
        .default_backoff()
        .reflect(writers.ingresses)
        .touched_objects();
    let sidecars = watcher(
        api_for::<PartialObjectMeta<Deployment>>(&client, ns),
        watcher::Config::default().labels(SIDECAR_OF_LABEL),
    )
    .default_backoff()
    .reflect(writers.sidecars)
    .touched_objects();
    // Deleted relays are not reconciled; their records of what was applied go here.
    let relays_now = reader.clone();
    let pruner = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(300));
            loop {
                every.tick().await;
                let live: std::collections::HashSet<String> =
                    relays_now.state().iter().filter_map(|r| r.uid()).collect();
                ctx.applied.retain(|uid| live.contains(uid));
            }
        }
    });
    // Whole objects (read by `observe`), less managedFields: the caches' biggest part.
    let config_maps = watcher(api_for::<ConfigMap>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|c| c.managed_fields_mut().clear())
        .reflect(writers.config_maps)
        .touched_objects();
    let deployments = watcher(api_for::<Deployment>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|d| d.managed_fields_mut().clear())
        .reflect(writers.deployments)
        .touched_objects();
    Controller::for_stream(relay_stream, reader)
        .owns_stream(config_maps)
        .owns_stream(deployments)
        .owns_stream(services)
        .owns_stream(budgets)
        .owns_stream(ingresses)
        .watches_stream(sidecars, |d| {
            let relay = d.labels().get(SIDECAR_OF_LABEL)?.clone();
            Some(ObjectRef::new(&relay).within(&d.namespace()?))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(relay = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    pruner.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn relay(example: &str) -> WebhookRelay {
        let mut r: WebhookRelay = serde_yaml::from_str(example).unwrap();
        r.metadata.namespace = Some("cx".into());
        r.metadata.uid = Some("0b9a3c4e-1111-2222-3333-444455556666".into());
        r
    }

    fn standalone() -> WebhookRelay {
        relay(include_str!("../../examples/webhookrelay.yaml"))
    }

    #[test]
    fn retries_back_off_per_retry_not_per_event_triggered_reconcile() {
        let r = Retries::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(r.failed("cx/a", t0), s(5));
        // Seven reconciles triggered by watch events before the retry was due: the same retry.
        for ms in [100, 400, 900, 1500, 2200, 2900, 3000] {
            assert_eq!(r.failed("cx/a", t0 + Duration::from_millis(ms)), s(5) - Duration::from_millis(ms));
        }
        assert_eq!(r.failed("cx/a", t0 + s(5)), s(10), "the retry failed: doubled");
        assert_eq!(r.failed("cx/a", t0 + s(6)), s(9));
        assert_eq!(r.failed("cx/a", t0 + s(15)), s(20));
        assert_eq!(r.failed("cx/b", t0 + s(15)), s(5), "per relay");
        r.succeeded("cx/a");
        assert_eq!(r.failed("cx/a", t0 + s(40)), s(5), "a success starts over");
    }

    fn secret(name: &str, version: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        }
    }

    /// The example's Secrets, all present.
    fn observed() -> Observed {
        let mut o = Observed::default();
        for s in [
            secret("relay-redis", "10", &[("url", "redis://relay-redis.cx.svc:6379/")]),
            secret("genesys-webhook", "11", &[("secret", "0123456789abcdef0123")]),
            secret("relay-admin", "12", &[("token", "t")]),
            secret("genesys-oauth", "13", &[("clientId", "id"), ("clientSecret", "s")]),
        ] {
            o.secrets.insert(s.metadata.name.clone().unwrap(), Some(s));
        }
        o
    }

    #[test]
    fn plan_renders_the_config_and_reads_the_redis_url_from_the_secret() {
        let r = standalone();
        assert_eq!(referenced_secrets(&r), ["genesys-oauth", "genesys-webhook", "relay-admin", "relay-redis"]);
        let p = plan(&r, &observed()).unwrap();
        assert_eq!(p.workload, Workload::Standalone);
        assert_eq!(p.yaml, p.config.to_yaml());
        assert_eq!(p.hashes.config, resources::config_hash(&p.yaml));
        assert_eq!(p.redis.url, "redis://relay-redis.cx.svc:6379/");
        assert!(p.redis.tls.is_none());
        assert!(p.config_changed, "no ConfigMap yet");
        assert!(!p.secrets_changed, "nothing ran before: no roll to report");
        assert_eq!(p.secret_names, ["genesys-oauth", "genesys-webhook", "relay-admin", "relay-redis"]);
    }

    #[test]
    fn plan_notices_what_changed_since_the_last_apply() {
        let r = standalone();
        let first = plan(&r, &observed()).unwrap();
        let mut o = observed();
        o.config_map = Some(resources::config_map(&r, &first.config));
        let defaults = WorkloadDefaults { relay_image: "img".into() };
        o.own_deployment = Some(resources::deployment(&r, &defaults, &first.hashes, &first.config));
        let again = plan(&r, &o).unwrap();
        assert!(!again.config_changed && !again.secrets_changed, "unchanged");
        // A Secret rotated: new resourceVersion, a new secrets hash, a roll to report.
        o.secrets.insert("genesys-webhook".into(), Some(secret("genesys-webhook", "99", &[("secret", "rotated")])));
        let rotated = plan(&r, &o).unwrap();
        assert!(rotated.secrets_changed && !rotated.config_changed);
        assert_ne!(rotated.hashes.secrets, first.hashes.secrets);
    }

    #[test]
    fn plan_stops_on_what_the_user_must_fix() {
        let r = standalone();
        let mut o = observed();
        o.secrets.insert("relay-redis".into(), None);
        let e = plan(&r, &o).unwrap_err();
        assert_eq!(e.reason(), Some("SecretNotFound"), "{e}");
        assert!(e.to_string().contains("spec.redis.urlSecretRef"), "{e}");
        let mut o = observed();
        o.secrets.insert("relay-redis".into(), Some(secret("relay-redis", "1", &[("uri", "x")])));
        assert_eq!(plan(&r, &o).unwrap_err().reason(), Some("SecretKeyNotFound"));

        let side = relay(include_str!("../../examples/webhookrelay-sidecar.yaml"));
        let e = plan(&side, &observed()).unwrap_err();
        assert_eq!(e.reason(), Some("TargetNotFound"), "{e}");
    }

    #[test]
    fn plan_reads_redis_passwords_and_refuses_a_url_the_relay_would_refuse() {
        let url = |u: &str| secret("relay-redis", "10", &[("url", u), ("password", "data-pw"), ("sentinel", "s-pw")]);
        let mut r = standalone();
        let key = |k: &str| Some(webhook_relay_api::crd::SecretKeyRef { name: "relay-redis".into(), key: k.into() });
        r.spec.redis.password_secret_ref = key("password");
        r.spec.redis.sentinel =
            Some(webhook_relay_api::crd::RedisSentinelSpec { password_secret_ref: key("sentinel") });
        let mut o = observed();
        o.secrets.insert("relay-redis".into(), Some(url("redis+sentinel://s1:26379,s2:26379/mymaster")));
        let p = plan(&r, &o).unwrap();
        assert_eq!(
            (p.redis.password.as_deref(), p.redis.sentinel_password.as_deref()),
            (Some("data-pw"), Some("s-pw"))
        );
        assert!(!format!("{:?}", p.redis).contains("pw"), "{:?}", p.redis);
        for (u, field) in [
            ("redis://relay-redis:6379/", "spec.redis.sentinel"),
            ("redis+sentinel://:hunter2@s1:26379", "spec.redis.urlSecretRef"),
        ] {
            o.secrets.insert("relay-redis".into(), Some(url(u)));
            let e = plan(&r, &o).unwrap_err();
            assert_eq!(e.reason(), Some("InvalidSpec"), "{e}");
            assert!(e.to_string().contains(field) && !e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn plan_of_a_sidecar_selects_the_targets_pods() {
        let side = relay(include_str!("../../examples/webhookrelay-sidecar.yaml"));
        let target_name = side.spec.workload.as_ref().unwrap().target_ref.as_ref().unwrap().name.clone();
        let mut o = observed();
        let mut target = Deployment::default();
        target.metadata.name = Some(target_name.clone());
        target.spec.selector.match_labels = Some([("app".to_string(), "orders-api".to_string())].into());
        o.target = Some(target.clone());
        let p = plan(&side, &o).unwrap();
        assert_eq!(
            p.workload,
            Workload::Sidecar {
                target: target_name,
                selector: [("app".to_string(), "orders-api".to_string())].into(),
                injected: false
            }
        );
        target.spec.selector.match_labels = None;
        o.target = Some(target);
        assert_eq!(plan(&side, &o).unwrap_err().reason(), Some("InvalidSpec"));
    }
}
