//! Store tests against a real redis-server, each scenario run twice: on a single server
//! and on a real 3-node Redis Cluster started for the test.

mod common;
use common::store;

use std::collections::HashSet;
use std::time::Duration;
use testkit::{RedisBackend, RedisServer};
use webhook_relay_store::*;

fn id(s: &str) -> EventId {
    EventId::new(s).unwrap()
}

const DAY: Duration = Duration::from_secs(86400);
const LEASE: Duration = Duration::from_secs(30);

on_both!(
    lifecycle_enqueue_claim_ack,
    ack_many_acks_a_batch_and_refuses_stale_tokens,
    enqueue_many_stores_a_batch_and_spots_duplicates_within_it,
    duplicates_are_not_stored_twice,
    concurrent_claimers_never_share_an_event,
    stale_token_cannot_ack_or_reschedule,
    expired_leases_come_back,
    dead_set_is_trimmed_by_count_and_age,
    replay_one_range_and_delete,
    reschedule_sets_a_future_score,
    scripts_reload_after_script_flush,
    list_pages_by_position_while_events_move,
    newest_first_pages_down_by_position_while_events_move,
    a_retried_claim_returns_what_the_first_call_claimed,
    a_retried_outcome_write_reports_what_the_first_call_did,
);

async fn lifecycle_enqueue_claim_ack(cluster: bool) {
    let (_b, s) = store(cluster, "t/lifecycle").await;
    let e = s.enqueue(&id("a"), br#"{"id":"a"}"#, "application/json", DAY).await.unwrap();
    assert!(matches!(e, Enqueued::Accepted { .. }));
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (1, 0, 0));
    assert!(st.oldest_due_age.is_some());

    let c = s.claim(10, LEASE).await.unwrap();
    assert_eq!(c.events.len(), 1);
    let ev = &c.events[0];
    assert_eq!(ev.lease.id, id("a"));
    assert_eq!(ev.attempt, 1);
    assert_eq!(&ev.body[..], br#"{"id":"a"}"#);
    assert_eq!(ev.meta.content_type, "application/json");
    assert!(ev.meta.received_at > 0);
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 1, 0));

    assert!(s.ack(&ev.lease).await.unwrap());
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 0, 0));
    assert_eq!(st.oldest_due_age, None);
    assert!(s.get(&id("a")).await.unwrap().is_none(), "payload and metadata are gone after ack");
    // A second ack with the same token finds nothing to ack.
    assert!(!s.ack(&ev.lease).await.unwrap());
}

