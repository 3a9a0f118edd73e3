// The prometheus-operator module for its CRDs (example/prometheus-operator-crd/), and
// crd-schemas (main.go), which `tests/control-plane/build monitoring-schemas` builds and
// runs on them. No package imports the prometheus-operator module, so `go mod tidy` would
// drop it: change versions with `go get`, never tidy this file.
module controlplane/prometheus-operator

go 1.26.0

require (
	github.com/prometheus-operator/prometheus-operator v0.94.0
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.4 // indirect
