package helm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

type object = map[string]any

type fixture struct {
	root, chart string
	kube        *chartutil.KubeVersion
}

func setup(t *testing.T) fixture {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	kube, err := KubeVersion(root)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{root: root, chart: filepath.Join(root, repo.ChartDir), kube: kube}
}

func (f fixture) values(t *testing.T, files []string, sets ...string) map[string]any {
	t.Helper()
	v, err := Values(files, sets)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f fixture) full() []string {
	return []string{filepath.Join(f.root, "deploy", "helm", "testdata", "full-values.yaml")}
}

func (f fixture) render(t *testing.T, vals map[string]any) map[string]object {
	t.Helper()
	manifest, err := Render(f.chart, DefaultRelease, f.kube, vals)
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, manifest)
}

// objects decodes a multi-document YAML stream, by kind/namespace/name.
func objects(t *testing.T, stream string) map[string]object {
	t.Helper()
	out := map[string]object{}
	for _, doc := range strings.Split(stream, "\n---") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		if len(o) == 0 {
			continue
		}
		key := fmt.Sprintf("%s %s/%s", o["kind"], get(o, "metadata", "namespace"), get(o, "metadata", "name"))
		if _, dup := out[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		out[key] = o
	}
	return out
}

// get walks maps (string keys) and lists (int keys).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func podSpec(o object) map[string]any {
	s, _ := get(o, "spec", "template", "spec").(map[string]any)
	return s
}

func container(o object) map[string]any {
	c, _ := get(o, "spec", "template", "spec", "containers", 0).(map[string]any)
	return c
}

func TestLint(t *testing.T) {
	f := setup(t)
	for name, files := range map[string][]string{"default values": nil, "full values": f.full()} {
		t.Run(name, func(t *testing.T) {
			problems, infos := Lint(f.chart, DefaultRelease, f.kube, f.values(t, files))
			for _, m := range infos {
				t.Log(m)
			}
			for _, m := range problems {
				t.Error(m)
			}
		})
	}
}

// helmLabels are the labels Helm charts conventionally add and the
// kustomize base does not have; nothing else may differ.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

func withoutHelmLabels(o object) object {
	for _, path := range [][]any{{"metadata", "labels"}, {"spec", "template", "metadata", "labels"}} {
		if labels, ok := get(o, path...).(map[string]any); ok {
			for _, l := range helmLabels {
				delete(labels, l)
			}
		}
	}
	return o
}

