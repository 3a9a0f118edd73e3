// Package ext stands in for Traefik's dynamic-configuration extension module
// (github.com/traefik/traefik/dynamic/ext). Upstream keeps it as a nested module
// in its repository (pkg/config/dynamic/ext) that its go.mod replaces with a
// local path; nested modules are left out of the traefik/v3 module zip and the
// module proxy does not serve it, so a build from the proxy needs this copy.
// In the open-source build these are empty structs embedded in
// dynamic.HTTPConfiguration and dynamic.Router (hooks for other distributions).
package ext

// HTTP is embedded in dynamic.HTTPConfiguration.
type HTTP struct{}

// Router is embedded in dynamic.Router.
type Router struct{}
