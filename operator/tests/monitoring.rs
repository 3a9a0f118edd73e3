//! The chart's monitoring (`monitoring.*` values): the Grafana dashboard ConfigMap, the
//! PrometheusRule, the relays' PodMonitor and the operator's ServiceMonitor. All off by
//! default; rendered, they are checked by kubeconform against the prometheus-operator CRDs'
//! schemas (`tests/control-plane/build monitoring-schemas`) and the test cluster's, the
//! alert rules and the dashboard's queries by Prometheus' rule checker (`rulecheck`: the
//! rulefmt and PromQL parser that `promtool check rules` runs), and every metric they query
//! is looked up on the `/metrics` of a running relay (the built binary, a real Redis) or
//! operator (the binary, against the test cluster).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use testkit::kube::*;
use testkit::process::{root, text};

const DASHBOARD: &str = "charts/webhook-relay/dashboards/webhook-relay.json";
const MONITORING_KINDS: [&str; 3] = ["PrometheusRule", "PodMonitor", "ServiceMonitor"];

/// Every monitoring value on.
const ALL_ON: [&str; 5] = [
    "monitoring.dashboard.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.podMonitor.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "metrics.service.enabled=true",
];

fn render(extra: &[&str]) -> Vec<Value> {
    let set: Vec<&str> = ALL_ON.iter().chain(extra).copied().collect();
    documents(&Helm::new().template(&set))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn dashboard_text() -> String {
    std::fs::read_to_string(root().join(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&dashboard_text()).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// The rules of the rendered PrometheusRule as (alert, rule).
fn alerts(docs: &[Value]) -> Vec<(String, Value)> {
    let rule = find(docs, "PrometheusRule");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| (r["alert"].as_str().expect("an alert rule").to_string(), r.clone()))
        .collect()
}

/// The dashboard's panels (rows' nested panels too), rows left out.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// Every PromQL expression of the dashboard's panels, as (panel id, refId, expr).
fn dashboard_exprs(d: &Value) -> Vec<(i64, String, String)> {
    panels(d)
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().expect("targets").iter().map(|t| {
                (
                    p["id"].as_i64().expect("panel id"),
                    t["refId"].as_str().expect("refId").to_string(),
                    t["expr"].as_str().expect("expr").to_string(),
                )
            })
        })
        .collect()
}

/// `webhook_relay_*` identifiers in `text` (each whole: not the tail of a longer name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("webhook_relay_") {
        if text[..i].chars().next_back().is_some_and(is_name) {
            continue;
        }
        let name: String = text[i..].chars().take_while(|&c| is_name(c)).collect();
        names.insert(name);
    }
    names
}

/// What a Prometheus text exposition has: `series`, each family's name with the suffix its
/// type gives its samples, and every sample's name; `families`, the names of `# TYPE`.
/// (prometheus_client prints no `# TYPE` for a labelled family before its first sample,
/// so the tests make one of each before they look.)
struct Exposed {
    series: BTreeSet<String>,
    families: BTreeSet<String>,
}

