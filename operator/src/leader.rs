//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas only one runs the controller. Every write carries the resourceVersion it read,
//! so two candidates can never both win the same round.
//!
//! A leader that cannot renew within the lease duration stops (the process exits and is
//! restarted), rather than risk running next to a new leader.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tracing::{info, warn};

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew_every: Duration,
}

/// The lease spec after this candidate takes or renews it, or `None` if another holder's
/// lease is still valid at `now`.
pub fn claim(current: Option<&LeaseSpec>, me: &LeaseSettings, now: Timestamp) -> Option<LeaseSpec> {
    let duration_secs = me.duration.as_secs().max(1) as i32;
    let fresh = |transitions: i32, acquired: Timestamp| LeaseSpec {
        holder_identity: Some(me.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(cur) = current else { return Some(fresh(0, now)) };
    let holder = cur.holder_identity.as_deref().unwrap_or_default();
    let transitions = cur.lease_transitions.unwrap_or(0);
    if holder == me.identity {
        let acquired = cur.acquire_time.as_ref().map(|t| t.0).unwrap_or(now);
        return Some(fresh(transitions, acquired));
    }
    let expired = match (&cur.renew_time, cur.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => renewed.0 + SignedDuration::from_secs(i64::from(secs)) < now,
        _ => true,
    };
    if holder.is_empty() || expired { Some(fresh(transitions + 1, now)) } else { None }
}

/// One round: tries to take or renew the lease; true if we hold it afterwards.
pub async fn try_acquire(api: &Api<Lease>, me: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&me.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(me.name.clone()), ..ObjectMeta::default() },
                spec: claim(None, me, now),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let Some(spec) = claim(lease.spec.as_ref(), me, now) else { return Ok(false) };
            lease.spec = Some(spec);
            // replace() sends the resourceVersion we read: a concurrent writer makes this a 409.
            match api.replace(&me.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this process holds the lease.
pub async fn acquire(client: Client, me: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client, &me.namespace);
    info!(lease = %me.name, namespace = %me.namespace, identity = %me.identity, "waiting for leadership");
    loop {
        match try_acquire(&api, me).await {
            Ok(true) => {
                info!(identity = %me.identity, "became leader");
                return;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election: lease not readable"),
        }
        tokio::time::sleep(me.renew_every).await;
    }
}

/// Renews the lease until renewal has failed for a whole lease duration; then returns,
/// and the caller must stop acting as leader.
pub async fn hold(client: Client, me: LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client, &me.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(me.renew_every).await;
        match try_acquire(&api, &me).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                warn!(identity = %me.identity, "lost the lease to another holder");
                return;
            }
            Err(e) => warn!(error = %e, "could not renew the lease"),
        }
        if last_ok.elapsed() >= me.duration {
            warn!("lease not renewed within its duration");
            return;
        }
    }
}

/// Gives the lease up on shutdown so a standby takes over at once.
pub async fn release(client: Client, me: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client, &me.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&me.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(me.identity.as_str())
    {
        spec.holder_identity = None;
        if let Err(e) = api.replace(&me.name, &PostParams::default(), &lease).await {
            warn!(error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: &str) -> LeaseSettings {
        LeaseSettings {
            name: "webhook-relay-operator".into(),
            namespace: "ops".into(),
            identity: id.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn takes_a_missing_or_expired_lease_and_keeps_its_own() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let a = claim(None, &me("a"), t0).unwrap();
        assert_eq!(a.holder_identity.as_deref(), Some("a"));
        // b cannot take a's lease while it is fresh...
        assert!(claim(Some(&a), &me("b"), t0 + SignedDuration::from_secs(10)).is_none());
        // ...a renews it, keeping its acquire time...
        let renewed = claim(Some(&a), &me("a"), t0 + SignedDuration::from_secs(10)).unwrap();
        assert_eq!(renewed.acquire_time, a.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        // ...and b takes it once it has expired.
        let b = claim(Some(&renewed), &me("b"), t0 + SignedDuration::from_secs(26)).unwrap();
        assert_eq!(b.holder_identity.as_deref(), Some("b"));
        assert_eq!(b.lease_transitions, Some(1));
    }

    #[test]
    fn a_released_lease_is_free() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let mut a = claim(None, &me("a"), t0).unwrap();
        a.holder_identity = None;
        assert!(claim(Some(&a), &me("b"), t0).is_some());
    }
}
