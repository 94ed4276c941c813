package monitoring

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// promtool finds the promtool that hack/promtool.sh builds:
// $TROUSSEAU_PROMTOOL, or the cache. A missing one fails the test
// (hack/test.sh builds it); only `go test -short` outside CI skips.
func promtool(t *testing.T) string {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("needs promtool: run hack/promtool.sh, then test without -short")
	}
	bin := os.Getenv("TROUSSEAU_PROMTOOL")
	if bin == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(home, ".cache", "trousseau", "promtool", pinnedVersion(t, "PROMETHEUS_VERSION"), "promtool")
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("promtool is not built at %s (%v): run hack/promtool.sh first (hack/test.sh does), or set TROUSSEAU_PROMTOOL", bin, err)
	}
	return bin
}

// runPromtool runs promtool with args in dir and fails the test with its
// output if it fails.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pinnedVersion reads KEY=value from hack/versions.env.
func pinnedVersion(t *testing.T, key string) string {
	t.Helper()
	path := filepath.Join(root(t), "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return ""
}

// rule is one rule of a Prometheus rules file.
type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

// alerts reads the alerting rules of trousseau-rules.yaml, in order.
func alerts(t *testing.T) []rule {
	t.Helper()
	var rf ruleGroups
	readYAML(t, filepath.Join(root(t), Dir, RulesFile), &rf)
	var out []rule
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no alerts in " + RulesFile)
	}
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
