//! The bearer-token admin API under `/v1/` (dead letters: list, show, replay, delete).

use crate::relay::Relay;
use axum::Router;
use std::sync::Arc;

/// Routes under `/v1/`.
pub fn router(_relay: Arc<Relay>) -> Router<Arc<Relay>> {
    Router::new()
}
