// Package fipsmode reports the FIPS 140-3 mode and Go Cryptographic
// Module in use, for `trousseau version`, the start-up log and the checks
// that refuse what FIPS mode cannot do.
package fipsmode

import (
	"crypto/fips140"
	"runtime/debug"
)

// Mode is the GODEBUG fips140 setting in force: "off", "on", or "only"
// (non-approved cryptography fails).
func Mode() string {
	switch {
	case !fips140.Enabled():
		return "off"
	case fips140.Enforced():
		return "only"
	}
	return "on"
}

// Enabled reports whether FIPS 140-3 mode is on ("on" or "only").
func Enabled() bool { return fips140.Enabled() }

// Module names the Go Cryptographic Module built in: the frozen one
// GOFIPS140 selected (v1.0.0-c2097c7c), or "latest", the toolchain's own,
// which is not validated.
func Module() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOFIPS140" && s.Value != "" && s.Value != "off" {
				return s.Value
			}
		}
	}
	return fips140.Version()
}

// Summary is one line such as
// "FIPS 140-3 mode only, Go Cryptographic Module v1.0.0-c2097c7c".
func Summary() string {
	return "FIPS 140-3 mode " + Mode() + ", Go Cryptographic Module " + Module()
}
