//! The operator against the test cluster (pods run), real `kubectl`, and a real Redis on the
//! host's cluster address (pods reach it too): children, status, events and cleanup of
//! Standalone and Sidecar relays, problems reported in status, leader election. Objects are
//! read typed, through the API.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::time::Duration;
use testkit::kube::*;
use testkit::wait::wait_for;
use webhook_relay_api::RelayConfig;
use webhook_relay_operator::resources::{
    CONFIG_HASH_ANNOTATION, CONFIG_KEY, SECRETS_HASH_ANNOTATION, SIDECAR_OF_LABEL,
};
use webhook_relay_store::{Conn, ConnectOptions, DeadBounds, EventId, EventMeta, Store};

/// Puts `due` events in the relay's queue and dead-letters `dead` more, as the sidecar would.
fn fill_queue(redis_url: &str, relay_id: &str, due: usize, dead: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = Conn::connect(&ConnectOptions::new(redis_url)).await.unwrap();
        let store = Store::new(conn, relay_id);
        let day = Duration::from_secs(86400);
        for i in 0..dead {
            let id = EventId::new(format!("dead-{i}")).unwrap();
            store.enqueue(&id, br#"{"id":"x"}"#, "application/json", day).await.unwrap();
            let claim = store.claim(1, Duration::from_secs(30)).await.unwrap();
            let bounds = DeadBounds { max_age: day, max_entries: 1000 };
            assert!(store.dead_letter(&claim.events[0].lease, &EventMeta::default(), bounds, false).await.unwrap());
        }
        for i in 0..due {
            let id = EventId::new(format!("due-{i}")).unwrap();
            store.enqueue(&id, br#"{"id":"y"}"#, "application/json", day).await.unwrap();
        }
    });
}

/// Records `failures` failed attempts in the relay's destination gate, as the relays'
/// delivery workers would, with a breaker of that threshold: the circuit opens.
fn open_circuit(redis_url: &str, relay_id: &str, failures: u32) {
    use webhook_relay_store::{Breaker, GateOutcome, GatePolicy};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::new(Conn::connect(&ConnectOptions::new(redis_url)).await.unwrap(), relay_id);
        let gate = GatePolicy {
            breaker: Some(Breaker { failure_threshold: failures, open_for: Duration::from_secs(600) }),
            ..GatePolicy::default()
        };
        for _ in 0..failures {
            store.record_gate(GateOutcome { ok: false, probe: false, pause: None }, &gate).await.unwrap();
        }
    });
}

/// The rendered relay.yaml of ConfigMap `name`.
fn rendered(cm: &ConfigMap) -> String {
    cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)).cloned().expect("relay.yaml in the ConfigMap")
}

/// Gives the signing Secret a new value and waits until the pod template of Deployment
/// `deployment` carries a new Secrets hash (the operator does not watch Secrets: the periodic
/// refresh, 2 s in these tests, picks the change up). Returns the Deployment.
fn rotate_signing_secret(ns: &Namespace, deployment: &str, value: &str) -> Deployment {
    let before = ns.get::<Deployment>(deployment).unwrap();
    let before = template_annotation(&before, SECRETS_HASH_ANNOTATION).expect("a secrets-hash annotation");
    let patch = serde_json::json!({ "stringData": { "secret": value } }).to_string();
    ns.kubectl(&["patch", "secret", "genesys-webhook", "--type", "merge", "-p", &patch]);
    wait_for("pod template to roll on the rotated Secret", || {
        let d = ns.get::<Deployment>(deployment)?;
        template_annotation(&d, SECRETS_HASH_ANNOTATION).is_some_and(|h| h != before).then_some(d)
    })
}

/// (env name, Secret, key) of every env var; fails on a literal value.
fn env_refs(c: &Container) -> Vec<(String, String, String)> {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e.value.is_none(), "literal env value in {e:?}");
            let r = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("a secretKeyRef");
            (e.name.clone(), r.name.clone(), r.key.clone())
        })
        .collect()
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.replicas
}

fn volume_names(d: &Deployment) -> Vec<String> {
    pod_spec(d).volumes.iter().flatten().map(|v| v.name.clone()).collect()
}

