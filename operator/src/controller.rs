//! The reconciler: read the WebhookRelay and what it references, compute the desired
//! children (see [`crate::resources`]), server-side apply them, probe Redis, check the
//! Genesys integration's webhook URL when it is due (see [`crate::genesys_check`]), write status.
//!
//! Problems the user must fix (invalid spec, missing Secret or target) are not crashes:
//! they become `Ready=False` with a reason, a Warning event, and a retry with backoff.

use crate::error::{Error, Result, SecretUse};
use crate::genesys_check::Checker;
use crate::metrics::Metrics;
use crate::redis_probe::{self, Persistence, Probe};
use crate::resources::{
    self, MANAGER, SECRETS_HASH_ANNOTATION, SIDECAR_FINALIZER, SIDECAR_OF_LABEL, Settings, TemplateHashes,
};
use crate::status::{self, Outcome};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
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
use std::time::Duration;
use tracing::{debug, info, warn};
use webhook_relay_api::crd::{WebhookRelay, WebhookRelayStatus, WorkloadMode};
use webhook_relay_api::render::{
    REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE, relay_config, relay_id, secret_env, secret_files,
};
use webhook_relay_store::TlsMaterial;
use webhook_relay_util::retry::{Backoff, Jitter};

/// Wait before reconciling a failing relay again: 5 s after the first failure, doubling
/// per consecutive failure up to 5 minutes.
pub const RETRY_BACKOFF: Backoff = Backoff::doubling(Duration::from_secs(5), Duration::from_secs(300), Jitter::None);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Period of the status refresh (queue figures) for a healthy relay.
    pub refresh: Duration,
    /// The Genesys webhook check and its last verdict per relay.
    pub genesys: Checker,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        refresh: Duration,
        genesys: Checker,
    ) -> Self {
        Context { client, settings, recorder, metrics, refresh, genesys, failures: Mutex::new(HashMap::new()) }
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("failures lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        RETRY_BACKOFF.delay(*n)
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }

    async fn event(&self, relay: &WebhookRelay, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &relay.object_ref(&())).await {
            warn!(relay = %key(relay), error = %e, "could not publish event");
        }
    }
}

fn key(relay: &WebhookRelay) -> String {
    format!("{}/{}", relay.namespace().unwrap_or_default(), relay.name_any())
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K, manager: &str) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    Ok(api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(obj)).await?)
}

