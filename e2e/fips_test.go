package e2e

import (
	"os"

	"testing"
)

// TestFIPSOnlyPlugin switches a cluster's plugin to GODEBUG=fips140=only
// on the state and data the default mode wrote, as an operator moving to
// the FIPS build does: the KMS v2 contract holds, and a restarted
// apiserver (no cached DEK seeds) reads every object back. Under
// GOFIPS140=v1.0.0 (hack/test.sh's FIPS pass) it also checks that the
// binary says it is the FIPS build.
func TestFIPSOnlyPlugin(t *testing.T) {
	c := newCluster(t)
	c.startEtcd()
	c.writePluginConfig()
	c.startPlugin()
	api := apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"}
	c.startAPIServer(api)
	w := newWorkload(t, c, "/registry", "e2e-fips")

	step(t, "1 written in the default mode", func(t *testing.T) {
		w.createMany(t, "default", 3)
		w.checkStored(t, v2Prefix, "")
	})

	step(t, "2 the plugin restarted in FIPS-only mode reads it and writes more", func(t *testing.T) {
		c.pluginEnv = []string{"GODEBUG=fips140=only"}
		c.restartPlugin()
		c.restartAPIServer(api)
		w.checkReadBack(t)
		w.createMany(t, "fips", 3)
		w.checkStored(t, v2Prefix, "")
		module := "latest"
		if v := os.Getenv("GOFIPS140"); v != "" && v != "off" {
			module = v
		}
		if !c.plugin.logContains("fips140=only fips_module=" + module) {
			t.Fatalf("the plugin's start-up log does not say fips140=only fips_module=%s...:\n%s", module, c.plugin.tail(30))
		}
	})

	step(t, "3 a fresh apiserver reads everything through the FIPS-only plugin", func(t *testing.T) {
		c.restartAPIServer(api)
		w.checkReadBack(t)
		if c.plugin.logContains("FIPS 140-only mode") {
			t.Fatalf("the FIPS-only plugin refused something:\n%s", c.plugin.tail(30))
		}
	})
}
