//! Checks that a relay's Genesys Cloud Open Messaging integration sends its outbound
//! webhooks to the relay: the `GenesysWebhookVerified` condition.
//!
//! The check reads the OAuth credentials Secret (`spec.genesys.credentialsSecretRef`, keys
//! `clientId` and `clientSecret`), looks the integration up and compares its
//! `outboundNotificationWebhookUrl` with the relay's endpoint (`status.endpoint`) as
//! written, except that one trailing `/` on either side is ignored: scheme, host, port,
//! path and query must otherwise be equal, since Genesys POSTs to exactly that URL.
//!
//! It calls Genesys Cloud, so it runs on its own period ([`DEFAULT_INTERVAL`]), not on every
//! reconcile: the [`Checker`] keeps the last verdict per relay with what it was made for
//! (uid, generation, endpoint, the Secret's resourceVersion) and checks again at once when
//! any of them changes. Failures that may pass by themselves (unreachable, rate limited,
//! 5xx) are checked again after [`TRANSIENT_RECHECK`]. The client secret goes to the
//! Genesys client only: never into a verdict, a log line or an event.

use crate::metrics::Metrics;
use genesys_cloud::{Call, ClientConfig, Credentials, Environment, GenesysClient, OpenIntegration, RetryPolicy};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info};
use webhook_relay_api::crd::{GenesysSpec, WebhookRelay};
use webhook_relay_api::render::{GENESYS_CLIENT_ID_KEY, GENESYS_CLIENT_SECRET_KEY};

/// How often a relay's integration is looked up when nothing changed.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a transient failure (unreachable, rate limited, 5xx) is checked again.
pub const TRANSIENT_RECHECK: Duration = Duration::from_secs(60);
/// Bound on one whole check (token and lookup, retries included).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

// Condition reasons of this check; Genesys client failures keep the client's own
// `Error::reason()` (`Unauthorized`, `Forbidden`, `Unreachable`, `RateLimited`, `ServerError`, ...).
/// True: the integration posts to `status.endpoint`.
pub const WEBHOOK_URL_MATCHES: &str = "WebhookUrlMatches";
/// False: the integration posts elsewhere, or nowhere.
pub const WEBHOOK_URL_MISMATCH: &str = "WebhookUrlMismatch";
/// False: Genesys answered 404 for `spec.genesys.integrationId`.
pub const INTEGRATION_NOT_FOUND: &str = "IntegrationNotFound";
/// False: the credentials Secret, or one of its keys, is missing or empty.
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
/// `spec.genesys` names no environment the client can reach (e.g. an unknown region).
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The outcome of one check; becomes the `GenesysWebhookVerified` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCheck {
    /// Condition status True.
    pub verified: bool,
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message; says what to fix. Never holds a secret.
    pub message: String,
    /// Whether checking again soon may change it without anyone changing anything.
    pub transient: bool,
}

impl WebhookCheck {
    fn failed(reason: &'static str, message: String) -> Self {
        WebhookCheck { verified: false, reason, message, transient: false }
    }
}

/// Whether the integration's `webhook_url` is the relay's `endpoint` (one trailing `/` aside).
pub fn same_url(webhook_url: &str, endpoint: &str) -> bool {
    let trim = |u: &str| u.strip_suffix('/').unwrap_or(u).to_string();
    trim(webhook_url) == trim(endpoint)
}

/// The verdict on looking up integration `integration_id` for a relay at `endpoint`;
/// `secret` names the credentials Secret for messages.
pub fn verdict(
    integration_id: &str,
    lookup: std::result::Result<&OpenIntegration, &genesys_cloud::Error>,
    endpoint: &str,
    secret: &str,
) -> WebhookCheck {
    match lookup {
        Ok(integration) => {
            let name = &integration.name;
            match integration.outbound_notification_webhook_url.as_deref() {
                Some(url) if same_url(url, endpoint) => {
                    let mut message = format!(
                        "Open Messaging integration {integration_id} ({name}) sends outbound messages to {endpoint}"
                    );
                    if !integration.is_active() {
                        message.push_str(&format!(
                            "; note: the integration is not active (status {}, createStatus {})",
                            integration.status.as_deref().unwrap_or("unset"),
                            integration.create_status.as_deref().unwrap_or("unset"),
                        ));
                    }
                    WebhookCheck { verified: true, reason: WEBHOOK_URL_MATCHES, message, transient: false }
                }
                Some(url) => WebhookCheck::failed(
                    WEBHOOK_URL_MISMATCH,
                    format!(
                        "Open Messaging integration {integration_id} ({name}) sends outbound messages to {url}, but this \
                         relay's endpoint is {endpoint}; set the integration's Outbound Notification Webhook URL to {endpoint}"
                    ),
                ),
                None => WebhookCheck::failed(
                    WEBHOOK_URL_MISMATCH,
                    format!(
                        "Open Messaging integration {integration_id} ({name}) has no Outbound Notification Webhook URL; \
                         set it to this relay's endpoint {endpoint}"
                    ),
                ),
            }
        }
        Err(e @ genesys_cloud::Error::NotFound { call: Call::GetOpenIntegration { .. }, .. }) => {
            WebhookCheck::failed(INTEGRATION_NOT_FOUND, format!("{e} (spec.genesys.integrationId)"))
        }
        Err(e @ genesys_cloud::Error::Unauthorized { .. }) => {
            WebhookCheck::failed(e.reason(), format!("{e} (credentials from Secret {secret:?})"))
        }
        Err(e) => {
            WebhookCheck { verified: false, reason: e.reason(), message: e.to_string(), transient: e.is_transient() }
        }
    }
}