fn exposed(exposition: &str) -> Exposed {
    let (mut series, mut families) = (BTreeSet::new(), BTreeSet::new());
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" if name.ends_with("_total") => &[""],
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            series.extend(suffixes.iter().map(|s| format!("{name}{s}")));
            families.insert(name.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            series.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    Exposed { series, families }
}

type Uses = BTreeMap<String, BTreeSet<&'static str>>;

/// The names of `uses` (with where they are used) that are not in `have`.
fn missing(uses: &Uses, have: &BTreeSet<String>) -> Vec<String> {
    uses.iter()
        .filter(|(name, _)| !have.contains(*name))
        .map(|(name, used)| format!("{name} (in the {})", used.iter().copied().collect::<Vec<_>>().join(" and ")))
        .collect()
}

/// `(queried, mentioned)`: the metric names the dashboard's and the rendered rules'
/// expressions query (panel targets, variable queries, rule exprs), which must be series;
/// and those their text names anywhere (descriptions, annotations), which must be series
/// or families. Each with where.
fn metrics_used() -> (Uses, Uses) {
    let docs = render(&[]);
    let spec = &find(&docs, "PrometheusRule")["spec"];
    let d = dashboard();
    let mut dashboard_queries: Vec<String> = dashboard_exprs(&d).into_iter().map(|(_, _, e)| e).collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        dashboard_queries.extend(v["query"]["query"].as_str().map(String::from));
        dashboard_queries.extend(v["definition"].as_str().map(String::from));
    }
    let rule_exprs: Vec<String> = alerts(&docs).iter().map(|(_, r)| r["expr"].as_str().unwrap().to_string()).collect();
    let (mut queried, mut mentioned) = (Uses::new(), Uses::new());
    for (texts, source) in [(dashboard_queries, "dashboard"), (rule_exprs, "alert rules")] {
        for name in texts.iter().flat_map(|t| metric_names(t)) {
            queried.entry(name).or_default().insert(source);
        }
    }
    for (text, source) in [(dashboard_text(), "dashboard"), (serde_json::to_string(spec).unwrap(), "alert rules")] {
        for name in metric_names(&text) {
            mentioned.entry(name).or_default().insert(source);
        }
    }
    (queried, mentioned)
}

/// Fails unless every queried name is a series of `exposition` and every mentioned one a
/// series or a family; `keep` picks the names this process exports.
fn check_metrics(what: &str, exposition: &str, keep: impl Fn(&str) -> bool) -> usize {
    let (queried, mentioned) = metrics_used();
    let queried: Uses = queried.into_iter().filter(|(n, _)| keep(n)).collect();
    let mentioned: Uses = mentioned.into_iter().filter(|(n, _)| keep(n)).collect();
    let have = exposed(exposition);
    let not_series = missing(&queried, &have.series);
    assert!(not_series.is_empty(), "queried, but not a series of the {what}'s /metrics: {not_series:#?}\n{exposition}");
    let known: BTreeSet<String> = have.series.union(&have.families).cloned().collect();
    let unknown = missing(&mentioned, &known);
    assert!(unknown.is_empty(), "named, but not on the {what}'s /metrics: {unknown:#?}\n{exposition}");
    eprintln!("{what}: {} queried metrics, all on /metrics: {:?}", queried.len(), queried.keys().collect::<Vec<_>>());
    queried.len()
}

fn monitoring_schemas() -> PathBuf {
    let dir = root().join("target/control-plane/monitoring-schemas");
    for kind in MONITORING_KINDS {
        let f = dir.join(format!("{}-monitoring-v1.json", kind.to_lowercase()));
        assert!(
            f.is_file(),
            "{} missing: run tests/control-plane/build monitoring-schemas (make test does this)",
            f.display()
        );
    }
    dir
}

/// Runs `rulecheck` on a rules file holding `groups` (the spec of a PrometheusRule); its
/// output, or the failure.
fn rulecheck(groups: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(groups).unwrap()).unwrap();
    // Not one of `build`'s defaults: say which target builds it.
    let bin = root().join("target/control-plane/bin/rulecheck");
    assert!(bin.is_file(), "{} missing: run tests/control-plane/build rulecheck (make test does this)", bin.display());
    let mut cmd = Command::new(bin);
    cmd.arg(&file);
    let out = run(cmd, None);
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if out.status.success() { Ok(report) } else { Err(report) }
}

/// The dashboard's queries as recording rules, Grafana's variables replaced by what they
/// stand for (`$__rate_interval` a range, `$namespace` and `$relay` "All").
fn dashboard_as_rules(d: &Value) -> Value {
    let rules: Vec<Value> = dashboard_exprs(d)
        .into_iter()
        .map(|(id, ref_id, expr)| {
            let expr = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$relay", ".*");
            assert!(!expr.contains('$'), "panel {id} {ref_id}: an unknown variable in {expr}");
            serde_json::json!({ "record": format!("dashboard:panel{id}_{ref_id}"), "expr": expr })
        })
        .collect();
    serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] })
}

/// GitHub's anchor of a heading: lowercase, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ offline checks

