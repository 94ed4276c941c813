package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
)

// versionJSON is `version -o json` as docs/reference/cli.md documents it.
type versionJSON struct {
	Version    string   `json:"version"`
	Commit     string   `json:"commit"`
	Built      string   `json:"built"`
	GoVersion  string   `json:"goVersion"`
	FIPSMode   string   `json:"fips140"`
	FIPSModule string   `json:"fipsModule"`
	Backends   []string `json:"backends"`
}

// TestVersionOfAPlainBuild builds the binary as `go build` does in a
// checkout (VCS stamping on), with a build date stamped: version reports
// the commit, not "dev", in text and -o json, with the Go version, the
// FIPS mode and module and every backend kind of the config's table.
func TestVersionOfAPlainBuild(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "trousseau")
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", "-X main.buildDate=2026-12-01T10:00:00Z", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	head := strings.TrimSpace(string(rev))
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	must(t, err)
	var v versionJSON
	decodeStrict(t, string(out), &v)
	if !regexp.MustCompile(`^v0\.0\.0-\d{14}-`+head[:12]+`(\+dirty)?$`).MatchString(v.Version) || !strings.HasPrefix(v.Commit, head) ||
		v.Built != "2026-12-01T10:00:00Z" || !strings.HasPrefix(v.GoVersion, "go1.") || v.FIPSMode != fipsmode.Mode() || v.FIPSModule != fipsmode.Module() ||
		!slices.Equal(v.Backends, config.Kinds()) || !slices.Contains(v.Backends, "pkcs11") {
		t.Fatalf("version -o json of HEAD %s: %+v", head, v)
	}
	text, err := exec.Command(bin, "version").Output()
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	want := []string{v.Version, fipsmode.Summary(), "commit:   " + v.Commit, "built:    " + v.Built, "go:       " + v.GoVersion, "backends: " + strings.Join(v.Backends, ", ")}
	if !slices.Equal(lines, want) {
		t.Fatalf("version:\n%s\nwant:\n%s", text, strings.Join(want, "\n"))
	}
}
