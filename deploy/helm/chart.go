// Package helm renders and lints Trousseau's Helm chart (deploy/helm/trousseau)
// with Helm's own Go library, for the chart's tests and for the e2e suite,
// which runs the render command (deploy/helm/render) to feed the objects to
// a real kube-apiserver.
package helm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/getter"
	release "helm.sh/helm/v4/pkg/release/v1"
)

// Release is what a chart is rendered as: the names the e2e suite and the
// kustomize base use.
type Release struct {
	Name      string
	Namespace string
}

// DefaultRelease is the release the kustomize base corresponds to.
var DefaultRelease = Release{Name: "trousseau", Namespace: "kube-system"}

// KubeVersion is the Kubernetes version the chart is rendered and linted
// for: the kube-apiserver the e2e suite runs (hack/versions.env).
func KubeVersion(root string) (*common.KubeVersion, error) {
	v, err := pinnedVersion(root, "K8S_VERSION")
	if err != nil {
		return nil, err
	}
	return common.ParseKubeVersion(v)
}

// Values merges values files (later ones win) and --set style
// assignments, as `helm install -f ... --set ...` does.
func Values(files, sets []string) (map[string]any, error) {
	opts := values.Options{ValueFiles: files, Values: sets}
	return opts.MergeValues(getter.Providers{})
}

// Render renders the chart at dir for rel with vals, as `helm template`
// does (client only, no cluster), and returns the manifests in Helm's
// install order.
func Render(dir string, rel Release, kube *common.KubeVersion, vals map[string]any) (string, error) {
	return render(dir, rel, kube, vals, false)
}

// render is Render, or `helm template --skip-schema-validation` when
// skipSchema is set: the chart's tests check that the templates alone
// keep hostile values harmless.
func render(dir string, rel Release, kube *common.KubeVersion, vals map[string]any, skipSchema bool) (string, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", err
	}
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy, install.Replace = action.DryRunClient, true
	install.SkipSchemaValidation = skipSchema
	install.ReleaseName, install.Namespace = rel.Name, rel.Namespace
	install.KubeVersion = kube
	install.DisableHooks = true
	r, err := install.RunWithContext(context.Background(), chrt, vals)
	if err != nil {
		return "", err
	}
	v1rel, ok := r.(*release.Release)
	if !ok {
		return "", fmt.Errorf("helm rendered %s as a %T, not a chart v2 release", dir, r)
	}
	return v1rel.Manifest, nil
}

// Lint runs `helm lint` on the chart at dir with vals, and returns every
// message of warning severity or above (and the infos, for the log).
func Lint(dir string, rel Release, kube *common.KubeVersion, vals map[string]any) (problems, infos []string) {
	l := lint.RunAll(dir, vals, rel.Namespace, lint.WithKubeVersion(kube))
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			problems = append(problems, m.Error())
		} else {
			infos = append(infos, m.Error())
		}
	}
	return problems, infos
}

// The ServiceMonitor CRD the chart's ServiceMonitor is validated against:
// prometheus-operator's own, from its module on the Go module proxy (the
// go command checks the module's hash against sum.golang.org; the hash is
// pinned here too).
const (
	serviceMonitorModule  = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	serviceMonitorSum     = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
	serviceMonitorCRDFile = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
)

// ServiceMonitorCRD returns the CustomResourceDefinition of ServiceMonitor,
// downloaded once into the module cache.
func ServiceMonitorCRD(ctx context.Context) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "trousseau-crd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", serviceMonitorModule)
	cmd.Dir = tmp // outside any module: nothing's go.mod or go.sum changes
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	var mod struct{ Dir, Sum, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr != nil || mod.Error != "" || err != nil {
		return nil, fmt.Errorf("go mod download %s: %v %s", serviceMonitorModule, errors.Join(err, jerr), mod.Error)
	}
	if mod.Sum != serviceMonitorSum {
		return nil, fmt.Errorf("%s: hash %s, pinned %s", serviceMonitorModule, mod.Sum, serviceMonitorSum)
	}
	return os.ReadFile(filepath.Join(mod.Dir, filepath.FromSlash(serviceMonitorCRDFile)))
}

// pinnedVersion reads KEY=value from hack/versions.env, the file of pinned
// versions that the build scripts and the tests share.
func pinnedVersion(root, key string) (string, error) {
	path := filepath.Join(root, "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s has no %s", path, key)
}
