//! Sending one request with retries: 429 waits `Retry-After` (capped), 5xx other than
//! 501 and transport failures back off exponentially, all within a bounded number of
//! attempts.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::error::{Call, Error};

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
    /// The wait before retry number `retry` (1 for the first retry): exponential,
    /// capped, with "equal jitter" (between half and all of it) so that many clients
    /// failing together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let base = self.initial_backoff.saturating_mul(1u32 << doublings).min(self.max_backoff);
        let half = base / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }
}

/// Whether a status is worth another attempt: 429 and every 5xx except 501, which
/// says the endpoint does not exist and never will on retry.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
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
    let mut attempt = 1;
    loop {
        let last = attempt >= attempts;
        let wait = match request().send().await {
            Ok(response) => {
                let status = response.status();
                if last || !is_retryable_status(status) {
                    return Ok(response);
                }
                let wait = if status == StatusCode::TOO_MANY_REQUESTS {
                    rate_limit_wait(response)
                        .await
                        .map(|wait| wait.min(policy.max_retry_after))
                        .unwrap_or_else(|| policy.backoff(attempt))
                } else {
                    policy.backoff(attempt)
                };
                tracing::warn!(
                    call = %call,
                    status = status.as_u16(),
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "Genesys Cloud call failed, retrying"
                );
                wait
            }
            Err(err) => {
                let detail = error_chain(&err);
                if last || !is_retryable_transport(&err) {
                    return Err(Error::Unreachable { call: call.clone(), detail });
                }
                let wait = policy.backoff(attempt);
                tracing::warn!(
                    call = %call,
                    error = %detail,
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "Genesys Cloud unreachable, retrying"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
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

/// The `Retry-After` header as a wait: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// An error and its causes on one line, without repeats (reqwest nests hyper's errors).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

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

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(17)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
