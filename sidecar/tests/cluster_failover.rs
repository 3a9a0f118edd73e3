//! A Redis Cluster failover under load, end to end: the built relay on 3 primaries + 3
//! replicas, a steady load of signed webhooks, and the primary of the relay's slot killed
//! with SIGKILL. Its replica is promoted; the killed node is started again and rejoins as
//! the new primary's replica. With `redis.waitForReplicas: 1` no event answered 200 is
//! lost; with 0 the loss (if any) is printed, and what was acknowledged after the failover
//! must arrive.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testkit::RedisCluster;
use testkit::downstream::{Downstream, always};
use testkit::load::{Load, LoadReport, Target, lost};
use testkit::redis::ClusterNode;
use testkit::relay::{RelayProcess, SECRET, config};
use testkit::wait::wait_until;

/// The scenarios take turns: six servers, the relay and the load share two cores.
static TURN: Mutex<()> = Mutex::new(());

/// Senders and events per second of the load: several senders, so some keep sending while
/// others wait for a `WAIT` to time out.
const SENDERS: usize = 8;
const RATE: u32 = 150;

/// How long the promoted primary runs without a replica, once the relay reached it, before
/// the killed node is back.
const REPLICA_GAP: Duration = Duration::from_secs(2);

/// The intake outcomes answered 200 (stored, or a duplicate of a stored event).
const ACKED: [&str; 2] = ["accepted", "duplicate"];

/// The 200s `relay` answered so far.
fn acked(relay: &RelayProcess) -> f64 {
    counted(relay.admin_port, &ACKED)
}

/// Intake requests with one of `outcomes` so far, from the relay's admin port (0 while it
/// does not answer).
fn counted(admin_port: u16, outcomes: &[&str]) -> f64 {
    let m = testkit::http::get(admin_port, "/metrics").map(|r| r.body).unwrap_or_default();
    let series = |o: &str| format!("webhook_relay_intake_requests_total{{outcome=\"{o}\"}}");
    outcomes.iter().map(|o| testkit::relay::metric_sum(&m, &series(o))).sum()
}

/// The load's event number of an id `<prefix>-<n>`.
fn number(id: &str) -> usize {
    id.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or_else(|| panic!("event id {id}"))
}

/// What one run saw.
struct Run {
    report: LoadReport,
    /// Acknowledged events never delivered, once the wait for them ended.
    lost: Vec<String>,
    /// Load events numbered from here on were sent after the first 200 that followed the kill.
    sent_at_recovery: usize,
    delivered: HashMap<String, usize>,
    /// 200s counted while the promoted primary had no replica.
    acked_without_replica: f64,
    /// The relay's `not_replicated` refusals.
    not_replicated: f64,
    /// The relay's log, for failure messages (the relay is gone by then).
    relay_log: String,
}

