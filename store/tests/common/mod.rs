//! What the store's test files share: a prepared store on a fresh Redis, and running each
//! scenario on a single server and on a 3-node Redis Cluster.

use std::time::Duration;
use testkit::RedisBackend;
use webhook_relay_store::{Conn, ConnectOptions, EventId, NewEvent, Store};

/// A format-2 store of relay `relay` on a new single server or 3-node cluster.
pub async fn store(cluster: bool, relay: &str) -> (RedisBackend, Store) {
    let backend = RedisBackend::start(cluster);
    let conn = Conn::connect(&ConnectOptions::new(backend.url())).await.expect("connect to redis");
    let store = Store::new(conn, relay);
    store.prepare().await.expect("format 2 keys");
    (backend, store)
}

/// Stores `n` JSON events `<prefix>0000`, `<prefix>0001`, ... (due now, in that order) with a
/// dedup window of a day.
#[allow(dead_code)] // not every test file stores numbered events
pub async fn enqueue_numbered(s: &Store, prefix: &str, n: usize) {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent {
            id: EventId::new(format!("{prefix}{i:04}")).unwrap(),
            body: format!("{{\"id\":{i}}}").into_bytes().into(),
            content_type: "application/json".into(),
            trace_context: None,
            ordering_key: None,
        })
        .collect();
    s.enqueue_many(&events, Duration::from_secs(86400)).await.unwrap();
}

/// Runs each `async fn name(cluster: bool)` as `single::name` and `cluster::name`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod single { $( #[tokio::test] async fn $name() { super::$name(false).await } )* }
        mod cluster { $( #[tokio::test] async fn $name() { super::$name(true).await } )* }
    };
}
