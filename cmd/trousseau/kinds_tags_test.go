package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBuildTagsLeaveKindsOut: a binary built with -tags
// no_gcpkms,no_azurekv lists only the kinds compiled in, and its config
// check refuses a gcpkms backend, naming the field and the build tag.
func TestBuildTagsLeaveKindsOut(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "trousseau")
	build := exec.Command("go", "build", "-tags", "no_gcpkms,no_azurekv", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	must(t, err)
	var v versionJSON
	decodeStrict(t, string(out), &v)
	if want := []string{"local", "vault", "awskms", "kmsplugin", "pkcs11"}; !slices.Equal(v.Backends, want) {
		t.Fatalf("version -o json lists %v, want %v", v.Backends, want)
	}

	cfg := filepath.Join(dir, "trousseau.yaml")
	must(t, os.WriteFile(cfg, []byte("threshold: 1\nbackends:\n"+
		"  - {name: a, local: {keyFile: "+filepath.Join(dir, "a.key")+"}}\n"+
		"  - {name: g, gcpkms: {keyName: projects/p/locations/l/keyRings/r/cryptoKeys/k}}\n"), 0o600))
	out, err = exec.Command(bin, "config", "check", "--offline", "--config", cfg).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("config check: %v, want exit 1\n%s", err, out)
	}
	want := `backends[1]: kind "gcpkms" is not compiled into this binary (built with -tags no_gcpkms); use a build with it`
	if !strings.Contains(string(out), want) {
		t.Fatalf("config check:\n%s\nwant %q", out, want)
	}
}