impl Run {
    /// The last `n` lines of the relay's log.
    fn log_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.relay_log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Runs the scenario with `redis.waitForReplicas: wait_for`; `deliver_within` bounds the
/// wait for every acknowledged event to reach the downstream.
fn failover_under_load(wait_for: u32, deliver_within: Duration) -> Run {
    let mut cluster = RedisCluster::start_with_replicas();
    let name = format!("t/failover{wait_for}");
    let due = format!("whr:{{{name}}}:due");
    let ds = Downstream::start_blocking("127.0.0.1:0", always(200));
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = format!(
        "{}redis:\n  waitForReplicas: {wait_for}\n",
        config(&name, l, a, &ds.url, "  maxAttempts: 50\n  initialDelay: 100ms\n  maxDelay: 1s")
    );
    let relay = RelayProcess::start(&yaml, &cluster.cluster_url(), l, a);
    let target = Target { url: relay.intake.clone(), connect: None };

    let warm = Load::start(vec![target.clone()], SECRET, "warm", 1, 20);
    assert!(
        wait_until(Duration::from_secs(20), || acked(&relay) >= 5.0),
        "the relay never acknowledged: {}",
        relay.log_text()
    );
    let warm = warm.stop();

    let primary = cluster.primary_of(&due);
    let replicas = cluster.replicas_of(primary);
    assert_eq!(replicas.len(), 1, "the primary of {due} has one replica");
    let load = Load::start(vec![target], SECRET, "ev", SENDERS, RATE);
    std::thread::sleep(Duration::from_secs(2));
    let acked_before = acked(&relay);
    assert!(acked_before > 50.0, "only {acked_before} acknowledged in 2 s of load: {}", relay.log_text());
    assert_eq!(cluster.primary_of(&due), primary, "the slot moved on its own before the kill");

    let sent_at_kill = load.sent();
    let killed_at = Instant::now();
    cluster.kill_node(primary);
    let baseline = acked(&relay);
    // Watches for the first 200 after the kill while the cluster fails over.
    let (promoted, failover_took, acked_without_replica, restarted, rejoined, first_200) = std::thread::scope(|s| {
        let admin = relay.admin_port;
        let watcher = s.spawn(move || {
            let seen = wait_until(Duration::from_secs(30), || counted(admin, &ACKED) > baseline);
            seen.then(|| killed_at.elapsed())
        });
        let promoted = cluster.wait_failover(&due, primary, Duration::from_secs(20));
        let failover_took = killed_at.elapsed();
        // For a while the promoted primary is the slot's only copy: what the relay
        // acknowledges now, one more failure loses. The window lasts until the relay has
        // had answers from it (its client may take a few seconds to find it), and a bit.
        let at_failover = counted(admin, &ACKED);
        let refused_at_failover = counted(admin, &["not_replicated"]);
        let reached = wait_until(Duration::from_secs(15), || {
            counted(admin, &ACKED) > at_failover || counted(admin, &["not_replicated"]) > refused_at_failover
        });
        assert!(reached, "the relay had no answer from the promoted primary within 15 s of the failover");
        std::thread::sleep(REPLICA_GAP);
        let acked_without_replica = counted(admin, &ACKED) - at_failover;
        // Then Kubernetes restarts the pod: the killed node rejoins as the promoted one's
        // replica, which `waitForReplicas: 1` needs before it can acknowledge anything again.
        let restarted = killed_at.elapsed();
        cluster.restart_node(primary, Duration::from_secs(30));
        (promoted, failover_took, acked_without_replica, restarted, killed_at.elapsed(), watcher.join().unwrap())
    });
    assert_eq!(promoted, replicas[0], "the killed primary's own replica took its slots");
    assert_eq!(cluster.replicas_of(promoted), vec![primary], "the killed node came back as the new primary's replica");
    let first_200 = first_200.unwrap_or_else(|| {
        panic!(
            "no 200 within 30 s of killing the primary ({} answered, {baseline} acknowledged before); log:\n{}",
            load.answered(),
            relay.log_text()
        )
    });
    let sent_at_recovery = load.sent();
    let acked_at_recovery = acked(&relay);
    std::thread::sleep(Duration::from_secs(3));
    let acked_after = acked(&relay) - acked_at_recovery;
    let report = load.stop();
    assert!(acked_after > 50.0, "only {acked_after} acknowledged in the 3 s after recovering: {}", report.summary());

    let acknowledged = report.acknowledged();
    let t0 = Instant::now();
    wait_until(deliver_within, || lost(&acknowledged, &ds.delivered()).is_empty());
    let delivered = ds.delivered();
    let missing = lost(&acknowledged, &delivered);
    let refused = report.refused();
    let unavailable = report.with_status(503);
    let no_answer = refused.iter().filter(|o| o.status.is_none()).count();
    let other = refused.len() - unavailable - no_answer;
    println!(
        "waitForReplicas {wait_for}: killed primary :{} after {sent_at_kill} events (warm-up {}); :{} promoted after {:.1}s, \
         {acked_without_replica} acknowledged while it had no replica; killed node restarted at {:.1}s, back as its \
         replica at {:.1}s; first 200 after the kill at {:.1}s",
        cluster.nodes[primary].port,
        warm.acknowledged().len(),
        cluster.nodes[promoted].port,
        failover_took.as_secs_f64(),
        restarted.as_secs_f64(),
        rejoined.as_secs_f64(),
        first_200.as_secs_f64()
    );
    println!(
        "waitForReplicas {wait_for}: sent {}, acknowledged (200) {}, 503 {unavailable}, no answer {no_answer}, other {other}; \
         lost {} of the acknowledged ({:.1}s waiting for deliveries); {} acknowledged after recovering",
        report.outcomes.len(),
        acknowledged.len(),
        missing.len(),
        t0.elapsed().as_secs_f64(),
        acknowledged.iter().filter(|id| number(id) >= sent_at_recovery).count()
    );
    let intake = |outcome: &str| counted(relay.admin_port, &[outcome]);
    println!(
        "waitForReplicas {wait_for}: {}; the relay counted 503 unavailable {}, not_replicated {}",
        report.summary(),
        intake("unavailable"),
        intake("not_replicated")
    );
    if !missing.is_empty() {
        describe_lost(&cluster, promoted, &name, &missing, &report, &relay);
    }
    let not_replicated = intake("not_replicated");
    let relay_log = relay.log_text();
    Run { report, lost: missing, sent_at_recovery, delivered, acked_without_replica, not_replicated, relay_log }
}

/// Prints what the promoted primary holds of each lost event and the relay's log lines
/// that name it, for whoever reads a failing run.
fn describe_lost(
    cluster: &RedisCluster,
    primary: usize,
    relay_name: &str,
    lost: &[String],
    report: &LoadReport,
    relay: &RelayProcess,
) {
    let log = relay.log_text();
    println!("lost ({}): {lost:?}", lost.len());
    for id in lost.iter().take(20) {
        let key = |k: &str| format!("whr:{{{relay_name}}}:{k}");
        let q = |args: &[&str]| cluster.cli_at(primary, args).unwrap_or_else(|e| format!("error: {e}"));
        let position = report.outcomes.iter().position(|o| &o.id == id);
        println!(
            "  {id}: answered #{position:?}; on the new primary: ev {} due {:?} inflight {:?} seen {:?}; log lines: {:?}",
            q(&["HEXISTS", &key("ev"), id]),
            q(&["ZSCORE", &key("due"), id]),
            q(&["ZSCORE", &key("inflight"), id]),
            q(&["ZSCORE", &key("seen"), id]),
            log.lines().filter(|l| l.contains(id.as_str())).take(5).collect::<Vec<_>>()
        );
    }
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    println!("relay warnings ({}), the first 30:", warnings.len());
    for l in warnings.iter().take(30) {
        println!("  {l}");
    }
}

#[test]
fn with_wait_for_replicas_1_a_cluster_failover_under_load_loses_no_acknowledged_event() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let run = failover_under_load(1, Duration::from_secs(90));
    assert!(
        run.lost.is_empty(),
        "waitForReplicas 1: {} acknowledged events lost in the failover: {:?}",
        run.lost.len(),
        run.lost
    );
    // While the promoted primary had no replica, the relay stored events but refused them
    // (503 not replicated) rather than acknowledge what one more failure would lose.
    // That refusal also shows the relay followed the failover to the promoted primary.
    assert_eq!(
        run.acked_without_replica,
        0.0,
        "acknowledged while the slot's only copy was the promoted primary; relay log:\n{}",
        run.log_tail(80)
    );
    assert!(
        run.not_replicated > 0.0,
        "no 503 not_replicated while the promoted primary had no replica; relay log:\n{}",
        run.log_tail(80)
    );
}

