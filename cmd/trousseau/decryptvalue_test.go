package main

import (
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// TestDecryptValueExitCodesAndJSON runs the real binary: exit 0 and the
// object as JSON (a Kubernetes manifest, server metadata removed) with
// -o json; exit 1 when no quorum of backends is configured.
func TestDecryptValueExitCodesAndJSON(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	ab := f.Plugin.WriteConfig(t, "local-a", "local-b")
	c := f.Plugin.WriteConfig(t, "local-c")
	key := "/registry/secrets/default/db-password"
	out, stderr, code := runBin(t, string(f.Stored[key]), "decrypt-value", "--config", ab, "--key", key, "-o", "json")
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			UID       string `json:"uid"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	decodeLoose(t, out, &obj)
	if code != 0 || obj.APIVersion != "v1" || obj.Kind != "Secret" || obj.Metadata.Name != "db-password" || obj.Metadata.Namespace != "default" || obj.Metadata.UID != "" || obj.Data["password"] == "" {
		t.Fatalf("exit %d %+v\n%s", code, obj, stderr)
	}
	out, stderr, code = runBin(t, string(f.Stored[key]), "decrypt-value", "--config", c, "--key", key, "-o", "json")
	if code != 1 || out != "" || !strings.Contains(stderr, "quorum not reached") {
		t.Fatalf("with 1 of 3: exit %d\n%s%s", code, out, stderr)
	}
}
