package helm

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// releaseWorkflow is what the tests read of .github/workflows/release.yml,
// which cannot run here (hack/test.sh lints it with actionlint).
type releaseWorkflow struct {
	Permissions map[string]string `json:"permissions"`
	Env         map[string]string `json:"env"`
	Jobs        map[string]struct {
		Permissions map[string]string `json:"permissions"`
		Steps       []struct {
			Uses string `json:"uses"`
		} `json:"steps"`
	} `json:"jobs"`
}

func readReleaseWorkflow(t *testing.T, root string) releaseWorkflow {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".github", "workflows", "release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf releaseWorkflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("release.yml: %v", err)
	}
	return wf
}

// TestReleaseWorkflowPushesWhereTheChartPulls: the image goes where the
// chart's default values (and the manifests) pull it from.
func TestReleaseWorkflowPushesWhereTheChartPulls(t *testing.T) {
	f := setup(t)
	wf := readReleaseWorkflow(t, f.root)
	vals := f.values(t, []string{filepath.Join(f.chart, "values.yaml")})
	for what, got := range map[string]any{"values.yaml image.repository": get(vals, "image", "repository"), "repo.ImageRepository": repo.ImageRepository} {
		if wf.Env["IMAGE"] != got {
			t.Errorf("release.yml pushes to IMAGE %q, %s is %q", wf.Env["IMAGE"], what, got)
		}
	}
}

// TestReleaseWorkflowToolsArePinned: each Go tool the workflow installs
// is pinned to a release, and those this module requires to the version
// whose library the tests run (the helm that pushes the chart is the one
// that lints it here).
func TestReleaseWorkflowToolsArePinned(t *testing.T) {
	f := setup(t)
	wf := readReleaseWorkflow(t, f.root)
	gomod, err := os.ReadFile(filepath.Join(f.root, "deploy", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	semver := regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+$`)
	for key, module := range map[string]string{
		"CRANE":       "github.com/google/go-containerregistry",
		"HELM":        "helm.sh/helm/v4",
		"GOVULNCHECK": "golang.org/x/vuln",
	} {
		pkg, version, ok := strings.Cut(wf.Env[key], "@")
		if !ok || !strings.HasPrefix(pkg, module+"/") || !semver.MatchString(version) {
			t.Errorf("release.yml env %s = %q: want %s/...@vX.Y.Z", key, wf.Env[key], module)
			continue
		}
		required := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+(\S+)`).FindSubmatch(gomod)
		if required != nil && string(required[1]) != version {
			t.Errorf("release.yml env %s installs %s, deploy/go.mod requires %s %s", key, version, module, required[1])
		}
	}
}

// TestReleaseWorkflowLeastPrivilege: no permission is granted workflow-wide,
// each job names its own, and every action is pinned by commit (a tag can
// be moved to other code).
func TestReleaseWorkflowLeastPrivilege(t *testing.T) {
	f := setup(t)
	wf := readReleaseWorkflow(t, f.root)
	if wf.Permissions == nil || len(wf.Permissions) != 0 {
		t.Errorf("release.yml: top-level permissions %v, want {}", wf.Permissions)
	}
	if len(wf.Jobs) == 0 {
		t.Fatal("release.yml: no jobs")
	}
	pinned := regexp.MustCompile(`^[\w.-]+/[\w./-]+@[0-9a-f]{40}$`)
	for name, job := range wf.Jobs {
		if len(job.Permissions) == 0 {
			t.Errorf("release.yml job %s: no permissions of its own", name)
		}
		for _, s := range job.Steps {
			if s.Uses != "" && !pinned.MatchString(s.Uses) {
				t.Errorf("release.yml job %s: %s is not pinned by a commit", name, s.Uses)
			}
		}
	}
}