#[test]
fn monitoring_is_off_by_default() {
    let helm = Helm::new();
    let docs = documents(&helm.template(&[]));
    let monitoring: Vec<&Value> = docs
        .iter()
        .filter(|d| MONITORING_KINDS.contains(&d["kind"].as_str().unwrap()) || d["kind"] == "ConfigMap")
        .collect();
    assert!(monitoring.is_empty(), "the default install renders {monitoring:?}");
    // One at a time: each value turns on only its own object.
    for (set, kind) in [
        ("monitoring.dashboard.enabled=true", "ConfigMap"),
        ("monitoring.prometheusRule.enabled=true", "PrometheusRule"),
        ("monitoring.podMonitor.enabled=true", "PodMonitor"),
    ] {
        let docs = documents(&helm.template(&[set]));
        let extra: Vec<&str> = docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .filter(|k| MONITORING_KINDS.contains(k) || *k == "ConfigMap")
            .collect();
        assert_eq!(extra, [kind], "--set {set}");
    }
}

#[test]
fn monitoring_values_are_checked() {
    let helm = Helm::new();
    for (set, says) in [
        ("monitoring.podMonitr.enabled=true", "podMonitr"),
        ("monitoring.dashboard.enabled=yes", "/monitoring/dashboard/enabled"),
        ("monitoring.dashboard.namespace=Grafana_Dashboards", "/monitoring/dashboard/namespace"),
        ("monitoring.prometheusRule.alerts.deadLeters.enabled=false", "deadLeters"),
        (
            "monitoring.prometheusRule.alerts.deadLetters.for=5minutes",
            "/monitoring/prometheusRule/alerts/deadLetters/for",
        ),
        (
            "monitoring.prometheusRule.alerts.deadLetters.threshold=-1",
            "/monitoring/prometheusRule/alerts/deadLetters/threshold",
        ),
        ("monitoring.prometheusRule.alerts.redisDown.threshold=1", "threshold"),
        (
            "monitoring.prometheusRule.alerts.oldestDueAge.seconds=0",
            "/monitoring/prometheusRule/alerts/oldestDueAge/seconds",
        ),
        (
            "monitoring.prometheusRule.alerts.circuitOpen.severity=very bad",
            "/monitoring/prometheusRule/alerts/circuitOpen/severity",
        ),
        ("monitoring.prometheusRule.runbookBaseUrl=wiki/runbooks", "/monitoring/prometheusRule/runbookBaseUrl"),
        ("monitoring.podMonitor.interval=30", "/monitoring/podMonitor/interval"),
        ("monitoring.podMonitor.scrapeTimeout=soon", "/monitoring/podMonitor/scrapeTimeout"),
        ("monitoring.podMonitor.namespaceSelector.all=true", "all"),
        ("monitoring.podMonitor.selector.matchLabel.a=b", "matchLabel"),
        ("monitoring.serviceMonitor.port=9090", "port"),
    ] {
        let out = helm.output(&["template", "whr", CHART, "--set", set]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "helm template --set {set} was accepted");
        assert!(err.contains("schema") && err.contains(says), "--set {set}: {err}");
    }
    // The ServiceMonitor scrapes through the metrics Service, which is off by default.
    let out = helm.output(&["template", "whr", CHART, "--set", "monitoring.serviceMonitor.enabled=true"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("monitoring.serviceMonitor.enabled needs metrics.service.enabled=true"),
        "{err}"
    );
}

#[test]
fn chart_with_monitoring_lints_strictly() {
    let mut args = vec!["lint", "--strict", CHART];
    for s in ALL_ON {
        args.extend(["--set", s]);
    }
    let out = Helm::new().run(&args);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn rendered_monitoring_objects_carry_the_values() {
    let docs = render(&[
        "monitoring.dashboard.namespace=grafana",
        "monitoring.dashboard.annotations.grafana_folder=Webhook relay",
        "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
        "monitoring.prometheusRule.alertLabels.team=cx",
        "monitoring.prometheusRule.runbookBaseUrl=https://wiki.example.com/relay",
        "monitoring.prometheusRule.alerts.deadLetters.threshold=10",
        "monitoring.prometheusRule.alerts.deadLetters.for=1m",
        "monitoring.prometheusRule.alerts.oldestDueAge.seconds=120",
        "monitoring.prometheusRule.alerts.redisDown.severity=page",
        "monitoring.prometheusRule.alerts.circuitOpen.enabled=false",
        "monitoring.podMonitor.labels.release=kube-prometheus-stack",
        "monitoring.podMonitor.interval=15s",
        "monitoring.podMonitor.scrapeTimeout=5s",
        "monitoring.podMonitor.namespaceSelector.any=false",
        "monitoring.podMonitor.namespaceSelector.matchNames={cx,billing}",
        "monitoring.serviceMonitor.interval=1m",
    ]);

    // The dashboard ConfigMap: the file as it is, for the Grafana sidecar.
    let cm = find(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "whr-webhook-relay-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Webhook relay");
    assert!(
        cm["data"]["webhook-relay.json"].as_str() == Some(dashboard_text().as_str()),
        "ConfigMap data differs from {DASHBOARD}"
    );

    // The rules: thresholds, severities, labels and runbook links from the values.
    let rule = find(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "ops");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let alerts = alerts(&docs);
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "WebhookRelayDeadLetters",
            "WebhookRelayOldestDueAgeGrowing",
            "WebhookRelayRedisDown",
            "WebhookRelayReceiptsFailing",
            "WebhookRelayOperatorReconcileErrors"
        ],
        "circuitOpen is disabled"
    );
    let get = |name: &str| &alerts.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(get("WebhookRelayDeadLetters")["expr"], "max by (namespace, relay) (webhook_relay_queue_dead) > 10");
    assert_eq!(get("WebhookRelayDeadLetters")["for"], "1m");
    assert!(get("WebhookRelayOldestDueAgeGrowing")["expr"].as_str().unwrap().contains("> 120\n"));
    assert_eq!(get("WebhookRelayRedisDown")["labels"]["severity"], "page");
    for (name, r) in &alerts {
        assert_eq!(r["labels"]["team"], "cx", "{name}");
        assert_eq!(r["annotations"]["runbook_url"], format!("https://wiki.example.com/relay#{}", name.to_lowercase()));
        for key in ["summary", "description"] {
            assert!(r["annotations"][key].as_str().is_some_and(|s| s.len() > 20), "{name} has no {key}");
        }
    }

    // The PodMonitor: relay pods anywhere asked, the relay container's admin port only.
    let pm = find(&docs, "PodMonitor");
    assert_eq!(pm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(pm["spec"]["namespaceSelector"], serde_json::json!({ "any": false, "matchNames": ["cx", "billing"] }));
    assert_eq!(
        pm["spec"]["selector"],
        serde_json::json!({ "matchExpressions": [{ "key": "webhookrelay.dev/relay", "operator": "Exists" }] })
    );
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    let endpoint = [&ep["port"], &ep["path"], &ep["interval"], &ep["scrapeTimeout"]];
    assert_eq!(endpoint, ["admin", "/metrics", "15s", "5s"]);
    assert_eq!(
        ep["relabelings"],
        serde_json::json!([
            { "action": "keep", "sourceLabels": ["__meta_kubernetes_pod_container_name"], "regex": "webhook-relay" },
            { "action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_webhookrelay_dev_relay"], "targetLabel": "relay" }
        ])
    );

    // The ServiceMonitor: the operator's metrics Service, by its port name.
    let sm = find(&docs, "ServiceMonitor");
    let svc = docs.iter().find(|d| d["kind"] == "Service").expect("the metrics Service");
    assert_eq!(sm["spec"]["namespaceSelector"], serde_json::json!({ "matchNames": ["ops"] }));
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let svc_labels = svc["metadata"]["labels"].as_object().unwrap();
    assert!(selector.iter().all(|(k, v)| svc_labels.get(k) == Some(v)), "{selector:?} does not select {svc_labels:?}");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "1m");

    // Relay pods (resources.rs: Standalone and injected) carry what the PodMonitor selects and
    // relabels by; the operator's own pod does not.
    let operator = find(&docs, "Deployment");
    let pod_labels = &operator["spec"]["template"]["metadata"]["labels"];
    assert!(pod_labels.get("webhookrelay.dev/relay").is_none(), "{pod_labels}");
}