#[test]
fn standalone_relay_gets_children_status_and_follows_spec_changes() {
    let ns = Namespace::create("whr-standalone");
    let redis = cluster_redis();
    ns.example_secrets(&redis.url());
    let op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&example("webhookrelay.yaml"));
    let relay_id = format!("{}/orders", ns.name);

    // ConfigMap: the rendered relay.yaml, loadable by the sidecar, owned by the relay.
    let cm = wait_for("ConfigMap orders-relay", || ns.get::<ConfigMap>("orders-relay"));
    let config = RelayConfig::from_yaml(&rendered(&cm)).unwrap();
    assert_eq!(config.relay.as_str(), relay_id);
    assert_eq!(config.destination.url.as_str(), "http://orders.cx.svc:8080/events");
    assert_eq!(config.source.path, "/webhooks/genesys");
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("WebhookRelay", Some(true)));

    // Deployment: image, args, ports, secrets as secretKeyRef, locked down, config hash.
    let d = wait_for("Deployment orders-relay", || ns.get::<Deployment>("orders-relay"));
    assert_eq!(replicas(&d), Some(2));
    let c = container(&d, "webhook-relay").expect("relay container");
    assert_eq!(c.image.as_deref(), Some(RELAY_IMAGE));
    assert_eq!(c.args.as_deref().unwrap(), ["serve", "--config", "/etc/webhook-relay/relay.yaml"]);
    assert_eq!(
        env_refs(c),
        [
            ("REDIS_URL".into(), "relay-redis".into(), "url".into()),
            ("RELAY_SIGNING_SECRET".into(), "genesys-webhook".into(), "secret".into()),
            ("RELAY_ADMIN_TOKEN".into(), "relay-admin".into(), "token".into()),
            ("GENESYS_CLIENT_ID".into(), "genesys-oauth".into(), "clientId".into()),
            ("GENESYS_CLIENT_SECRET".into(), "genesys-oauth".into(), "clientSecret".into()),
        ]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_non_root, sc.read_only_root_filesystem), (Some(true), Some(true)));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref()?.http_get.as_ref()?.path.clone();
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let hash1 = template_annotation(&d, CONFIG_HASH_ANNOTATION).unwrap();
    let config_volume = &pod_spec(&d).volumes.as_ref().unwrap()[0];
    assert_eq!(config_volume.config_map.as_ref().unwrap().name, "orders-relay");

    // Service and Ingress.
    let svc = wait_for("Service orders-relay", || ns.get::<Service>("orders-relay"));
    let ports = svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port, ports[0].target_port.clone()),
        (Some("http"), 80, Some(IntOrString::Int(8080)))
    );
    assert_eq!(ports[1].name.as_deref(), Some("admin"));
    let ing = wait_for("Ingress orders-relay", || ns.get::<Ingress>("orders-relay"));
    let spec = ing.spec.as_ref().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rule = &spec.rules.as_ref().unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("hooks.example.com"));
    assert_eq!(rule.http.as_ref().unwrap().paths[0].path.as_deref(), Some("/webhooks/genesys"));
    assert_eq!(spec.tls.as_ref().unwrap()[0].secret_name.as_deref(), Some("hooks-tls"));

    // Status: ready (the relay pods run), endpoint, Redis durable, generation observed.
    let ready = ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "True", None);
    assert!(ready.message.contains("relay pods available"), "{}", ready.message);
    ns.wait_condition("orders", "RedisPersistent", "True", Some("Durable"));
    let r = ns.relay("orders").unwrap();
    let status = r.status.as_ref().unwrap();
    assert_eq!(status.endpoint.as_deref(), Some("https://hooks.example.com/webhooks/genesys"));
    assert_eq!(status.observed_generation, r.metadata.generation);

    // Rotating a Secret the relay reads rolls the pods; the config (and ConfigMap) stay.
    let cm_version = ns.get::<ConfigMap>("orders-relay").unwrap().metadata.resource_version;
    let d = rotate_signing_secret(&ns, "orders-relay", "rotated-webhook-secret-value");
    assert_eq!(template_annotation(&d, CONFIG_HASH_ANNOTATION).as_deref(), Some(hash1.as_str()));
    let cm = ns.get::<ConfigMap>("orders-relay").unwrap();
    assert_eq!(cm.metadata.resource_version, cm_version, "the ConfigMap changed on a Secret rotation");
    wait_for("SecretsChanged event", || ns.event_reasons("orders").iter().any(|r| r == "SecretsChanged").then_some(()));

    // Queue figures come from Redis and show in `kubectl get whr`. Scaled to zero first, so
    // that no relay pod takes the due events meanwhile: Ready is then False, saying why.
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", r#"{"spec":{"workload":{"replicas":0}}}"#]);
    ns.wait_condition_within(Duration::from_secs(120), "orders", "Ready", "False", Some("ScaledToZero"));
    wait_for("no relay pod left", || pods(&ns, "app.kubernetes.io/instance=orders").is_empty().then_some(()));
    fill_queue(&redis.url(), &relay_id, 2, 1);
    let row = wait_for("kubectl get whr to show DUE 2 DEAD 1", || {
        let out = ns.kubectl(&["get", "whr", "orders", "--no-headers"]);
        let cols: Vec<&str> = out.split_whitespace().collect();
        (cols.len() >= 4 && cols[1] == "False" && cols[2] == "2" && cols[3] == "1").then_some(out)
    });
    let wide = ns.kubectl(&["get", "whr", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "DUE", "DEAD", "AGE", "BLOCKED", "REASON", "ENDPOINT"], "{wide}");
    let orders: Vec<&str> = wide.lines().find(|l| l.starts_with("orders")).unwrap().split_whitespace().collect();
    assert_eq!(orders[5], "0", "BLOCKED: nothing waits behind an ordering key: {wide}");
    assert!(wide.contains("ScaledToZero"), "REASON shows why it is not Ready: {wide}");
    assert!(wide.contains("https://hooks.example.com/webhooks/genesys"), "{wide}");
    assert!(
        !row.contains("https://") && !row.contains("ScaledToZero"),
        "BLOCKED, REASON and ENDPOINT only show with -o wide: {row}"
    );

    // The circuit breaker the relays share in Redis shows as DownstreamHealthy.
    let breaker = r#"{"spec":{"delivery":{"circuitBreaker":{"failureThreshold":2,"openFor":"10m"}}}}"#;
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", breaker]);
    ns.wait_condition("orders", "DownstreamHealthy", "True", Some("CircuitClosed"));
    let cm = ns.get::<ConfigMap>("orders-relay").unwrap();
    assert!(rendered(&cm).contains("circuitBreaker:"), "{}", rendered(&cm));
    open_circuit(&redis.url(), &relay_id, 2);
    let open = ns.wait_condition("orders", "DownstreamHealthy", "False", Some("CircuitOpen"));
    assert!(open.message.contains("circuit open since") && open.message.contains("2 consecutive"), "{open:?}");
    let hash1 = wait_for("Deployment with the breaker's config", || {
        let d = ns.get::<Deployment>("orders-relay")?;
        template_annotation(&d, CONFIG_HASH_ANNOTATION).filter(|h| *h != hash1)
    });

    // A spec change: children and observedGeneration follow; the Ingress goes away.
    let patch =
        r#"{"spec":{"destination":{"url":"http://billing.cx.svc:9000/in"},"ingress":null,"workload":{"replicas":3}}}"#;
    ns.kubectl(&["patch", "whr", "orders", "--type", "merge", "-p", patch]);
    let generation = ns.relay("orders").unwrap().metadata.generation;
    wait_for("ConfigMap with the new destination", || {
        rendered(&ns.get::<ConfigMap>("orders-relay")?).contains("http://billing.cx.svc:9000/in").then_some(())
    });
    let d = wait_for("Deployment rolled to the new config", || {
        let d = ns.get::<Deployment>("orders-relay")?;
        (template_annotation(&d, CONFIG_HASH_ANNOTATION)? != hash1).then_some(d)
    });
    assert_eq!(replicas(&d), Some(3));
    wait_for("Ingress deleted", || ns.get::<Ingress>("orders-relay").is_none().then_some(()));
    wait_for("observedGeneration to follow", || {
        (ns.relay("orders")?.status?.observed_generation == generation).then_some(())
    });
    let endpoint = ns.relay("orders").unwrap().status.unwrap().endpoint;
    assert_eq!(endpoint, Some(format!("http://orders-relay.{}.svc/webhooks/genesys", ns.name)));

    // Events say what happened, and neither events nor status carry a secret value.
    let reasons = wait_for("ConfigApplied and Ready events", || {
        let r = ns.event_reasons("orders");
        // Repeats of one reason are folded into one Event (a series) by the recorder.
        (r.iter().any(|x| x == "ConfigApplied") && r.iter().any(|x| x == "Ready")).then_some(r)
    });
    assert!(!reasons.iter().any(|r| r == "InvalidSpec"), "{reasons:?}");
    let status_text = ns.kubectl(&["get", "whr", "orders", "-o", "yaml"]);
    for text in [status_text, ns.events_text()] {
        for secret in [
            redis.url().as_str(),
            "replace-with-the-integration-webhook-secret",
            "rotated-webhook-secret-value",
            "replace-with-a-long-random-token",
            "replace-with-the-oauth-client-secret",
        ] {
            assert!(!text.contains(secret), "secret value {secret:?} leaked");
        }
    }

    // Metrics are served.
    let metrics = op.http_get("/metrics").unwrap();
    assert!(metrics.contains("webhook_relay_operator_reconciliations_total"), "{metrics}");

    // Deleting the relay lets the garbage collector remove its children.
    ns.kubectl(&["delete", "whr", "orders", "--wait=true", "--timeout=60s"]);
    wait_for("children garbage-collected", || {
        (ns.get::<ConfigMap>("orders-relay").is_none() && ns.get::<Deployment>("orders-relay").is_none()).then_some(())
    });
}

