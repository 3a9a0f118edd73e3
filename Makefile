# Quick start: `make demo` runs the relay end to end; `make test` runs every test.
.PHONY: test demo bench bench-operator build crds lint image cluster-up cluster-down cluster-smoke

test:            ## install/start what the tests need (Redis, images, the test cluster), run all tests
	scripts/test

demo:            ## Redis + scripted downstream + relay; signed Genesys events through retries and a dead letter
	scripts/demo

bench:           ## load generator against relay + Redis + downstream on loopback; prints figures
	scripts/bench

bench-operator:  ## the operator with 100 and 1,000 WebhookRelays on the test cluster: time to reconcile, RSS, idle API load
	scripts/bench-operator

build:
	cargo build --workspace --bins --locked

crds:            ## regenerate crds/ from the Rust types (and the chart's copy)
	cargo run -q -p webhook-relay-operator -- crd > crds/webhookrelay.dev_webhookrelays.yaml
	cp crds/webhookrelay.dev_webhookrelays.yaml charts/webhook-relay/crds/

lint:           ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

image:          ## OCI archives in target/image/ (relay, redis, pause, downstream): release builds, no Docker
	scripts/image relay redis pause downstream

cluster-up:     ## single-node test cluster (pods run; tests/cluster/README.md); prints KUBECONFIG=...
	tests/cluster/up

cluster-down:
	tests/cluster/down

cluster-smoke:  ## images, cluster up, pods/Services/port-forward/apiserver checks, down, check-clean
	tests/cluster/smoke
