//go:build tools

// Pins helm.sh/helm/v3 so that `go build helm.sh/helm/v3/cmd/helm` from this
// module uses the versions in go.mod/go.sum.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
