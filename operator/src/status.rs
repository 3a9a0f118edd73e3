//! Builds the `status` of a WebhookRelay from what one reconcile saw: the outcome of
//! applying its children, the Redis probe and the Genesys webhook check. Pure, so the
//! condition logic is unit tested.

use crate::controller::WorkloadState;
use crate::error::Error;
use crate::genesys_check::WebhookCheck;
use crate::redis_probe::{IN_SYNC_LAG, MAX_REPLICAS_CHECKED, Persistence, Probe, Replication};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use webhook_relay_api::crd::{QueueStatus, WebhookRelay, WebhookRelayStatus};
use webhook_relay_store::{CircuitState, DestinationState};

/// Condition types the operator writes.
pub const READY: &str = "Ready";
pub const REDIS_REACHABLE: &str = "RedisReachable";
pub const REDIS_PERSISTENT: &str = "RedisPersistent";
/// Whether the relays may attempt the destination: False while its circuit breaker is open
/// (`CircuitOpen`) or it asked for a pause (`RetryAfter`).
pub const DOWNSTREAM_HEALTHY: &str = "DownstreamHealthy";
/// Only with `spec.redis.waitForReplicas` > 0: whether the primary has that many connected,
/// in-sync replicas (else intake answers 503 until it has).
pub const REDIS_REPLICATED: &str = "RedisReplicated";
/// Only with `spec.genesys`: whether the Open Messaging integration posts to `status.endpoint`.
pub const GENESYS_WEBHOOK_VERIFIED: &str = "GenesysWebhookVerified";