/// Deletes `name` if it exists and this relay is its controller.
async fn delete_owned<K>(api: &Api<K>, name: &str, relay: &WebhookRelay) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let Some(obj) = api.get_opt(name).await? else { return Ok(false) };
    let ours = obj.owner_references().iter().any(|o| Some(&o.uid) == relay.meta().uid.as_ref());
    if ours {
        api.delete(name, &DeleteParams::background()).await?;
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

/// Takes the relay container out of every Deployment it was injected into, but `keep`.
async fn release_sidecars(ctx: &Context, relay: &WebhookRelay, ns: &str, keep: Option<&str>) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{SIDECAR_OF_LABEL}={}", relay.name_any()));
    for d in api.list(&lp).await? {
        let name = d.name_any();
        if Some(name.as_str()) == keep {
            continue;
        }
        let body = resources::sidecar_release(ns, &name);
        api.patch(&name, &PatchParams::apply(&resources::sidecar_manager(relay)).force(), &Patch::Apply(&body)).await?;
        info!(relay = %key(relay), deployment = %name, "removed the relay container");
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

/// What a successful apply leaves for status.
struct Applied {
    probe: Probe,
}

async fn apply_all(relay: &WebhookRelay, ctx: &Context) -> Result<Applied> {
    let client = ctx.client.clone();
    let ns = relay.namespace().unwrap_or_default();
    let name = resources::child_name(relay);
    let config = relay_config(relay)?;
    let yaml = config.to_yaml();
    let hash = resources::config_hash(&yaml);

    // Every referenced Secret key must exist before anything is rolled out with it. Their
    // resourceVersions go into the pod template (see `resources::secrets_hash`), so the
    // pods roll when one is rotated: not at once (Secrets are not watched) but at the next
    // periodic reconcile, `--refresh` (30 s by default).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut redis_url = None;
    let mut versions = BTreeMap::new();
    let mut read = async |use_: SecretUse| -> Result<Vec<u8>> {
        let Some(secret) = secrets.get_opt(&use_.secret).await? else {
            return Err(Error::SecretNotFound { secret: use_, namespace: ns.clone() });
        };
        versions.insert(use_.secret.clone(), secret.resource_version().unwrap_or_default());
        let value = secret.data.as_ref().and_then(|d| d.get(&use_.key)).map(|b| b.0.clone());
        value.ok_or(Error::SecretKeyNotFound { secret: use_ })
    };
    for s in secret_env(&relay.spec) {
        let value = read(SecretUse::from(&s)).await?;
        if s.env == config.redis.url_env {
            redis_url = Some(String::from_utf8_lossy(&value).trim().to_string());
        }
    }
    // The Redis TLS files, mounted into the pods; the probe below trusts the same CA.
    let mut tls_files = BTreeMap::new();
    for f in secret_files(&relay.spec) {
        let value = read(SecretUse::from(&f)).await?;
        tls_files.insert(f.file, value);
    }
    let redis_tls = relay.spec.redis.tls.as_ref().map(|_| TlsMaterial {
        ca_pem: tls_files.get(REDIS_TLS_CA_FILE).cloned(),
        client: tls_files.get(REDIS_TLS_CERT_FILE).cloned().zip(tls_files.get(REDIS_TLS_KEY_FILE).cloned()),
    });

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mode = relay.mode();
    let target = match (mode, relay.spec.workload.as_ref().and_then(|w| w.target_ref.as_ref())) {
        (WorkloadMode::Sidecar, Some(t)) => match deployments.get_opt(&t.name).await? {
            Some(d) => Some(d),
            None => return Err(Error::TargetNotFound { name: t.name.clone(), namespace: ns }),
        },
        (WorkloadMode::Sidecar, None) => {
            return Err(Error::InvalidSpec(webhook_relay_api::render::SpecError {
                field: "spec.workload.targetRef".into(),
                message: "is required in Sidecar mode: name the Deployment to add the relay container to".into(),
            }));
        }
        _ => None,
    };

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let before = config_maps.get_opt(&name).await?;
    let changed =
        before.and_then(|cm| cm.data).and_then(|d| d.get(resources::CONFIG_KEY).cloned()).as_deref() != Some(&yaml);
    apply(&config_maps, &name, &resources::config_map(relay, &config), MANAGER).await?;

    let hashes = TemplateHashes { config: hash.clone(), secrets: resources::secrets_hash(&versions) };
    // What the workload's pods were started with; absent on the first apply (no roll to report).
    let previous_secrets = match &target {
        Some(t) => template_annotation(t, SECRETS_HASH_ANNOTATION),
        None => deployments.get_opt(&name).await?.and_then(|d| template_annotation(&d, SECRETS_HASH_ANNOTATION)),
    };
    let secrets_changed = previous_secrets.is_some_and(|p| p != hashes.secrets);

    let relays: Api<WebhookRelay> = Api::namespaced(client.clone(), &ns);
    let selector = match &target {
        None => {
            apply(&deployments, &name, &resources::deployment(relay, &ctx.settings, &hashes), MANAGER).await?;
            release_sidecars(ctx, relay, &ns, None).await?;
            if relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
                set_finalizer(&relays, relay, false).await?;
            }
            resources::selector_labels(relay)
        }
        Some(t) => {
            let target_name = t.name_any();
            let selector = t.spec.selector.match_labels.clone().unwrap_or_default();
            if selector.is_empty() {
                return Err(Error::InvalidSpec(webhook_relay_api::render::SpecError {
                    field: "spec.workload.targetRef".into(),
                    message: format!(
                        "Deployment {target_name} has no spec.selector.matchLabels for the relay Service to use"
                    ),
                }));
            }
            if !relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
                set_finalizer(&relays, relay, true).await?;
            }
            let injected = t
                .spec
                .template
                .spec
                .as_ref()
                .is_some_and(|p| p.containers.iter().any(|c| c.name == resources::CONTAINER));
            let patch = resources::sidecar_patch(relay, &ctx.settings, &target_name, &hashes);
            let pp = PatchParams::apply(&resources::sidecar_manager(relay)).force();
            deployments.patch(&target_name, &pp, &Patch::Apply(&patch)).await?;
            if !injected {
                ctx.event(
                    relay,
                    EventType::Normal,
                    "SidecarInjected",
                    "Inject",
                    format!("added the relay container to Deployment {target_name}"),
                )
                .await;
            }
            delete_owned(&deployments, &name, relay).await?;
            release_sidecars(ctx, relay, &ns, Some(&target_name)).await?;
            selector
        }
    };

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply(&services, &name, &resources::service(relay, selector), MANAGER).await?;

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    match resources::ingress(relay) {
        Some(ing) => {
            apply(&ingresses, &name, &ing, MANAGER).await?;
        }
        None => {
            delete_owned(&ingresses, &name, relay).await?;
        }
    }

    let workload = match &target {
        Some(t) => format!("the relay container in Deployment {}", t.name_any()),
        None => format!("Deployment {name}"),
    };
    if secrets_changed {
        let names: Vec<&str> = versions.keys().map(String::as_str).collect();
        let rolled = target.as_ref().map_or_else(|| name.clone(), |t| t.name_any());
        info!(relay = %key(relay), deployment = %rolled, secrets_hash = %hashes.secrets, "a referenced Secret changed; rolling the pods");
        ctx.event(
            relay,
            EventType::Normal,
            "SecretsChanged",
            "Roll",
            format!("a Secret the relay reads ({}) changed; rolling the pods of Deployment {rolled}", names.join(", ")),
        )
        .await;
    }
    if changed {
        info!(relay = %key(relay), config_hash = %hash, "applied relay config");
        ctx.event(
            relay,
            EventType::Normal,
            "ConfigApplied",
            "Apply",
            format!("relay.yaml (config hash {hash}) applied to ConfigMap {name} and {workload}"),
        )
        .await;
    }

    let url = redis_url.unwrap_or_default();
    let probe = redis_probe::probe(&url, config.redis.cluster, redis_tls, relay_id(relay)?.as_str()).await;
    Ok(Applied { probe })
}

