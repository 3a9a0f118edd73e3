//! What the operator knows of the relays' children without asking the API server, so an
//! idle relay costs it no writes and few reads:
//!
//! - [`Caches`]: watch caches of the owned ConfigMaps and Deployments (whole objects, less
//!   their managedFields), of the owned Services, disruption budgets and Ingresses and of
//!   the Deployments carrying an injected relay container (metadata only), fed by the same
//!   watches that trigger reconciles;
//! - [`SecretReads`]: reads of one Secret by many relays within a second share one `get`
//!   (the operator may only `get` Secrets, not list or watch them);
//! - [`Applied`]: per child, a digest of what this operator last applied and the child's
//!   fingerprint (uid and generation, or resourceVersion where there is no generation)
//!   right after. An apply whose rendered object equals the last one, on a child whose
//!   fingerprint has not moved since (nobody edited, deleted or recreated it), is skipped.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child's identity and version as its metadata says: changes when anyone but the
/// status writers changes it, and when it is deleted and created again.
pub fn fingerprint(meta: &ObjectMeta) -> Option<String> {
    let uid = meta.uid.as_deref()?;
    match (meta.generation, meta.resource_version.as_deref()) {
        (Some(g), _) => Some(format!("{uid}/g{g}")),
        (None, Some(rv)) => Some(format!("{uid}/rv{rv}")),
        (None, None) => None,
    }
}

/// SHA-256 of `obj` as JSON: what would be sent to the API server.
pub fn digest<T: Serialize>(obj: &T) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(obj).expect("a Kubernetes object serializes")).into()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    desired: [u8; 32],
    fingerprint: String,
}

/// What this process last applied to each relay's children, by relay uid and child
/// (`Kind/name`). Lost on restart: the first reconcile after it applies everything once.
#[derive(Debug, Default)]
pub struct Applied {
    by_relay: Mutex<HashMap<String, HashMap<String, Record>>>,
}

impl Applied {
    /// Whether applying `desired` to `child` of relay `relay_uid`, whose metadata is now
    /// `current` (`None`: not there), would change nothing.
    pub fn unchanged(&self, relay_uid: &str, child: &str, desired: &[u8; 32], current: Option<&ObjectMeta>) -> bool {
        let Some(now) = current.and_then(fingerprint) else { return false };
        let by_relay = self.by_relay.lock().expect("applied lock");
        by_relay.get(relay_uid).and_then(|c| c.get(child)) == Some(&Record { desired: *desired, fingerprint: now })
    }

    /// Records that `desired` was applied to `child`, which then had metadata `after`.
    pub fn record(&self, relay_uid: &str, child: &str, desired: [u8; 32], after: &ObjectMeta) {
        let mut by_relay = self.by_relay.lock().expect("applied lock");
        match fingerprint(after) {
            Some(fingerprint) => {
                by_relay
                    .entry(relay_uid.to_string())
                    .or_default()
                    .insert(child.to_string(), Record { desired, fingerprint });
            }
            None => drop(by_relay.get_mut(relay_uid).map(|c| c.remove(child))),
        }
    }

    /// Forgets `child` (deleted, or its apply failed).
    pub fn forget_child(&self, relay_uid: &str, child: &str) {
        if let Some(c) = self.by_relay.lock().expect("applied lock").get_mut(relay_uid) {
            c.remove(child);
        }
    }

    /// Keeps only the relays `live` says exist (deleted relays are not reconciled, so their
    /// records are dropped here).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.by_relay.lock().expect("applied lock").retain(|uid, _| live(uid));
    }

    /// How many relays have records (for tests and metrics).
    pub fn relays(&self) -> usize {
        self.by_relay.lock().expect("applied lock").len()
    }
}

/// The writers of [`Caches`], driven by the controller's watches (see `controller::run`).
pub struct Writers {
    pub config_maps: reflector::store::Writer<ConfigMap>,
    pub deployments: reflector::store::Writer<Deployment>,
    pub services: reflector::store::Writer<PartialObjectMeta<Service>>,
    pub budgets: reflector::store::Writer<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: reflector::store::Writer<PartialObjectMeta<Ingress>>,
    pub sidecars: reflector::store::Writer<PartialObjectMeta<Deployment>>,
}

/// Metadata of the relays' children, as the watches last saw it.
#[derive(Clone)]
pub struct Caches {
    pub config_maps: Store<ConfigMap>,
    /// The relays' own Deployments (Standalone mode).
    pub deployments: Store<Deployment>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    /// Deployments labelled as carrying a relay's injected container.
    pub sidecars: Store<PartialObjectMeta<Deployment>>,
}