#[test]
fn dashboard_is_a_grafana_dashboard_over_a_prometheus_datasource_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "webhook-relay");
    assert!(d["schemaVersion"].as_i64().is_some_and(|v| v >= 36), "schemaVersion");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no variable {name}"));
    assert_eq!([&var("datasource")["type"], &var("datasource")["query"]], ["datasource", "prometheus"]);
    for name in ["namespace", "relay"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}");
    }
    let ds = serde_json::json!({ "type": "prometheus", "uid": "${datasource}" });
    let mut ids = BTreeSet::new();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_i64().unwrap()), "panel id of {title} is not unique");
        assert_eq!(p["datasource"], ds, "{title}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"], ds, "{title}");
        }
        assert!(readme.contains(&format!("**{title}**")), "README's dashboard section does not list panel {title:?}");
    }
    // Relay panels follow the namespace and relay variables; the operator's do not have them.
    for (id, ref_id, expr) in dashboard_exprs(&d) {
        if expr.contains("webhook_relay_operator_") {
            continue;
        }
        assert!(expr.contains(r#"namespace=~"$namespace", relay=~"$relay""#), "panel {id} {ref_id}: {expr}");
    }
}

#[test]
fn every_alert_has_a_runbook_section_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let anchors: BTreeSet<String> =
        readme.lines().filter_map(|l| l.strip_prefix("#### ").or_else(|| l.strip_prefix("### "))).map(anchor).collect();
    let base = "https://github.com/webhook-relay/webhook-relay/blob/main/README.md#";
    for (name, r) in alerts(&render(&[])) {
        let url = r["annotations"]["runbook_url"].as_str().unwrap();
        let fragment =
            url.strip_prefix(base).unwrap_or_else(|| panic!("{name}: runbook_url {url} is not in README.md"));
        assert!(anchors.contains(fragment), "{name}: README has no heading whose anchor is #{fragment}");
    }
}

