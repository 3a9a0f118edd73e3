//! Store format 1 -> 2: data written by format 1's own scripts (`v1/scripts.rs`) in every
//! state, migrated in place by three relays starting at once, on a single server and on a
//! 3-node cluster; a format newer than this version knows is refused untouched.

#[path = "v1/scripts.rs"]
mod v1;

use std::time::Duration;
use testkit::RedisBackend;
use webhook_relay_store::*;

const DAY: Duration = Duration::from_secs(86400);

async fn connect(cluster: bool) -> (RedisBackend, ConnectOptions) {
    let backend = RedisBackend::start(cluster);
    let opts = ConnectOptions::new(backend.url());
    (backend, opts)
}

/// Runs one of format 1's scripts with EVAL.
async fn v1_call(
    conn: &Conn,
    script: &v1::LuaScript,
    keys: &[&str],
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd("EVAL");
    c.arg(script.source()).arg(keys.len()).arg(keys).arg(args);
    conn.clone().cmd(&c).await
}

/// A format-1 relay's view of the keys (the names it used).
struct V1<'a> {
    conn: &'a Conn,
    k: &'a Keys,
}

impl V1<'_> {
    async fn enqueue(&self, id: &str, body: &str) {
        let k = self.k;
        let keys = [&k.seen, &k.due, &k.v1.body, &k.v1.meta, &k.v1.attempts, &k.pending].map(String::as_str);
        v1_call(self.conn, &v1::ENQUEUE, &keys, &["86400000", id, body, "application/json"]).await.unwrap();
    }
    /// Claims everything due; returns (id, token) per event.
    async fn claim(&self) -> redis::RedisResult<Vec<(String, String)>> {
        let k = self.k;
        let record = k.claim(rand_id());
        let keys =
            [&k.due, &k.inflight, &k.lease, &k.v1.body, &k.v1.meta, &k.v1.attempts, &k.fence, &k.pending, &record]
                .map(String::as_str);
        let v = v1_call(self.conn, &v1::CLAIM, &keys, &["100", "30000"]).await?;
        let redis::Value::Array(parts) = v else { panic!("claim reply {v:?}") };
        let redis::Value::Array(events) = &parts[4] else { return Ok(vec![]) };
        Ok(events
            .iter()
            .map(|e| {
                let redis::Value::Array(f) = e else { panic!() };
                let id: String = redis::from_redis_value(f[0].clone()).unwrap();
                let token: i64 = redis::from_redis_value(f[1].clone()).unwrap();
                (id, token.to_string())
            })
            .collect())
    }
    async fn ack(&self, id: &str, token: &str) {
        let k = self.k;
        let keys = [&k.inflight, &k.lease, &k.v1.body, &k.v1.meta, &k.v1.attempts, &k.pending].map(String::as_str);
        v1_call(self.conn, &v1::ACK, &keys, &[id, token, "0"]).await.unwrap();
    }
    async fn reschedule(&self, id: &str, token: &str, delay_ms: &str, meta: &str) {
        let k = self.k;
        let keys = [&k.inflight, &k.lease, &k.due, &k.v1.meta, &k.v1.body, &k.dead].map(String::as_str);
        v1_call(self.conn, &v1::RESCHEDULE, &keys, &[id, token, delay_ms, meta, "0"]).await.unwrap();
    }
    async fn dead(&self, id: &str, token: &str, meta: &str) {
        let k = self.k;
        let keys =
            [&k.inflight, &k.lease, &k.dead, &k.v1.meta, &k.v1.body, &k.v1.attempts, &k.pending].map(String::as_str);
        v1_call(self.conn, &v1::DEAD, &keys, &[id, token, meta, "86400000", "1000", "0"]).await.unwrap();
    }
    async fn release(&self, id: &str, token: &str) {
        let k = self.k;
        let keys = [&k.inflight, &k.lease, &k.due, &k.v1.attempts].map(String::as_str);
        v1_call(self.conn, &v1::RELEASE, &keys, &[id, token]).await.unwrap();
    }
}

fn rand_id() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn exists(conn: &Conn, key: &str) -> bool {
    redis::from_redis_value::<i64>(conn.clone().cmd(redis::cmd("EXISTS").arg(key)).await.unwrap()).unwrap() == 1
}

fn id(s: &str) -> EventId {
    EventId::new(s).unwrap()
}

