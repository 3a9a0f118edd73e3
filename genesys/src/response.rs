//! Turning a failed HTTP answer into an [`Error`]: a short, secret-free summary of what
//! Genesys said, and the variant for its status.

use std::time::Duration;

use reqwest::{Response, StatusCode};

use crate::error::{Call, Error};
use crate::retry::retry_after;

/// Longest summary of an error body kept in an error message.
const MAX_DETAIL_CHARS: usize = 300;

/// A non-2xx answer, read and summarised.
pub(crate) struct Failure {
    /// The status.
    pub status: StatusCode,
    /// `Retry-After`, if sent.
    pub retry_after: Option<Duration>,
    /// The OAuth `error` code (`invalid_client`), when the body is an OAuth error.
    pub oauth_error: Option<String>,
    /// A one-line summary of the body with every string in `redact` replaced by `***`.
    pub detail: String,
}

impl Failure {
    /// Reads the body of a failed response. `redact` lists the secrets the request
    /// carried, in case the server echoes one back.
    pub async fn read(response: Response, redact: &[&str]) -> Self {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        let (oauth_error, detail) = summarise(&body);
        let detail = redact_all(detail, redact);
        Self { status, retry_after, oauth_error, detail }
    }

    /// The error for this answer to `call`.
    pub fn into_error(self, call: Call) -> Error {
        let Failure { status, retry_after, detail, .. } = self;
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized { call, status, detail },
            StatusCode::FORBIDDEN => Error::Forbidden { call, detail },
            StatusCode::NOT_FOUND => Error::NotFound { call, detail },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited { call, retry_after, detail },
            s if s.is_server_error() => Error::Server { call, status, detail },
            _ => Error::Rejected { call, status, detail },
        }
    }
}

/// The OAuth `error` code, if any, and a summary like
/// `not.found: The requested resource was not found (contextId 1234)`.
fn summarise(body: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(body);
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text) else {
        return (None, truncate(text.split_whitespace().collect::<Vec<_>>().join(" ")));
    };
    let field = |names: &[&str]| {
        names.iter().find_map(|n| map.get(*n).and_then(|v| v.as_str()).filter(|s| !s.is_empty())).map(str::to_owned)
    };
    let oauth_error = field(&["error"]);
    let code = field(&["code", "error"]);
    let message = field(&["message", "error_description", "description"]);
    let context = field(&["contextId"]);
    let mut detail = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => String::new(),
    };
    if let Some(context) = context {
        detail.push_str(&format!(" (contextId {context})"));
    }
    (oauth_error, truncate(detail.trim().to_owned()))
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_DETAIL_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn redact_all(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_platform_api_errors() {
        let body = br#"{"message":"Integration not found","code":"not.found","status":404,"contextId":"c-1"}"#;
        assert_eq!(summarise(body), (None, "not.found: Integration not found (contextId c-1)".to_owned()));
    }

    #[test]
    fn summarises_oauth_errors() {
        let body =
            br#"{"error":"invalid_client","description":"client not found","error_description":"client not found"}"#;
        assert_eq!(summarise(body), (Some("invalid_client".to_owned()), "invalid_client: client not found".to_owned()));
    }

    #[test]
    fn summarises_other_bodies_briefly() {
        assert_eq!(summarise(b"<html>\n  Bad   gateway\n</html>").1, "<html> Bad gateway </html>");
        assert_eq!(summarise(b"").1, "");
        let long = "x".repeat(1000);
        assert_eq!(summarise(long.as_bytes()).1.chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn redacts_echoed_secrets() {
        assert_eq!(redact_all("bad token abc123 here".into(), &["abc123", ""]), "bad token *** here");
    }
}
