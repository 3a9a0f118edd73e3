//! Sending one request with retries: 429 waits `Retry-After` (capped), 5xx other than
//! 501 and transport failures back off exponentially, all within a bounded number of
//! attempts.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use webhook_relay_util::retry::{self, Backoff, Jitter, Next, Schedule};

use crate::error::{Call, Error};

pub(crate) use webhook_relay_util::error_chain;
pub(crate) use webhook_relay_util::retry_after::from_headers as retry_after;

/// How many times and how patiently a call is retried. Defaults live in `Default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1). Default 4.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each retry, with jitter. Default 500 ms.
    pub initial_backoff: Duration,
    /// Ceiling for the exponential backoff. Default 10 s.
    pub max_backoff: Duration,
    /// Ceiling for a 429's `Retry-After` wait. Default 60 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The shared retry schedule: exponential, capped, with "equal jitter" (between half
    /// and all of each wait) so that many clients failing together do not retry together.
    fn schedule(&self) -> Schedule {
        Schedule {
            attempts: self.max_attempts.max(1),
            backoff: Backoff::doubling(self.initial_backoff, self.max_backoff, Jitter::Equal),
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        self.schedule().backoff.delay(retry)
    }
}

/// Whether a status is worth another attempt: 429 and every 5xx except 501, which
/// says the endpoint does not exist and never will on retry.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// Why one try did not give a final answer.
enum Failed {
    /// A retryable status (never on the last try, which returns its answer); the wait a
    /// 429 asked for, if it said.
    Status(StatusCode, Option<Duration>),
    /// No answer at all.
    Transport(reqwest::Error),
}

/// Sends the request built by `request` until it gets a final answer.
///
/// Returns the response of the last attempt, whatever its status (the caller turns a
/// failed one into an [`Error`]), or `Unreachable` when the last attempt had no answer.
pub(crate) async fn send(
    policy: &RetryPolicy,
    call: &Call,
    mut request: impl FnMut() -> RequestBuilder,
) -> Result<Response, Error> {
    let attempts = policy.max_attempts.max(1);
    let attempt = |n: u32| {
        let sent = request().send();
        async move {
            let response = sent.await.map_err(Failed::Transport)?;
            let status = response.status();
            if n >= attempts || !is_retryable_status(status) {
                return Ok(response);
            }
            let wait = if status == StatusCode::TOO_MANY_REQUESTS { rate_limit_wait(response).await } else { None };
            Err(Failed::Status(status, wait))
        }
    };
    let should_retry = |failed: &Failed, n: u32| match failed {
        Failed::Status(status, wait) => {
            let wait = wait.map(|w| w.min(policy.max_retry_after)).unwrap_or_else(|| policy.backoff(n));
            tracing::warn!(
                call = %call,
                status = status.as_u16(),
                attempt = n,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Genesys Cloud call failed, retrying"
            );
            Next::RetryIn(wait)
        }
        Failed::Transport(err) if is_retryable_transport(err) => {
            let wait = policy.backoff(n);
            tracing::warn!(
                call = %call,
                error = %error_chain(err),
                attempt = n,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Genesys Cloud unreachable, retrying"
            );
            Next::RetryIn(wait)
        }
        Failed::Transport(_) => Next::GiveUp,
    };
    match retry::run(policy.schedule(), attempt, should_retry).await {
        Ok(response) => Ok(response),
        Err(Failed::Transport(err)) => Err(Error::Unreachable { call: call.clone(), detail: error_chain(&err) }),
        // The last try returns whatever it got, so a status never ends the loop as an error.
        Err(Failed::Status(status, _)) => {
            Err(Error::Unreachable { call: call.clone(), detail: format!("answered {status} on every attempt") })
        }
    }
}

fn is_retryable_transport(err: &reqwest::Error) -> bool {
    // `is_request` covers connections that broke mid-request; repeating a receipt is
    // harmless because Genesys keys it by the original message id.
    err.is_connect() || err.is_timeout() || err.is_request()
}

/// How long a 429 asks us to wait: the `Retry-After` header, or else the number in
/// the body's "Retry the request in [N] seconds" message that Genesys sends with
/// `code: too.many.requests.retry.after`.
async fn rate_limit_wait(response: Response) -> Option<Duration> {
    if let Some(wait) = retry_after(response.headers()) {
        return Some(wait);
    }
    let body: serde_json::Value = response.json().await.ok()?;
    if body.get("code")?.as_str()? != "too.many.requests.retry.after" {
        return None;
    }
    let message = body.get("message")?.as_str()?;
    let start = message.find('[')? + 1;
    let end = start + message[start..].find(']')?;
    message[start..end].trim().parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.backoff(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_retryable_status(StatusCode::GATEWAY_TIMEOUT));
        assert!(!is_retryable_status(StatusCode::NOT_IMPLEMENTED));
        assert!(!is_retryable_status(StatusCode::BAD_REQUEST));
        assert!(!is_retryable_status(StatusCode::UNAUTHORIZED));
        assert!(!is_retryable_status(StatusCode::OK));
    }
}