async fn format_1_data_in_every_state_is_migrated_in_place(cluster: bool) {
    let (_backend, opts) = connect(cluster).await;
    let conn = Conn::connect(&opts).await.unwrap();
    let relay = "t/migrate";
    let k = Keys::new(relay);
    let old = V1 { conn: &conn, k: &k };

    // What a format-1 relay leaves behind: one event per state.
    for name in ["due-1", "resched-1", "flying-1", "dead-1", "done-1"] {
        old.enqueue(name, &format!(r#"{{"id":"{name}"}}"#)).await;
    }
    let claimed = old.claim().await.unwrap();
    assert_eq!(claimed.len(), 5);
    let token = |name: &str| claimed.iter().find(|(i, _)| i == name).unwrap().1.clone();
    old.ack("done-1", &token("done-1")).await;
    old.release("due-1", &token("due-1")).await;
    old.reschedule(
        "resched-1",
        &token("resched-1"),
        "60000",
        r#"{"receivedAt":1,"contentType":"application/json","lastStatus":503,"lastError":"503 Service Unavailable","lastAttemptAt":2}"#,
    )
    .await;
    old.dead(
        "dead-1",
        &token("dead-1"),
        r#"{"receivedAt":1,"contentType":"application/json","lastStatus":400,"lastError":"400 Bad Request"}"#,
    )
    .await;
    // flying-1 stays in flight under its format-1 lease.
    assert!(exists(&conn, &k.v1.body).await && exists(&conn, &k.v1.meta).await);

    // Three relays start at once; between them every event moves exactly once.
    let stores: Vec<Store> = (0..3).map(|_| Store::new(conn.clone(), relay)).collect();
    let (a, b, c) = tokio::join!(stores[0].prepare(), stores[1].prepare(), stores[2].prepare());
    let moved: u64 = [a, b, c].into_iter().map(|p| p.unwrap().migrated).sum();
    assert_eq!(moved, 4, "due-1, resched-1, flying-1 and dead-1 move once; done-1 was delivered");
    let s = &stores[0];
    assert_eq!(s.prepare().await.unwrap().migrated, 0, "a second start finds nothing to move");
    let format: String =
        redis::from_redis_value(conn.clone().cmd(redis::cmd("GET").arg(&k.format)).await.unwrap()).unwrap();
    assert_eq!(format, "2");
    for gone in [&k.v1.body, &k.v1.meta, &k.v1.attempts] {
        assert!(!exists(&conn, gone).await, "{gone} is left after the migration");
    }

    // Every event is where it was, with its attempts, outcome and body.
    let got =
        |name: &'static str| async move { s.get(&id(name)).await.unwrap().unwrap_or_else(|| panic!("{name} lost")) };
    let due = got("due-1").await;
    assert_eq!((due.state, due.attempts, &due.body[..]), (EventState::Due, 0, &br#"{"id":"due-1"}"#[..]));
    assert_eq!(due.meta.content_type, "application/json");
    assert!(due.meta.received_at > 0);
    let r = got("resched-1").await;
    assert_eq!((r.state, r.attempts, r.meta.last_status), (EventState::Due, 1, Some(503)));
    assert_eq!(r.meta.last_error.as_deref(), Some("503 Service Unavailable"));
    assert_eq!(r.meta.last_attempt_at, Some(2));
    let f = got("flying-1").await;
    assert_eq!((f.state, f.attempts), (EventState::InFlight, 1));
    let d = got("dead-1").await;
    assert_eq!((d.state, d.attempts, d.meta.last_status), (EventState::Dead, 1, Some(400)));
    assert_eq!(&d.body[..], br#"{"id":"dead-1"}"#);
    let dead_page = s.list(EventState::Dead, 10, None).await.unwrap();
    assert_eq!(dead_page.events[0].meta.last_error.as_deref(), Some("400 Bad Request"));

    // The format-1 lease still holds: its worker's token acks the event under format 2.
    let lease = Lease { id: id("flying-1"), token: token("flying-1").parse().unwrap(), deadline_ms: 0 };
    assert!(s.ack(&lease).await.unwrap(), "the migrated lease was lost");
    // Dedup carried over: delivered and stored ids are still duplicates.
    for dup in ["done-1", "dead-1", "flying-1"] {
        assert_eq!(s.enqueue(&id(dup), b"{}", "application/json", DAY).await.unwrap(), Enqueued::Duplicate, "{dup}");
    }
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.due, stats.in_flight, stats.dead), (2, 0, 1));
    assert!(stats.oldest_due_age.is_some());

    // A format-1 relay still running during the upgrade: what it stores is picked up, and it
    // cannot claim (its claim stops at the fence, now a hash, before taking anything).
    old.enqueue("late-1", r#"{"id":"late-1"}"#).await;
    let refused = old.claim().await.expect_err("a format-1 claim ran on format-2 keys");
    assert!(refused.to_string().contains("WRONGTYPE"), "{refused}");
    assert_eq!(s.stats().await.unwrap().due, 3, "the refused claim took nothing");
    let claim = s.claim(10, Duration::from_secs(30)).await.unwrap();
    let mut ids: Vec<(&str, u32, &[u8])> =
        claim.events.iter().map(|e| (e.lease.id.as_str(), e.attempt, &e.body[..])).collect();
    ids.sort();
    assert_eq!(ids, [("due-1", 1, &br#"{"id":"due-1"}"#[..]), ("late-1", 1, &br#"{"id":"late-1"}"#[..])]);
    assert!(!exists(&conn, &k.v1.body).await, "the late format-1 event was moved when claimed");
    println!("migration: 4 events moved by 3 relays at once; a format-1 claim afterwards: {refused}");
}

async fn a_newer_format_is_refused_untouched(cluster: bool) {
    let (_backend, opts) = connect(cluster).await;
    let conn = Conn::connect(&opts).await.unwrap();
    let s = Store::new(conn.clone(), "t/newer");
    let k = s.keys().clone();
    conn.clone().cmd(redis::cmd("SET").arg(&k.format).arg("3")).await.unwrap();
    conn.clone().cmd(redis::cmd("HSET").arg(&k.v1.body).arg("x").arg("{}")).await.unwrap();
    let e = s.prepare().await.unwrap_err();
    assert!(matches!(e, StoreError::NewerFormat { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("store format 3") && msg.contains("format 2 at most") && msg.contains(&k.format), "{msg}");
    assert!(exists(&conn, &k.v1.body).await, "a refused prepare changed the keys");
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod single { $( #[tokio::test] async fn $name() { super::$name(false).await } )* }
        mod cluster { $( #[tokio::test] async fn $name() { super::$name(true).await } )* }
    };
}

on_both!(format_1_data_in_every_state_is_migrated_in_place, a_newer_format_is_refused_untouched);