#[test]
fn problems_are_reported_in_status_and_fixed_without_restarts() {
    let ns = Namespace::create("whr-problems");
    let mut redis = cluster_redis();
    let op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    let relay = |timeout: &str| {
        format!(
            "apiVersion: webhookrelay.dev/v1alpha1\nkind: WebhookRelay\nmetadata: {{name: hooks}}\nspec:\n  \
             source: {{verify: {{scheme: none}}}}\n  destination: {{url: 'http://sink.test:8080/in', timeout: {timeout}}}\n  \
             redis: {{urlSecretRef: {{name: hooks-redis, key: url}}}}\n"
        )
    };
    ns.apply(&relay("5s"));

    // Missing Secret, then missing key: Ready=False saying what to create; nothing rolled out.
    let msg = ns.wait_condition("hooks", "Ready", "False", Some("SecretNotFound")).message;
    assert!(msg.contains("hooks-redis") && msg.contains("spec.redis.urlSecretRef"), "{msg}");
    assert!(ns.get::<Deployment>("hooks-relay").is_none());
    assert!(ns.event_reasons("hooks").iter().any(|r| r == "SecretNotFound"));
    ns.kubectl(&["create", "secret", "generic", "hooks-redis", "--from-literal=uri=wrong-key"]);
    let msg = ns.wait_condition("hooks", "Ready", "False", Some("SecretKeyNotFound")).message;
    assert!(msg.contains("\"url\""), "{msg}");

    // Fixing the Secret makes it Ready (retried with backoff, no restart).
    ns.kubectl(&["delete", "secret", "hooks-redis"]);
    ns.kubectl(&["create", "secret", "generic", "hooks-redis", &format!("--from-literal=url={}", redis.url())]);
    ns.wait_condition_within(Duration::from_secs(120), "hooks", "Ready", "True", None);
    wait_for("Deployment hooks-relay", || ns.get::<Deployment>("hooks-relay"));

    // A spec the schema accepts but the relay cannot run: InvalidSpec naming the field.
    ns.apply(&relay("1h"));
    let msg = ns.wait_condition("hooks", "Ready", "False", Some("InvalidSpec")).message;
    assert!(msg.contains("spec.destination.timeout"), "{msg}");
    ns.apply(&relay("5s"));
    ns.wait_condition_within(Duration::from_secs(120), "hooks", "Ready", "True", None);

    // A Redis that would lose data is reported; CONFIG refusal would be Unknown.
    redis.cli(&["CONFIG", "SET", "appendonly", "no"]);
    ns.wait_condition("hooks", "RedisPersistent", "False", Some("AppendOnlyOff"));
    redis.cli(&["CONFIG", "SET", "appendonly", "yes"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let msg = ns.wait_condition("hooks", "RedisPersistent", "False", Some("EvictionPolicy")).message;
    assert!(msg.contains("allkeys-lru"), "{msg}");
    assert_eq!(ns.condition("hooks", "Ready").unwrap().status, "True");

    // Redis down: not Ready, RedisReachable=False, and the URL is not in the message.
    redis.kill();
    let msg = ns.wait_condition("hooks", "RedisReachable", "False", Some("ConnectFailed")).message;
    assert!(!msg.contains(&redis.url()), "{msg}");
    ns.wait_condition("hooks", "Ready", "False", Some("RedisUnreachable"));
    redis.start_again();
    ns.wait_condition_within(Duration::from_secs(120), "hooks", "Ready", "True", None);

    // A user without CONFIG (as on managed Redis): persistence Unknown, still Ready; the
    // password in the URL appears nowhere.
    redis.cli(&["ACL", "SETUSER", "relay", "on", ">s3cret-pass", "~*", "&*", "+@all", "-config"]);
    let acl_url = format!("redis://relay:s3cret-pass@{}:{}/", redis.host, redis.port);
    let patch = serde_json::json!({ "stringData": { "url": acl_url } }).to_string();
    ns.kubectl(&["patch", "secret", "hooks-redis", "--type", "merge", "-p", &patch]);
    let msg = ns.wait_condition("hooks", "RedisPersistent", "Unknown", Some("ConfigRefused")).message;
    assert!(!msg.contains("s3cret-pass"), "{msg}");
    ns.wait_condition_within(Duration::from_secs(120), "hooks", "Ready", "True", None);
    assert!(!ns.kubectl(&["get", "whr", "hooks", "-o", "yaml"]).contains("s3cret-pass"));
    assert!(!ns.events_text().contains("s3cret-pass"));

    let metrics = op.http_get("/metrics").unwrap();
    for label in ["secret_not_found", "secret_key_not_found", "invalid_spec"] {
        assert!(metrics.contains(&format!("error=\"{label}\"")), "no {label} in\n{metrics}");
    }
}

#[test]
fn sidecar_mode_injects_into_the_target_and_removes_on_delete() {
    let ns = Namespace::create("whr-sidecar");
    let redis = cluster_redis();
    ns.example_secrets(&redis.url());
    // The app: the test downstream on 8081, clear of the relay's ports.
    let app = |version: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: orders-api}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: orders-api}}}}\n  template:\n    metadata: {{labels: {{app: orders-api}}}}\n    \
             spec:\n      containers:\n      - {{name: app, image: '{DOWNSTREAM_IMAGE}', imagePullPolicy: Never, \
             env: [{{name: LISTEN, value: '0.0.0.0:8081'}}, {{name: VERSION, value: '{version}'}}], \
             ports: [{{containerPort: 8081}}]}}\n"
        )
    };
    ns.apply(&app("1"));
    // The schema refuses ports that clash (also with a default) or are privileged.
    for (ports, message) in [
        ("{ http: 9090 }", "http and admin must be different ports"),
        ("{ http: 8780, admin: 8780 }", "http and admin must be different ports"),
        ("{ admin: 80 }", "should be greater than or equal to 1024"),
    ] {
        let yaml = example("webhookrelay-sidecar.yaml").replace("{ http: 8780, admin: 9790 }", ports);
        let out = kubectl_output(&["apply", "-n", &ns.name, "--dry-run=server", "-f", "-"], Some(&yaml));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(message), "ports {ports}: {err}");
    }
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&example("webhookrelay-sidecar.yaml"));

    let d = wait_for("relay container in orders-api", || {
        let d = ns.get::<Deployment>("orders-api")?;
        container(&d, "webhook-relay").is_some().then_some(d)
    });
    assert!(container(&d, "app").is_some());
    assert_eq!(container(&d, "webhook-relay").unwrap().image.as_deref(), Some(RELAY_IMAGE));
    // The example moves the relay off 8080/9090 (spec.workload.ports), clear of the app.
    let relay_ports: Vec<(String, i32)> = container(&d, "webhook-relay")
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(relay_ports, [("http".to_string(), 8780), ("admin".to_string(), 9790)]);
    let labels = d.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(SIDECAR_OF_LABEL).map(String::as_str), Some("orders-sidecar"));
    assert_eq!(volume_names(&d), ["webhook-relay-config"]);
    let config_hash = template_annotation(&d, CONFIG_HASH_ANNOTATION).expect("config-hash annotation");
    assert!(template_annotation(&d, SECRETS_HASH_ANNOTATION).is_some());
    // Our field manager owns the relay container and nothing of the app's.
    let managers = ns.kubectl(&["get", "deployment", "orders-api", "--show-managed-fields", "-o", "json"]);
    let managers: Value = serde_json::from_str(&managers).unwrap();
    let ours = managers["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "webhook-relay-operator/sidecar/orders-sidecar")
        .expect("sidecar field manager")
        .to_string();
    assert!(ours.contains(r#"k:{\"name\":\"webhook-relay\"}"#), "{ours}");
    assert!(!ours.contains(r#"k:{\"name\":\"app\"}"#), "{ours}");
    assert!(!ours.contains("f:replicas") && !ours.contains("f:selector"), "{ours}");

    // Service selects the target's pods; no Deployment of the relay's own; finalizer held.
    let svc = wait_for("Service orders-sidecar-relay", || ns.get::<Service>("orders-sidecar-relay"));
    let svc = svc.spec.unwrap();
    assert_eq!(svc.selector.unwrap(), [("app".to_string(), "orders-api".to_string())].into());
    let svc_ports: Vec<(i32, Option<IntOrString>)> =
        svc.ports.unwrap().into_iter().map(|p| (p.port, p.target_port)).collect();
    assert_eq!(svc_ports, [(80, Some(IntOrString::Int(8780))), (9790, Some(IntOrString::Int(9790)))]);
    let config = RelayConfig::from_yaml(&rendered(&ns.get::<ConfigMap>("orders-sidecar-relay").unwrap())).unwrap();
    assert_eq!(
        (config.listen.to_string(), config.admin_listen.to_string()),
        ("0.0.0.0:8780".into(), "0.0.0.0:9790".into())
    );
    assert!(ns.get::<Deployment>("orders-sidecar-relay").is_none());
    let r = ns.relay("orders-sidecar").unwrap();
    assert_eq!(r.metadata.finalizers.as_deref(), Some(&["webhookrelay.dev/sidecar-cleanup".to_string()][..]));
    let ready = ns.wait_condition_within(Duration::from_secs(120), "orders-sidecar", "Ready", "True", None);
    assert!(ready.message.contains("Deployment orders-api: 1/1 relay pods available"), "{}", ready.message);

    // Rotating a Secret the relay reads rolls the target's pods too.
    let d = rotate_signing_secret(&ns, "orders-api", "rotated-sidecar-secret-value");
    assert_eq!(template_annotation(&d, CONFIG_HASH_ANNOTATION), Some(config_hash));

    // The app's owner re-applies its manifest (client-side apply): the relay container stays.
    ns.apply(&app("2"));
    let d = ns.get::<Deployment>("orders-api").unwrap();
    let version = container(&d, "app").unwrap().env.iter().flatten().find(|e| e.name == "VERSION").cloned();
    assert_eq!(version.and_then(|e| e.value).as_deref(), Some("2"));
    assert!(container(&d, "webhook-relay").is_some(), "re-apply removed the relay container");

    // Switching to Standalone takes the container out and gives the relay its own
    // Deployment; switching back injects again and removes that Deployment.
    ns.kubectl(&[
        "patch",
        "whr",
        "orders-sidecar",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"workload":{"mode":"Standalone","targetRef":null}}}"#,
    ]);
    wait_for("own Deployment in Standalone mode", || ns.get::<Deployment>("orders-sidecar-relay"));
    wait_for("container released on mode switch", || {
        let d = ns.get::<Deployment>("orders-api")?;
        container(&d, "webhook-relay").is_none().then_some(())
    });
    wait_for("finalizer dropped in Standalone mode", || {
        ns.relay("orders-sidecar")?.metadata.finalizers.is_none_or(|f| f.is_empty()).then_some(())
    });
    ns.kubectl(&[
        "patch",
        "whr",
        "orders-sidecar",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"workload":{"mode":"Sidecar","targetRef":{"name":"orders-api"}}}}"#,
    ]);
    wait_for("re-injected", || {
        let d = ns.get::<Deployment>("orders-api")?;
        container(&d, "webhook-relay").is_some().then_some(())
    });
    wait_for("own Deployment deleted in Sidecar mode", || {
        ns.get::<Deployment>("orders-sidecar-relay").is_none().then_some(())
    });

    // Deleting the WebhookRelay removes exactly what it added.
    ns.kubectl(&["delete", "whr", "orders-sidecar", "--wait=false"]);
    let d = wait_for("relay container removed", || {
        let d = ns.get::<Deployment>("orders-api")?;
        container(&d, "webhook-relay").is_none().then_some(d)
    });
    assert!(container(&d, "app").is_some());
    assert!(volume_names(&d).is_empty(), "{:?}", pod_spec(&d).volumes);
    assert!(d.metadata.labels.as_ref().is_none_or(|l| !l.contains_key(SIDECAR_OF_LABEL)));
    assert!(
        template_annotation(&d, CONFIG_HASH_ANNOTATION).is_none()
            && template_annotation(&d, SECRETS_HASH_ANNOTATION).is_none()
    );
    wait_for("WebhookRelay gone", || ns.relay("orders-sidecar").is_none().then_some(()));
}