// TestDefaultValuesRenderTheKustomizeBase: the chart with its default
// values and the release "trousseau" in kube-system gives the objects of
// deploy/kustomize/base, field for field, Helm's labels aside.
func TestDefaultValuesRenderTheKustomizeBase(t *testing.T) {
	f := setup(t)
	chart := f.render(t, f.values(t, nil))
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(f.root, "deploy", "kustomize", "base"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	base := objects(t, string(y))
	if len(base) != 2 {
		t.Fatalf("the kustomize base has %d objects, want 2: update this test", len(base))
	}
	for key, o := range chart {
		labels, _ := get(o, "metadata", "labels").(map[string]any)
		for _, l := range helmLabels {
			if _, ok := labels[l]; !ok {
				t.Errorf("%s: no %s label", key, l)
			}
		}
		withoutHelmLabels(o)
	}
	if diff := cmp.Diff(base, chart); diff != "" {
		t.Errorf("chart (default values) vs kustomize base (-base +chart):\n%s", diff)
	}
}

// TestNothingReadFromTheAPI: whatever the values, the pod needs nothing
// that Trousseau encrypts (no ConfigMap, Secret, token or pull secret):
// those could not be read while no plugin runs.
func TestNothingReadFromTheAPI(t *testing.T) {
	f := setup(t)
	for name, files := range map[string][]string{"default values": nil, "full values": f.full()} {
		t.Run(name, func(t *testing.T) {
			for key, o := range f.render(t, f.values(t, files)) {
				switch o["kind"] {
				case "ServiceAccount":
					if o["automountServiceAccountToken"] != false {
						t.Errorf("%s: automountServiceAccountToken %v", key, o["automountServiceAccountToken"])
					}
				case "DaemonSet":
					checkPodReadsNothing(t, key, podSpec(o))
				case "Service", "ServiceMonitor":
				default:
					t.Errorf("%s: unexpected kind", key)
				}
			}
		})
	}
}

func checkPodReadsNothing(t *testing.T, key string, spec map[string]any) {
	t.Helper()
	if spec["automountServiceAccountToken"] != false {
		t.Errorf("%s: automountServiceAccountToken %v", key, spec["automountServiceAccountToken"])
	}
	if spec["imagePullSecrets"] != nil {
		t.Errorf("%s: imagePullSecrets", key)
	}
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		for source := range v.(map[string]any) {
			if source != "name" && !slices.Contains([]string{"hostPath", "emptyDir", "downwardAPI"}, source) {
				t.Errorf("%s: volume %v is a %s", key, get(v, "name"), source)
			}
		}
		if items, ok := get(v, "downwardAPI", "items").([]any); ok {
			for _, it := range items {
				if get(it, "resourceFieldRef") != nil {
					t.Errorf("%s: downwardAPI item %v", key, it)
				}
			}
		}
	}
	for _, c := range append(asList(spec["containers"]), asList(spec["initContainers"])...) {
		if get(c, "envFrom") != nil {
			t.Errorf("%s: envFrom", key)
		}
		for _, e := range asList(get(c, "env")) {
			if get(e, "valueFrom") != nil {
				t.Errorf("%s: env %v has valueFrom", key, get(e, "name"))
			}
		}
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

func TestFullValues(t *testing.T) {
	f := setup(t)
	vals := f.values(t, f.full())
	objs := f.render(t, vals)
	var keys []string
	for k := range objs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"DaemonSet kube-system/trousseau-kms", "Service kube-system/trousseau-kms-metrics", "ServiceAccount kube-system/trousseau-kms-plugin", "ServiceMonitor kube-system/trousseau-kms"}
	if !slices.Equal(keys, want) {
		t.Fatalf("objects %q, want %q", keys, want)
	}
	ds := objs["DaemonSet kube-system/trousseau-kms"]
	c := container(ds)
	spec := podSpec(ds)

	checks := []struct {
		what      string
		got, want any
	}{
		{"image", c["image"], "registry.example.com/mirror/trousseau@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		{"pull policy", c["imagePullPolicy"], "Always"},
		{"command", c["command"], []any{"/trousseau", "serve", "--config", "/etc/trousseau-chart/config.yaml"}},
		{"service account", spec["serviceAccountName"], "trousseau-kms-plugin"},
		{"selector", get(ds, "spec", "selector", "matchLabels"), map[string]any{"app.kubernetes.io/name": "kms", "app.kubernetes.io/component": "kms-plugin"}},
		{"container port", get(c, "ports", 0, "containerPort"), float64(9797)},
		{"liveness port", get(c, "livenessProbe", "httpGet", "port"), float64(9797)},
		{"liveness host (the pod's address)", get(c, "livenessProbe", "httpGet", "host"), nil},
		{"liveness period", get(c, "livenessProbe", "periodSeconds"), float64(20)},
		{"readiness path", get(c, "readinessProbe", "httpGet", "path"), "/readyz"},
		{"readiness success", get(c, "readinessProbe", "successThreshold"), float64(1)},
		{"memory limit", get(c, "resources", "limits", "memory"), "512Mi"},
		{"config host path", get(spec, "volumes", 0, "hostPath", "path"), "/etc/trousseau-prod"},
		{"state host path", get(spec, "volumes", 1, "hostPath", "path"), "/var/lib/trousseau-prod"},
		{"socket host path", get(spec, "volumes", 2, "hostPath", "path"), "/run/trousseau"},
		{"rendered config volume", get(spec, "volumes", 4, "downwardAPI", "items", 0, "fieldRef", "fieldPath"), "metadata.annotations['trousseau.io/config']"},
		{"rendered config mount", get(c, "volumeMounts", 4), map[string]any{"name": "rendered-config", "mountPath": "/etc/trousseau-chart", "readOnly": true}},
		{"extra volume", get(spec, "volumes", 5), map[string]any{"name": "keys", "hostPath": map[string]any{"path": "/opt/keys", "type": "Directory"}}},
		{"extra file volume", get(spec, "volumes", 9, "hostPath"), map[string]any{"path": "/etc/trousseau-prod/aws/config", "type": "File"}},
		{"extra mount read-only", get(c, "volumeMounts", 5, "readOnly"), true},
		{"extra mount writable", get(c, "volumeMounts", 7), map[string]any{"name": "softhsm-tokens", "mountPath": "/var/lib/softhsm/tokens", "readOnly": false}},
		{"env", get(c, "env", 1), map[string]any{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}},
		{"supplemental groups", get(spec, "securityContext", "supplementalGroups"), []any{float64(997)}},
		{"toleration", get(spec, "tolerations", 1, "key"), "example.com/dedicated"},
		{"node selector", get(spec, "nodeSelector", "example.com/kms"), "true"},
		{"priority", spec["priorityClassName"], "system-cluster-critical"},
		{"grace", spec["terminationGracePeriodSeconds"], float64(45)},
		{"pod annotation", get(ds, "spec", "template", "metadata", "annotations", "example.com/team"), "platform"},
		{"pod label", get(ds, "spec", "template", "metadata", "labels", "example.com/tier"), "kms"},
		{"min ready", get(ds, "spec", "minReadySeconds"), float64(20)},
		{"service port", get(objs["Service kube-system/trousseau-kms-metrics"], "spec", "ports", 0, "port"), float64(9797)},
		{"service selects the pods", get(objs["Service kube-system/trousseau-kms-metrics"], "spec", "selector"), get(ds, "spec", "selector", "matchLabels")},
		{"monitor selects the service", get(objs["ServiceMonitor kube-system/trousseau-kms"], "spec", "selector", "matchLabels"), get(ds, "spec", "selector", "matchLabels")},
		{"monitor label", get(objs["ServiceMonitor kube-system/trousseau-kms"], "metadata", "labels", "release"), "prometheus"},
		{"monitor interval", get(objs["ServiceMonitor kube-system/trousseau-kms"], "spec", "endpoints", 0, "interval"), "15s"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %#v, want %#v", c.what, c.got, c.want)
		}
	}

	// The config the kubelet writes into the container is the values'
	// config, unchanged.
	annotation, _ := get(ds, "spec", "template", "metadata", "annotations", "trousseau.io/config").(string)
	var rendered map[string]any
	if err := yaml.Unmarshal([]byte(annotation), &rendered); err != nil {
		t.Fatalf("config annotation: %v\n%s", err, annotation)
	}
	if diff := cmp.Diff(vals["config"], rendered); diff != "" {
		t.Errorf("config annotation vs values (-values +annotation):\n%s", diff)
	}
}

func TestServiceMonitorOnlyWhenEnabled(t *testing.T) {
	f := setup(t)
	for key := range f.render(t, f.values(t, nil)) {
		if strings.HasPrefix(key, "ServiceMonitor") || strings.HasPrefix(key, "Service ") {
			t.Errorf("%s rendered with default values", key)
		}
	}
	objs := f.render(t, f.values(t, nil, "metrics.serviceMonitor.enabled=true"))
	if objs["ServiceMonitor kube-system/trousseau"] == nil || objs["Service kube-system/trousseau-metrics"] == nil {
		t.Errorf("enabled: %d objects, no ServiceMonitor and Service", len(objs))
	}
}

// TestRefusedValues: values that would break the deployment fail the
// render (or helm install) with a message that says what to change.
func TestRefusedValues(t *testing.T) {
	f := setup(t)
	cases := []struct {
		name string
		sets []string
		want string
	}{
		{"socket outside the mount", []string{"config.threshold=1", "config.socket=/run/kms.sock"}, "config.socket"},
		{"another state dir", []string{"config.threshold=1", "config.stateDir=/var/lib/kms"}, "config.stateDir"},
		{"health port differs", []string{"config.threshold=1", "config.health.listen=127.0.0.1:9999"}, "config.health.listen"},
		{"health port moved, config not", []string{"config.threshold=1", "health.port=9999"}, "config.health.listen"},
		{"monitor of a loopback address", []string{"config.threshold=1", "metrics.serviceMonitor.enabled=true"}, "loopback"},
		{"env from a Secret", []string{"extraEnv[0].name=TOKEN", "extraEnv[0].valueFrom.secretKeyRef.name=s"}, "valueFrom"},
		{"pull secrets", []string{"imagePullSecrets[0].name=regcred"}, "imagePullSecrets"},
		{"relative host path", []string{"hostPaths.config=etc/trousseau"}, "hostPaths"},
		{"extra volume over the config", []string{"extraHostPathVolumes[0].name=more", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/etc/trousseau"}, "the chart's own mount"},
		{"extra volume from a ConfigMap", []string{"extraHostPathVolumes[0].name=cm", "extraHostPathVolumes[0].configMap.name=x", "extraHostPathVolumes[0].hostPath=/x", "extraHostPathVolumes[0].mountPath=/x"}, "configMap"},
		{"bad digest", []string{"image.digest=latest"}, "digest"},
		{"config file path", []string{"configFile=../shadow"}, "configFile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(f.chart, DefaultRelease, f.kube, f.values(t, nil, c.sets...))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("render with %q: %v, want an error naming %s", c.sets, err, c.want)
			}
		})
	}
}

// TestConfigExamplesAreValid runs the plugin's own config check on the
// config of the full values and on the example of every backend kind in
// values.yaml's comments, so that neither documents a field the plugin
// does not know.
func TestConfigExamplesAreValid(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trousseau binary")
	}
	f := setup(t)
	example := valuesExample(t, filepath.Join(f.chart, "values.yaml"))
	kinds := map[string]bool{}
	var checkable []any
	// A pkcs11 backend is built only when its module loads: the example's
	// is checked with the SoftHSM2 module the pkcs11 tests use
	// (./hack/test.sh sets TROUSSEAU_SOFTHSM_MODULE), or left out.
	softhsm := os.Getenv("TROUSSEAU_SOFTHSM_MODULE")
	for _, b := range asList(example["backends"]) {
		for k, cfg := range b.(map[string]any) {
			if k == "name" {
				continue
			}
			kinds[k] = true
			if k == "pkcs11" {
				if _, err := os.Stat(softhsm); softhsm == "" || err != nil {
					t.Logf("pkcs11 backend of the example not checked: no TROUSSEAU_SOFTHSM_MODULE")
					continue
				}
				cfg.(map[string]any)["module"] = softhsm
			}
			checkable = append(checkable, b)
		}
	}
	for _, k := range []string{"local", "vault", "awskms", "azurekv", "gcpkms", "kmsplugin", "pkcs11"} {
		if !kinds[k] {
			t.Errorf("values.yaml's config example has no %s backend", k)
		}
	}
	example["backends"] = checkable

	bin := filepath.Join(t.TempDir(), "trousseau")
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", bin, "./cmd/trousseau")
	build.Dir = f.root
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for name, cfg := range map[string]any{"values.yaml example": example, "full values": f.values(t, f.full())["config"]} {
		t.Run(name, func(t *testing.T) {
			b, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(file, b, 0o600)
			// The probes fail here (no backend is reachable); the table
			// of backends shows the config was read, validated and built.
			out, _ := exec.Command(bin, "config", "check", "--config", file, "--timeout", "1ms").CombinedOutput()
			if !strings.Contains(string(out), "BACKEND") {
				t.Fatalf("config check refused the config:\n%s\n%s", out, b)
			}
			for _, b := range asList(get(cfg, "backends")) {
				name, _ := get(b, "name").(string)
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` `).Match(out) {
					t.Errorf("backend %s not in config check's table:\n%s", name, out)
				}
			}
		})
	}
}

// valuesExample reads the config example of values.yaml's comments: the
// commented lines from "socket:" to the `config:` value.
func valuesExample(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "#   socket:"):
			in = true
		case strings.HasPrefix(l, "config:"):
			in = false
		}
		if in {
			lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "#"), "   "))
		}
	}
	var example map[string]any
	if err := yaml.Unmarshal([]byte(strings.Join(lines, "\n")), &example); err != nil || len(example) == 0 {
		t.Fatalf("values.yaml: no config example (%v)", err)
	}
	return example
}
