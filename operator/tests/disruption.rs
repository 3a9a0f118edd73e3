//! Kubernetes' everyday disruptions on the test cluster, under a steady load of signed
//! webhooks: a relay pod force-deleted, a rolling update through the Ingress, the Redis pod
//! restarted; and the production defaults that make them safe (a PodDisruptionBudget the
//! eviction API honours, a grace period longer than the relay's drain, topology spread).
//! Each load test prints acknowledged / delivered / lost, and what was refused.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testkit::downstream::{RemoteDownstream, ScriptSpec};
use testkit::kube::*;
use testkit::load::{Load, LoadReport, Target, lost};
use testkit::wait::{wait_for, wait_for_within};
use webhook_relay_operator::resources::{CONFIG_HASH_ANNOTATION, GRACE_MARGIN_SECONDS};

/// The load tests take turns: the cluster, the relays and the load share two cores.
static LOAD: Mutex<()> = Mutex::new(());

/// Events per second of each load: steady, and far below what the relays take, so a
/// refusal is the disruption's doing and not overload.
const RATE: u32 = 40;

struct Setup {
    ns: Namespace,
    downstream: RemoteDownstream,
    _operator: Operator,
}

/// A namespace with a Redis (`run_redis`, or on a volume), the scripted downstream, the
/// example Secrets and the operator; `relay` is then applied: WebhookRelay `orders`
/// delivering to the downstream by its DNS name, with `extra` spec lines.
fn setup(prefix: &str, redis_on_volume: bool, extra: &str) -> Setup {
    let ns = Namespace::create(prefix);
    let redis_url = if redis_on_volume { run_redis_on_volume(&ns) } else { run_redis(&ns) };
    run_app(&ns, "downstream", DOWNSTREAM_IMAGE, 8080, &[], &[]);
    let downstream = RemoteDownstream { host: cluster_ip(&ns, "downstream"), port: 8080 };
    ns.example_secrets(&redis_url);
    let operator = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&orders(&ns, extra));
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    wait_available(&ns, "orders-relay", 2);
    Setup { ns, downstream, _operator: operator }
}

fn orders(ns: &Namespace, extra: &str) -> String {
    relay_manifest("orders", &format!("http://downstream.{}.svc:8080/events", ns.name), extra)
}

fn relay_pods(ns: &Namespace) -> Vec<Pod> {
    pods(ns, "app.kubernetes.io/instance=orders")
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap()
}

fn intake(p: &Pod) -> Target {
    Target::direct(SocketAddr::new(pod_ip(p).parse().unwrap(), 8080))
}

/// Waits until every acknowledged event was delivered (at most `limit`); returns the
/// figures line and fails the test on any lost event.
fn account(what: &str, report: &LoadReport, downstream: &RemoteDownstream, limit: Duration) -> String {
    let acknowledged = report.acknowledged();
    let t0 = Instant::now();
    let delivered = wait_for_within(limit, &format!("{what}: every acknowledged event delivered"), || {
        let d = downstream.delivered();
        lost(&acknowledged, &d).is_empty().then_some(d)
    });
    let missing = lost(&acknowledged, &delivered);
    assert!(missing.is_empty(), "{what}: lost {} acknowledged events: {missing:?}", missing.len());
    let twice = acknowledged.iter().filter(|id| delivered.get(*id).is_some_and(|n| *n > 1)).count();
    let line = format!(
        "{what}: {}; delivered {} of {} acknowledged ({} more than once), lost 0; all delivered {:.1}s after the load stopped",
        report.summary(),
        acknowledged.iter().filter(|id| delivered.contains_key(*id)).count(),
        acknowledged.len(),
        twice,
        t0.elapsed().as_secs_f64()
    );
    println!("{line}");
    line
}

fn run_for(load: &Load, d: Duration) {
    let sent = load.sent();
    std::thread::sleep(d);
    assert!(load.sent() > sent, "the load stalled");
}