#[test]
fn sidecar_target_missing_is_reported() {
    let ns = Namespace::create("whr-notarget");
    let redis = cluster_redis();
    ns.example_secrets(&redis.url());
    let _op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    ns.apply(&example("webhookrelay-sidecar.yaml"));
    let msg = ns.wait_condition("orders-sidecar", "Ready", "False", Some("TargetNotFound")).message;
    assert!(msg.contains("orders-api") && msg.contains("spec.workload.targetRef"), "{msg}");
    // Without a target nothing was injected, so deletion needs no cleanup.
    ns.kubectl(&["delete", "whr", "orders-sidecar", "--timeout=60s"]);
}

#[test]
fn only_the_leader_runs_and_a_standby_takes_over() {
    let ns = Namespace::create("whr-leader");
    let start = |id: &str| {
        Operator::start(&ns.name, RELAY_IMAGE, &["--leader-elect", "--lease-namespace", &ns.name, "--identity", id])
    };
    let mut a = start("op-a");
    let holder = |ns: &Namespace| ns.get::<Lease>("webhook-relay-operator")?.spec?.holder_identity;
    wait_for("op-a to hold the lease", || (holder(&ns).as_deref() == Some("op-a")).then_some(()));
    let b = start("op-b");
    let gauge = |op: &Operator| {
        op.http_get("/metrics").is_some_and(|m| m.lines().any(|l| l == "webhook_relay_operator_leader 1"))
    };
    wait_for("op-a to report leadership", || gauge(&a).then_some(()));
    std::thread::sleep(Duration::from_secs(6));
    assert!(!gauge(&b), "standby reports leadership while op-a holds the lease");
    assert_eq!(holder(&ns).as_deref(), Some("op-a"));

    a.terminate();
    wait_for("op-b to take over", || (holder(&ns).as_deref() == Some("op-b")).then_some(()));
    wait_for("op-b to report leadership", || gauge(&b).then_some(()));
}

// The operator under exactly the chart's RBAC (its ServiceAccount token) is tested in
// tests/chart.rs (operator_reconciles_with_the_chart_rbac): the chart is the one source of
// truth for the operator's permissions.
