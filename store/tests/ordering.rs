//! Per-key ordered delivery (`delivery.ordering`, the `okey`/`ord`/`ohead`/`owait`/`blocked`
//! keys): one active event per key, the rest waiting in `blocked` (never in `due`), released in
//! receive order by ack, dead-letter, delete and trim, replays back at their place; against a
//! real redis-server, single and a 3-node Redis Cluster.

mod common;

use std::time::Duration;
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);
const LEASE: Duration = Duration::from_secs(30);
const KEEP: DeadBounds = DeadBounds { max_age: DAY, max_entries: 1000 };

fn id(s: &str) -> EventId {
    EventId::new(s).unwrap()
}

/// Events `(id, key)`; an empty key: unordered.
fn events(list: &[(&str, &str)]) -> Vec<NewEvent> {
    list.iter()
        .map(|(i, k)| NewEvent {
            id: id(i),
            body: format!("{{\"id\":\"{i}\"}}").into_bytes().into(),
            content_type: "application/json".into(),
            trace_context: None,
            ordering_key: (!k.is_empty()).then(|| k.to_string()),
        })
        .collect()
}

/// Claims what is due; returns the leases sorted by id.
async fn claim(s: &Store) -> Vec<Lease> {
    let mut got: Vec<Lease> = s.claim(100, LEASE).await.unwrap().events.into_iter().map(|e| e.lease).collect();
    got.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    got
}

fn ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.id.as_str()).collect()
}

async fn listed(s: &Store, state: EventState) -> Vec<String> {
    s.list(state, 100, None).await.unwrap().events.iter().map(|e| e.id.as_str().to_string()).collect()
}

fn failed() -> EventMeta {
    EventMeta { last_status: Some(503), last_error: Some("503".into()), ..Default::default() }
}

/// Every hash and set of the ordering keys is empty (nothing left behind).
async fn order_keys_empty(s: &Store) {
    let o = &s.keys().order;
    for key in [&o.okey, &o.ord, &o.ohead, &o.owait, &o.blocked] {
        let v = s.conn().cmd(redis::cmd("EXISTS").arg(key)).await.unwrap();
        assert_eq!(redis::from_redis_value::<i64>(v).unwrap(), 0, "{key} left behind");
    }
}

on_both!(
    only_the_first_event_of_a_key_is_due_and_an_ack_releases_the_next,
    a_dead_letter_releases_its_key_and_its_replay_goes_back_to_the_head,
    under_block_a_dead_letter_holds_its_key_until_replayed_or_deleted,
    trims_bulk_actions_and_a_relay_without_ordering_do_not_strand_a_key,
    a_bulk_replay_of_one_keys_dead_letters_keeps_their_order,
);

async fn only_the_first_event_of_a_key_is_due_and_an_ack_releases_the_next(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/order").await;
    let batch = events(&[("a1", "A"), ("b1", "B"), ("a2", "A"), ("u1", ""), ("a3", "A"), ("b2", "B"), ("a2", "A")]);
    let got = s.enqueue_many(&batch, DAY).await.unwrap();
    assert!(got[..6].iter().all(|e| matches!(e, Enqueued::Accepted { .. })), "waiting events are stored too: {got:?}");
    assert_eq!(got[6], Enqueued::Duplicate);

    let stats = s.stats().await.unwrap();
    assert_eq!((stats.due, stats.blocked, stats.waiting_keys), (3, 3, 2), "{stats:?}");
    assert_eq!(stats.oldest_blocked.as_ref().map(|(k, _)| k.as_str()), Some("A"));
    assert!(stats.oldest_due_age.is_some());
    assert_eq!(listed(&s, EventState::Blocked).await, ["a2", "a3", "b2"]);
    let a2 = s.get(&id("a2")).await.unwrap().unwrap();
    assert_eq!((a2.state, a2.ordering_key.as_deref()), (EventState::Blocked, Some("A")));
    assert_eq!(s.get(&id("u1")).await.unwrap().unwrap().ordering_key, None);
    assert_eq!(s.replay(&id("a2")).await.unwrap(), Replayed::Blocked, "a waiting event cannot jump its key");

    let first = claim(&s).await;
    assert_eq!(ids(&first), ["a1", "b1", "u1"], "one event per key, and the unordered one");
    assert!(claim(&s).await.is_empty(), "nothing else of A or B while their heads are in flight");

    // a1 delivered: a2 is due, a3 still waits. a2 retried: a3 still waits behind it.
    assert_eq!(s.ack_many(&[first[0].clone(), first[2].clone()]).await.unwrap(), [true, true]);
    let next = claim(&s).await;
    assert_eq!(ids(&next), ["a2"]);
    assert!(s.reschedule(&next[0], Duration::ZERO, &failed(), false).await.unwrap().is_some());
    // Claimed again under a short lease that expires (its holder died): recovered, the head
    // again, not a3.
    let short = s.claim(10, Duration::from_millis(1)).await.unwrap().events;
    assert_eq!(short.iter().map(|e| e.lease.id.as_str()).collect::<Vec<_>>(), ["a2"], "the retried head, not a3");
    tokio::time::sleep(Duration::from_millis(40)).await;
    let a2 = claim(&s).await;
    assert_eq!(ids(&a2), ["a2"]);
    assert!(s.ack(&a2[0]).await.unwrap());
    assert!(s.ack(&first[1]).await.unwrap());
    assert_eq!(ids(&claim(&s).await), ["a3", "b2"]);
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.blocked, stats.waiting_keys, stats.oldest_blocked), (0, 0, None));
}

