//! The crate's one error type: which call failed and how, in variants an operator maps
//! to condition reasons. Messages never carry the client secret or an access token.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

/// The Genesys Cloud call that failed, named in every error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `POST /oauth/token` (Client Credentials grant).
    Token {
        /// The OAuth client id (not a secret).
        client_id: String,
    },
    /// `GET /api/v2/conversations/messaging/integrations/open/{id}`.
    GetOpenIntegration {
        /// The Open Messaging integration id.
        integration_id: String,
    },
    /// `POST /api/v2/conversations/messages/{id}/inbound/open/receipt`.
    SendReceipt {
        /// The Open Messaging integration id.
        integration_id: String,
        /// The id of the outbound message the receipt is about.
        message_id: String,
    },
}

impl Call {
    /// What an operator should check when this call is refused with 403.
    fn forbidden_hint(&self) -> &'static str {
        match self {
            Call::Token { .. } => {
                "the OAuth client is not allowed to log in; check that it is active and uses the Client Credentials grant"
            }
            Call::GetOpenIntegration { .. } => {
                "the OAuth client's role needs the messaging:integration:view permission"
            }
            Call::SendReceipt { .. } => "the OAuth client's role needs the conversation:message:receive permission",
        }
    }

    fn not_found_hint(&self) -> &'static str {
        match self {
            Call::Token { .. } => "check the login base URL",
            Call::GetOpenIntegration { .. } | Call::SendReceipt { .. } => {
                "check the integration id and that it belongs to this region's organisation"
            }
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Token { client_id } => {
                write!(f, "POST /oauth/token for OAuth client {client_id}")
            }
            Call::GetOpenIntegration { integration_id } => {
                write!(f, "GET open messaging integration {integration_id}")
            }
            Call::SendReceipt { integration_id, message_id } => {
                write!(f, "POST receipt for message {message_id} to open messaging integration {integration_id}")
            }
        }
    }
}

/// Why a Genesys Cloud call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Credentials refused at the token endpoint (400/401 `invalid_client` and the like),
    /// or the API answered 401 even with a freshly issued token.
    #[error("{call}: {status}{}; check the OAuth client id and secret, that the client uses the Client Credentials grant, and the region", suffix(.detail))]
    Unauthorized {
        /// The call that failed.
        call: Call,
        /// The status Genesys answered with (400 or 401).
        status: StatusCode,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// 403: the OAuth client lacks a permission.
    #[error("{call}: 403 Forbidden{}; {}", suffix(.detail), .call.forbidden_hint())]
    Forbidden {
        /// The call that failed.
        call: Call,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// 404: the integration (or endpoint) does not exist.
    #[error("{call}: 404 Not Found{}; {}", suffix(.detail), .call.not_found_hint())]
    NotFound {
        /// The call that failed.
        call: Call,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// 429 on every attempt.
    #[error("{call}: 429 Too Many Requests on every attempt{}{}", retry_after_suffix(.retry_after), suffix(.detail))]
    RateLimited {
        /// The call that failed.
        call: Call,
        /// The last `Retry-After` Genesys asked for.
        retry_after: Option<Duration>,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// 5xx: on every attempt, or once for 501 (never retried).
    #[error("{call}: {status}{}", suffix(.detail))]
    Server {
        /// The call that failed.
        call: Call,
        /// The last status.
        status: StatusCode,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// Any other 4xx: Genesys refused the request itself (e.g. 400 on a malformed receipt).
    #[error("{call}: {status}{}", suffix(.detail))]
    Rejected {
        /// The call that failed.
        call: Call,
        /// The status.
        status: StatusCode,
        /// What Genesys said, if anything.
        detail: String,
    },
    /// No HTTP answer: connection refused, DNS, TLS or timeout, on every attempt.
    #[error("{call}: could not reach Genesys Cloud: {detail}")]
    Unreachable {
        /// The call that failed.
        call: Call,
        /// The transport error, with its causes.
        detail: String,
    },
    /// The request could not be made from what the caller gave (e.g. an empty id).
    #[error("{call}: invalid request: {detail}")]
    InvalidRequest {
        /// The call that was not made.
        call: Call,
        /// What was wrong with the input.
        detail: String,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("{call}: unexpected response: {detail}")]
    InvalidResponse {
        /// The call that failed.
        call: Call,
        /// What was wrong with it.
        detail: String,
    },
}

impl Error {
    /// The call that failed.
    pub fn call(&self) -> &Call {
        match self {
            Error::Unauthorized { call, .. }
            | Error::Forbidden { call, .. }
            | Error::NotFound { call, .. }
            | Error::RateLimited { call, .. }
            | Error::Server { call, .. }
            | Error::Rejected { call, .. }
            | Error::Unreachable { call, .. }
            | Error::InvalidRequest { call, .. }
            | Error::InvalidResponse { call, .. } => call,
        }
    }

    /// A stable CamelCase label for condition reasons and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "Unauthorized",
            Error::Forbidden { .. } => "Forbidden",
            Error::NotFound { .. } => "NotFound",
            Error::RateLimited { .. } => "RateLimited",
            Error::Server { .. } => "ServerError",
            Error::Rejected { .. } => "Rejected",
            Error::Unreachable { .. } => "Unreachable",
            Error::InvalidRequest { .. } => "InvalidRequest",
            Error::InvalidResponse { .. } => "InvalidResponse",
        }
    }

    /// The HTTP status Genesys answered with, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Unauthorized { status, .. } | Error::Server { status, .. } | Error::Rejected { status, .. } => {
                Some(*status)
            }
            Error::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
            Error::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            Error::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            Error::Unreachable { .. } | Error::InvalidRequest { .. } | Error::InvalidResponse { .. } => None,
        }
    }

    /// Whether trying again later may succeed without anyone changing configuration.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::Server { .. } | Error::Unreachable { .. })
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(": {detail}") }
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (last Retry-After {} s)", wait.as_secs()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_call_and_status() {
        let err =
            Error::NotFound { call: Call::GetOpenIntegration { integration_id: "6d1e".into() }, detail: String::new() };
        assert!(err.to_string().starts_with("GET open messaging integration 6d1e: 404 Not Found"), "{err}");
        assert_eq!(err.reason(), "NotFound");

        let err = Error::Server {
            call: Call::SendReceipt { integration_id: "i".into(), message_id: "m".into() },
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "service.unavailable: try later".into(),
        };
        assert_eq!(
            err.to_string(),
            "POST receipt for message m to open messaging integration i: 503 Service Unavailable: service.unavailable: try later"
        );
        assert!(err.is_transient());
    }
}
