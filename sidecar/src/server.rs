//! Serving a router on a listener with the limits a public endpoint needs: a header read
//! timeout per connection (a client that stalls mid-request is disconnected instead of
//! holding a socket forever), a handler panic turned into a 500 instead of a dropped
//! connection, and a graceful shutdown bounded in time.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::any::Any;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

/// Bytes of read buffer one connection may hold (headers must fit in it).
pub const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time allowed for a request's headers, from when the connection waits for them.
    pub header_read_timeout: Duration,
    /// How long open connections may finish their requests after shutdown begins.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits
/// (at most `limits.drain`) for requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // What one connection may buffer beyond what a handler takes; bounds the memory of
        // many connections whose bodies nobody reads (refused requests).
        .max_buf_size(MAX_CONNECTION_BUFFER);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| app.clone().oneshot(req.map(Body::new)));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            drain_ms = limits.drain.as_millis() as u64,
            "connections still open after the drain time; closing them"
        );
    }
    Ok(())
}

/// Turns a panic in a handler into a `500` with a JSON error; the process and the
/// connection's other requests carry on.
pub fn catch_panic() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(panic_response as fn(Box<dyn Any + Send + 'static>) -> Response)
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    // The panic hook already printed the message; it may quote request data, so it is not
    // repeated in the structured log.
    tracing::error!("a request handler panicked; answered 500");
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], r#"{"error":"internal error"}"#)
        .into_response()
}
