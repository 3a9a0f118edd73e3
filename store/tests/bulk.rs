//! Bulk actions on dead letters selected by a filter (time range, last status, error text),
//! against a real redis-server, single and a 3-node Redis Cluster.

mod common;

use std::time::Duration;
use testkit::RedisBackend;
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);
const BOUNDS: DeadBounds = DeadBounds { max_age: DAY, max_entries: 100_000 };

/// 300 dead letters (beyond a small sorted set's listpack, so `ZSCAN` pages): by index mod
/// 6: 0,1 → 503 "busy", 2 → 502, 3 → 404, 4 → 410, 5 → a timeout (no HTTP answer).
async fn store_with_dead(cluster: bool, relay: &str) -> (RedisBackend, Store) {
    let (backend, s) = common::store(cluster, relay).await;
    common::enqueue_numbered(&s, "d", 300).await;
    let claim = s.claim(300, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claim.events.len(), 300);
    for ev in &claim.events {
        let i: usize = ev.lease.id.as_str()[1..].parse().unwrap();
        let (status, error) = match i % 6 {
            0 | 1 => (Some(503), "503 Service Unavailable: Busy"),
            2 => (Some(502), "502 Bad Gateway"),
            3 => (Some(404), "404 Not Found"),
            4 => (Some(410), "410 Gone"),
            _ => (None, "timed out after 5s"),
        };
        let meta = EventMeta { last_status: status, last_error: Some(error.into()), ..ev.meta.clone() };
        assert!(s.dead_letter(&ev.lease, &meta, BOUNDS, false).await.unwrap());
    }
    (backend, s)
}

/// Runs `action` to the end in steps of `batch`; returns (matched, steps).
async fn run(s: &Store, action: BulkAction, filter: &DeadFilter, batch: usize) -> (u64, usize) {
    let (mut cursor, mut matched, mut steps) = (0, 0, 0);
    loop {
        let step = s.dead_bulk_step(action, filter, cursor, batch).await.unwrap();
        matched += step.matched;
        steps += 1;
        cursor = step.cursor;
        if cursor == 0 {
            return (matched, steps);
        }
        assert!(steps < 1000, "the scan must end");
    }
}

fn filter(now: i64, status: &str, error: Option<&str>) -> DeadFilter {
    DeadFilter { since_ms: None, until_ms: now, status: status.parse().unwrap(), error: error.map(String::from) }
}

on_both!(
    filters_select_by_status_class_error_and_time,
    a_dry_run_counts_what_the_replay_then_moves_and_delete_keeps_dedup
);

async fn filters_select_by_status_class_error_and_time(cluster: bool) {
    let (_b, s) = store_with_dead(cluster, "t/bulk-filter").await;
    let now = s.stats().await.unwrap().now_ms;
    let count = |status: &'static str, error: Option<&'static str>| {
        let f = filter(now, status, error);
        let s = s.clone();
        async move { run(&s, BulkAction::Count, &f, 50).await }
    };
    let (all, steps) = count("any", None).await;
    assert_eq!(all, 300);
    assert!(steps > 1, "300 members scanned 50 at a time took {steps} step(s)");
    assert_eq!(count("5xx", None).await.0, 150);
    assert_eq!(count("503", None).await.0, 100);
    assert_eq!(count("4xx", None).await.0, 100);
    assert_eq!(count("none", None).await.0, 50);
    assert_eq!(count("any", Some("TIMED OUT")).await.0, 50, "error text matches case-insensitively");
    assert_eq!(count("5xx", Some("busy")).await.0, 100);
    assert_eq!(count("4xx", Some("gateway")).await.0, 0);
    let future = DeadFilter { since_ms: Some(now + 1), ..filter(now + 3_600_000, "any", None) };
    assert_eq!(run(&s, BulkAction::Count, &future, 50).await.0, 0, "none died after now");
    let past = DeadFilter { until_ms: now - 3_600_000, ..filter(now, "any", None) };
    assert_eq!(run(&s, BulkAction::Count, &past, 50).await.0, 0, "none died an hour ago");
    assert_eq!(s.stats().await.unwrap().dead, 300, "counting changes nothing");
}

async fn a_dry_run_counts_what_the_replay_then_moves_and_delete_keeps_dedup(cluster: bool) {
    let (_b, s) = store_with_dead(cluster, "t/bulk-act").await;
    let now = s.stats().await.unwrap().now_ms;
    let five = filter(now, "5xx", None);
    let (dry, _) = run(&s, BulkAction::Count, &five, 40).await;
    let (replayed, _) = run(&s, BulkAction::Replay, &five, 40).await;
    assert_eq!((dry, replayed), (150, 150), "the dry run counts what the replay moves");
    let st = s.stats().await.unwrap();
    assert_eq!((st.due, st.dead), (150, 150));
    let e = s.get(&EventId::new("d0000").unwrap()).await.unwrap().unwrap();
    assert_eq!((e.state, e.attempts), (EventState::Due, 0), "replayed: due now, attempts reset");
    assert_eq!(run(&s, BulkAction::Count, &five, 40).await.0, 0, "no 5xx dead letter left");

    let gone = filter(now, "410", None);
    assert_eq!(run(&s, BulkAction::Delete, &gone, 40).await.0, 50);
    assert_eq!(s.stats().await.unwrap().dead, 100);
    assert!(s.get(&EventId::new("d0004").unwrap()).await.unwrap().is_none());
    let again = s.enqueue(&EventId::new("d0004").unwrap(), b"{}", "application/json", DAY).await.unwrap();
    assert_eq!(again, Enqueued::Duplicate, "a deleted dead letter's dedup entry stays");
}
