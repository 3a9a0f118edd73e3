//! What the operator knows of the relays' children without asking the API server, so an
//! idle relay costs it no writes and few reads:
//!
//! - [`Caches`]: watch caches (metadata only) of the owned Services, disruption budgets and
//!   Ingresses, and of the Deployments carrying an injected relay container, fed by the
//!   same watches that trigger reconciles;
//! - [`Applied`]: per child, a digest of what this operator last applied and the child's
//!   fingerprint (uid and generation, or resourceVersion where there is no generation)
//!   right after. An apply whose rendered object equals the last one, on a child whose
//!   fingerprint has not moved since (nobody edited, deleted or recreated it), is skipped.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

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
    pub services: reflector::store::Writer<PartialObjectMeta<Service>>,
    pub budgets: reflector::store::Writer<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: reflector::store::Writer<PartialObjectMeta<Ingress>>,
    pub sidecars: reflector::store::Writer<PartialObjectMeta<Deployment>>,
}

/// Metadata of the relays' children, as the watches last saw it.
#[derive(Clone)]
pub struct Caches {
    pub services: Store<PartialObjectMeta<Service>>,
    pub budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    /// Deployments labelled as carrying a relay's injected container.
    pub sidecars: Store<PartialObjectMeta<Deployment>>,
}

impl Caches {
    /// Empty caches and the writers that fill them.
    pub fn new() -> (Caches, Writers) {
        let (services, ws) = reflector::store();
        let (budgets, wb) = reflector::store();
        let (ingresses, wi) = reflector::store();
        let (sidecars, wd) = reflector::store();
        (
            Caches { services, budgets, ingresses, sidecars },
            Writers { services: ws, budgets: wb, ingresses: wi, sidecars: wd },
        )
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