#[test]
fn with_wait_for_replicas_0_a_cluster_failover_under_load_delivers_what_came_after() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let run = failover_under_load(0, Duration::from_secs(60));
    println!(
        "waitForReplicas 0: {} acknowledged events lost (asynchronous replication: may well be 0 on loopback)",
        run.lost.len()
    );
    // The relay followed the failover: it stored on the promoted primary (requests held
    // across the kill may all succeed there, so a run without any refusal is fine).
    assert!(
        run.acked_without_replica > 0.0,
        "waitForReplicas 0 acknowledges on the promoted primary alone; relay log:\n{}",
        run.log_tail(80)
    );
    let after: HashSet<String> =
        run.report.acknowledged().into_iter().filter(|id| number(id) >= run.sent_at_recovery).collect();
    assert!(!after.is_empty(), "nothing acknowledged after the failover: {}", run.report.summary());
    let missing = lost(&after, &run.delivered);
    assert!(missing.is_empty(), "events acknowledged after the failover were not delivered: {missing:?}");
}

/// Reading `CLUSTER NODES`, which finding the slot's primary and its failover rests on.
#[test]
fn cluster_nodes_lines_parse_with_roles_failures_and_slots() {
    let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host-b master,fail - 1 2 2 disconnected 5461-10922 [5462->-c3]
c3 127.0.0.1:30003@40003 slave b2 0 5 3 connected
d4 :0@0 handshake - 0 0 0 disconnected
";
    let nodes = ClusterNode::parse_all(text);
    assert_eq!(nodes.len(), 4);
    assert!(nodes[0].myself() && nodes[0].is_primary() && nodes[0].serves(5460) && !nodes[0].serves(5461));
    assert_eq!((nodes[1].port, nodes[1].is_failed(), nodes[1].slots.clone()), (30002, true, vec![(5461, 10922)]));
    assert_eq!((nodes[2].is_primary(), nodes[2].primary_id.as_deref()), (false, Some("b2")));
    assert_eq!(nodes[3].port, 0, "an address not known yet");
}
