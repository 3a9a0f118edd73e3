// Replaces github.com/go-acme/lego/v5/providers/dns/zz_gen_dns_providers.go in
// the traefik build (see override/files and tests/control-plane/build). The
// generated original imports lego's ~190 DNS-01 provider packages; the cloud
// SDKs of 14 of them are not served by the module proxy here (403), so that
// package cannot be built. Traefik calls only this function, for the ACME
// DNS-01 challenge, which the test cluster cannot use anyway (no ACME server):
// every provider name is refused, as an unknown one is upstream.
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName Factory for DNS providers (none in this build).
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("unrecognized DNS provider: %s (this traefik build has no DNS-01 providers)", name)
}
