//! The Open Messaging integration as `GET .../messaging/integrations/open/{id}` returns it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::secret::Secret;

/// An Open Messaging integration (the fields the relay uses; others are ignored).
///
/// `Debug` prints webhook header names only, since their values are often credentials
/// for the webhook endpoint.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenIntegration {
    /// Integration id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Where Genesys POSTs outbound messages (should be the relay's intake endpoint).
    #[serde(default)]
    pub outbound_notification_webhook_url: Option<String>,
    /// The signing secret for outbound webhooks, if Genesys returns it.
    #[serde(default)]
    pub outbound_notification_webhook_signature_secret_token: Option<Secret>,
    /// Extra headers Genesys sends with each outbound webhook.
    #[serde(default)]
    pub webhook_headers: BTreeMap<String, String>,
    /// `Active` or `Inactive`.
    #[serde(default)]
    pub status: Option<String>,
    /// Asynchronous creation: `Initiated`, `Completed` or `Error`.
    #[serde(default)]
    pub create_status: Option<String>,
    /// Why creation failed, when `create_status` is `Error`.
    #[serde(default)]
    pub create_error: Option<IntegrationCreateError>,
}

/// Genesys' error body for a failed integration creation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationCreateError {
    /// Error code, e.g. `bad.request`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
}

impl OpenIntegration {
    /// Whether the integration is created and switched on, i.e. it can carry messages.
    pub fn is_active(&self) -> bool {
        self.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Active"))
            && self.create_status.as_deref().is_none_or(|s| s.eq_ignore_ascii_case("Completed"))
    }
}

impl fmt::Debug for OpenIntegration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenIntegration")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("outbound_notification_webhook_url", &self.outbound_notification_webhook_url)
            .field(
                "outbound_notification_webhook_signature_secret_token",
                &self.outbound_notification_webhook_signature_secret_token,
            )
            .field("webhook_headers", &self.webhook_headers.keys().collect::<Vec<_>>())
            .field("status", &self.status)
            .field("create_status", &self.create_status)
            .field("create_error", &self.create_error)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape_and_hides_header_values() {
        let integration: OpenIntegration = serde_json::from_value(serde_json::json!({
            "id": "6d1e0000-0000-4000-8000-000000000001",
            "name": "orders",
            "outboundNotificationWebhookUrl": "https://hooks.example.com/webhooks/genesys",
            "outboundNotificationWebhookSignatureSecretToken": "sig-secret",
            "webhookHeaders": {"Authorization": "Bearer header-secret"},
            "status": "Active",
            "createStatus": "Completed",
            "dateCreated": "2026-01-01T00:00:00.000Z",
            "selfUri": "/api/v2/conversations/messaging/integrations/open/6d1e"
        }))
        .unwrap();
        assert!(integration.is_active());
        assert_eq!(integration.webhook_headers["Authorization"], "Bearer header-secret");
        let printed = format!("{integration:?}");
        assert!(printed.contains("Authorization"), "{printed}");
        assert!(!printed.contains("header-secret"), "{printed}");
        assert!(!printed.contains("sig-secret"), "{printed}");
    }

    #[test]
    fn failed_creation_is_not_active() {
        let integration: OpenIntegration = serde_json::from_value(serde_json::json!({
            "id": "x", "status": "Active", "createStatus": "Error",
            "createError": {"code": "bad.request", "message": "webhook URL unreachable"}
        }))
        .unwrap();
        assert!(!integration.is_active());
        assert_eq!(integration.create_error.unwrap().message.as_deref(), Some("webhook URL unreachable"));
    }
}