/// The OAuth credentials in the Secret `name` (in `namespace`), as the relay would read them
/// from its environment (values as stored; an empty value counts as missing).
pub fn credentials(
    secret: Option<&Secret>,
    name: &str,
    namespace: &str,
) -> std::result::Result<Credentials, WebhookCheck> {
    let Some(secret) = secret else {
        return Err(WebhookCheck::failed(
            SECRET_NOT_FOUND,
            format!(
                "Secret {name:?} named by spec.genesys.credentialsSecretRef does not exist in namespace {namespace:?}; \
                 create it with keys {GENESYS_CLIENT_ID_KEY} and {GENESYS_CLIENT_SECRET_KEY}"
            ),
        ));
    };
    let value = |key: &str| {
        let bytes = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).filter(|b| !b.is_empty());
        let Some(bytes) = bytes else {
            return Err(WebhookCheck::failed(
                SECRET_NOT_FOUND,
                format!(
                    "Secret {name:?} (spec.genesys.credentialsSecretRef) has no key {key:?} or it is empty; add it"
                ),
            ));
        };
        String::from_utf8(bytes).map_err(|_| {
            WebhookCheck::failed(SECRET_NOT_FOUND, format!("Secret {name:?} key {key:?} is not UTF-8 text"))
        })
    };
    Ok(Credentials::new(value(GENESYS_CLIENT_ID_KEY)?, value(GENESYS_CLIENT_SECRET_KEY)?))
}

/// What a verdict was made for: any change makes it stale at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFor {
    pub uid: String,
    pub generation: Option<i64>,
    pub endpoint: String,
    /// resourceVersion of the credentials Secret (`None` when it is missing).
    pub secret_version: Option<String>,
}

/// A verdict with when and for what it was made.
#[derive(Clone, Debug)]
pub struct Checked {
    pub for_: CheckedFor,
    pub at: Instant,
    pub verdict: WebhookCheck,
}

impl Checked {
    /// Whether a relay now described by `now_for` needs a new lookup at `now`.
    pub fn is_due(&self, now_for: &CheckedFor, now: Instant, interval: Duration) -> bool {
        let wait = if self.verdict.transient { interval.min(TRANSIENT_RECHECK) } else { interval };
        self.for_ != *now_for || now.saturating_duration_since(self.at) >= wait
    }
}

/// Runs the checks and remembers the last verdict per relay (by uid).
pub struct Checker {
    http: reqwest::Client,
    interval: Duration,
    config: ClientConfig,
    last: Mutex<HashMap<String, Checked>>,
}

impl Checker {
    /// A checker sharing the operator's `http` client, looking up each integration every `interval`.
    pub fn new(http: reqwest::Client, interval: Duration) -> Self {
        // Fewer retries than the client's default: the check runs again on its period anyway.
        let config = ClientConfig {
            retry: RetryPolicy { max_attempts: 2, ..RetryPolicy::default() },
            ..ClientConfig::default()
        };
        Checker { http, interval, config, last: Mutex::new(HashMap::new()) }
    }

    /// Forgets what was checked for the relay with `uid` (deleted, or `spec.genesys` removed).
    pub fn forget(&self, uid: &str) {
        self.last.lock().expect("checker lock").remove(uid);
    }

