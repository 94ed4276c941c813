package main

import (
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
	"github.com/trousseau-io/trousseau/kmsclients/awskms"
	"github.com/trousseau-io/trousseau/kmsclients/kmsplugin"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

func TestFIPSWarnings(t *testing.T) {
	cfg := &config.Config{Backends: []config.Backend{
		{Name: "aws-std", Spec: &awskms.Config{KeyID: "alias/a"}},
		{Name: "aws-fips", Spec: &awskms.Config{KeyID: "alias/a", UseFIPSEndpoint: true}},
		{Name: "aws-vpce", Spec: &awskms.Config{KeyID: "alias/a", Endpoint: "https://vpce-1.kms-fips.us-east-1.vpce.amazonaws.com"}},
		{Name: "other", Spec: &kmsplugin.Config{Endpoint: "unix:///run/other.sock"}},
		{Name: "file", Spec: &local.Config{KeyFile: "/k"}},
	}}
	for _, tc := range []struct {
		mode, module string
		want         []string // a substring of each warning, in order
	}{
		{"off", "latest", nil},
		{"only", "v1.0.0-c2097c7c", []string{"backends aws-std: awskms", "backends other: a kmsplugin custodian"}},
		{"on", "latest", []string{"not a validated one", "backends aws-std", "backends other"}},
	} {
		got := fipsWarnings(cfg, tc.mode, tc.module)
		if len(got) != len(tc.want) {
			t.Errorf("mode %s, module %s: %q, want %d warnings", tc.mode, tc.module, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("mode %s, module %s: warning %d is %q, want it to say %q", tc.mode, tc.module, i, got[i], w)
			}
		}
	}
}

func TestVersionSaysFIPSModeAndModule(t *testing.T) {
	out, _, err := run(t, "", "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) < 2 || lines[1] != fipsmode.Summary() {
		t.Fatalf("version: %q %v, want the version, then %q", out, err, fipsmode.Summary())
	}
}