#[test]
fn rules_and_dashboard_queries_pass_prometheus_rule_checks() {
    let docs = render(&[]);
    let spec = &find(&docs, "PrometheusRule")["spec"];
    let report = rulecheck(spec).unwrap_or_else(|e| panic!("rulecheck of the PrometheusRule:\n{e}"));
    assert!(report.contains("SUCCESS: 6 rules found"), "{report}");
    eprintln!("rulecheck, PrometheusRule: {}", report.trim());

    let d = dashboard();
    let n = dashboard_exprs(&d).len();
    let report = rulecheck(&dashboard_as_rules(&d)).unwrap_or_else(|e| panic!("rulecheck of the dashboard:\n{e}"));
    assert!(report.contains(&format!("SUCCESS: {n} rules found")), "{report}");
    eprintln!("rulecheck, dashboard queries: {}", report.trim());

    // It does refuse what Prometheus refuses.
    let mut broken = spec.clone();
    broken["groups"][0]["rules"][0]["expr"] = "max by (namespace) (webhook_relay_queue_dead) >".into();
    let err = rulecheck(&broken).expect_err("a broken expression passed");
    assert!(err.contains("parse error"), "{err}");
    let mut broken = spec.clone();
    broken["groups"][0]["rules"][0]["annotations"]["summary"] = "{{ $labels.relay ".into();
    assert!(rulecheck(&broken).is_err(), "a broken annotation template passed");
}

