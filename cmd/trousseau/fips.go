package main

import (
	"fmt"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
	"github.com/trousseau-io/trousseau/kmsclients/awskms"
)

// fipsWarnings is what a FIPS 140-3 deployment of cfg should know, in a
// process of FIPS mode ("off", "on", "only") and module: cryptography
// done elsewhere or by a module that is not validated. Nothing is
// refused: every backend works in FIPS-only mode (docs/fips.md).
func fipsWarnings(cfg *config.Config, mode, module string) []string {
	if mode == "off" {
		return nil
	}
	var out []string
	if module == "latest" {
		out = append(out, "FIPS 140-3 mode is "+mode+" but the Go Cryptographic Module built in is the toolchain's own (latest), not a validated one: use the FIPS build (make build-fips, the -fips image)")
	}
	for _, b := range cfg.Backends {
		switch spec := b.Spec.(type) {
		case *awskms.Config:
			if !spec.UseFIPSEndpoint && spec.Endpoint == "" {
				out = append(out, fmt.Sprintf("backends %s: awskms calls the standard KMS endpoint, not the FIPS one: set awskms.useFIPSEndpoint: true where the region has one", b.Name))
			}
		default:
			if b.Kind() == "kmsplugin" {
				out = append(out, fmt.Sprintf("backends %s: a kmsplugin custodian encrypts in its own process, outside this module: run a FIPS build of that plugin", b.Name))
			}
		}
	}
	return out
}

// processFIPSWarnings is fipsWarnings for this process.
func processFIPSWarnings(cfg *config.Config) []string {
	return fipsWarnings(cfg, fipsmode.Mode(), fipsmode.Module())
}
