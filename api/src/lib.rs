//! The contract between the operator and the sidecar.
//!
//! [`config::RelayConfig`] is the sidecar's runtime configuration (`relay.yaml`): the
//! operator renders it, the sidecar loads and validates it. Nothing here knows about
//! HTTP servers, Redis connections or Kubernetes controllers.

pub mod config;
pub mod duration;

pub use config::{ConfigError, RelayConfig, RelayId};
