//go:build tools

// Pins github.com/traefik/traefik/v3 so that `go build
// github.com/traefik/traefik/v3/cmd/traefik` from this module uses the versions
// in go.mod/go.sum (traefik's own go.mod has replace directives, which
// `go install module@version` refuses).
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