async fn a_dead_letter_releases_its_key_and_its_replay_goes_back_to_the_head(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/order-dead").await;
    s.enqueue_many(&events(&[("a1", "A"), ("a2", "A"), ("a3", "A")]), DAY).await.unwrap();
    let a1 = claim(&s).await;
    assert!(s.dead_letter(&a1[0], &failed(), KEEP, false).await.unwrap());
    let a2 = claim(&s).await;
    assert_eq!(ids(&a2), ["a2"], "continue (the default): the next event is released");

    // a1 replayed while a2 is in flight: it waits, and comes before a3.
    assert_eq!(s.replay(&id("a1")).await.unwrap(), Replayed::FromDeadWaiting);
    assert_eq!(listed(&s, EventState::Blocked).await, ["a3", "a1"], "listed by when each began waiting");
    assert!(s.reschedule(&a2[0], Duration::from_secs(3600), &failed(), false).await.unwrap().is_some());
    assert!(claim(&s).await.is_empty(), "a2 waits an hour for its retry and holds its key");
    assert!(s.dead_letter(&claim_now(&s, "a2").await, &failed(), KEEP, false).await.unwrap());
    let a1 = claim(&s).await;
    assert_eq!(ids(&a1), ["a1"], "the replayed dead letter is the head");

    // a2 replayed while a1 is in flight waits; a1 delivered: a2 (received before a3) next.
    assert_eq!(s.replay(&id("a2")).await.unwrap(), Replayed::FromDeadWaiting);
    assert!(s.ack(&a1[0]).await.unwrap());
    let a2 = claim(&s).await;
    assert_eq!(ids(&a2), ["a2"]);
    assert!(s.ack(&a2[0]).await.unwrap());
    let a3 = claim(&s).await;
    assert_eq!(ids(&a3), ["a3"]);
    assert!(s.ack(&a3[0]).await.unwrap());
    order_keys_empty(&s).await;

    // A replay while the key's head is due (waiting for a retry), not in flight: the replayed
    // dead letter goes first and the head waits again.
    s.enqueue_many(&events(&[("b1", "B"), ("b2", "B")]), DAY).await.unwrap();
    let b1 = claim(&s).await;
    assert!(s.dead_letter(&b1[0], &failed(), KEEP, false).await.unwrap());
    let b2 = claim(&s).await;
    assert!(s.reschedule(&b2[0], Duration::from_secs(3600), &failed(), false).await.unwrap().is_some());
    assert_eq!(s.replay(&id("b1")).await.unwrap(), Replayed::FromDead);
    assert_eq!(listed(&s, EventState::Blocked).await, ["b2"]);
    let b1 = claim(&s).await;
    assert_eq!(ids(&b1), ["b1"]);
    assert!(s.ack(&b1[0]).await.unwrap());
    assert!(claim(&s).await.is_empty(), "b2 released at its retry time, an hour away, not now");
    let b2 = s.get(&id("b2")).await.unwrap().unwrap();
    let now = s.stats().await.unwrap().now_ms;
    assert_eq!(b2.state, EventState::Due);
    assert!(b2.score_ms > now + 3_500_000, "its backoff kept: due at {} (now {now})", b2.score_ms);
}

/// Claims `want` at once after making it due now (a replay of a due event).
async fn claim_now(s: &Store, want: &str) -> Lease {
    assert_eq!(s.replay(&id(want)).await.unwrap(), Replayed::FromDue);
    let got = claim(s).await;
    assert_eq!(ids(&got), [want]);
    got.into_iter().next().unwrap()
}

async fn under_block_a_dead_letter_holds_its_key_until_replayed_or_deleted(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/order-block").await;
    let s = s.on_dead_letter(OnDeadLetter::Block);
    s.enqueue_many(&events(&[("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B")]), DAY).await.unwrap();
    let first = claim(&s).await;
    assert_eq!(ids(&first), ["a1", "b1"]);
    assert!(s.dead_letter(&first[0], &failed(), KEEP, false).await.unwrap());
    assert!(s.ack(&first[1]).await.unwrap());
    let b2 = claim(&s).await;
    assert_eq!(ids(&b2), ["b2"], "key B flows on; A is blocked by its dead letter");
    assert!(claim(&s).await.is_empty());
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.dead, stats.blocked, stats.waiting_keys), (1, 2, 1), "{stats:?}");
    assert_eq!(stats.oldest_blocked.as_ref().map(|(k, _)| k.as_str()), Some("A"));

    // Replayed: it is the head again, then a2.
    assert_eq!(s.replay(&id("a1")).await.unwrap(), Replayed::FromDead);
    let a1 = claim(&s).await;
    assert_eq!(ids(&a1), ["a1"]);
    assert!(s.ack(&a1[0]).await.unwrap());
    let a2 = claim(&s).await;
    assert_eq!(ids(&a2), ["a2"]);
    // Dead again, then deleted: a3 is released.
    assert!(s.dead_letter(&a2[0], &failed(), KEEP, false).await.unwrap());
    assert!(claim(&s).await.is_empty());
    assert_eq!(s.delete(&id("a2")).await.unwrap(), Deleted::Deleted);
    let a3 = claim(&s).await;
    assert_eq!(ids(&a3), ["a3"]);
    assert_eq!(s.ack_many(&[a3[0].clone(), b2[0].clone()]).await.unwrap(), [true, true]);
    order_keys_empty(&s).await;
}

