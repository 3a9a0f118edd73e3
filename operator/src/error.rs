//! The operator's one error type. Variants a user fixes in the spec or the namespace
//! become `Ready=False` with the variant's [`Error::reason`]; the rest are retried with
//! backoff. Every variant has a metric label. No message carries a secret value.

use webhook_relay_api::render::{SecretEnv, SecretFile, SpecError};

/// A Secret key the relay reads (as an environment variable or a file), for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    /// Secret name.
    pub secret: String,
    /// Key within it.
    pub key: String,
    /// The spec field naming it.
    pub field: &'static str,
}

impl From<&SecretEnv> for SecretUse {
    fn from(s: &SecretEnv) -> Self {
        SecretUse { secret: s.secret.clone(), key: s.key.clone(), field: s.field }
    }
}

impl From<&SecretFile> for SecretUse {
    fn from(s: &SecretFile) -> Self {
        SecretUse { secret: s.secret.clone(), key: s.key.clone(), field: s.field }
    }
}

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot become a relay config.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// A referenced Secret does not exist.
    #[error("Secret {:?} referenced by {} does not exist in namespace {namespace:?}; create it with key {:?}", .secret.secret, .secret.field, .secret.key)]
    SecretNotFound { secret: SecretUse, namespace: String },
    /// A referenced Secret lacks the key.
    #[error("Secret {:?} (referenced by {}) has no key {:?}; add it", .secret.secret, .secret.field, .secret.key)]
    SecretKeyNotFound { secret: SecretUse },
    /// The Sidecar mode target Deployment does not exist.
    #[error("Deployment {name:?} named by spec.workload.targetRef does not exist in namespace {namespace:?}")]
    TargetNotFound { name: String, namespace: String },
    /// The API server refused a child object: admission (a policy, a webhook), a quota, an
    /// exhausted Service IP range, RBAC, ... Shown in status until the cause is gone.
    #[error("the API server refused {child}: {message} ({code} {reason})")]
    ApplyFailed { child: String, code: u16, reason: String, message: String },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized (a bug).
    #[error("serializing: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// Low-cardinality label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::SecretNotFound { .. } => "secret_not_found",
            Error::SecretKeyNotFound { .. } => "secret_key_not_found",
            Error::TargetNotFound { .. } => "target_not_found",
            Error::ApplyFailed { .. } => "apply_failed",
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
        }
    }

    /// An error writing `child`: the API server's answer becomes [`Error::ApplyFailed`]
    /// (the user sees it in status); no answer at all (a connection error) stays transient.
    pub fn applying(child: impl Into<String>, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) => Error::ApplyFailed {
                child: child.into(),
                code: s.code,
                reason: if s.reason.is_empty() { "Failure".into() } else { s.reason.clone() },
                message: s.message.clone(),
            },
            other => Error::Kube(other),
        }
    }

    /// The `Ready` condition reason for errors the user must fix; `None` for transient ones.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::InvalidSpec(_) => Some("InvalidSpec"),
            Error::SecretNotFound { .. } => Some("SecretNotFound"),
            Error::SecretKeyNotFound { .. } => Some("SecretKeyNotFound"),
            Error::TargetNotFound { .. } => Some("TargetNotFound"),
            Error::ApplyFailed { .. } => Some("ApplyFailed"),
            Error::Kube(_) | Error::Serialize(_) => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretUse {
        SecretUse { secret: "relay-redis".into(), key: "url".into(), field: "spec.redis.urlSecretRef" }
    }

    #[test]
    fn user_errors_say_what_to_fix() {
        let e = Error::SecretNotFound { secret: secret(), namespace: "cx".into() };
        let msg = e.to_string();
        assert!(
            msg.contains("relay-redis") && msg.contains("spec.redis.urlSecretRef") && msg.contains("\"url\""),
            "{msg}"
        );
        assert_eq!(e.reason(), Some("SecretNotFound"));
        assert_eq!(e.metric_label(), "secret_not_found");
        let e = Error::InvalidSpec(SpecError {
            field: "spec.destination.url".into(),
            message: "must be http or https".into(),
        });
        assert_eq!(e.to_string(), "invalid spec: spec.destination.url: must be http or https");
        assert_eq!(e.reason(), Some("InvalidSpec"));
        let e = Error::TargetNotFound { name: "api".into(), namespace: "cx".into() };
        assert!(e.to_string().contains("spec.workload.targetRef"));
        let refused =
            kube::core::Status::failure("services \"orders-relay\" is forbidden: no Services here", "Forbidden")
                .with_code(403);
        let e = Error::applying("Service orders-relay", kube::Error::Api(Box::new(refused)));
        assert_eq!(e.reason(), Some("ApplyFailed"));
        assert_eq!(
            e.to_string(),
            "the API server refused Service orders-relay: services \"orders-relay\" is forbidden: no Services here (403 Forbidden)"
        );
    }
}
