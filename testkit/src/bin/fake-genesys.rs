//! `fake-genesys`: the fake Genesys Cloud of the tests as its own process (the test cluster
//! runs it as a pod): the documented token, integration and receipt endpoints, plus control
//! endpoints to set integrations, read receipts and post signed Open Messaging events to a
//! webhook URL as Genesys does. Listens on `LISTEN` (default `0.0.0.0:8080`).

use testkit::genesys_fake::FakeGenesys;

#[tokio::main]
async fn main() {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let fake = FakeGenesys::start_controlled(&listen).await;
    println!("fake-genesys: serving {}", fake.base_url);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
}