    /// The verdict for `relay` at `endpoint`: the last one while it is fresh, else a new
    /// lookup. `None` when the relay has no `spec.genesys` (then there is no condition).
    /// `secret` is the credentials Secret as the reconcile read it (`None` when missing).
    pub async fn check(
        &self,
        relay: &WebhookRelay,
        endpoint: &str,
        secret: Option<&Secret>,
        metrics: &Metrics,
    ) -> Option<WebhookCheck> {
        let uid = relay.uid().unwrap_or_default();
        let Some(g) = &relay.spec.genesys else {
            self.forget(&uid);
            return None;
        };
        let ns = relay.namespace().unwrap_or_default();
        let secret_name = &g.credentials_secret_ref.name;
        let for_ = CheckedFor {
            uid: uid.clone(),
            generation: relay.metadata.generation,
            endpoint: endpoint.to_string(),
            secret_version: secret.and_then(|s| s.resource_version()),
        };
        let relay_key = format!("{ns}/{}", relay.name_any());
        let now = Instant::now();
        if let Some(last) = self.last.lock().expect("checker lock").get(&uid)
            && !last.is_due(&for_, now, self.interval)
        {
            debug!(relay = %relay_key, reason = last.verdict.reason, "Genesys webhook check not due");
            return Some(last.verdict.clone());
        }
        let verdict = match credentials(secret, secret_name, &ns) {
            Ok(creds) => self.lookup(g, creds, endpoint, secret_name).await,
            Err(v) => v,
        };
        metrics.genesys_checked(verdict.reason);
        info!(
            relay = %relay_key, integration_id = %g.integration_id, verified = verdict.verified, reason = verdict.reason,
            "checked the Genesys Cloud integration's webhook URL"
        );
        let mut last = self.last.lock().expect("checker lock");
        // Relays deleted without a final reconcile leave entries; drop the long-stale ones.
        let keep = self.interval.saturating_mul(3);
        last.retain(|_, c| now.saturating_duration_since(c.at) < keep);
        last.insert(uid, Checked { for_, at: now, verdict: verdict.clone() });
        Some(verdict)
    }

