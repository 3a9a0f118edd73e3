//! The W3C trace context stored beside an event (`whr:{R}:trace`): kept from intake through
//! retries, dead-lettering and replay, and freed with the event, against a real
//! redis-server, single and a 3-node Redis Cluster.

mod common;

use std::collections::HashMap;
use std::time::Duration;
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);
const LEASE: Duration = Duration::from_secs(30);
const KEEP: DeadBounds = DeadBounds { max_age: DAY, max_entries: 1000 };
const P1: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const P2: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\nrojo=00f067aa0ba902b7";

fn ev(id: &str, trace: Option<&str>) -> NewEvent {
    NewEvent {
        id: EventId::new(id).unwrap(),
        body: format!("{{\"id\":\"{id}\"}}").into_bytes().into(),
        content_type: "application/json".into(),
        trace_context: trace.map(String::from),
        ordering_key: None,
    }
}

async fn traces_stored(s: &Store) -> i64 {
    let v = s.conn().cmd(redis::cmd("HLEN").arg(&s.keys().trace)).await.unwrap();
    redis::from_redis_value(v).unwrap()
}

async fn claim_traces(s: &Store) -> HashMap<String, (Lease, Option<String>)> {
    let claim = s.claim(100, LEASE).await.unwrap();
    claim.events.into_iter().map(|e| (e.lease.id.as_str().to_string(), (e.lease, e.meta.trace_context))).collect()
}

on_both!(
    a_trace_context_follows_its_event_and_leaves_with_it,
    trimmed_and_bulk_deleted_dead_letters_free_their_trace_context
);

async fn a_trace_context_follows_its_event_and_leaves_with_it(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/trace").await;
    let batch = [ev("a", Some(P1)), ev("b", Some(P2)), ev("c", None), ev("a", Some(P2)), ev("d", Some(P1))];
    s.enqueue_many(&batch, DAY).await.unwrap();
    assert_eq!(traces_stored(&s).await, 3, "only events with a trace context, and a duplicate stores nothing");

    let got = claim_traces(&s).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got["a"].1.as_deref(), Some(P1), "the first of a duplicate pair keeps its own");
    assert_eq!(got["b"].1.as_deref(), Some(P2));
    assert_eq!(got["c"].1, None);
    let detail = s.get(&EventId::new("b").unwrap()).await.unwrap().unwrap();
    assert_eq!(detail.meta.trace_context.as_deref(), Some(P2), "the admin view reads it");

    // Delivered: freed. Retried: kept for the next attempt. Untraced: nothing to free.
    assert_eq!(s.ack_many(&[got["a"].0.clone(), got["c"].0.clone()]).await.unwrap(), [true, true]);
    assert_eq!(traces_stored(&s).await, 2);
    let failed = EventMeta { last_status: Some(503), ..Default::default() };
    assert!(s.reschedule(&got["b"].0, Duration::ZERO, &failed, false).await.unwrap().is_some());
    assert!(s.dead_letter(&got["d"].0, &failed, KEEP, false).await.unwrap());
    let again = claim_traces(&s).await;
    assert_eq!(again["b"].1.as_deref(), Some(P2), "a retry continues the same trace");

    // Dead-lettered and replayed: kept; deleted: freed.
    assert!(s.dead_letter(&again["b"].0, &failed, KEEP, false).await.unwrap());
    assert_eq!(traces_stored(&s).await, 2, "dead letters keep theirs for a replay");
    assert_eq!(s.replay(&EventId::new("d").unwrap()).await.unwrap(), Replayed::FromDead);
    assert_eq!(claim_traces(&s).await["d"].1.as_deref(), Some(P1), "a replay continues the sender's trace");
    assert_eq!(s.delete(&EventId::new("b").unwrap()).await.unwrap(), Deleted::Deleted);
    assert_eq!(traces_stored(&s).await, 1);
}

async fn trimmed_and_bulk_deleted_dead_letters_free_their_trace_context(cluster: bool) {
    let (_b, s) = common::store(cluster, "t/trace-dead").await;
    let batch: Vec<NewEvent> = (0..6).map(|i| ev(&format!("e{i}"), Some(P1))).collect();
    s.enqueue_many(&batch, DAY).await.unwrap();
    let failed = EventMeta { last_status: Some(500), ..Default::default() };
    for (_, (lease, _)) in claim_traces(&s).await {
        assert!(s.dead_letter(&lease, &failed, KEEP, false).await.unwrap());
    }
    assert_eq!(traces_stored(&s).await, 6);
    assert_eq!(s.trim_dead(DeadBounds { max_age: DAY, max_entries: 4 }).await.unwrap(), 2);
    assert_eq!(traces_stored(&s).await, 4, "trimmed dead letters free theirs");
    let all = DeadFilter { since_ms: None, until_ms: i64::MAX / 2, status: "any".parse().unwrap(), error: None };
    let step = s.dead_bulk_step(BulkAction::Delete, &all, 0, 100).await.unwrap();
    assert_eq!(step.matched, 4);
    assert_eq!(traces_stored(&s).await, 0, "bulk-deleted dead letters free theirs");
}
