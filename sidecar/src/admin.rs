//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the bearer-token API under
//! `/v1/`, and the dead-letter console at `/ui/`. It listens apart from intake so an
//! Ingress never exposes it.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// The admin app.
pub fn router(relay: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin_api::router(relay.clone()))
        .merge(crate::console::router())
        .layer(crate::server::catch_panic())
        .with_state(relay)
}

async fn readyz(State(relay): State<Arc<AppState>>) -> Response {
    if relay.is_leaving() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !relay.redis_up() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("redis cannot store events: {}\n", relay.redis_problem()))
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(relay): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], relay.metrics.encode())
        .into_response()
}