    async fn lookup(&self, g: &GenesysSpec, creds: Credentials, endpoint: &str, secret: &str) -> WebhookCheck {
        let env = Environment::from_settings(
            g.region.as_deref(),
            g.environment.as_deref(),
            g.api_base_url.as_deref(),
            g.login_base_url.as_deref(),
        );
        let env = match env {
            Ok(env) => env,
            Err(e) => return WebhookCheck::failed(INVALID_SPEC, format!("spec.genesys: {e}")),
        };
        // A client per check: tokens are cheap next to a 5 minute period, and a rotated
        // Secret then takes effect at once.
        let client = GenesysClient::with_config(self.http.clone(), env, creds, self.config.clone());
        match tokio::time::timeout(CHECK_TIMEOUT, client.get_open_integration(&g.integration_id)).await {
            Ok(result) => verdict(&g.integration_id, result.as_ref(), endpoint, secret),
            Err(_) => WebhookCheck {
                verified: false,
                reason: "Unreachable",
                message: format!(
                    "GET open messaging integration {}: no answer from Genesys Cloud within {CHECK_TIMEOUT:?}",
                    g.integration_id
                ),
                transient: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use reqwest::StatusCode;
    use std::collections::BTreeMap;

    const ENDPOINT: &str = "https://hooks.example.com/webhooks/genesys";

    fn integration(url: Option<&str>) -> OpenIntegration {
        serde_json::from_value(serde_json::json!({
            "id": "6d1e", "name": "orders", "outboundNotificationWebhookUrl": url,
            "webhookHeaders": {}, "status": "Active", "createStatus": "Completed"
        }))
        .unwrap()
    }

    fn lookup_call() -> Call {
        Call::GetOpenIntegration { integration_id: "6d1e".into() }
    }

    #[test]
    fn urls_compare_exactly_but_for_a_trailing_slash() {
        assert!(same_url(ENDPOINT, ENDPOINT));
        assert!(same_url(&format!("{ENDPOINT}/"), ENDPOINT));
        assert!(same_url("https://h/", "https://h"));
        assert!(!same_url("http://hooks.example.com/webhooks/genesys", ENDPOINT));
        assert!(!same_url("https://hooks.example.com/webhooks/genesys?x=1", ENDPOINT));
        assert!(!same_url("https://hooks.example.com/webhooks/genesys//", ENDPOINT));
    }

    #[test]
    fn matching_url_is_verified() {
        let v = verdict("6d1e", Ok(&integration(Some(&format!("{ENDPOINT}/")))), ENDPOINT, "oauth");
        assert!(v.verified);
        assert_eq!(v.reason, WEBHOOK_URL_MATCHES);
        assert!(v.message.contains(ENDPOINT) && !v.message.contains("not active"), "{}", v.message);
        let mut inactive = integration(Some(ENDPOINT));
        inactive.status = Some("Inactive".into());
        let v = verdict("6d1e", Ok(&inactive), ENDPOINT, "oauth");
        assert!(v.verified && v.message.contains("not active (status Inactive"), "{}", v.message);
    }

    #[test]
    fn other_url_is_a_mismatch_showing_both() {
        let v = verdict("6d1e", Ok(&integration(Some("https://old.example.com/hook"))), ENDPOINT, "oauth");
        assert!(!v.verified);
        assert_eq!(v.reason, WEBHOOK_URL_MISMATCH);
        assert!(v.message.contains("https://old.example.com/hook") && v.message.contains(ENDPOINT), "{}", v.message);
        let v = verdict("6d1e", Ok(&integration(None)), ENDPOINT, "oauth");
        assert_eq!(v.reason, WEBHOOK_URL_MISMATCH);
        assert!(v.message.contains("no Outbound Notification Webhook URL"), "{}", v.message);
    }

    #[test]
    fn lookup_errors_map_to_reasons() {
        let not_found = genesys_cloud::Error::NotFound { call: lookup_call(), detail: String::new() };
        let v = verdict("6d1e", Err(&not_found), ENDPOINT, "oauth");
        assert_eq!((v.verified, v.reason, v.transient), (false, INTEGRATION_NOT_FOUND, false));
        assert!(v.message.contains("spec.genesys.integrationId"), "{}", v.message);

        let token_call = Call::Token { client_id: "client-1".into() };
        let unauthorized = genesys_cloud::Error::Unauthorized {
            call: token_call.clone(),
            status: StatusCode::UNAUTHORIZED,
            detail: "invalid_client".into(),
        };
        let v = verdict("6d1e", Err(&unauthorized), ENDPOINT, "genesys-oauth");
        assert_eq!((v.reason, v.transient), ("Unauthorized", false));
        assert!(v.message.contains("\"genesys-oauth\""), "{}", v.message);
        // A 404 at the token endpoint is not a missing integration.
        let login_404 = genesys_cloud::Error::NotFound { call: token_call, detail: String::new() };
        assert_eq!(verdict("6d1e", Err(&login_404), ENDPOINT, "o").reason, "NotFound");

        let forbidden = genesys_cloud::Error::Forbidden { call: lookup_call(), detail: String::new() };
        let v = verdict("6d1e", Err(&forbidden), ENDPOINT, "o");
        assert_eq!(v.reason, "Forbidden");
        assert!(v.message.contains("messaging:integration:view"), "{}", v.message);

        let down = genesys_cloud::Error::Unreachable { call: lookup_call(), detail: "connection refused".into() };
        let v = verdict("6d1e", Err(&down), ENDPOINT, "o");
        assert_eq!((v.reason, v.transient), ("Unreachable", true));
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn missing_secret_or_key_is_secret_not_found_without_values() {
        let v = credentials(None, "genesys-oauth", "cx").unwrap_err();
        assert_eq!(v.reason, SECRET_NOT_FOUND);
        assert!(v.message.contains("genesys-oauth") && v.message.contains("clientSecret"), "{}", v.message);
        let v = credentials(Some(&secret(&[("clientId", "id-1")])), "genesys-oauth", "cx").unwrap_err();
        assert_eq!(v.reason, SECRET_NOT_FOUND);
        assert!(v.message.contains("\"clientSecret\"") && !v.message.contains("id-1"), "{}", v.message);
        let v = credentials(Some(&secret(&[("clientId", "id-1"), ("clientSecret", "")])), "o", "cx").unwrap_err();
        assert_eq!(v.reason, SECRET_NOT_FOUND);
        let creds =
            credentials(Some(&secret(&[("clientId", "id-1"), ("clientSecret", "hunter2-secret")])), "o", "cx").unwrap();
        assert_eq!(creds.client_id(), "id-1");
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn a_check_is_due_on_change_or_after_its_period() {
        let for_ = CheckedFor {
            uid: "u".into(),
            generation: Some(1),
            endpoint: ENDPOINT.into(),
            secret_version: Some("7".into()),
        };
        let t0 = Instant::now();
        let ok = WebhookCheck { verified: true, reason: WEBHOOK_URL_MATCHES, message: String::new(), transient: false };
        let c = Checked { for_: for_.clone(), at: t0, verdict: ok.clone() };
        let interval = Duration::from_secs(300);
        assert!(!c.is_due(&for_, t0 + Duration::from_secs(299), interval));
        assert!(c.is_due(&for_, t0 + Duration::from_secs(300), interval));
        for changed in [
            CheckedFor { generation: Some(2), ..for_.clone() },
            CheckedFor { endpoint: "https://other/".into(), ..for_.clone() },
            CheckedFor { secret_version: Some("8".into()), ..for_.clone() },
            CheckedFor { uid: "v".into(), ..for_.clone() },
        ] {
            assert!(c.is_due(&changed, t0, interval), "{changed:?}");
        }
        let flaky = Checked { verdict: WebhookCheck { verified: false, transient: true, ..ok }, ..c };
        assert!(!flaky.is_due(&for_, t0 + Duration::from_secs(59), interval));
        assert!(flaky.is_due(&for_, t0 + TRANSIENT_RECHECK, interval));
    }
}
