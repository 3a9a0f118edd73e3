//! `webhook-relay-operator`: reconciles `WebhookRelay` resources into configured relays.
//!
//! [`resources`] builds the desired objects (pure), [`status`] the status (pure),
//! [`controller`] reads, applies and writes, skipping applies that would change nothing
//! ([`children`]); [`redis_probe`] reads queue figures and
//! persistence settings from the relay's Redis; [`genesys_check`] verifies the Genesys
//! Cloud integration's webhook URL; [`leader`] elects one active replica;
//! [`metrics`] serves `/metrics` and `/healthz`.

pub mod children;
pub mod controller;
pub mod error;
pub mod genesys_check;
pub mod leader;
pub mod metrics;
pub mod redis_probe;
pub mod resources;
pub mod status;

use kube::CustomResourceExt;
use webhook_relay_api::crd::WebhookRelay;

/// Path of the generated CRD, relative to the workspace root.
pub const CRD_PATH: &str = "crds/webhookrelay.dev_webhookrelays.yaml";

/// The CRD as YAML: what `webhook-relay-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&WebhookRelay::crd()).expect("the CRD serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_file_matches_the_rust_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(CRD_PATH);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "{CRD_PATH} is out of date with the WebhookRelay types: run \
             `cargo run -p webhook-relay-operator -- crd > {CRD_PATH}` and commit the result"
        );
    }

    #[test]
    fn crd_has_names_columns_and_validation() {
        let crd = WebhookRelay::crd();
        assert_eq!(crd.spec.group, "webhookrelay.dev");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["whr".to_string()][..]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<(String, i32)> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.to_uppercase(), c.priority.unwrap_or(0)))
            .collect();
        assert_eq!(
            cols,
            [
                ("READY".into(), 0),
                ("DUE".into(), 0),
                ("DEAD".into(), 0),
                ("AGE".into(), 0),
                ("BLOCKED".into(), 1),
                ("REASON".into(), 1),
                ("ENDPOINT".into(), 1)
            ]
        );
        let yaml = crd_yaml();
        for needle in [
            "x-kubernetes-validations",
            "targetRef (a Deployment) is required in Sidecar mode",
            "give region or environment, not both",
            "^([0-9]+(ms|s|m|h))+$",
            "maximum: 1000.0",
            "x-kubernetes-list-type: map",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle:?}");
        }
    }
}
