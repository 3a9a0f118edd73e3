//! webhook-relay: receives webhooks, stores them durably in Redis before answering 200,
//! delivers them downstream with retries and backoff, and dead-letters what never succeeds.
//!
//! [`app::run`] wires the parts; each router is built by one function from the shared
//! [`state::AppState`] so tests drive it without a socket.

pub mod admin;
pub mod admin_api;
pub mod admin_types;
pub mod app;
pub mod batch;
pub mod cli;
pub mod console;
pub mod delivery;
pub mod event_id;
pub mod intake;
pub mod metrics;
pub mod otlp;
pub mod receipts;
pub mod run_config;
pub mod server;
pub mod signature;
pub mod state;
pub mod trace_context;