impl Caches {
    /// Empty caches and the writers that fill them.
    pub fn new() -> (Caches, Writers) {
        let (config_maps, wc) = reflector::store();
        let (deployments, wdep) = reflector::store();
        let (services, ws) = reflector::store();
        let (budgets, wb) = reflector::store();
        let (ingresses, wi) = reflector::store();
        let (sidecars, wd) = reflector::store();
        (
            Caches { config_maps, deployments, services, budgets, ingresses, sidecars },
            Writers { config_maps: wc, deployments: wdep, services: ws, budgets: wb, ingresses: wi, sidecars: wd },
        )
    }

    /// Waits until every cache holds its watch's first full list, so a missing child means
    /// it does not exist (not that the list is still on its way).
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.config_maps.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.budgets.wait_until_ready(),
            self.ingresses.wait_until_ready(),
            self.sidecars.wait_until_ready(),
        );
    }

    /// Metadata of `name` in `namespace` from `store`, if the watch has seen it.
    pub fn get<K>(store: &Store<PartialObjectMeta<K>>, namespace: &str, name: &str) -> Option<ObjectMeta>
    where
        K: kube::Resource<DynamicType = ()> + Clone,
        PartialObjectMeta<K>: kube::Resource<DynamicType = ()> + Clone,
    {
        store.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone())
    }
}

/// How long one read of a Secret serves other relays' reads of it.
pub const SECRET_READ_REUSE: Duration = Duration::from_secs(1);

/// Coalesces reads of one Secret: a read within [`SECRET_READ_REUSE`] of the last `get`
/// of that Secret is served from it, so a thousand relays sharing a Redis URL Secret,
/// reconciled in a burst, cost a few `get`s instead of a thousand. A rotated Secret is
/// seen at most that much later. Expired reads are dropped as new ones come in.
#[derive(Default)]
pub struct SecretReads {
    recent: Mutex<HashMap<SecretKey, (Instant, Option<Secret>)>>,
}

/// (namespace, name).
type SecretKey = (String, String);

impl SecretReads {
    /// Secret `name` of `namespace` (`None`: it does not exist), read with `get` unless a
    /// read of it is recent enough.
    pub async fn get(&self, api: &kube::Api<Secret>, namespace: &str, name: &str) -> kube::Result<Option<Secret>> {
        let key = (namespace.to_string(), name.to_string());
        {
            let mut recent = self.recent.lock().expect("secret reads lock");
            recent.retain(|_, (at, _)| at.elapsed() < SECRET_READ_REUSE);
            if let Some((_, secret)) = recent.get(&key) {
                return Ok(secret.clone());
            }
        }
        let secret = api.get_opt(name).await?;
        self.recent.lock().expect("secret reads lock").insert(key, (Instant::now(), secret.clone()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, generation: Option<i64>, rv: &str) -> ObjectMeta {
        ObjectMeta { uid: Some(uid.into()), generation, resource_version: Some(rv.into()), ..ObjectMeta::default() }
    }

    #[test]
    fn an_apply_is_skipped_only_for_the_same_object_on_an_untouched_child() {
        let a = Applied::default();
        let (one, two) = (digest(&serde_json::json!({"a": 1})), digest(&serde_json::json!({"a": 2})));
        assert!(!a.unchanged("r", "Service/x", &one, Some(&meta("u", None, "5"))), "nothing applied yet");
        a.record("r", "Service/x", one, &meta("u", None, "5"));
        assert!(a.unchanged("r", "Service/x", &one, Some(&meta("u", None, "5"))));
        assert!(!a.unchanged("r", "Service/x", &two, Some(&meta("u", None, "5"))), "the rendered object changed");
        assert!(!a.unchanged("r", "Service/x", &one, Some(&meta("u", None, "6"))), "someone else wrote it");
        assert!(!a.unchanged("r", "Service/x", &one, Some(&meta("v", None, "5"))), "deleted and created again");
        assert!(!a.unchanged("r", "Service/x", &one, None), "deleted");
        // Where there is a generation, status writes (resourceVersion only) do not count.
        a.record("r", "Deployment/x", one, &meta("d", Some(3), "10"));
        assert!(a.unchanged("r", "Deployment/x", &one, Some(&meta("d", Some(3), "11"))));
        assert!(!a.unchanged("r", "Deployment/x", &one, Some(&meta("d", Some(4), "12"))), "spec edited");
        a.forget_child("r", "Deployment/x");
        assert!(!a.unchanged("r", "Deployment/x", &one, Some(&meta("d", Some(3), "11"))));
        a.retain(|uid| uid != "r");
        assert_eq!(a.relays(), 0);
    }
}
