//! The contract between the operator and the sidecar.
//!
//! [`config::RelayConfig`] is the sidecar's runtime configuration (`relay.yaml`): the
//! operator renders it, the sidecar loads and validates it. With the `crd` feature,
//! [`crd`] holds the `WebhookRelay` custom resource and [`render`] the one translation
//! from it to a `RelayConfig`. Nothing here knows about HTTP servers, Redis connections
//! or Kubernetes controllers.

pub mod config;
pub mod duration;

#[cfg(feature = "crd")]
pub mod crd;
#[cfg(feature = "crd")]
pub mod render;

pub use config::{ConfigError, RelayConfig, RelayId};