#[test]
fn the_budget_lets_one_relay_pod_go_at_a_time_and_pods_outlive_the_relays_drain() {
    let s = setup("whr-pdb", false, "  workload: {replicas: 2}\n");
    let ns = &s.ns;

    // The budget: one pod at a time, over the relay's pods; the API computes it allows 1.
    let pdb = wait_for("PodDisruptionBudget orders-relay allowing 1 disruption", || {
        let p = ns.get::<PodDisruptionBudget>("orders-relay")?;
        let st = p.status.as_ref()?;
        (st.current_healthy == Some(2) && st.disruptions_allowed == Some(1)).then_some(p)
    });
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));

    // The pods as the API server admitted them: grace above the relay's own bound (5 s
    // shutdownDelay + 15 s intake drain + 7 s receipts for timeout 2s + 0.2 s), spread.
    let pods = relay_pods(ns);
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(28 + GRACE_MARGIN_SECONDS), "{}", name(p));
        let spread = spec.topology_spread_constraints.as_ref().expect("topology spread");
        assert_eq!(spread.len(), 2);
        assert!(spread.iter().all(|c| c.match_label_keys.as_deref() == Some(&["pod-template-hash".to_string()][..])));
    }

    // Evictions (what `kubectl drain` does): the first goes, the second is refused while
    // the first one's replacement is not ready yet.
    let (a, b) = (name(&pods[0]), name(&pods[1]));
    evict(ns, &a).unwrap_or_else(|e| panic!("evicting {a}: {e:?}"));
    let refused = evict(ns, &b).expect_err("a second eviction while one relay pod is down");
    assert!(refused.contains("TooManyRequests") && refused.contains("disruption budget"), "{refused}");
    println!("evict {a}: evicted; evict {b} right after: {refused}");
    wait_for_within(Duration::from_secs(120), "a ready replacement and the budget allowing 1 again", || {
        let p = ns.get::<PodDisruptionBudget>("orders-relay")?;
        let now = relay_pods(ns);
        let replaced = now.len() == 2 && now.iter().all(ready) && !now.iter().any(|p| name(p) == a);
        (replaced && p.status?.disruptions_allowed == Some(1)).then_some(())
    });
    evict(ns, &b).unwrap_or_else(|e| panic!("evicting {b} once the budget allows it: {e:?}"));
    println!("$ kubectl get pdb -n {}\n{}", ns.name, ns.kubectl(&["get", "pdb"]));

    // One replica: no budget (it would block every drain).
    ns.apply(&orders(ns, "  workload: {replicas: 1}\n"));
    wait_for("the PodDisruptionBudget deleted at 1 replica", || {
        ns.get::<PodDisruptionBudget>("orders-relay").is_none().then_some(())
    });
}

