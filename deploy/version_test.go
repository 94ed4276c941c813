// Package deploy_test checks that every deployment artefact carries the one
// version of the VERSION file: the binary (Makefile), the image (deploy/image,
// Dockerfile), the chart and the manifests.
package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

func TestOneVersionEverywhere(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	version, err := repo.Version(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VERSION %s", version)

	t.Run("chart", func(t *testing.T) {
		appVersion, chartVersion, err := repo.ChartAppVersion(root)
		if err != nil {
			t.Fatal(err)
		}
		if appVersion != version {
			t.Errorf("%s/Chart.yaml: appVersion %q, VERSION %q", repo.ChartDir, appVersion, version)
		}
		if want := repo.ChartVersion(version); chartVersion != want {
			t.Errorf("%s/Chart.yaml: version %q, want %q (VERSION without the v)", repo.ChartDir, chartVersion, want)
		}
		b, err := os.ReadFile(filepath.Join(root, repo.ChartDir, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var values struct {
			Image struct{ Repository, Tag string }
		}
		if err := yaml.Unmarshal(b, &values); err != nil {
			t.Fatal(err)
		}
		if values.Image.Repository != repo.ImageRepository || values.Image.Tag != "" {
			t.Errorf("values.yaml: image %s tag %q, want %s and no tag (the appVersion)", values.Image.Repository, values.Image.Tag, repo.ImageRepository)
		}
	})

	t.Run("manifests", func(t *testing.T) {
		images, err := repo.ManifestImages(root)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]bool{}
		for _, m := range images {
			files[m.File] = true
			if m.Image != repo.Image(version) {
				t.Errorf("%s: image %s, want %s", m.File, m.Image, repo.Image(version))
			}
		}
		for _, f := range []string{"deploy/static-pod/trousseau.yaml", "deploy/kustomize/base/daemonset.yaml", "deploy/kustomize/base/kustomization.yaml"} {
			if !files[f] {
				t.Errorf("%s: no image reference found", f)
			}
		}
	})

	t.Run("Makefile", func(t *testing.T) {
		if _, err := exec.LookPath("make"); err != nil {
			t.Skip("no make")
		}
		// -n prints the commands without running them.
		cmd := exec.Command("make", "-n", "build", "image", "release")
		cmd.Dir = root
		for _, kv := range os.Environ() { // VERSION unset: the Makefile's own default
			if !strings.HasPrefix(kv, "VERSION=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n build image release: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("-X main.version="+version)) {
			t.Errorf("make build does not stamp %s:\n%s", version, out)
		}
		if !regexp.MustCompile(`go run \./image .*-version ` + regexp.QuoteMeta(version)).Match(out) {
			t.Errorf("make image does not build %s:\n%s", version, out)
		}
		if !bytes.Contains(out, []byte("VERSION="+version+" ./hack/release.sh")) {
			t.Errorf("make release does not build %s:\n%s", version, out)
		}
	})

	t.Run("Dockerfile", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		// The version reaches the Dockerfile as a build argument only.
		if strings.Contains(string(b), version) {
			t.Errorf("Dockerfile names %s itself: it must come from --build-arg VERSION=$(cat VERSION)", version)
		}
	})
}
