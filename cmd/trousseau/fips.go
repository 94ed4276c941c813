package main

import (
	"fmt"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
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
		// Asked of the config, not matched on its type, so that this file
		// does not link a kind a build leaves out (no_awskms).
		if w, ok := b.Spec.(interface{ FIPSWarning() string }); ok && w.FIPSWarning() != "" {
			out = append(out, fmt.Sprintf("backends %s: %s", b.Name, w.FIPSWarning()))
		}
	}
	return out
}

// processFIPSWarnings is fipsWarnings for this process.
func processFIPSWarnings(cfg *config.Config) []string {
	return fipsWarnings(cfg, fipsmode.Mode(), fipsmode.Module())
}
