//go:build tools

// Pins github.com/prometheus/prometheus (v0.316.0 is Prometheus v3.16.0) so that
// `go build github.com/prometheus/prometheus/cmd/promtool` from this module uses
// the versions in go.mod/go.sum.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
