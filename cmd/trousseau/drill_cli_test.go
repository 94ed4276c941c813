package main

import (
	"os"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// drillSchema is drill's -o json report as docs/reference/cli.md
// documents it; unknown fields fail the decode.
type drillSchema struct {
	Source       string `json:"source"`
	Custodians   bool   `json:"custodians"`
	MinMargin    int    `json:"minMargin"`
	ExitCode     int    `json:"exitCode"`
	NotTrousseau int    `json:"notTrousseau"`
	DEKs         []struct {
		KeyID      string            `json:"keyID"`
		Generation uint32            `json:"generation"`
		Created    string            `json:"created"`
		Threshold  int               `json:"threshold"`
		Objects    int               `json:"objects"`
		Resources  map[string]int    `json:"resources"`
		From       []string          `json:"from"`
		Backends   map[string]string `json:"backends"`
		Margin     int               `json:"margin"`
		Error      string            `json:"error"`
		Tampered   bool              `json:"tampered"`
		Officers   *struct {
			Branch    bool   `json:"branch"`
			Threshold int    `json:"threshold"`
			Officers  int    `json:"officers"`
			Signature string `json:"signature"`
			Shares    []struct {
				Index       int    `json:"index"`
				Officer     string `json:"officer"`
				RecipientID string `json:"recipientID"`
				Holder      string `json:"holder"`
				Opened      bool   `json:"opened"`
			} `json:"shares"`
			Margin     int      `json:"margin"`
			Proof      string   `json:"proof"`
			Opened     []string `json:"opened"`
			ProofError string   `json:"proofError"`
			Problem    string   `json:"problem"`
		} `json:"officers"`
	} `json:"deks"`
}

// TestDrillExitCodesAndJSON runs the real binary: exit 0 with every
// backend, 1 when a DEK's margin is below --min-margin, 2 when one is
// unrecoverable, each with the same code in -o json; -o table is still
// taken, as text.
func TestDrillExitCodesAndJSON(t *testing.T) {
	f := recoverytest.NewFixture(t, false)
	snap := f.Snapshot(t, t.TempDir())
	cfg := f.Plugin.WriteConfig(t, "local-a", "local-b", "local-c")
	drill := func(args ...string) (drillSchema, string, int) {
		t.Helper()
		out, stderr, code := runBin(t, "", append([]string{"drill", "--config", cfg, "--etcd-snapshot", snap, "-q", "-o", "json"}, args...)...)
		var r drillSchema
		decodeStrict(t, out, &r)
		return r, stderr, code
	}
	for _, step := range []struct {
		name  string
		lose  string
		code  int
		state string // of local-c
	}{
		{"every backend", "", 0, "ok"},
		{"local-c lost", "local-c", 1, "unavailable"},
		{"local-b lost too", "local-b", 2, "unavailable"},
	} {
		if step.lose != "" {
			must(t, os.Remove(f.Plugin.KeyFiles[step.lose]))
		}
		r, stderr, code := drill()
		if code != step.code || r.ExitCode != step.code || r.MinMargin != 1 || len(r.DEKs) != 2 || r.DEKs[0].Backends["local-c"] != step.state || r.DEKs[0].Threshold != 2 {
			t.Errorf("%s: exit %d %+v\n%s", step.name, code, r, stderr)
		}
		if step.code != 0 && !strings.Contains(stderr, "drill: some DEK") {
			t.Errorf("%s: stderr %q", step.name, stderr)
		}
	}
	out, _, code := runBin(t, "", "drill", "--config", cfg, "--etcd-snapshot", snap, "-q", "-o", "table", "--min-margin", "0")
	if code != 2 || !strings.Contains(out, "UNRECOVERABLE") {
		t.Errorf("-o table: exit %d\n%s", code, out)
	}
	if _, stderr, code := runBin(t, "", "drill", "--config", cfg, "-o", "xml"); code != 1 || !strings.Contains(stderr, `-o "xml": want text or json`) {
		t.Errorf("-o xml: exit %d %s", code, stderr)
	}
}