/// What a reconcile produced, as far as status is concerned.
pub enum Outcome<'a> {
    /// Children applied and Redis probed; `workload` is how the relay's Deployment stood
    /// (`None`: it did not exist yet, as on the first apply).
    Probed { probe: &'a Probe, workload: Option<&'a WorkloadState> },
    /// Something the user must fix; nothing was applied this time.
    Blocked(&'a Error),
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        // The apiserver caps a condition message at 32768 bytes.
        message: message.chars().take(1024).collect(),
        observed_generation: generation,
        last_transition_time: Time(*now),
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn carry_transitions(old: &[Condition], mut new: Vec<Condition>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

/// `RedisReplicated` for `spec.redis.waitForReplicas` = `wanted`.
fn replicated(wanted: u32, r: &Result<Replication, String>) -> (&'static str, &'static str, String) {
    match r {
        Err(why) => ("Unknown", "InfoRefused", why.clone()),
        Ok(r) if r.role != "master" => (
            "False",
            "NotPrimary",
            format!("the Redis URL points at a {} (role), not the primary: writes fail there", r.role),
        ),
        Ok(r) if r.in_sync >= wanted => (
            "True",
            "InSync",
            format!("{} of {} connected replica(s) in sync; waitForReplicas is {wanted}", r.in_sync, r.connected),
        ),
        Ok(r) => (
            "False",
            "TooFewReplicas",
            format!(
                "{} of {} connected replica(s) in sync (online, acknowledged within {IN_SYNC_LAG}s), waitForReplicas is \
                 {wanted}: intake answers 503 until enough replicas confirm each event",
                r.in_sync, r.connected
            ),
        ),
    }
}

/// `RedisPersistent` for `persistence`; `replication` says how many replicas it covers.
fn persistent(
    persistence: &Persistence,
    replication: &Result<Replication, String>,
) -> (&'static str, &'static str, String) {
    const DURABLE: &str = "appendonly yes, maxmemory-policy noeviction";
    match persistence {
        Persistence::Durable => {
            let replicas = replication.as_ref().map_or(0, |r| r.replicas.len());
            let covered = match replicas {
                0 => String::new(),
                n if n <= MAX_REPLICAS_CHECKED => format!(", on the primary and its {n} replica(s)"),
                n => {
                    format!(", on the primary and {MAX_REPLICAS_CHECKED} of its {n} replicas (the others not checked)")
                }
            };
            ("True", "Durable", format!("{DURABLE}{covered}"))
        }
        Persistence::AppendOnlyOff => (
            "False",
            "AppendOnlyOff",
            "appendonly is off: a Redis restart loses acknowledged events; set appendonly yes".into(),
        ),
        Persistence::Eviction(p) => (
            "False",
            "EvictionPolicy",
            format!("maxmemory-policy is {p}: memory pressure drops events; set maxmemory-policy noeviction"),
        ),
        Persistence::Unknown(why) => ("Unknown", "ConfigRefused", why.clone()),
        // A failover promotes a replica: what it would lose is lost.
        Persistence::Replica { replica, problem } => match problem.as_ref() {
            Persistence::AppendOnlyOff => (
                "False",
                "ReplicaAppendOnlyOff",
                format!(
                    "replica {replica}: appendonly is off: promoted after a failover, it loses acknowledged events \
                     when it restarts; set appendonly yes on every replica (the primary has {DURABLE})"
                ),
            ),
            Persistence::Eviction(p) => (
                "False",
                "ReplicaEvictionPolicy",
                format!(
                    "replica {replica}: maxmemory-policy is {p}: promoted after a failover, it drops events under \
                     memory pressure; set maxmemory-policy noeviction on every replica (the primary has {DURABLE})"
                ),
            ),
            Persistence::Unknown(why) => (
                "Unknown",
                "ReplicaNotChecked",
                format!(
                    "replica {replica}: {why}; the primary has {DURABLE}, but whether this replica keeps events once \
                     a failover promotes it is not known"
                ),
            ),
            // Not built by `persistence_across`.
            Persistence::Durable | Persistence::Replica { .. } => {
                ("Unknown", "ReplicaNotChecked", format!("replica {replica}: settings not read"))
            }
        },
    }
}

/// The `GenesysWebhookVerified` condition for `verdict`.
pub fn genesys_condition(verdict: &WebhookCheck, generation: Option<i64>, now: &Timestamp) -> Condition {
    let status = if verdict.verified { "True" } else { "False" };
    condition(GENESYS_WEBHOOK_VERIFIED, status, verdict.reason, verdict.message.clone(), generation, now)
}

/// The full status for `relay` after a reconcile with `outcome` and, when it has
/// `spec.genesys`, the Genesys check's `genesys` verdict (`None` leaves no such condition).
pub fn desired_status(
    relay: &WebhookRelay,
    outcome: &Outcome<'_>,
    endpoint: String,
    genesys: Option<&WebhookCheck>,
    now: Timestamp,
) -> WebhookRelayStatus {
    let generation = relay.metadata.generation;
    let old = relay.status.clone().unwrap_or_default();
    let c = |t: &str, s: &str, r: &str, m: String| condition(t, s, r, m, generation, &now);
    let wanted = relay.spec.redis.wait_for_replicas.unwrap_or(0).max(0) as u32;
    let (mut conditions, queue) = match outcome {
        Outcome::Blocked(err) => {
            let reason = err.reason().unwrap_or("ReconcileFailed");
            let redis_unknown =
                |t: &str| {
                    // Keep what was last seen of Redis while the spec is being fixed.
                    old.conditions.iter().find(|o| o.type_ == t).cloned().unwrap_or_else(|| {
                        c(t, "Unknown", "NotChecked", "Redis is checked once the spec is valid".into())
                    })
                };
            (
                [
                    Some(c(READY, "False", reason, err.to_string())),
                    Some(redis_unknown(REDIS_REACHABLE)),
                    Some(redis_unknown(REDIS_PERSISTENT)),
                    (wanted > 0).then(|| redis_unknown(REDIS_REPLICATED)),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
                old.queue.clone(),
            )
        }
        Outcome::Probed { probe, workload } => match &probe.stats {
            Err(e) => (
                vec![
                    c(
                        READY,
                        "False",
                        "RedisUnreachable",
                        format!("configuration applied, but Redis cannot be read: {e}"),
                    ),
                    c(REDIS_REACHABLE, "False", "ConnectFailed", e.message.clone()),
                    c(REDIS_PERSISTENT, "Unknown", "NotChecked", "Redis is not reachable".into()),
                ]
                .into_iter()
                .chain(
                    (wanted > 0).then(|| c(REDIS_REPLICATED, "Unknown", "NotChecked", "Redis is not reachable".into())),
                )
                .collect(),
                old.queue.clone(),
            ),
            Ok(stats) => {
                let (p_status, p_reason, p_message) = persistent(&probe.persistence, &probe.replication);
                let persistent = c(REDIS_PERSISTENT, p_status, p_reason, p_message);
                let (ready, reason, message) = workload_readiness(*workload);
                let (d_status, d_reason, d_message) = downstream_health(relay, probe.destination.as_ref());
                let replicated = (wanted > 0).then(|| {
                    let (status, reason, message) = replicated(wanted, &probe.replication);
                    c(REDIS_REPLICATED, status, reason, message)
                });
                (
                    [
                        Some(c(READY, ready, &reason, message)),
                        Some(c(REDIS_REACHABLE, "True", "Connected", "queue figures read from Redis".into())),
                        Some(persistent),
                        Some(c(DOWNSTREAM_HEALTHY, d_status, d_reason, d_message)),
                        replicated,
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                    Some(QueueStatus {
                        due: stats.due as i64,
                        in_flight: stats.in_flight as i64,
                        dead: stats.dead as i64,
                        oldest_due_age_seconds: stats.oldest_due_age.map(|d| d.as_secs() as i64),
                        blocked: stats.blocked as i64,
                        waiting_keys: stats.waiting_keys as i64,
                    }),
                )
            }
        },
    };
    conditions.extend(genesys.map(|v| genesys_condition(v, generation, &now)));
    WebhookRelayStatus {
        observed_generation: generation,
        endpoint: Some(endpoint),
        queue,
        conditions: carry_transitions(&old.conditions, conditions),
    }
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// The DownstreamHealthy condition's (status, reason, message) from the destination gate the
/// relays share in Redis: a Retry-After pause, then the circuit breaker (only with
/// `spec.delivery.circuitBreaker`; without one the destination's health is not judged).
fn downstream_health(relay: &WebhookRelay, d: Option<&DestinationState>) -> (&'static str, &'static str, String) {
    let Some(d) = d else {
        return ("Unknown", "NotRead", "the destination gate could not be read from Redis".into());
    };
    if let Some(until) = d.paused_until_ms {
        return (
            "False",
            "RetryAfter",
            format!(
                "the destination asked for a pause (429 or 503 with Retry-After): no attempts until {}",
                rfc3339(until)
            ),
        );
    }
    let breaker = relay.spec.delivery.as_ref().and_then(|x| x.circuit_breaker.as_ref());
    let Some(breaker) = breaker else {
        return ("Unknown", "NoCircuitBreaker", "set spec.delivery.circuitBreaker to have it judged".into());
    };
    let threshold =
        breaker.failure_threshold.unwrap_or(webhook_relay_api::config::defaults::failure_threshold() as i32);
    let since = d.since_ms.map_or_else(|| "unknown".into(), rfc3339);
    match d.circuit {
        CircuitState::Closed => (
            "True",
            "CircuitClosed",
            format!("{} consecutive failed attempt(s); the circuit opens at {threshold}", d.consecutive_failures),
        ),
        CircuitState::Open => (
            "False",
            "CircuitOpen",
            format!(
                "circuit open since {since} after {} consecutive failed attempts; no attempts until a probe at {}",
                d.consecutive_failures,
                d.open_until_ms.map_or_else(|| "any moment".into(), rfc3339)
            ),
        ),
        CircuitState::HalfOpen => {
            ("False", "CircuitOpen", format!("circuit open since {since}; one probe attempt is under way"))
        }
    }
}

/// The Ready condition's (status, reason, message) for a relay whose children are applied
/// and whose Redis answers: True while at least one relay pod is available.
fn workload_readiness(workload: Option<&WorkloadState>) -> (&'static str, String, String) {
    let Some(w) = workload else {
        return (
            "False",
            "WorkloadStarting".into(),
            "configuration applied; waiting for the relay Deployment's pods".into(),
        );
    };
    let pods = format!("Deployment {}: {}/{} relay pods available", w.deployment, w.available, w.desired);
    if w.available > 0 {
        return ("True", "Ready".into(), format!("configuration applied, Redis reachable, {pods}"));
    }
    if w.desired == 0 {
        return ("False", "ScaledToZero".into(), format!("{pods}: no relay pod runs to take events"));
    }
    match w.problems.first() {
        Some((pod, reason, message)) => {
            let more =
                if w.problems.len() > 1 { format!(" (and {} more pods)", w.problems.len() - 1) } else { String::new() };
            ("False", reason.clone(), format!("{pods}; pod {pod}: {reason}: {message}{more}"))
        }
        None => ("False", "NoRelayPodAvailable".into(), format!("{pods}; waiting for them to become ready")),
    }
}

/// Whether `status` says Ready=True.
pub fn is_ready(status: Option<&WebhookRelayStatus>) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY && c.status == "True"))
}

/// The condition of `type_` in `status`.
pub fn find<'a>(status: Option<&'a WebhookRelayStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use webhook_relay_api::render::SpecError;
    use webhook_relay_store::Stats;

    fn relay() -> WebhookRelay {
        let mut r: WebhookRelay = serde_yaml::from_str(include_str!("../../examples/webhookrelay.yaml")).unwrap();
        r.metadata.namespace = Some("cx".into());
        r.metadata.generation = Some(3);
        r
    }

    fn running() -> WorkloadState {
        WorkloadState { deployment: "orders-relay".into(), desired: 2, available: 2, problems: vec![] }
    }

    fn refused(message: &str) -> crate::redis_probe::ProbeError {
        crate::redis_probe::ProbeError { kind: crate::redis_probe::ProbeFailure::Connect, message: message.into() }
    }

    fn ok_probe(p: Persistence) -> Probe {
        Probe {
            stats: Ok(Stats {
                due: 12,
                in_flight: 2,
                dead: 3,
                oldest_due_age: Some(Duration::from_secs(95)),
                now_ms: 0,
                blocked: 4,
                waiting_keys: 1,
                oldest_blocked: Some(("conversation-1".into(), 0)),
            }),
            persistence: p,
            destination: Some(DestinationState::default()),
            replication: Ok(Replication { role: "master".into(), connected: 1, in_sync: 1, replicas: vec![] }),
        }
    }

    #[test]
    fn replication_is_reported_only_when_the_relay_waits_for_replicas() {
        let status = |wanted: Option<i32>, replication: Result<Replication, String>| {
            let mut r = relay();
            r.spec.redis.wait_for_replicas = wanted;
            let p = Probe { replication, ..ok_probe(Persistence::Durable) };
            desired_status(
                &r,
                &Outcome::Probed { probe: &p, workload: Some(&running()) },
                "e".into(),
                None,
                Timestamp::now(),
            )
        };
        let one = |connected, in_sync| Ok(Replication { role: "master".into(), connected, in_sync, replicas: vec![] });
        assert!(status(None, one(0, 0)).conditions.iter().all(|c| c.type_ != REDIS_REPLICATED));
        let s = status(Some(1), one(2, 1));
        assert_eq!(
            (get(&s, REDIS_REPLICATED).status.as_str(), get(&s, REDIS_REPLICATED).reason.as_str()),
            ("True", "InSync")
        );
        let s = status(Some(2), one(2, 1));
        let c = get(&s, REDIS_REPLICATED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TooFewReplicas"));
        assert!(
            c.message.starts_with("1 of 2 connected replica(s) in sync") && c.message.contains("503"),
            "{}",
            c.message
        );
        assert_eq!(get(&s, READY).status, "True", "the relay runs; each event waits");
        let s = status(Some(1), Ok(Replication { role: "slave".into(), ..Replication::default() }));
        assert_eq!(get(&s, REDIS_REPLICATED).reason, "NotPrimary");
        let s = status(Some(1), Err("INFO replication refused: NOPERM".into()));
        assert_eq!(get(&s, REDIS_REPLICATED).status, "Unknown");
    }

    fn get<'a>(s: &'a WebhookRelayStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn healthy_relay_is_ready_with_queue_figures() {
        let p = ok_probe(Persistence::Durable);
        let s = desired_status(
            &relay(),
            &Outcome::Probed { probe: &p, workload: Some(&running()) },
            "https://x/y".into(),
            None,
            Timestamp::now(),
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.queue,
            Some(QueueStatus {
                due: 12,
                in_flight: 2,
                dead: 3,
                oldest_due_age_seconds: Some(95),
                blocked: 4,
                waiting_keys: 1
            })
        );
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, REDIS_PERSISTENT).status, "True");
        assert!(is_ready(Some(&s)));
    }

    #[test]
    fn lossy_redis_is_reported_but_still_ready() {
        let status_with = |persistence| {
            let p = ok_probe(persistence);
            desired_status(
                &relay(),
                &Outcome::Probed { probe: &p, workload: Some(&running()) },
                "e".into(),
                None,
                Timestamp::now(),
            )
        };
        let s = status_with(Persistence::AppendOnlyOff);
        assert_eq!(
            (get(&s, REDIS_PERSISTENT).status.as_str(), get(&s, REDIS_PERSISTENT).reason.as_str()),
            ("False", "AppendOnlyOff")
        );
        assert_eq!(get(&s, READY).status, "True");
        let s = status_with(Persistence::Eviction("allkeys-lru".into()));
        assert_eq!(get(&s, REDIS_PERSISTENT).reason, "EvictionPolicy");
        let s = status_with(Persistence::Unknown("CONFIG GET refused: NOPERM".into()));
        assert_eq!(get(&s, REDIS_PERSISTENT).status, "Unknown");
    }

    #[test]
    fn a_replicas_settings_are_reported_naming_the_replica() {
        use crate::redis_probe::ReplicaAddr;
        let replica = ReplicaAddr { ip: "10.0.0.6".into(), port: 6380 };
        let on_replica = |problem| Persistence::Replica { replica: replica.clone(), problem: Box::new(problem) };
        let condition = |persistence, replicas: usize| {
            let replication = Replication {
                role: "master".into(),
                connected: replicas as u32,
                in_sync: replicas as u32,
                replicas: vec![replica.clone(); replicas],
            };
            let p = Probe { replication: Ok(replication), ..ok_probe(persistence) };
            let s = desired_status(
                &relay(),
                &Outcome::Probed { probe: &p, workload: Some(&running()) },
                "e".into(),
                None,
                Timestamp::now(),
            );
            assert_eq!(get(&s, READY).status, "True", "a replica's settings do not stop intake");
            get(&s, REDIS_PERSISTENT).clone()
        };
        let c = condition(on_replica(Persistence::AppendOnlyOff), 2);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ReplicaAppendOnlyOff"));
        assert!(
            c.message.starts_with("replica 10.0.0.6:6380: appendonly is off: promoted after a failover"),
            "{}",
            c.message
        );
        let c = condition(on_replica(Persistence::Eviction("allkeys-lru".into())), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ReplicaEvictionPolicy"));
        assert!(c.message.starts_with("replica 10.0.0.6:6380: maxmemory-policy is allkeys-lru"), "{}", c.message);
        let c = condition(on_replica(Persistence::Unknown("CONFIG GET refused: NOPERM".into())), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "ReplicaNotChecked"));
        assert!(c.message.starts_with("replica 10.0.0.6:6380: CONFIG GET refused: NOPERM; "), "{}", c.message);
        // The primary's own problems keep their reasons.
        assert_eq!(condition(Persistence::AppendOnlyOff, 1).reason, "AppendOnlyOff");
        let c = condition(Persistence::Durable, 2);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Durable"));
        assert_eq!(c.message, "appendonly yes, maxmemory-policy noeviction, on the primary and its 2 replica(s)");
        assert_eq!(condition(Persistence::Durable, 0).message, "appendonly yes, maxmemory-policy noeviction");
        assert!(condition(Persistence::Durable, 10).message.ends_with("8 of its 10 replicas (the others not checked)"));
    }

    #[test]
    fn downstream_health_follows_the_breaker_and_pauses() {
        let status_of = |relay: &WebhookRelay, d: DestinationState| {
            let p = Probe { destination: Some(d), ..ok_probe(Persistence::Durable) };
            let s = desired_status(
                relay,
                &Outcome::Probed { probe: &p, workload: Some(&running()) },
                "e".into(),
                None,
                Timestamp::now(),
            );
            let c = get(&s, DOWNSTREAM_HEALTHY).clone();
            (c.status, c.reason, c.message, get(&s, READY).status.clone())
        };
        let plain = relay();
        let mut guarded = relay();
        guarded.spec.delivery.get_or_insert_default().circuit_breaker =
            Some(webhook_relay_api::crd::CircuitBreakerSpec { failure_threshold: Some(10), open_for: None });
        let (st, reason, _, _) = status_of(&plain, DestinationState::default());
        assert_eq!((st.as_str(), reason.as_str()), ("Unknown", "NoCircuitBreaker"));
        let (st, reason, msg, _) =
            status_of(&guarded, DestinationState { consecutive_failures: 3, ..DestinationState::default() });
        assert_eq!((st.as_str(), reason.as_str()), ("True", "CircuitClosed"));
        assert!(msg.contains("3 consecutive") && msg.contains("opens at 10"), "{msg}");
        let open = DestinationState {
            circuit: CircuitState::Open,
            since_ms: Some(1_780_000_000_000),
            consecutive_failures: 12,
            open_until_ms: Some(1_780_000_030_000),
            ..DestinationState::default()
        };
        let (st, reason, msg, ready) = status_of(&guarded, open);
        assert_eq!((st.as_str(), reason.as_str()), ("False", "CircuitOpen"));
        assert!(msg.contains("since 2026-05-28T20:26:40Z") && msg.contains("12 consecutive"), "{msg}");
        assert!(msg.contains("probe at 2026-05-28T20:27:10Z"), "{msg}");
        assert_eq!(ready, "True", "an open circuit is the downstream's problem, not the relay's");
        let half = DestinationState { circuit: CircuitState::HalfOpen, ..open };
        assert_eq!(status_of(&guarded, half).1, "CircuitOpen");
        let paused = DestinationState { paused_until_ms: Some(1_780_000_003_000), ..DestinationState::default() };
        let (st, reason, msg, _) = status_of(&plain, paused);
        assert_eq!((st.as_str(), reason.as_str()), ("False", "RetryAfter"));
        assert!(msg.contains("2026-05-28T20:26:43Z"), "{msg}");
    }

    #[test]
    fn invalid_spec_is_not_ready_with_a_reason_naming_the_field() {
        let err = Error::InvalidSpec(SpecError {
            field: "spec.destination.url".into(),
            message: "must be http or https".into(),
        });
        let s = desired_status(&relay(), &Outcome::Blocked(&err), "e".into(), None, Timestamp::now());
        let ready = get(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
        assert!(ready.message.contains("spec.destination.url"));
        assert_eq!(get(&s, REDIS_REACHABLE).status, "Unknown");
    }

    #[test]
    fn unreachable_redis_is_not_ready() {
        let p = Probe {
            stats: Err(refused("connection refused")),
            persistence: Persistence::Unknown("x".into()),
            replication: Err("x".into()),
            destination: None,
        };
        let s = desired_status(
            &relay(),
            &Outcome::Probed { probe: &p, workload: Some(&running()) },
            "e".into(),
            None,
            Timestamp::now(),
        );
        assert_eq!(get(&s, READY).reason, "RedisUnreachable");
        assert_eq!(get(&s, REDIS_REACHABLE).status, "False");
    }

    #[test]
    fn genesys_verdict_becomes_a_condition_only_with_spec_genesys() {
        let p = ok_probe(Persistence::Durable);
        let mismatch = WebhookCheck {
            verified: false,
            reason: "WebhookUrlMismatch",
            message: "sends to https://old/, endpoint is https://new/".into(),
            transient: false,
        };
        let s = desired_status(
            &relay(),
            &Outcome::Probed { probe: &p, workload: Some(&running()) },
            "e".into(),
            Some(&mismatch),
            Timestamp::now(),
        );
        let c = get(&s, GENESYS_WEBHOOK_VERIFIED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "WebhookUrlMismatch"));
        assert_eq!(c.message, mismatch.message);
        assert_eq!(c.observed_generation, Some(3));
        // A wrong webhook URL does not make the relay unready: it still takes events.
        assert_eq!(get(&s, READY).status, "True");
        let ok = WebhookCheck { verified: true, reason: "WebhookUrlMatches", message: "ok".into(), transient: false };
        let s = desired_status(
            &relay(),
            &Outcome::Probed { probe: &p, workload: Some(&running()) },
            "e".into(),
            Some(&ok),
            Timestamp::now(),
        );
        assert_eq!(get(&s, GENESYS_WEBHOOK_VERIFIED).status, "True");
        // Also reported while the relay is blocked on something else.
        let err = Error::TargetNotFound { name: "api".into(), namespace: "cx".into() };
        let s = desired_status(&relay(), &Outcome::Blocked(&err), "e".into(), Some(&ok), Timestamp::now());
        assert_eq!(get(&s, GENESYS_WEBHOOK_VERIFIED).reason, "WebhookUrlMatches");
        // Without a verdict (no spec.genesys) the condition is left out, so applying the
        // status removes one written before.
        let mut r = relay();
        r.status = Some(s);
        let s = desired_status(
            &r,
            &Outcome::Probed { probe: &p, workload: Some(&running()) },
            "e".into(),
            None,
            Timestamp::now(),
        );
        assert!(find(Some(&s), GENESYS_WEBHOOK_VERIFIED).is_none());
    }

    #[test]
    fn ready_follows_the_relay_pods() {
        let p = ok_probe(Persistence::Durable);
        let ready = |w: Option<&WorkloadState>| {
            let s = desired_status(
                &relay(),
                &Outcome::Probed { probe: &p, workload: w },
                "e".into(),
                None,
                Timestamp::now(),
            );
            let c = get(&s, READY).clone();
            (c.status, c.reason, c.message)
        };
        let (st, reason, msg) = ready(Some(&running()));
        assert_eq!((st.as_str(), reason.as_str()), ("True", "Ready"));
        assert!(msg.contains("2/2 relay pods available"), "{msg}");
        let one = WorkloadState { available: 1, ..running() };
        assert_eq!(ready(Some(&one)).0, "True", "one pod takes events");
        assert_eq!(ready(None).1, "WorkloadStarting");
        let broken = WorkloadState {
            available: 0,
            problems: vec![
                (
                    "orders-relay-7d9f-abcde".into(),
                    "ErrImageNeverPull".into(),
                    "Container image \"nope:1\" is not present".into(),
                ),
                ("orders-relay-7d9f-fghij".into(), "ErrImageNeverPull".into(), "same".into()),
            ],
            ..running()
        };
        let (st, reason, msg) = ready(Some(&broken));
        assert_eq!((st.as_str(), reason.as_str()), ("False", "ErrImageNeverPull"));
        assert!(
            msg.contains("0/2 relay pods available")
                && msg.contains("orders-relay-7d9f-abcde")
                && msg.contains("1 more"),
            "{msg}"
        );
        let waiting = WorkloadState { available: 0, ..running() };
        assert_eq!(ready(Some(&waiting)).1, "NoRelayPodAvailable");
        let zero = WorkloadState { desired: 0, available: 0, ..running() };
        assert_eq!(ready(Some(&zero)).1, "ScaledToZero");
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut r = relay();
        let p = ok_probe(Persistence::Durable);
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        r.status =
            Some(desired_status(&r, &Outcome::Probed { probe: &p, workload: Some(&running()) }, "e".into(), None, t0));
        let t1 = Timestamp::from_second(1_700_000_100).unwrap();
        let again =
            desired_status(&r, &Outcome::Probed { probe: &p, workload: Some(&running()) }, "e".into(), None, t1);
        assert_eq!(get(&again, READY).last_transition_time, Time(t0));
        let down = Probe {
            stats: Err(refused("down")),
            persistence: Persistence::Unknown("x".into()),
            destination: None,
            replication: Err("x".into()),
        };
        let changed =
            desired_status(&r, &Outcome::Probed { probe: &down, workload: Some(&running()) }, "e".into(), None, t1);
        assert_eq!(get(&changed, READY).last_transition_time, Time(t1));
    }
}
