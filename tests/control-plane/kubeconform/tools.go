//go:build tools

// Pins github.com/yannh/kubeconform so that
// `go build github.com/yannh/kubeconform/cmd/kubeconform` from this module uses
// the versions in go.mod/go.sum.
package tools

import _ "github.com/yannh/kubeconform/cmd/kubeconform"
