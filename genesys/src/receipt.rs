//! Delivery receipts for outbound Open Messaging messages, built from the message
//! payload Genesys sent to the relay.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The reason code Genesys documents for a failure with no more specific code.
pub const GENERAL_ERROR: &str = "GeneralError";

/// The body of `POST /api/v2/conversations/messages/{integrationId}/inbound/open/receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Id of the outbound message this receipt is about (the payload's `id`).
    pub id: String,
    /// Recipient and time.
    pub channel: ReceiptChannel,
    /// `Delivered` or `Failed`.
    pub status: ReceiptStatus,
    /// Why it failed; sent only with `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReceiptReason>,
    /// No further receipt follows for this message.
    pub is_final_receipt: bool,
    /// Always `Outbound`: receipts are about messages Genesys sent.
    pub direction: ReceiptDirection,
}

/// The receipt's `channel`: who the message was for and when this happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptChannel {
    /// The original message's `channel.to`.
    pub to: ReceiptRecipient,
    /// When the outcome was known; sent as ISO-8601 UTC with milliseconds.
    #[serde(serialize_with = "iso8601_millis")]
    pub time: DateTime<Utc>,
}

/// A message recipient as Open Messaging identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptRecipient {
    /// Recipient id on the external platform.
    pub id: String,
    /// How `id` is to be read; Open Messaging uses `Opaque`.
    pub id_type: String,
}

/// Outcome reported by a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// The message reached the recipient's side.
    Delivered,
    /// The message will not be delivered.
    Failed,
}

/// Direction of the message a receipt is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptDirection {
    /// A message Genesys sent out through the integration.
    Outbound,
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptReason {
    /// Reason code, e.g. [`GENERAL_ERROR`].
    pub code: String,
    /// Human-readable explanation shown to Genesys users.
    pub message: String,
}

/// Why a receipt could not be built from a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A field the receipt copies is absent or not a non-empty string.
    #[error(
        "the Open Messaging payload has no string at {pointer}; a receipt needs the original message id and recipient"
    )]
    MissingField {
        /// JSON pointer of the field, e.g. `/channel/to/id`.
        pointer: &'static str,
    },
    /// The payload is not an outbound message, so there is nothing to acknowledge.
    #[error("the Open Messaging payload has direction {direction:?}; receipts are only for Outbound messages")]
    NotOutbound {
        /// The payload's direction.
        direction: String,
    },
}

impl Receipt {
    /// A final `Delivered` receipt for the outbound message `original`, timed now.
    pub fn delivered(original: &Value) -> Result<Self, ReceiptError> {
        Self::for_message(original, ReceiptStatus::Delivered, Vec::new())
    }

    /// A final `Failed` receipt (reason code `GeneralError`) for `original`, timed now.
    pub fn failed(original: &Value, message: impl Into<String>) -> Result<Self, ReceiptError> {
        let reason = ReceiptReason { code: GENERAL_ERROR.to_owned(), message: message.into() };
        Self::for_message(original, ReceiptStatus::Failed, vec![reason])
    }

    /// The same receipt with another `channel.time`.
    pub fn at(mut self, time: DateTime<Utc>) -> Self {
        self.channel.time = time;
        self
    }

    fn for_message(original: &Value, status: ReceiptStatus, reasons: Vec<ReceiptReason>) -> Result<Self, ReceiptError> {
        if let Some(direction) = original.get("direction").and_then(Value::as_str)
            && direction != "Outbound"
        {
            return Err(ReceiptError::NotOutbound { direction: direction.to_owned() });
        }
        let id = string_at(original, "/id")?;
        let to_id = string_at(original, "/channel/to/id")?;
        // Open Messaging recipients are always Opaque; older payloads may omit it.
        let id_type = string_at(original, "/channel/to/idType").unwrap_or_else(|_| "Opaque".to_owned());
        Ok(Self {
            id,
            channel: ReceiptChannel { to: ReceiptRecipient { id: to_id, id_type }, time: Utc::now() },
            status,
            reasons,
            is_final_receipt: true,
            direction: ReceiptDirection::Outbound,
        })
    }
}

fn string_at(value: &Value, pointer: &'static str) -> Result<String, ReceiptError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(ReceiptError::MissingField { pointer })
}

fn iso8601_millis<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outbound() -> Value {
        json!({
            "id": "msg-1",
            "channel": {
                "platform": "Open", "type": "Private", "messageId": "ext-1",
                "to": {"id": "customer-9", "idType": "Opaque"},
                "from": {"id": "integration", "idType": "Opaque"},
                "time": "2026-01-02T03:04:05.678Z"
            },
            "type": "Text", "text": "hello", "direction": "Outbound"
        })
    }

    fn at() -> DateTime<Utc> {
        "2026-02-03T04:05:06.789Z".parse().unwrap()
    }

    #[test]
    fn failed_receipt_has_the_documented_shape() {
        let receipt = Receipt::failed(&outbound(), "downstream refused it").unwrap().at(at());
        assert_eq!(
            serde_json::to_value(&receipt).unwrap(),
            json!({
                "id": "msg-1",
                "channel": {"to": {"id": "customer-9", "idType": "Opaque"}, "time": "2026-02-03T04:05:06.789Z"},
                "status": "Failed",
                "reasons": [{"code": "GeneralError", "message": "downstream refused it"}],
                "isFinalReceipt": true,
                "direction": "Outbound"
            })
        );
    }

    #[test]
    fn delivered_receipt_has_no_reasons() {
        let receipt = Receipt::delivered(&outbound()).unwrap().at(at());
        assert_eq!(
            serde_json::to_value(&receipt).unwrap(),
            json!({
                "id": "msg-1",
                "channel": {"to": {"id": "customer-9", "idType": "Opaque"}, "time": "2026-02-03T04:05:06.789Z"},
                "status": "Delivered",
                "isFinalReceipt": true,
                "direction": "Outbound"
            })
        );
    }

    #[test]
    fn payloads_without_id_or_recipient_are_refused() {
        let mut payload = outbound();
        payload["channel"]["to"].as_object_mut().unwrap().remove("id");
        assert_eq!(Receipt::delivered(&payload).unwrap_err(), ReceiptError::MissingField { pointer: "/channel/to/id" });
        assert_eq!(
            Receipt::delivered(&json!({"channel": {"to": {"id": "x"}}})).unwrap_err(),
            ReceiptError::MissingField { pointer: "/id" }
        );
        let mut payload = outbound();
        payload["direction"] = json!("Inbound");
        assert!(matches!(Receipt::delivered(&payload), Err(ReceiptError::NotOutbound { .. })));
    }

    #[test]
    fn missing_id_type_defaults_to_opaque() {
        let mut payload = outbound();
        payload["channel"]["to"].as_object_mut().unwrap().remove("idType");
        assert_eq!(Receipt::delivered(&payload).unwrap().channel.to.id_type, "Opaque");
    }
}
