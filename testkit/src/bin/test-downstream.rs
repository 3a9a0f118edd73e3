//! `test-downstream`: the scripted downstream of the tests as its own process (the test
//! cluster runs it as a pod). Listens on `LISTEN` (default `0.0.0.0:8080`); the starting
//! script is the JSON `SCRIPT` (a `ScriptSpec`, default: 200 for everything); steer it with
//! `PUT /control/script` and read what it received with `GET /control/hits`.

use testkit::downstream::{Downstream, ScriptSpec};

#[tokio::main]
async fn main() {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let spec: ScriptSpec = match std::env::var("SCRIPT") {
        Ok(json) => serde_json::from_str(&json).unwrap_or_else(|e| panic!("SCRIPT is not a script: {e}")),
        Err(_) => ScriptSpec::default(),
    };
    let d = Downstream::start_controlled(&listen, spec).await;
    println!("test-downstream: serving {}", d.url);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
}