#[test]
fn metric_lookup_finds_families_by_their_type() {
    let exposition = "# HELP webhook_relay_queue_dead Dead.\n# TYPE webhook_relay_queue_dead gauge\n\
                      webhook_relay_queue_dead 0\n# TYPE webhook_relay_intake_requests counter\n\
                      # TYPE webhook_relay_delivery_attempt_duration_seconds histogram\n# EOF\n";
    let q = |names: &[&str]| -> Uses { names.iter().map(|n| (n.to_string(), BTreeSet::from(["dashboard"]))).collect() };
    let have = exposed(exposition);
    let ok = [
        "webhook_relay_queue_dead",
        "webhook_relay_intake_requests_total",
        "webhook_relay_delivery_attempt_duration_seconds_bucket",
        "webhook_relay_delivery_attempt_duration_seconds_count",
    ];
    assert!(missing(&q(&ok), &have.series).is_empty());
    // A typo, a counter without _total, a histogram by its bare name.
    let bad = [
        "webhook_relay_queue_deadd",
        "webhook_relay_intake_requests",
        "webhook_relay_delivery_attempt_duration_seconds",
    ];
    assert_eq!(missing(&q(&bad), &have.series).len(), 3, "{:?}", missing(&q(&bad), &have.series));
    // Named in a description, a histogram's family name is known; a typo is not.
    let families: BTreeSet<String> = have.series.union(&have.families).cloned().collect();
    assert!(missing(&q(&["webhook_relay_delivery_attempt_duration_seconds"]), &families).is_empty());
    assert_eq!(missing(&q(&["webhook_relay_queue_deadd"]), &families).len(), 1);
    assert_eq!(
        metric_names(r#"sum(rate(webhook_relay_a_total{x="webhook_relay_b"}[5m])) / xwebhook_relay_c"#),
        BTreeSet::from(["webhook_relay_a_total".to_string(), "webhook_relay_b".to_string()])
    );
}

// ------------------------------------------------------------------ against running processes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_rules_query_of_the_relay_exists() {
    use testkit::genesys_fake::{CLIENT_ID, CLIENT_SECRET, FakeGenesys, INTEGRATION_ID};
    use testkit::relay::{RelayProcess, config, send};
    // Receipts on, to a fake Genesys Cloud, and a downstream that refuses ids starting
    // with "bad": one delivery and one dead letter (and its receipt) give every labelled
    // family its first sample.
    let fake = FakeGenesys::start().await;
    let redis = testkit::redis::RedisServer::start();
    let ds =
        testkit::downstream::Downstream::start(testkit::downstream::refuse_prefix("bad", 400), Duration::ZERO).await;
    let (l, a) = (testkit::free_port(), testkit::free_port());
    let yaml = format!(
        "{}genesys:\n  apiBaseUrl: {g}\n  loginBaseUrl: {g}\n  integrationId: {INTEGRATION_ID}\n  \
         receipts: {{ onDeadLetter: true, onDelivered: true }}\n",
        config("cx/monitoring", l, a, &ds.url, "  maxAttempts: 3"),
        g = fake.base_url
    );
    let env = [("GENESYS_CLIENT_ID", CLIENT_ID), ("GENESYS_CLIENT_SECRET", CLIENT_SECRET)];
    let relay = RelayProcess::start_with_env(&yaml, &redis.url(), l, a, &env);
    let client = reqwest::Client::new();
    for id in ["good-1", "bad-1"] {
        assert_eq!(send(&client, &relay.intake, id).await.unwrap().0, 200);
    }
    let ready = testkit::wait::eventually(Duration::from_secs(20), || async {
        let m = relay.metrics();
        m.contains("webhook_relay_delivery_attempts_total{") && m.contains("webhook_relay_genesys_receipts_total{")
    })
    .await;
    assert!(ready, "no attempt or receipt counted; /metrics:\n{}\nlog:\n{}", relay.metrics(), relay.log_text());
    let n = check_metrics("relay", &relay.metrics(), |n| !n.starts_with("webhook_relay_operator_"));
    assert!(n >= 12, "only {n} relay metrics found in the dashboard and rules");
}

#[test]
fn every_metric_the_dashboard_and_rules_query_of_the_operator_exists() {
    let ns = Namespace::create("whr-monitoring");
    let op = Operator::start(&ns.name, RELAY_IMAGE, &[]);
    // A relay whose Secrets do not exist: a failed reconcile gives the error family its
    // first sample.
    ns.apply(&relay_manifest("no-secrets", "http://orders.invalid/events", ""));
    let body = testkit::wait::wait_for("a reconcile error counted on the operator's /metrics", || {
        op.http_get("/metrics").filter(|m| m.contains("webhook_relay_operator_reconcile_errors_total{"))
    });
    let n = check_metrics("operator", &body, |n| n.starts_with("webhook_relay_operator_"));
    assert!(n >= 4, "only {n} operator metrics found in the dashboard and rules");
}

