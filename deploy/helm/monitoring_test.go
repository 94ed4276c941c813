package helm

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/monitoring"
)

// monitoringValues turn on the PrometheusRule and the dashboard, with
// labels for the Prometheus and the Grafana sidecar that pick them up.
var monitoringValues = []string{
	"metrics.nodeHealthListen=0.0.0.0:8787",
	"metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=prometheus",
	"metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=monitoring",
}

// TestPrometheusRuleIsTheRulesFile: the chart's PrometheusRule holds the
// groups of deploy/monitoring/trousseau-rules.yaml (which promtool tests),
// with the labels asked for, and is valid by prometheus-operator's own
// CRD.
func TestPrometheusRuleIsTheRulesFile(t *testing.T) {
	f := setup(t)
	rule := f.render(t, f.values(t, nil, monitoringValues...))["PrometheusRule kube-system/trousseau"]
	if rule == nil {
		t.Fatal("no PrometheusRule")
	}
	var want map[string]any
	b, err := os.ReadFile(filepath.Join(f.root, monitoring.Dir, monitoring.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, rule["spec"]); diff != "" {
		t.Errorf("PrometheusRule spec vs %s (-file +spec):\n%s", monitoring.RulesFile, diff)
	}
	if got := get(rule, "metadata", "labels", "release"); got != "prometheus" {
		t.Errorf("label release: %v", got)
	}
	crd := operatorCRDSchema(t, "monitoring.coreos.com_prometheusrules.yaml")
	if err := chartutil.ValidateAgainstSingleSchema(rule, crd); err != nil {
		t.Errorf("the PrometheusRule does not match its CRD: %v", err)
	}
	// The CRD's schema does refuse what Prometheus would.
	get(rule, "spec", "groups", 0, "rules", 0).(map[string]any)["for"] = "10 minutes"
	if err := chartutil.ValidateAgainstSingleSchema(rule, crd); err == nil || !strings.Contains(err.Error(), "for") {
		t.Errorf("a rule with for: \"10 minutes\" matches the CRD (%v)", err)
	}
}

// operatorCRDSchema is the openAPIV3Schema, as JSON, of one of
// prometheus-operator's CRDs, from its module at the version (and hash)
// pinned for the ServiceMonitor's.
func operatorCRDSchema(t *testing.T, file string) []byte {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "go", "mod", "download", "-json", serviceMonitorModule)
	cmd.Dir = t.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	var mod struct{ Dir, Sum, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Error != "" {
		t.Fatalf("go mod download %s: %v %v %s", serviceMonitorModule, err, jerr, mod.Error)
	}
	if mod.Sum != serviceMonitorSum {
		t.Fatalf("%s: hash %s, pinned %s", serviceMonitorModule, mod.Sum, serviceMonitorSum)
	}
	b, err := os.ReadFile(filepath.Join(mod.Dir, filepath.Dir(filepath.FromSlash(serviceMonitorCRDFile)), file))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	schema, err := json.Marshal(get(crd, "spec", "versions", 0, "schema", "openAPIV3Schema"))
	if err != nil || string(schema) == "null" {
		t.Fatalf("%s: no openAPIV3Schema (%v)", file, err)
	}
	return schema
}

// TestDashboardConfigMap: the dashboard's ConfigMap holds
// deploy/monitoring/trousseau-dashboard.json byte for byte, in the
// namespace asked for, with the label Grafana's sidecar looks for.
func TestDashboardConfigMap(t *testing.T) {
	f := setup(t)
	cm := f.render(t, f.values(t, nil, monitoringValues...))["ConfigMap monitoring/trousseau-dashboard"]
	if cm == nil {
		t.Fatal("no ConfigMap monitoring/trousseau-dashboard")
	}
	want, err := os.ReadFile(filepath.Join(f.root, monitoring.Dir, monitoring.DashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := get(cm, "data", monitoring.DashboardFile); got != strings.TrimSuffix(string(want), "\n") {
		t.Errorf("ConfigMap data %s is not %s", monitoring.DashboardFile, monitoring.DashboardFile)
	}
	if got := get(cm, "metadata", "labels", "grafana_dashboard"); got != "1" {
		t.Errorf("label grafana_dashboard: %v", got)
	}
	if !json.Valid(want) {
		t.Errorf("%s is not JSON", monitoring.DashboardFile)
	}
}