#[test]
fn a_relay_pod_force_deleted_under_load_loses_nothing() {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("whr-podloss", false, "  delivery: {initialDelay: 200ms, maxDelay: 1s}\n  workload: {replicas: 2}\n");
    let ns = &s.ns;
    // Every event's first attempt is refused (503; without Retry-After, which would pause the
    // whole destination) and every answer takes 1 s: the retries fall due on a timer both
    // pods' workers wait for, so the pod that
    // takes no load claims half of them, and it is killed (2 s after the force delete's
    // SIGTERM) with deliveries under lease.
    s.downstream.set_script(&ScriptSpec { fail_first: 1, delay_ms: 1000, ..ScriptSpec::default() });
    let pods = relay_pods(ns);
    let (keep, victim) = (&pods[0], &pods[1]);
    let load = Load::start(vec![intake(keep)], EXAMPLE_SIGNING_SECRET, "podloss", 4, RATE);
    // Both pods deliver (they share the queue): wait for the victim's own attempts.
    let victim_ip = pod_ip(victim);
    let victim_attempts = || {
        let m = testkit::http::request(&victim_ip, 9090, "GET", "/metrics", &[], "")?;
        Some(testkit::relay::metric_sum(&m.body, "webhook_relay_delivery_attempts_total"))
    };
    wait_for("the pod to be deleted delivering events", || (victim_attempts()? >= 10.0).then_some(()));
    let attempts_before = victim_attempts().unwrap();
    run_for(&load, Duration::from_secs(2));
    let sent_at_kill = load.sent();
    ns.kubectl(&["delete", "pod", &name(victim), "--grace-period=0", "--force"]);
    println!(
        "force-deleted {} (it had made {attempts_before} delivery attempts) after {sent_at_kill} events sent to {}",
        name(victim),
        name(keep)
    );
    run_for(&load, Duration::from_secs(10));
    let report = load.stop();
    assert!(report.refused().is_empty(), "the surviving pod refused events: {}", report.summary());
    // Leases of the lost pod expire (timeout 2s + 30 s margin) and the queue re-delivers them.
    account("pod force-deleted under load", &report, &s.downstream, Duration::from_secs(150));
    // The lost pod's leases expire before their events are attempted again: an event it had
    // claimed but not sent shows a gap in its attempt numbers, and one whose request was
    // under way when it died (the downstream saw it arrive, its answer was lost) waits the
    // lease out: its next attempt comes 20 s or more after it, where retries here are at most
    // 1 s apart plus the 1 s answer.
    let hits = s.downstream.hits();
    let recovered = report
        .acknowledged()
        .iter()
        .filter(|id| {
            let mut mine: Vec<_> = hits.iter().filter(|h| &h.id == *id).collect();
            mine.sort_by_key(|h| h.at_ms);
            let gap = mine.iter().map(|h| h.attempt).max().is_some_and(|max| (max as usize) > mine.len());
            let waited_out = mine.windows(2).any(|w| w[1].at_ms - w[0].at_ms >= 20_000);
            gap || waited_out
        })
        .count();
    println!("events whose delivery the lost pod held under lease, re-delivered after it expired: {recovered}");
    assert!(recovered > 0, "the force-deleted pod held no lease: the test did not test lease recovery");
}

#[test]
fn a_rolling_update_under_load_through_the_ingress_refuses_nothing_and_loses_nothing() {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let host = format!("hooks.{}.test", unique("roll"));
    let ingress = format!("  ingress: {{host: {host}, className: traefik}}\n");
    let spec = |max_delay: &str| {
        format!("  delivery: {{initialDelay: 200ms, maxDelay: {max_delay}}}\n  workload: {{replicas: 2}}\n{ingress}")
    };
    let s = setup("whr-roll", false, &spec("1s"));
    let ns = &s.ns;
    let env = cluster_env();
    let (ip, port) = (&env["INGRESS_IP"], &env["INGRESS_HTTP_PORT"]);
    let target = Target {
        url: format!("http://{host}:{port}/webhooks/genesys"),
        connect: Some(format!("{ip}:{port}").parse().unwrap()),
    };
    // Traefik picks the Ingress up within seconds: wait for the route before the load.
    wait_for_within(Duration::from_secs(60), "the Ingress routing to the relay", || {
        let probe = Load::start(vec![target.clone()], EXAMPLE_SIGNING_SECRET, "probe", 1, 10);
        std::thread::sleep(Duration::from_millis(300));
        (probe.stop().with_status(200) > 0).then_some(())
    });

    let before: HashSet<String> = relay_pods(ns).iter().map(name).collect();
    let hash_before = template_annotation(&ns.get::<Deployment>("orders-relay").unwrap(), CONFIG_HASH_ANNOTATION);
    let load = Load::start(vec![target], EXAMPLE_SIGNING_SECRET, "roll", 4, RATE);
    run_for(&load, Duration::from_secs(3));
    let t0 = Instant::now();
    ns.apply(&orders(ns, &spec("2s")));
    wait_for_within(Duration::from_secs(180), "the roll: 2 new pods ready, the old ones gone", || {
        let d = ns.get::<Deployment>("orders-relay")?;
        let rolled = template_annotation(&d, CONFIG_HASH_ANNOTATION) != hash_before;
        let all = pods(ns, "app.kubernetes.io/instance=orders");
        let done = all.len() == 2 && all.iter().all(|p| !before.contains(&name(p)) && ready(p));
        (rolled && done).then_some(())
    });
    let rolled_in = t0.elapsed();
    run_for(&load, Duration::from_secs(3));
    let report = load.stop();
    let line = account("rolling update through the Ingress", &report, &s.downstream, Duration::from_secs(120));
    println!("the roll took {:.1}s; refused during it: {}", rolled_in.as_secs_f64(), report.refused().len());
    let refused: Vec<_> = report.refused().into_iter().take(5).collect();
    assert!(refused.is_empty(), "requests refused during the roll: {refused:?}\n{line}");
}

