package main

import "testing"

// A -fips image is its own tag, and its binary is built with the frozen
// module; the binary's version stays the release's, so that `trousseau
// version` in either image matches VERSION and the chart's appVersion.
func TestFIPSImageTagAndBuild(t *testing.T) {
	o := buildOptions{version: "1.2.3", fips: true}
	if o.tag() != "1.2.3-fips" || fipsEnv(o.fips) != "GOFIPS140=v1.0.0 " {
		t.Fatalf("fips image: tag %q, build env %q", o.tag(), fipsEnv(o.fips))
	}
	o.fips = false
	if o.tag() != "1.2.3" || fipsEnv(o.fips) != "" {
		t.Fatalf("default image: tag %q, build env %q", o.tag(), fipsEnv(o.fips))
	}
}