async fn write_status(relay: &WebhookRelay, ctx: &Context, status: &WebhookRelayStatus) -> Result<()> {
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

/// Reconciles one WebhookRelay.
pub async fn reconcile(relay: Arc<WebhookRelay>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer();
    let k = key(&relay);
    let ns = relay.namespace().unwrap_or_default();

    if relay.meta().deletion_timestamp.is_some() {
        ctx.genesys.forget(&relay.uid().unwrap_or_default());
        if relay.finalizers().iter().any(|f| f == SIDECAR_FINALIZER) {
            release_sidecars(&ctx, &relay, &ns, None).await?;
            let api: Api<WebhookRelay> = Api::namespaced(ctx.client.clone(), &ns);
            set_finalizer(&api, &relay, false).await?;
        }
        return Ok(Action::await_change());
    }

    let endpoint = resources::endpoint(&relay);
    // The Genesys check (a call to Genesys Cloud when due) runs alongside apply and probe.
    let (applied, genesys) =
        tokio::join!(apply_all(&relay, &ctx), ctx.genesys.check(&ctx.client, &relay, &endpoint, &ctx.metrics));
    let genesys = genesys?;
    match applied {
        Ok(applied) => {
            let outcome = Outcome::Applied { probe: &applied.probe };
            let s = status::desired_status(&relay, &outcome, endpoint, genesys.as_ref(), Timestamp::now());
            write_status(&relay, &ctx, &s).await?;
            announce(&relay, &ctx, &s).await;
            if let Persistence::Unknown(why) = &applied.probe.persistence {
                debug!(relay = %k, why = %why, "Redis persistence unknown");
            }
            if status::is_ready(Some(&s)) {
                ctx.succeeded(&k);
                Ok(Action::requeue(ctx.refresh))
            } else {
                ctx.metrics.failed("redis_unreachable");
                Ok(Action::requeue(ctx.backoff(&k).min(ctx.refresh)))
            }
        }
        Err(e) if e.reason().is_some() => {
            ctx.metrics.failed(e.metric_label());
            warn!(relay = %k, error = %e, "relay needs a fix");
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
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(relay_stream, reader)
        .owns(api_for::<ConfigMap>(&client, ns), owned.clone())
        .owns(api_for::<Deployment>(&client, ns), owned.clone())
        .owns(api_for::<Service>(&client, ns), owned.clone())
        .owns(api_for::<Ingress>(&client, ns), owned)
        .watches(api_for::<Deployment>(&client, ns), watcher::Config::default().labels(SIDECAR_OF_LABEL), |d| {
            let relay = d.labels().get(SIDECAR_OF_LABEL)?.clone();
            Some(ObjectRef::new(&relay).within(&d.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(relay = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