#[test]
fn redis_restarted_under_load_answers_200_or_503_meanwhile_and_delivers_everything_acknowledged() {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    // Attempts enough to outlast the outage: nothing dead-letters while the downstream fails.
    let s = setup(
        "whr-redis",
        true,
        "  delivery: {maxAttempts: 1000, initialDelay: 200ms, maxDelay: 1s}\n  workload: {replicas: 2}\n",
    );
    let ns = &s.ns;
    // The downstream fails (503) until Redis is back: what intake acknowledges piles up in
    // Redis, so only Redis' AOF can carry it across the restart.
    s.downstream.set_script(&ScriptSpec { status: Some(503), ..ScriptSpec::default() });
    let targets: Vec<Target> = relay_pods(ns).iter().map(intake).collect();
    let load = Load::start(targets, EXAMPLE_SIGNING_SECRET, "redis", 4, RATE);
    run_for(&load, Duration::from_secs(4));
    let uid_before = ns.get::<Pod>("redis-0").unwrap().metadata.uid;
    let outage_from = load.answered();
    let t0 = Instant::now();
    ns.kubectl(&["delete", "pod", "redis-0", "--wait=false"]);
    wait_for_within(Duration::from_secs(120), "redis-0 back: a new pod, ready", || {
        let p = ns.get::<Pod>("redis-0")?;
        (p.metadata.uid != uid_before && ready(&p)).then_some(())
    });
    let back_after = t0.elapsed();
    let outage_to = load.answered();
    // The relays see Redis again (their readiness is a write probe) and take events again.
    wait_for_within(Duration::from_secs(60), "both relay pods ready again", || {
        let p = relay_pods(ns);
        (p.len() == 2 && p.iter().all(ready)).then_some(())
    });
    let answered = load.answered();
    run_for(&load, Duration::from_secs(4));
    s.downstream.set_script(&ScriptSpec::default());
    let report = load.stop();
    // While Redis restarts an event is either stored (in the restarted Redis, once the
    // client reconnected within the store timeout) and acknowledged, or refused with 503
    // for the sender to retry; nothing else.
    let during = &report.outcomes[outage_from..outage_to];
    let acked_during = during.iter().filter(|o| o.status == Some(200)).count();
    println!(
        "while Redis restarted: {} answers, {acked_during} acknowledged, {} 503; {}",
        during.len(),
        report.with_status(503),
        report.summary()
    );
    assert!(!during.is_empty(), "the load did not run through the restart: {}", report.summary());
    let other: Vec<_> = during.iter().filter(|o| !matches!(o.status, Some(200) | Some(503))).take(5).collect();
    assert!(other.is_empty(), "answers other than 200 or 503 while Redis restarted: {other:?}");
    assert!(
        report.outcomes[answered..].iter().any(|o| o.status == Some(200)),
        "no event acknowledged after Redis returned"
    );
    let not_503: Vec<_> = report.refused().into_iter().filter(|o| o.status != Some(503)).take(5).collect();
    println!("redis-0 back {:.1}s after its deletion; refusals other than 503: {not_503:?}", back_after.as_secs_f64());
    account("Redis pod restarted under load", &report, &s.downstream, Duration::from_secs(120));
}