// ------------------------------------------------------------------ against the schemas

#[test]
fn the_api_server_accepts_the_monitoring_objects_under_the_prometheus_operator_crds() {
    let crds = monitoring_schemas().join("crds");
    let names = ["podmonitors", "servicemonitors", "prometheusrules"];
    let _cleanup = ClusterObjects(names.iter().map(|n| format!("crd/{n}.monitoring.coreos.com")).collect());
    for n in names {
        let file = crds.join(format!("monitoring.coreos.com_{n}.yaml"));
        assert!(file.is_file(), "{} missing: run tests/control-plane/build monitoring-schemas", file.display());
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", file.to_str().unwrap()]);
        kubectl(&["wait", "--for=condition=Established", "--timeout=60s", &format!("crd/{n}.monitoring.coreos.com")]);
    }
    let ns = Namespace::create("whr-monitoring");
    let mut args: Vec<String> = ["template", "whr", CHART, "--namespace", &ns.name].map(String::from).to_vec();
    for s in ALL_ON {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    for t in ["dashboard", "prometheusrule", "podmonitor", "servicemonitor"].map(|t| format!("templates/{t}.yaml")) {
        args.extend(["--show-only".to_string(), t]);
    }
    let rendered = Helm::new().run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = ok(
        "kubectl apply --dry-run=server",
        kubectl_output(&["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&rendered)),
    );
    for object in [
        "configmap/whr-webhook-relay-dashboard",
        "prometheusrule.monitoring.coreos.com/whr-webhook-relay",
        "podmonitor.monitoring.coreos.com/whr-webhook-relay-relays",
        "servicemonitor.monitoring.coreos.com/whr-webhook-relay-operator",
    ] {
        assert!(out.contains(&format!("{object} created (server dry run)")), "{object}:\n{out}");
    }
    eprintln!("{}", out.trim());
}

#[test]
fn rendered_monitoring_objects_match_the_prometheus_operator_and_cluster_schemas() {
    let cluster = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", schemas().display());
    let monitoring = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", monitoring_schemas().display());
    let kubeconform = |yaml: &str| {
        let mut cmd = Command::new(tool("kubeconform"));
        // The CRDs' own schemas first: the cluster's dir may hold some of the same kinds, taken
        // from the apiserver while another test had the CRDs installed.
        cmd.args(["-strict", "-summary", "-schema-location", &monitoring, "-schema-location", &cluster]);
        let out = run(cmd, Some(yaml));
        (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    };
    let helm = Helm::new();
    for extra in [
        &[][..],
        &[
            "monitoring.podMonitor.namespaceSelector.any=false",
            "monitoring.podMonitor.namespaceSelector.matchNames={cx}",
        ][..],
    ] {
        let set: Vec<&str> = ALL_ON.iter().chain(extra).copied().collect();
        let rendered = helm.template(&set);
        let docs = documents(&rendered);
        for kind in MONITORING_KINDS.iter().chain(&["ConfigMap"]) {
            find(&docs, kind);
        }
        let count = docs.len();
        let (ok, report) = kubeconform(&rendered);
        assert!(ok, "kubeconform --set {set:?}:\n{report}");
        let want = format!("{count} resources found parsing stdin - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0");
        assert!(report.contains(&want), "--set {set:?}: want {want:?}, got:\n{report}");
        eprintln!("kubeconform --set {set:?}: {}", report.trim());
    }
    // Strict: an unknown field of a monitoring object is refused.
    let rendered = helm.template(&ALL_ON).replacen("      path: /metrics", "      pathh: /metrics", 1);
    let (ok, report) = kubeconform(&rendered);
    assert!(!ok && report.contains("pathh") && report.contains("Invalid: 1"), "{report}");
}