async fn trims_bulk_actions_and_a_relay_without_ordering_do_not_strand_a_key(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/order-trim").await;
    let s = s.on_dead_letter(OnDeadLetter::Block);
    // Trim of a blocking dead letter releases its key.
    s.enqueue_many(&events(&[("a1", "A"), ("a2", "A")]), DAY).await.unwrap();
    let a1 = claim(&s).await;
    assert!(s.dead_letter(&a1[0], &failed(), KEEP, false).await.unwrap());
    assert_eq!(s.trim_dead(DeadBounds { max_age: DAY, max_entries: 0 }).await.unwrap(), 1);
    let a2 = claim(&s).await;
    assert_eq!(ids(&a2), ["a2"], "the trimmed dead letter no longer blocks");
    assert!(s.ack(&a2[0]).await.unwrap());

    // A bulk delete releases; a bulk replay puts each back at its place.
    s.enqueue_many(&events(&[("b1", "B"), ("b2", "B"), ("c1", "C"), ("c2", "C")]), DAY).await.unwrap();
    for l in claim(&s).await {
        assert!(s.dead_letter(&l, &failed(), KEEP, false).await.unwrap());
    }
    let all = DeadFilter { since_ms: None, until_ms: i64::MAX, status: StatusFilter::Any, error: None };
    let dead_b1 = DeadFilter { error: Some("503".into()), ..all.clone() };
    assert_eq!(s.replay(&id("c1")).await.unwrap(), Replayed::FromDead);
    let step = s.dead_bulk_step(BulkAction::Delete, &dead_b1, 0, 100).await.unwrap();
    assert_eq!(step.matched, 1);
    assert_eq!(ids(&claim(&s).await), ["b2", "c1"], "b1 deleted: b2 released; c1 replayed");

    // A relay that knows nothing of ordering (a rolling upgrade) acks a head: its key is
    // stranded until the repair step releases the next event.
    s.enqueue_many(&events(&[("d1", "D"), ("d2", "D")]), DAY).await.unwrap();
    let d1 = claim(&s).await;
    assert_eq!(ids(&d1), ["d1"]);
    let k = s.keys();
    for (cmd, key) in [("ZREM", &k.inflight), ("HDEL", &k.lease), ("HDEL", &k.ev)] {
        s.conn().cmd(redis::cmd(cmd).arg(key).arg("d1")).await.unwrap();
    }
    assert!(claim(&s).await.is_empty(), "stranded");
    assert_eq!(s.heal_order().await.unwrap(), 1);
    assert_eq!(ids(&claim(&s).await), ["d2"]);
    assert_eq!(s.heal_order().await.unwrap(), 0, "nothing else to repair");
}

async fn a_bulk_replay_of_one_keys_dead_letters_keeps_their_order(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/order-bulk").await;
    // 150 events of one key, each dead-lettered in turn (more than 128 dead letters: `dead`
    // is a skiplist and ZSCAN returns them in hash order, not by score).
    let names: Vec<String> = (0..150).map(|i| format!("x{i:03}")).collect();
    let list: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "K")).collect();
    s.enqueue_many(&events(&list), DAY).await.unwrap();
    for n in &names {
        let got = claim(&s).await;
        assert_eq!(ids(&got), [n.as_str()]);
        assert!(s.dead_letter(&got[0], &failed(), KEEP, false).await.unwrap());
    }
    // x000 replayed alone and dead again: dead later than the rest, still received first.
    assert_eq!(s.replay(&id("x000")).await.unwrap(), Replayed::FromDead);
    let again = claim(&s).await;
    assert!(s.dead_letter(&again[0], &failed(), KEEP, false).await.unwrap());
    let all = DeadFilter { since_ms: None, until_ms: i64::MAX, status: StatusFilter::Any, error: None };
    let (mut cursor, mut replayed) = (0, 0);
    loop {
        let step = s.dead_bulk_step(BulkAction::Replay, &all, cursor, 1000).await.unwrap();
        replayed += step.matched;
        cursor = step.cursor;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(replayed, 150);
    let mut seen = vec![];
    for _ in 0..150 {
        let got = claim(&s).await;
        assert_eq!(got.len(), 1, "one at a time");
        seen.push(got[0].id.as_str().to_string());
        assert!(s.ack(&got[0]).await.unwrap());
    }
    assert_eq!(seen, names, "delivered in receive order after the bulk replay");
    order_keys_empty(&s).await;
}
