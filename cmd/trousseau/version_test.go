package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
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

// Without a stamp, version reports what go build recorded: the module's
// version (go install ...@vX), else the checkout's pseudo-version, else
// the VCS revision; "(devel)" only when it recorded none.
func TestVersionFallback(t *testing.T) {
	info := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/trousseau-io/trousseau", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	rev := "ad5db4b737793f1c1f6a7d3c1c9a0d0e5e0f1a2b"
	for _, c := range []struct {
		name, stamped string
		bi            *debug.BuildInfo
		want          string
	}{
		{"stamped by make", "v0.1.0", info("v0.0.9", "vcs.revision", rev), "v0.1.0"},
		{"go install @v1.2.3", "", info("v1.2.3"), "v1.2.3"},
		{"go build in a checkout", "", info("v0.0.0-20261207012226-ad5db4b73779+dirty", "vcs.revision", rev), "v0.0.0-20261207012226-ad5db4b73779+dirty"},
		{"revision only", "", info("(devel)", "vcs.revision", rev), rev},
		{"revision of a modified tree", "", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), rev + "-dirty"},
		{"-buildvcs=false", "", info("(devel)", "-trimpath", "true"), "(devel)"},
		{"no build info", "", nil, "(devel)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := versionOf(c.stamped, c.bi); got != c.want {
				t.Errorf("versionOf(%q, %v) = %q, want %q", c.stamped, c.bi, got, c.want)
			}
		})
	}
}
