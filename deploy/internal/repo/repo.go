// Package repo finds the Trousseau repository around the deploy module and
// reads the one version that the binary, the image, the chart and the
// manifests all carry.
package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// The names every artefact shares.
const (
	// ImageRepository is where the manifests and the chart pull the image
	// from, and the name `make image` tags it with.
	ImageRepository = "ghcr.io/trousseau-io/trousseau"
	// SourceURL is the image's org.opencontainers.image.source label.
	SourceURL = "https://github.com/trousseau-io/trousseau"
	// ChartDir is the Helm chart, relative to the repository's root.
	ChartDir = "deploy/helm/trousseau"
)

// versionRE is a release version as the VERSION file holds it: a "v" and a
// SemVer 2 version (the chart's version is the same without the "v").
var versionRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// Root returns the repository's root: the nearest directory, from the
// working directory up, that holds VERSION and deploy/go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "VERSION")) && isFile(filepath.Join(dir, "deploy", "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root not found: no VERSION and deploy/go.mod above the working directory")
		}
		dir = parent
	}
}

// Version reads the VERSION file at root: the release version, from which
// the binary's version, the image's tag, the chart's appVersion and
// version, and the manifests' image tag all derive.
func Version(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if err := CheckVersion(v); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Join(root, "VERSION"), err)
	}
	return v, nil
}

// CheckVersion accepts a release version: "v" and SemVer 2 (v1.2.3,
// v1.2.3-rc.1), which is also a valid image tag.
func CheckVersion(v string) error {
	if !versionRE.MatchString(v) {
		return fmt.Errorf("version %q is not v<major>.<minor>.<patch>[-<pre-release>]", v)
	}
	return nil
}

// ChartVersion is the chart's version for a release version: the same
// SemVer without the "v", as Helm repositories expect.
func ChartVersion(version string) string { return strings.TrimPrefix(version, "v") }

// Image is the image reference of a release version.
func Image(version string) string { return ImageRepository + ":" + version }

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ChartAppVersion reads the chart's appVersion and version from its
// Chart.yaml.
func ChartAppVersion(root string) (appVersion, version string, err error) {
	b, err := os.ReadFile(filepath.Join(root, ChartDir, "Chart.yaml"))
	if err != nil {
		return "", "", err
	}
	var c struct {
		AppVersion string `json:"appVersion"`
		Version    string `json:"version"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", "", fmt.Errorf("Chart.yaml: %w", err)
	}
	return c.AppVersion, c.Version, nil
}

// ManifestImage is an image reference found in a manifest of deploy/.
type ManifestImage struct {
	File  string // relative to the repository's root
	Image string
}

// ManifestImages returns every image reference in the plain manifests and
// kustomizations of deploy/ (a container's image, a kustomization's
// images: name and newTag). The chart's templates are left out: they
// take the tag from Chart.yaml.
func ManifestImages(root string) ([]ManifestImage, error) {
	var out []ManifestImage
	deploy := filepath.Join(root, "deploy")
	err := filepath.WalkDir(deploy, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == filepath.Join("deploy", "helm") || rel == filepath.Join("deploy", "config")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			for _, img := range imagesIn(obj) {
				out = append(out, ManifestImage{File: rel, Image: img})
			}
		}
		return nil
	})
	return out, err
}

// imagesIn finds image references in a decoded manifest.
func imagesIn(obj map[string]any) []string {
	if obj["kind"] == "Kustomization" {
		var out []string
		imgs, _ := obj["images"].([]any)
		for _, i := range imgs {
			m, _ := i.(map[string]any)
			name, _ := m["name"].(string)
			if tag, ok := m["newTag"].(string); ok {
				out = append(out, name+":"+tag)
			}
		}
		return out
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "image" {
					out = append(out, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(obj)
	return out
}
