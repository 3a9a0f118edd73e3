//! Bounded waits: every loop that waits for something gives up after a limit and says what
//! it waited for.

use std::time::{Duration, Instant};

/// The longest any wait of the cluster tests takes unless it says otherwise.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` every 20 ms until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Polls `f` every 250 ms for up to [`WAIT`]; fails the test with `what` if it never yields.
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_within(WAIT, what, f)
}

/// Like [`wait_for`] with its own limit.
pub fn wait_for_within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls an async condition every 50 ms up to `limit`; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// Runs a test body under a bound of 60 s.
pub async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future).await.expect("test did not finish within 60 s")
}