async fn ack_many_acks_a_batch_and_refuses_stale_tokens(cluster: bool) {
    let (_b, s) = store(cluster, "t/ackmany").await;
    for i in 0..5 {
        s.enqueue(&id(&format!("b{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let c = s.claim(10, LEASE).await.unwrap();
    let mut leases: Vec<Lease> = c.events.iter().map(|e| e.lease.clone()).collect();
    leases[2].token += 1_000_000; // a token that never held the lease
    let acked = s.ack_many(&leases).await.unwrap();
    assert_eq!(acked, vec![true, true, false, true, true]);
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight), (0, 1), "only the refused one is still leased");
    assert_eq!(s.ack_many(&[]).await.unwrap(), Vec::<bool>::new());
}

async fn enqueue_many_stores_a_batch_and_spots_duplicates_within_it(cluster: bool) {
    let (_b, s) = store(cluster, "t/enqmany").await;
    s.enqueue(&id("old"), b"{}", "application/json", DAY).await.unwrap();
    let ev = |i: &str, body: &str| NewEvent {
        id: id(i),
        body: body.as_bytes().to_vec().into(),
        content_type: "text/x".into(),
        trace_context: None,
        ordering_key: None,
    };
    let batch = [ev("n1", "one"), ev("old", "again"), ev("n2", "two"), ev("n1", "repeat")];
    let got = s.enqueue_many(&batch, DAY).await.unwrap();
    assert!(matches!(got[0], Enqueued::Accepted { .. }));
    assert_eq!(got[1], Enqueued::Duplicate, "stored earlier");
    assert!(matches!(got[2], Enqueued::Accepted { .. }));
    assert_eq!(got[3], Enqueued::Duplicate, "earlier in the same batch");
    assert_eq!(s.stats().await.unwrap().due, 3);
    let n1 = s.get(&id("n1")).await.unwrap().unwrap();
    assert_eq!((&n1.body[..], n1.meta.content_type.as_str()), (&b"one"[..], "text/x"), "the first copy is kept");
    assert_eq!(s.enqueue_many(&[], DAY).await.unwrap(), vec![]);
}

async fn duplicates_are_not_stored_twice(cluster: bool) {
    let (_b, s) = store(cluster, "t/dedup").await;
    assert!(matches!(s.enqueue(&id("m1"), b"{}", "application/json", DAY).await.unwrap(), Enqueued::Accepted { .. }));
    assert_eq!(s.enqueue(&id("m1"), b"{}", "application/json", DAY).await.unwrap(), Enqueued::Duplicate);
    let c = s.claim(10, LEASE).await.unwrap();
    assert_eq!(c.events.len(), 1);
    s.ack(&c.events[0].lease).await.unwrap();
    // Delivered and deleted, but still within the window: still a duplicate.
    assert_eq!(s.enqueue(&id("m1"), b"{}", "application/json", DAY).await.unwrap(), Enqueued::Duplicate);
    // A short window expires; then the id is new again.
    let w = Duration::from_millis(200);
    assert!(matches!(s.enqueue(&id("m2"), b"{}", "t", w).await.unwrap(), Enqueued::Accepted { .. }));
    let c = s.claim(10, LEASE).await.unwrap();
    s.ack(&c.events[0].lease).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(s.enqueue(&id("m2"), b"{}", "t", w).await.unwrap(), Enqueued::Accepted { .. }));
}

async fn concurrent_claimers_never_share_an_event(cluster: bool) {
    let (_b, s) = store(cluster, "t/concurrent").await;
    let n = 600;
    for i in 0..n {
        s.enqueue(&id(&format!("e{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let mut tasks = vec![];
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            for _ in 0..1000 {
                let c = s.claim(7, LEASE).await.unwrap();
                if c.events.is_empty() && c.next_due_ms.is_none() {
                    break;
                }
                mine.extend(c.events.into_iter().map(|e| (e.lease.id.to_string(), e.lease.token)));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut tokens = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for (id, token) in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "event {id} was claimed twice");
            assert!(tokens.insert(token), "token {token} issued twice");
        }
    }
    assert_eq!(total, n);
    assert_eq!(s.stats().await.unwrap().in_flight, n as u64);
}

async fn stale_token_cannot_ack_or_reschedule(cluster: bool) {
    let (_b, s) = store(cluster, "t/fence").await;
    s.enqueue(&id("x"), b"{}", "application/json", DAY).await.unwrap();
    let first = s.claim(1, Duration::from_millis(100)).await.unwrap().events.remove(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The lease expired; another worker's claim recovers and takes it with a newer token.
    let second = s.claim(1, LEASE).await.unwrap().events.remove(0);
    assert_eq!(second.lease.id, first.lease.id);
    assert!(second.lease.token > first.lease.token);
    assert_eq!(second.attempt, 2);

    assert!(!s.ack(&first.lease).await.unwrap(), "stale token acked");
    let meta = EventMeta { last_status: Some(503), ..Default::default() };
    assert_eq!(
        s.reschedule(&first.lease, Duration::ZERO, &meta, false).await.unwrap(),
        None,
        "stale token rescheduled"
    );
    let bounds = DeadBounds { max_age: DAY, max_entries: 10 };
    assert!(!s.dead_letter(&first.lease, &meta, bounds, false).await.unwrap(), "stale token dead-lettered");
    assert!(!s.release(&first.lease).await.unwrap(), "stale token released");
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight, st.dead), (0, 1, 0), "the current holder still owns it");
    assert!(s.ack(&second.lease).await.unwrap());
}

async fn expired_leases_come_back(cluster: bool) {
    let (_b, s) = store(cluster, "t/recover").await;
    for i in 0..3 {
        s.enqueue(&id(&format!("r{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let c = s.claim(10, Duration::from_millis(150)).await.unwrap();
    assert_eq!(c.events.len(), 3);
    assert!(c.next_lease_ms.is_some());
    assert_eq!(s.recover_expired(100).await.unwrap(), 0, "leases are still live");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(s.recover_expired(100).await.unwrap(), 3);
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight), (3, 0));
    let again = s.claim(10, LEASE).await.unwrap();
    assert_eq!(again.events.len(), 3);
    assert!(again.events.iter().all(|e| e.attempt == 2), "a crashed attempt still counts");
}

async fn dead_set_is_trimmed_by_count_and_age(cluster: bool) {
    let (_b, s) = store(cluster, "t/trim").await;
    let bounds = DeadBounds { max_age: DAY, max_entries: 5 };
    for i in 0..10 {
        s.enqueue(&id(&format!("d{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let c = s.claim(10, LEASE).await.unwrap();
    for ev in &c.events {
        let meta = EventMeta { last_status: Some(400), last_error: Some("400 Bad Request".into()), ..ev.meta.clone() };
        assert!(s.dead_letter(&ev.lease, &meta, bounds, false).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let st = s.stats().await.unwrap();
    assert_eq!(st.dead, 5);
    // The oldest went first, payload and metadata with them.
    let kept: Vec<String> = redis_zrange(&s, &s.keys().dead.clone()).await;
    assert_eq!(kept, vec!["d5", "d6", "d7", "d8", "d9"]);
    assert!(s.get(&id("d0")).await.unwrap().is_none());
    let d9 = s.get(&id("d9")).await.unwrap().unwrap();
    assert_eq!(d9.state, EventState::Dead);
    assert_eq!(d9.meta.last_status, Some(400));
    assert_eq!(d9.attempts, 1);
    // Age: everything is older than 1 ms a moment later.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let n = s.trim_dead(DeadBounds { max_age: Duration::from_millis(1), max_entries: 5 }).await.unwrap();
    assert_eq!(n, 5);
    assert_eq!(s.stats().await.unwrap().dead, 0);
    assert_eq!(redis_hlen(&s, &s.keys().ev.clone()).await, 0, "trimmed records are freed");
}

async fn replay_one_range_and_delete(cluster: bool) {
    let (_b, s) = store(cluster, "t/replay").await;
    let bounds = DeadBounds { max_age: DAY, max_entries: 100 };
    for i in 0..6 {
        s.enqueue(&id(&format!("p{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let c = s.claim(10, LEASE).await.unwrap();
    let mut dead_at = vec![];
    for ev in &c.events {
        assert!(s.dead_letter(&ev.lease, &ev.meta, bounds, false).await.unwrap());
        dead_at.push(s.get(&ev.lease.id).await.unwrap().unwrap().score_ms);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.replay(&id("p0")).await.unwrap(), Replayed::FromDead);
    assert_eq!(s.replay(&id("p0")).await.unwrap(), Replayed::FromDue);
    assert_eq!(s.replay(&id("nope")).await.unwrap(), Replayed::NotFound);
    let p0 = s.get(&id("p0")).await.unwrap().unwrap();
    assert_eq!((p0.state, p0.attempts), (EventState::Due, 0));
    // Range: p2..=p4 by their dead-lettered times, in batches of 2.
    let n = s.replay_dead_range(Some(dead_at[2]), Some(dead_at[4]), 2).await.unwrap();
    assert_eq!(n, 3);
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.dead), (4, 2));
    // Open range: the rest.
    assert_eq!(s.replay_dead_range(None, None, 100).await.unwrap(), 2);
    // A claimed event cannot be replayed.
    let c = s.claim(1, LEASE).await.unwrap();
    assert_eq!(s.replay(&c.events[0].lease.id).await.unwrap(), Replayed::InFlight);
    // Delete removes payload and metadata for good.
    assert_eq!(s.delete(&id("p5")).await.unwrap(), Deleted::Deleted);
    assert!(s.get(&id("p5")).await.unwrap().is_none());
    assert_eq!(s.delete(&id("p5")).await.unwrap(), Deleted::NotFound);
    let meta: bool =
        matches!(s.conn().cmd(redis::cmd("HEXISTS").arg(&s.keys().ev).arg("p5")).await.unwrap(), redis::Value::Int(1));
    assert!(!meta, "metadata survived delete");
}

async fn reschedule_sets_a_future_score(cluster: bool) {
    let (_b, s) = store(cluster, "t/resched").await;
    s.enqueue(&id("f"), b"{}", "application/json", DAY).await.unwrap();
    let ev = s.claim(1, LEASE).await.unwrap().events.remove(0);
    let meta =
        EventMeta { last_status: Some(503), last_error: Some("503 Service Unavailable".into()), ..ev.meta.clone() };
    let at = s.reschedule(&ev.lease, Duration::from_secs(60), &meta, false).await.unwrap().unwrap();
    let now = s.stats().await.unwrap().now_ms;
    assert!(at >= now + 59_000, "due score {at} is not ~60s after {now}");
    let c = s.claim(1, LEASE).await.unwrap();
    assert!(c.events.is_empty(), "not due yet");
    assert_eq!(c.next_due_ms, Some(at));
    let got = s.get(&id("f")).await.unwrap().unwrap();
    assert_eq!(got.state, EventState::Due);
    assert_eq!(got.meta.last_status, Some(503));
}

async fn scripts_reload_after_script_flush(cluster: bool) {
    let (b, s) = store(cluster, "t/noscript").await;
    s.enqueue(&id("n1"), b"{}", "application/json", DAY).await.unwrap();
    match &b {
        RedisBackend::Single(r) => assert_eq!(r.cli(&["SCRIPT", "FLUSH"]), "OK"),
        RedisBackend::Cluster(c) => c.nodes.iter().for_each(|n| assert_eq!(n.cli(&["SCRIPT", "FLUSH"]), "OK")),
    }
    s.enqueue(&id("n2"), b"{}", "application/json", DAY).await.unwrap();
    assert_eq!(s.stats().await.unwrap().due, 2);
}

async fn list_pages_by_position_while_events_move(cluster: bool) {
    let (_b, s) = store(cluster, "t/list").await;
    // Enqueued in one burst, many share a millisecond score: order then falls to the id bytes.
    let ids: Vec<String> = (0..30).map(|i| format!("e{i:02}")).collect();
    for i in &ids {
        s.enqueue(&id(i), b"{}", "application/json", DAY).await.unwrap();
    }
    let mut seen: Vec<String> = vec![];
    let (mut deleted, mut added) = (vec![], vec![]);
    let mut cursor: Option<ListCursor> = None;
    let mut pages = 0;
    loop {
        let page = s.list(EventState::Due, 4, cursor.as_ref()).await.unwrap();
        pages += 1;
        assert!(page.events.len() <= 4);
        for e in &page.events {
            assert_eq!((e.state, e.attempts, e.meta.content_type.as_str()), (EventState::Due, 0, "application/json"));
            seen.push(e.id.as_str().to_string());
        }
        // Meanwhile: the last id of this page and one not yet listed leave, a new one arrives.
        if let Some(last) = page.events.last() {
            assert_eq!(s.delete(&last.id).await.unwrap(), Deleted::Deleted);
            let unseen = ids.iter().rev().find(|i| !seen.contains(i) && !deleted.contains(*i)).cloned();
            if let Some(u) = unseen {
                assert_eq!(s.delete(&id(&u)).await.unwrap(), Deleted::Deleted);
                deleted.push(u);
            }
            let new = format!("new{pages:02}");
            s.enqueue(&id(&new), b"{}", "application/json", DAY).await.unwrap();
            added.push(new);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "an event was listed twice: {seen:?}");
    for i in ids.iter().filter(|i| !deleted.contains(*i)) {
        assert!(seen.contains(i), "{i} stayed due but was skipped: {seen:?}");
    }
    for d in &deleted {
        assert!(!seen.contains(d), "{d} was deleted before its page but listed");
    }
    assert!(added.iter().take(added.len() - 1).all(|a| seen.contains(a)), "arrivals after the cursor are listed");
    // A cursor is a position: it still works after its own event is gone.
    let all = s.list(EventState::Due, 1000, None).await.unwrap();
    assert!(all.next.is_none());
    let third = &all.events[2];
    assert_eq!(s.delete(&third.id).await.unwrap(), Deleted::Deleted);
    let after =
        s.list(EventState::Due, 1, Some(&ListCursor { score_ms: third.score_ms, id: third.id.clone() })).await.unwrap();
    assert_eq!(after.events[0].id, all.events[3].id);
    assert!(s.list(EventState::Dead, 10, None).await.unwrap().events.is_empty());
}

async fn newest_first_pages_down_by_position_while_events_move(cluster: bool) {
    let (_b, s) = store(cluster, "t/list-newest").await;
    let ids: Vec<String> = (0..30).map(|i| format!("e{i:02}")).collect();
    for i in &ids {
        s.enqueue(&id(i), b"{}", "application/json", DAY).await.unwrap();
    }
    let oldest_first: Vec<String> =
        s.list(EventState::Due, 1000, None).await.unwrap().events.iter().map(|e| e.id.as_str().to_string()).collect();
    let mut expected = oldest_first.clone();
    expected.reverse();
    let (mut seen, mut deleted) = (vec![], vec![]);
    let mut cursor: Option<ListCursor> = None;
    for pages in 1.. {
        let page = s.list_in(ListOrder::NewestFirst, EventState::Due, 4, cursor.as_ref()).await.unwrap();
        assert!(page.events.len() <= 4);
        seen.extend(page.events.iter().map(|e| e.id.as_str().to_string()));
        // Meanwhile: the last listed and the oldest unlisted leave, and a newer one arrives
        // (before the cursor in this order: not listed).
        if let Some(last) = page.events.last() {
            assert_eq!(s.delete(&last.id).await.unwrap(), Deleted::Deleted);
            if let Some(u) = oldest_first.iter().find(|i| !seen.contains(i) && !deleted.contains(*i)).cloned() {
                assert_eq!(s.delete(&id(&u)).await.unwrap(), Deleted::Deleted);
                deleted.push(u);
            }
            s.enqueue(&id(&format!("new{pages:02}")), b"{}", "application/json", DAY).await.unwrap();
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let want: Vec<String> = expected.into_iter().filter(|i| !deleted.contains(i)).collect();
    assert_eq!(seen, want, "newest first, each staying event once, none deleted before its page");
    let newest = s.list_in(ListOrder::NewestFirst, EventState::Due, 2, None).await.unwrap();
    assert!(newest.events[0].id.as_str().starts_with("new"), "the newest arrival first");
    assert!(newest.events[0].score_ms >= newest.events[1].score_ms);
}

async fn redis_zrange(s: &Store, key: &str) -> Vec<String> {
    let v = s.conn().cmd(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await.unwrap();
    redis::from_redis_value(v).unwrap()
}

async fn redis_hlen(s: &Store, key: &str) -> i64 {
    let v = s.conn().cmd(redis::cmd("HLEN").arg(key)).await.unwrap();
    redis::from_redis_value(v).unwrap()
}

async fn a_retried_claim_returns_what_the_first_call_claimed(cluster: bool) {
    let (_b, s) = store(cluster, "t/claimretry").await;
    for i in 0..5 {
        s.enqueue(&id(&format!("c{i}")), b"{}", "application/json", DAY).await.unwrap();
    }
    let first = s.claim_as(42, 3, LEASE).await.unwrap();
    assert_eq!(first.events.len(), 3);
    // The same call again (its reply was lost): the same events and tokens, nothing more claimed.
    let again = s.claim_as(42, 3, LEASE).await.unwrap();
    let pairs = |c: &Claim| -> Vec<(String, u64, u32)> {
        let mut v: Vec<_> = c.events.iter().map(|e| (e.lease.id.to_string(), e.lease.token, e.attempt)).collect();
        v.sort();
        v
    };
    assert_eq!(pairs(&again), pairs(&first));
    assert!(again.events.iter().all(|e| e.attempt == 1), "a retried claim counts no attempt");
    assert_eq!(&again.events[0].body[..], b"{}");
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.in_flight), (2, 3));
    // Once one of them was acked, a retry returns only those still held.
    s.ack(&first.events[0].lease).await.unwrap();
    assert_eq!(s.claim_as(42, 3, LEASE).await.unwrap().events.len(), 2);
    // Another id claims the rest.
    assert_eq!(s.claim_as(43, 10, LEASE).await.unwrap().events.len(), 2);
}

async fn a_retried_outcome_write_reports_what_the_first_call_did(cluster: bool) {
    let (_b, s) = store(cluster, "t/outcomeretry").await;
    let bounds = DeadBounds { max_age: DAY, max_entries: 100 };
    for i in ["a", "r", "d", "never", "late"] {
        s.enqueue(&id(i), b"{}", "application/json", DAY).await.unwrap();
    }
    let c = s.claim(10, LEASE).await.unwrap();
    let lease = |name: &str| c.events.iter().find(|e| e.lease.id.as_str() == name).unwrap().lease.clone();
    let meta = EventMeta { last_status: Some(503), ..EventMeta::default() };

    // Ack: the first call ran; its retry reports the ack, a repeated first call does not.
    assert!(s.ack(&lease("a")).await.unwrap());
    assert_eq!(s.ack_batch(&[(lease("a"), true)]).await.unwrap(), vec![true]);
    assert_eq!(s.ack_batch(&[(lease("a"), false)]).await.unwrap(), vec![false]);
    // Reschedule and dead-letter alike.
    assert!(s.reschedule(&lease("r"), Duration::from_secs(60), &meta, false).await.unwrap().is_some());
    assert!(s.reschedule(&lease("r"), Duration::from_secs(60), &meta, true).await.unwrap().is_some());
    assert!(s.reschedule(&lease("r"), Duration::from_secs(60), &meta, false).await.unwrap().is_none());
    assert!(s.dead_letter(&lease("d"), &meta, bounds, false).await.unwrap());
    assert!(s.dead_letter(&lease("d"), &meta, bounds, true).await.unwrap());
    assert!(!s.dead_letter(&lease("d"), &meta, bounds, false).await.unwrap());
    assert_eq!(s.stats().await.unwrap().dead, 1, "dead-lettered once");
    // A retry whose first call never ran does the work itself.
    assert_eq!(s.ack_batch(&[(lease("never"), true)]).await.unwrap(), vec![true]);
    assert!(s.get(&id("never")).await.unwrap().is_none());
    // A retry past the lease deadline cannot tell and says the lease was lost.
    let mut expired = lease("late");
    expired.deadline_ms = s.stats().await.unwrap().now_ms - 1;
    assert!(s.ack(&lease("late")).await.unwrap());
    assert_eq!(s.ack_batch(&[(expired, true)]).await.unwrap(), vec![false]);
    // An ack retry never claims success for an event that is still stored (another holder).
    s.enqueue(&id("held"), b"{}", "application/json", Duration::ZERO).await.unwrap();
    let held = s.claim(1, LEASE).await.unwrap().events.remove(0).lease;
    let stale = Lease { token: held.token - 1, ..held.clone() };
    assert_eq!(s.ack_batch(&[(stale, true)]).await.unwrap(), vec![false]);
    // Delete leaves an event in flight alone: only its lease holder ends that state.
    assert_eq!(s.delete(&held.id).await.unwrap(), Deleted::InFlight);
    assert!(s.ack(&held).await.unwrap());
}

/// The sequence of the defect report: SAVE, claim a,b,c, kill -9, restart from the snapshot,
/// claim again: the new tokens are above the old ones, so the stale worker's ack is refused.
#[tokio::test]
async fn fencing_tokens_keep_growing_when_redis_restarts_from_an_older_snapshot() {
    let mut server = RedisServer::start_with(&["--appendonly", "no"]);
    let conn = Conn::connect(&ConnectOptions::new(server.url())).await.unwrap();
    let s = Store::new(conn, "t/fence");
    for i in ["a", "b", "c"] {
        s.enqueue(&id(i), b"{}", "application/json", DAY).await.unwrap();
    }
    assert_eq!(server.cli(&["SAVE"]), "OK");
    let before = s.claim(10, LEASE).await.unwrap();
    let old: Vec<(String, u64)> = before.events.iter().map(|e| (e.lease.id.to_string(), e.lease.token)).collect();
    assert_eq!(old.len(), 3);
    server.kill();
    server.start_again(); // loads dump.rdb: a, b, c due again, the token counter as it was
    let after = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.claim(10, LEASE).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("redis answers again");
    assert_eq!(after.events.len(), 3, "the snapshot had them due");
    let max_old = old.iter().map(|(_, t)| *t).max().unwrap();
    for e in &after.events {
        assert!(e.lease.token > max_old, "token {} of {} is not above {max_old}", e.lease.token, e.lease.id);
    }
    let stale = before.events.iter().find(|e| e.lease.id.as_str() == "a").unwrap().lease.clone();
    assert!(!s.ack(&stale).await.unwrap(), "a stale worker's ack was accepted");
    let stale_b = before.events.iter().find(|e| e.lease.id.as_str() == "b").unwrap().lease.clone();
    let bounds = DeadBounds { max_age: DAY, max_entries: 100 };
    assert!(!s.dead_letter(&stale_b, &EventMeta::default(), bounds, false).await.unwrap());
    let fresh = after.events.iter().find(|e| e.lease.id.as_str() == "a").unwrap().lease.clone();
    assert!(s.ack(&fresh).await.unwrap());
    println!(
        "fencing: tokens before the restart {old:?}; after {:?}",
        after.events.iter().map(|e| e.lease.token).collect::<Vec<_>>()
    );
}
