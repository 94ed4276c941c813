package helm

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/common"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

type object = map[string]any

type fixture struct {
	root, chart string
	kube        *common.KubeVersion
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
				case "Service", "ServiceMonitor", "PrometheusRule":
				case "ConfigMap": // the Grafana dashboard, which no pod reads
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
	want := []string{"ConfigMap kube-system/trousseau-kms-dashboard", "DaemonSet kube-system/trousseau-kms", "Service kube-system/trousseau-kms-metrics", "ServiceAccount kube-system/trousseau-kms-plugin", "ServiceMonitor kube-system/trousseau-kms"}
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
		{"version label", get(ds, "metadata", "labels", "app.kubernetes.io/version"), "v0.1.0-mirror"},
		{"instance label", get(ds, "spec", "template", "metadata", "labels", "app.kubernetes.io/instance"), "trousseau"},
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
		{"monitor's job, as the alerts expect", get(objs["ServiceMonitor kube-system/trousseau-kms"], "spec", "jobLabel"), "trousseau.io/job"},
		{"service's job label", get(objs["Service kube-system/trousseau-kms-metrics"], "metadata", "labels", "trousseau.io/job"), "trousseau"},
		{"unready plugins scraped", get(objs["Service kube-system/trousseau-kms-metrics"], "spec", "publishNotReadyAddresses"), true},
		{"dashboard for the sidecar", get(objs["ConfigMap kube-system/trousseau-kms-dashboard"], "metadata", "labels", "grafana_dashboard"), "1"},
		{"dashboard label", get(objs["ConfigMap kube-system/trousseau-kms-dashboard"], "metadata", "labels", "example.com/team"), "platform"},
		{"dashboard annotation", get(objs["ConfigMap kube-system/trousseau-kms-dashboard"], "metadata", "annotations", "grafana_folder"), "Trousseau"},
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

func TestMonitoringOnlyWhenEnabled(t *testing.T) {
	f := setup(t)
	for key := range f.render(t, f.values(t, nil)) {
		if !strings.HasPrefix(key, "DaemonSet ") && !strings.HasPrefix(key, "ServiceAccount ") {
			t.Errorf("%s rendered with default values", key)
		}
	}
	for value, want := range map[string][]string{
		"serviceMonitor":   {"ServiceMonitor kube-system/trousseau", "Service kube-system/trousseau-metrics"},
		"prometheusRule":   {"PrometheusRule kube-system/trousseau"},
		"grafanaDashboard": {"ConfigMap kube-system/trousseau-dashboard"},
	} {
		objs := f.render(t, f.values(t, nil, "metrics."+value+".enabled=true", "metrics.nodeHealthListen=0.0.0.0:8787"))
		if len(objs) != 2+len(want) {
			t.Errorf("%s enabled: %d objects, want %d", value, len(objs), 2+len(want))
		}
		for _, key := range want {
			if objs[key] == nil {
				t.Errorf("%s enabled: no %s", value, key)
			}
		}
	}
}

// TestRefusedValues: values that would break the deployment, or loosen
// the pod's security settings, fail the render (or helm install) with a
// message that says what to change. want is what the error names with the
// schema; tmpl, when set, what it names with --skip-schema-validation:
// the templates refuse those values by themselves. (Those the schema alone
// refuses are ignored by the templates.)
func TestRefusedValues(t *testing.T) {
	f := setup(t)
	cases := []struct {
		name       string
		sets       []string
		want, tmpl string
	}{
		{"socket outside the mount", []string{"config.threshold=1", "config.socket=/run/kms.sock"}, "config.socket", "config.socket"},
		{"socket climbing out of the mount", []string{"config.threshold=1", "config.socket=/var/run/trousseau/../../etc/kms.sock"}, "config.socket", "config.socket"},
		{"another state dir", []string{"config.threshold=1", "config.stateDir=/var/lib/kms"}, "config.stateDir", "config.stateDir"},
		{"health port differs", []string{"config.threshold=1", "config.health.listen=127.0.0.1:9999"}, "config.health.listen", "config.health.listen"},
		{"health port moved, config not", []string{"config.threshold=1", "health.port=9999"}, "config.health.listen", "config.health.listen"},
		{"monitor of a loopback address", []string{"config.threshold=1", "metrics.serviceMonitor.enabled=true"}, "set config.health.listen", "set config.health.listen"},
		{"rules of a loopback address", []string{"config.threshold=1", "config.health.listen=localhost:8787", "metrics.prometheusRule.enabled=true"}, "metrics.prometheusRule.enabled: config.health.listen", "loopback"},
		{"monitor of the nodes' default address", []string{"metrics.serviceMonitor.enabled=true"}, "set metrics.nodeHealthListen", "set metrics.nodeHealthListen"},
		{"rules of the nodes' loopback", []string{"metrics.prometheusRule.enabled=true", "metrics.nodeHealthListen=127.0.0.1:8787"}, "metrics.nodeHealthListen", "loopback"},
		{"the nodes' address beside config", []string{"config.threshold=1", "metrics.nodeHealthListen=0.0.0.0:8787"}, "set that instead", "config.health.listen"},
		{"the nodes' port differs", []string{"metrics.nodeHealthListen=0.0.0.0:9999"}, "metrics.nodeHealthListen", "health.port"},
		{"the nodes' address with a line break", []string{"metrics.nodeHealthListen=0.0.0.0:8787\\nx: y"}, "nodeHealthListen", ""},
		{"env from a Secret", []string{"extraEnv[0].name=TOKEN", "extraEnv[0].valueFrom.secretKeyRef.name=s"}, "valueFrom", ""},
		{"pull secrets", []string{"imagePullSecrets[0].name=regcred"}, "imagePullSecrets", ""},
		{"relative host path", []string{"hostPaths.config=etc/trousseau"}, "hostPaths", "hostPaths.config"},
		{"extra volume over the config", []string{"extraHostPathVolumes[0].name=more", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/etc/trousseau"}, "the chart's own mount", "the chart's own mount"},
		{"extra volume in the config mount", []string{"extraHostPathVolumes[0].name=more", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/etc/trousseau/x"}, "the chart's own mount", "the chart's own mount"},
		{"extra volume over the mounts' parent", []string{"extraHostPathVolumes[0].name=more", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/var"}, "the chart's own mount", "the chart's own mount"},
		{"extra volume from a ConfigMap", []string{"extraHostPathVolumes[0].name=cm", "extraHostPathVolumes[0].configMap.name=x", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/opt/x"}, "configMap", ""},
		{"two extra volumes, one name", []string{"extraHostPathVolumes[0].name=x", "extraHostPathVolumes[0].hostPath=/opt/x", "extraHostPathVolumes[0].mountPath=/opt/x", "extraHostPathVolumes[1].name=x", "extraHostPathVolumes[1].hostPath=/opt/y", "extraHostPathVolumes[1].mountPath=/opt/y"}, "not used by the chart or another", "not used by the chart or another"},
		{"bad digest", []string{"image.digest=latest"}, "digest", "image.digest"},
		{"config file path", []string{"configFile=../shadow"}, "configFile", "configFile"},
		{"config file dot-dot", []string{"configFile=.."}, "configFile", "configFile"},
		{"pod label over the selector's", []string{"podLabels.app\\.kubernetes\\.io/name=other"}, "podLabels", "podLabels"},
		{"monitor label over the chart's", []string{"metrics.serviceMonitor.enabled=true", "metrics.nodeHealthListen=0.0.0.0:8787", "metrics.serviceMonitor.labels.helm\\.sh/chart=x"}, "labels", "metrics.serviceMonitor.labels"},
		{"rules label over the chart's", []string{"metrics.prometheusRule.enabled=true", "metrics.nodeHealthListen=0.0.0.0:8787", "metrics.prometheusRule.labels.app\\.kubernetes\\.io/name=x"}, "labels", "metrics.prometheusRule.labels"},
		{"dashboard label over the sidecar's", []string{"metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.labels.grafana_dashboard=0"}, "labels", "metrics.grafanaDashboard.labels"},
		{"the config annotation", []string{"podAnnotations.trousseau\\.io/config=x"}, "podAnnotations", "podAnnotations"},

		// The security settings are fixed: only supplementalGroups is a value.
		{"root user", []string{"podSecurityContext.runAsUser=0"}, "runAsUser", "podSecurityContext.runAsUser"},
		{"root allowed", []string{"podSecurityContext.runAsNonRoot=false"}, "runAsNonRoot", "podSecurityContext.runAsNonRoot"},
		{"no seccomp", []string{"podSecurityContext.seccompProfile.type=Unconfined"}, "seccompProfile", "podSecurityContext.seccompProfile"},
		{"fsGroup root", []string{"podSecurityContext.fsGroup=0"}, "fsGroup", "podSecurityContext.fsGroup"},
		{"root's group", []string{"podSecurityContext.supplementalGroups[0]=0"}, "supplementalGroups", "podSecurityContext.supplementalGroups"},
		{"a group as text", []string{"podSecurityContext.supplementalGroups[0]=997\\nx"}, "supplementalGroups", "podSecurityContext.supplementalGroups"},
		{"privileged", []string{"securityContext.privileged=true"}, "securityContext", "securityContext"},
		{"a capability", []string{"securityContext.capabilities.add[0]=SYS_ADMIN"}, "securityContext", "securityContext"},
		{"escalation", []string{"securityContext.allowPrivilegeEscalation=true"}, "securityContext", "securityContext"},
		{"writable root", []string{"securityContext.readOnlyRootFilesystem=false"}, "securityContext", "securityContext"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vals := f.values(t, nil, c.sets...)
			_, err := Render(f.chart, DefaultRelease, f.kube, vals)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("render with %q: %v, want an error naming %s", c.sets, err, c.want)
			}
			if c.tmpl == "" {
				return
			}
			_, err = render(f.chart, DefaultRelease, f.kube, vals, true)
			if err == nil || !strings.Contains(err.Error(), c.tmpl) {
				t.Errorf("render with %q, schema skipped: %v, want an error naming %s", c.sets, err, c.tmpl)
			}
		})
	}
}

// TestValuesExampleHasEveryKind: values.yaml's config example has a
// backend of every kind, and of no other. The kinds are the
// docs/backends/<kind>.md pages: this module does not import the plugin's
// table of kinds, and the plugin's own tests (config/kinds_test.go) hold
// that table and those pages to one set, so a kind added without an
// example here fails.
func TestValuesExampleHasEveryKind(t *testing.T) {
	f := setup(t)
	example := valuesExample(t, filepath.Join(f.chart, "values.yaml"))
	pages, err := filepath.Glob(filepath.Join(f.root, "docs", "backends", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/backends/*.md pages: %v", err)
	}
	documented := map[string]bool{}
	for _, p := range pages {
		documented[strings.TrimSuffix(filepath.Base(p), ".md")] = true
	}
	inExample := map[string]bool{}
	for _, b := range asList(example["backends"]) {
		for k := range b.(map[string]any) {
			if k != "name" {
				inExample[k] = true
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !inExample[k] {
			t.Errorf("values.yaml's config example has no %s backend (docs/backends/%s.md)", k, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(inExample)) {
		if !documented[k] {
			t.Errorf("values.yaml's config example has a %s backend, a kind without docs/backends/%s.md", k, k)
		}
	}
}

// TestConfigExamplesAreValid runs the plugin's own config check on the
// config of the full values and on the example of every backend kind in
// values.yaml's comments (TestValuesExampleHasEveryKind checks that it
// has every kind), so that neither documents a field the plugin does not
// know.
func TestConfigExamplesAreValid(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trousseau binary")
	}
	f := setup(t)
	example := valuesExample(t, filepath.Join(f.chart, "values.yaml"))
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

// TestHostPaths: the node's paths the pod may mount, as values.yaml and
// docs/packaging.md state the rule, with the schema and without it (the
// templates enforce the rule by themselves).
func TestHostPaths(t *testing.T) {
	f := setup(t)
	type volume = map[string]any
	extra := func(hostPath string, more ...any) map[string]any {
		v := volume{"name": "extra", "hostPath": hostPath, "mountPath": "/opt/extra"}
		for i := 0; i+1 < len(more); i += 2 {
			v[more[i].(string)] = more[i+1]
		}
		return map[string]any{"extraHostPathVolumes": []any{v}}
	}
	hostPaths := func(key, path string) map[string]any {
		return map[string]any{"hostPaths": map[string]any{key: path}}
	}
	allowed := map[string]map[string]any{
		"the default":                           nil,
		"config in /etc/trousseau-prod":         hostPaths("config", "/etc/trousseau-prod"),
		"config below /etc/trousseau":           hostPaths("config", "/etc/trousseau/cluster-a"),
		"state in /var/lib/trousseau-prod":      hostPaths("state", "/var/lib/trousseau-prod"),
		"socket in /run/trousseau":              hostPaths("socket", "/run/trousseau"),
		"config in /srv/trousseau":              hostPaths("config", "/srv/trousseau"),
		"credentials below /etc/trousseau":      extra("/etc/trousseau/aws/config", "type", "File"),
		"a vendor module below /opt":            extra("/opt/hsm/lib"),
		"a module below /usr/lib":               extra("/usr/lib/softhsm"),
		"Luna's client below /usr":              extra("/usr/safenet/lunaclient"),
		"a KMS plugin's sockets":                extra("/var/run/kmsplugin"),
		"a KMS plugin's socket directory":       extra("/run/kmsplugin/vendor"),
		"a KMS plugin's socket":                 extra("/var/run/kmsplugin/vendor/socket.sock", "type", "Socket"),
		"SoftHSM's tokens, writable":            extra("/var/lib/softhsm/tokens", "readOnly", false),
		"a vendor's state below /opt, writable": extra("/opt/nfast/kmdata", "readOnly", false),
		"a trousseau dir in /var/lib, writable": extra("/var/lib/trousseau-softhsm", "readOnly", false),
	}
	for name, vals := range allowed {
		t.Run("allowed/"+name, func(t *testing.T) {
			for _, skip := range []bool{false, true} {
				if _, err := render(f.chart, DefaultRelease, f.kube, vals, skip); err != nil {
					t.Errorf("schema skipped %v: %v", skip, err)
				}
			}
		})
	}

	type refusal struct {
		vals map[string]any
		want string // named by the templates' error (the schema's may differ)
	}
	refused := map[string]refusal{}
	for _, p := range []string{
		"/", "//", "/etc", "/etc/", "/var", "/var/lib", "/run", "/var/run", "/usr", "/opt", "/home", "/root",
		"/proc", "/proc/1/root", "/sys", "/dev", "/dev/mem", "/boot", "/tmp",
		"/etc/kubernetes", "/etc/kubernetes/pki", "/etc/kubernetes/azure.json", "/etc/shadow", "/etc/ssl",
		"/var/lib/kubelet", "/var/lib/kubelet/pods", "/var/lib/etcd", "/var/lib/containerd", "/var/lib/docker", "/var/log",
		"/run/containerd", "/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock",
		"/var/run/docker.sock", "/run/crio/crio.sock", "/var/run/cri-dockerd.sock", "/var/run/secrets",
		"/etc/trousseau-x/../kubernetes", "/etc/trousseau/./x", "/opt/../etc", "/opt//x", "relative/path", "/opt/x\nsecret: y",
		"/var/run/kmsplugin-evil", "/var/lib/softhsm2", "/etc/kmsplugin",
	} {
		refused["extra "+p] = refusal{extra(p), "hostPath"}
	}
	for _, p := range []string{
		"/", "/etc", "/var/lib", "/run", "/var/run", "/etc/kubernetes", "/var/lib/kubelet", "/var/lib/kubelet/trousseau",
		"/etc/kubernetes/trousseau", "/home/trousseau", "/tmp/trousseau", "/proc/trousseau", "/var/lib/trousseau/..",
		"/etc/trousseau/", "/usr/lib/trousseau", "/var/lib/etcd",
	} {
		for _, k := range []string{"config", "state", "socket"} {
			refused["hostPaths."+k+" "+p] = refusal{hostPaths(k, p), "hostPaths." + k}
		}
	}
	for name, p := range map[string]string{
		"config, writable": "/etc/trousseau/x", "/usr, writable": "/usr/lib/softhsm",
		"a KMS plugin's sockets, writable": "/var/run/kmsplugin/vendor", "/opt itself, writable": "/opt",
	} {
		refused["extra "+name] = refusal{extra(p, "readOnly", false), "hostPath"}
	}
	for _, typ := range []string{"DirectoryOrCreate", "FileOrCreate", "CharDevice", "BlockDevice"} {
		refused["extra of type "+typ] = refusal{extra("/opt/x", "type", typ), "type"}
	}
	for _, m := range []string{"/", "/etc", "/var", "/var/run", "/etc/trousseau", "/etc/trousseau/keys", "/etc/trousseau-chart", "/var/lib/trousseau", "/var/run/trousseau/x", "/tmp", "/tmp/x", "/trousseau", "/proc", "/dev/x", "/opt/../etc", "relative"} {
		refused["mountPath "+m] = refusal{map[string]any{"extraHostPathVolumes": []any{volume{"name": "extra", "hostPath": "/opt/x", "mountPath": m}}}, "mountPath"}
	}
	for name, r := range refused {
		t.Run("refused/"+name, func(t *testing.T) {
			if _, err := Render(f.chart, DefaultRelease, f.kube, r.vals); err == nil {
				t.Errorf("rendered with %v", r.vals)
			}
			if _, err := render(f.chart, DefaultRelease, f.kube, r.vals, true); err == nil || !strings.Contains(err.Error(), r.want) {
				t.Errorf("schema skipped: %v, want an error naming %s", err, r.want)
			}
		})
	}
}

// TestSecuritySettingsAreFixed: whatever the values, the pod and the
// container have the kustomize base's security settings; only
// supplementalGroups is added.
func TestSecuritySettingsAreFixed(t *testing.T) {
	f := setup(t)
	pod := map[string]any{"runAsNonRoot": true, "runAsUser": float64(65532), "runAsGroup": float64(65532), "seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	ctr := map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false, "capabilities": map[string]any{"drop": []any{"ALL"}}}
	for name, files := range map[string][]string{"default values": nil, "full values": f.full()} {
		t.Run(name, func(t *testing.T) {
			for key, o := range f.render(t, f.values(t, files)) {
				if o["kind"] != "DaemonSet" {
					continue
				}
				want := maps.Clone(pod)
				if files != nil {
					want["supplementalGroups"] = []any{float64(997)}
				}
				if diff := cmp.Diff(want, podSpec(o)["securityContext"]); diff != "" {
					t.Errorf("%s: pod securityContext (-want +got):\n%s", key, diff)
				}
				if diff := cmp.Diff(ctr, container(o)["securityContext"]); diff != "" {
					t.Errorf("%s: container securityContext (-want +got):\n%s", key, diff)
				}
			}
		})
	}
}

// TestHostileValues: a value holding a line break (or what YAML reads as
// one: CR, NEL, U+2028, U+2029), a quote or a document separator,
// followed by YAML at every indentation the templates use, in any field
// that takes text, is refused by the schema or the templates, or renders
// as one scalar: the same objects and keys as a valid value gives, no
// other value changed, and the pod still reads no ConfigMap, Secret or
// token.
//
// The templates alone must achieve that, so every case is rendered with
// the schema skipped (as helm --skip-schema-validation does): with the
// schema, a value is refused or renders the same. The schema itself must
// refuse a line break in every field that is not free text.
func TestHostileValues(t *testing.T) {
	f := setup(t)
	type hostile struct {
		name string
		// vals returns the values with v in the field; benign is a valid
		// v (a number for a number field), and a hostile v is the text of
		// benign followed by a payload.
		vals   func(v any) map[string]any
		benign any
		// free: the schema takes any text there (the templates quote it).
		free bool
		// namespace: the field is the release's namespace (helm -n).
		namespace bool
	}
	in := func(v any, path ...string) map[string]any {
		for i := len(path) - 1; i >= 0; i-- {
			v = map[string]any{path[i]: v}
		}
		return v.(map[string]any)
	}
	field := func(path ...string) func(any) map[string]any {
		return func(v any) map[string]any { return in(v, path...) }
	}
	key := func(path ...string) func(any) map[string]any {
		return func(v any) map[string]any { return in(map[string]any{fmt.Sprint(v): "v"}, path...) }
	}
	// enabled turns on metrics.<what> (with a health address Prometheus
	// can reach) around a value of it.
	enabled := func(what string, set func(any) map[string]any) func(any) map[string]any {
		return func(s any) map[string]any {
			v := set(s)
			m, _ := v["metrics"].(map[string]any)
			if m == nil {
				m = map[string]any{}
				v["metrics"] = m
			}
			sub, _ := m[what].(map[string]any)
			if sub == nil {
				sub = map[string]any{}
				m[what] = sub
			}
			sub["enabled"], m["nodeHealthListen"] = true, "0.0.0.0:8787"
			return v
		}
	}
	monitor := func(set func(any) map[string]any) func(any) map[string]any { return enabled("serviceMonitor", set) }
	volume := func(k string) func(any) map[string]any {
		return func(s any) map[string]any {
			v := map[string]any{"name": "extra", "hostPath": "/opt/extra", "mountPath": "/opt/extra"}
			v[k] = s
			return map[string]any{"extraHostPathVolumes": []any{v}}
		}
	}
	cases := []hostile{
		{name: "hostPaths.config", vals: field("hostPaths", "config"), benign: "/etc/trousseau"},
		{name: "hostPaths.state", vals: field("hostPaths", "state"), benign: "/var/lib/trousseau"},
		{name: "hostPaths.socket", vals: field("hostPaths", "socket"), benign: "/var/run/trousseau"},
		{name: "extra hostPath", vals: volume("hostPath"), benign: "/opt/extra"},
		{name: "extra mountPath", vals: volume("mountPath"), benign: "/opt/extra"},
		{name: "extra name", vals: volume("name"), benign: "extra"},
		{name: "extra type", vals: volume("type"), benign: "Directory"},
		{name: "configFile", vals: field("configFile"), benign: "benign.yaml"},
		{name: "health.probeHost", vals: field("health", "probeHost"), benign: "127.0.0.9"},
		{name: "serviceAccount.name", vals: field("serviceAccount", "name"), benign: "benign-sa"},
		{name: "serviceAccount.annotations value", vals: func(s any) map[string]any {
			return in(map[string]any{"example.com/x": s}, "serviceAccount", "annotations")
		}, benign: "benign", free: true},
		{name: "serviceAccount.annotations key", vals: key("serviceAccount", "annotations"), benign: "example.com/benign"},
		{name: "image.repository", vals: field("image", "repository"), benign: "registry.example.com/benign"},
		{name: "image.tag", vals: field("image", "tag"), benign: "benign-tag"},
		{name: "image.digest", vals: field("image", "digest"), benign: "sha256:" + strings.Repeat("ab", 32)},
		{name: "image.pullPolicy", vals: field("image", "pullPolicy"), benign: "Always"},
		{name: "priorityClassName", vals: field("priorityClassName"), benign: "benign-priority"},
		{name: "nameOverride", vals: field("nameOverride"), benign: "benign"},
		{name: "fullnameOverride", vals: field("fullnameOverride"), benign: "benign-full"},
		{name: "podAnnotations value", vals: func(s any) map[string]any { return in(map[string]any{"example.com/x": s}, "podAnnotations") }, benign: "benign", free: true},
		{name: "podAnnotations key", vals: key("podAnnotations"), benign: "example.com/benign"},
		{name: "podLabels value", vals: func(s any) map[string]any { return in(map[string]any{"example.com/x": s}, "podLabels") }, benign: "benign"},
		{name: "podLabels key", vals: key("podLabels"), benign: "example.com/benign"},
		{name: "nodeSelector value", vals: func(s any) map[string]any { return in(map[string]any{"example.com/x": s}, "nodeSelector") }, benign: "benign"},
		{name: "extraEnv value", vals: func(s any) map[string]any {
			return map[string]any{"extraEnv": []any{map[string]any{"name": "BENIGN", "value": s}}}
		}, benign: "benign", free: true},
		{name: "extraEnv name", vals: func(s any) map[string]any {
			return map[string]any{"extraEnv": []any{map[string]any{"name": s, "value": "v"}}}
		}, benign: "BENIGN"},
		{name: "tolerations value", vals: func(s any) map[string]any {
			return map[string]any{"tolerations": []any{map[string]any{"key": "example.com/x", "operator": "Equal", "value": s, "effect": "NoSchedule"}}}
		}, benign: "benign", free: true},
		{name: "affinity value", vals: func(s any) map[string]any {
			return in([]any{map[string]any{"matchExpressions": []any{map[string]any{"key": "example.com/x", "operator": "In", "values": []any{s}}}}},
				"affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
		}, benign: "benign", free: true},
		{name: "resources value", vals: func(s any) map[string]any { return in(s, "resources", "limits", "memory") }, benign: "333Mi"},
		{name: "config value", vals: func(s any) map[string]any {
			return in([]any{map[string]any{"name": s, "local": map[string]any{"keyFile": "/etc/trousseau/a.key"}}}, "config", "backends")
		}, benign: "benign-backend", free: true},
		{name: "config key", vals: key("config", "log"), benign: "benign", free: true},
		{name: "serviceMonitor.interval", vals: monitor(field("metrics", "serviceMonitor", "interval")), benign: "17s"},
		{name: "serviceMonitor.scrapeTimeout", vals: monitor(field("metrics", "serviceMonitor", "scrapeTimeout")), benign: "7s"},
		{name: "serviceMonitor.labels value", vals: monitor(func(s any) map[string]any {
			return in(map[string]any{"example.com/x": s}, "metrics", "serviceMonitor", "labels")
		}), benign: "benign"},
		{name: "serviceMonitor.labels key", vals: monitor(key("metrics", "serviceMonitor", "labels")), benign: "example.com/benign"},
		{name: "prometheusRule.labels value", vals: enabled("prometheusRule", func(s any) map[string]any {
			return in(map[string]any{"example.com/x": s}, "metrics", "prometheusRule", "labels")
		}), benign: "benign"},
		{name: "prometheusRule.labels key", vals: enabled("prometheusRule", key("metrics", "prometheusRule", "labels")), benign: "example.com/benign"},
		{name: "grafanaDashboard.namespace", vals: enabled("grafanaDashboard", field("metrics", "grafanaDashboard", "namespace")), benign: "benign-ns"},
		{name: "grafanaDashboard.labels value", vals: enabled("grafanaDashboard", func(s any) map[string]any {
			return in(map[string]any{"example.com/x": s}, "metrics", "grafanaDashboard", "labels")
		}), benign: "benign"},
		{name: "grafanaDashboard.labels key", vals: enabled("grafanaDashboard", key("metrics", "grafanaDashboard", "labels")), benign: "example.com/benign"},
		{name: "grafanaDashboard.annotations value", vals: enabled("grafanaDashboard", func(s any) map[string]any {
			return in(map[string]any{"example.com/x": s}, "metrics", "grafanaDashboard", "annotations")
		}), benign: "benign", free: true},
		{name: "grafanaDashboard.annotations key", vals: enabled("grafanaDashboard", key("metrics", "grafanaDashboard", "annotations")), benign: "example.com/benign"},
		{name: "health.port", vals: field("health", "port"), benign: 8787},
		{name: "minReadySeconds", vals: field("minReadySeconds"), benign: 11},
		{name: "livenessProbe.periodSeconds", vals: field("livenessProbe", "periodSeconds"), benign: 13},
		{name: "supplementalGroups", vals: func(s any) map[string]any { return in([]any{s}, "podSecurityContext", "supplementalGroups") }, benign: 997},
		{name: "release namespace", vals: func(any) map[string]any { return nil }, benign: "kube-system", namespace: true},
	}
	payloads := hostilePayloads()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rel := func(v any) Release {
				if !c.namespace {
					return DefaultRelease
				}
				return Release{Name: DefaultRelease.Name, Namespace: fmt.Sprint(v)}
			}
			marker := fmt.Sprint(c.benign)
			manifest, err := render(f.chart, rel(c.benign), f.kube, c.vals(c.benign), false)
			if err != nil {
				t.Fatalf("the valid value %v: %v", c.benign, err)
			}
			benign := byKind(t, manifest)

			// The schema refuses a line break wherever text is not free.
			if !c.free && !c.namespace {
				for _, br := range []string{"\n", "\u2028"} {
					s := marker + br + "x: y"
					if _, err := render(f.chart, DefaultRelease, f.kube, c.vals(s), false); err == nil || !strings.Contains(err.Error(), "schema") {
						t.Errorf("%q with the schema: %v, want the schema to refuse it", s, err)
					}
				}
			}

			rendered := 0
			for _, p := range payloads {
				s := marker + p
				manifest, err := render(f.chart, rel(s), f.kube, c.vals(s), true)
				if err != nil {
					continue // refused by the templates (or Helm's own parse of the manifest)
				}
				got, err := parseByKind(manifest)
				if err != nil {
					continue // not YAML: nothing can apply it
				}
				if problem := sameShape(asAny(benign), asAny(got), marker, "$"); problem != "" {
					t.Errorf("%q renders to other objects: %s", s, problem)
					continue
				}
				if ds := got["DaemonSet"]; ds != nil {
					checkPodReadsNothing(t, fmt.Sprintf("%q", s), podSpec(ds))
				}
				if sa := got["ServiceAccount"]; sa != nil && sa["automountServiceAccountToken"] != false {
					t.Errorf("%q: the ServiceAccount mounts a token", s)
				}
				rendered++
			}
			t.Logf("%d hostile values, %d rendered as one scalar, the others refused", len(payloads), rendered)
		})
	}
}

// hostilePayloads are what a hostile value appends to a valid one: after
// a line break, a key (for a map) or an item (for a list) that would make
// the pod read a token or a Secret, at every indentation the templates use.
// A newline, and a newline then U+2028 (go-yaml writes a text with a
// newline as a block scalar, and U+2028 in it raw, which nindent does not
// indent after), at every indentation; the other separators YAML reads as
// line breaks at two; a new document; quotes and flow syntax.
func hostilePayloads() []string {
	var out []string
	add := func(br string, keyIndents, itemIndents []int) {
		for _, n := range keyIndents {
			out = append(out, br+strings.Repeat(" ", n)+"automountServiceAccountToken: true")
		}
		for _, n := range itemIndents {
			out = append(out, br+strings.Repeat(" ", n)+"- {name: creds, secret: {secretName: kms-creds}}")
		}
	}
	all := []int{0, 2, 4, 6, 8, 10, 12, 14}
	add("\n", all, all)
	add("\nx\u2028", all, all)
	for _, br := range []string{"\r", "\r\n", "\u0085", "\u2028", "\u2029", "\nx\u2029"} {
		add(br, []int{6}, []int{8})
	}
	for _, br := range []string{"\n", "\u2028"} {
		out = append(out, br+"---"+br+"apiVersion: v1"+br+"kind: Secret"+br+"metadata: {name: injected, namespace: kube-system}")
	}
	return append(out,
		`"`, `'`, `" automountServiceAccountToken: true`,
		`"]`+"\n"+`          volumeMounts: [{name: creds, mountPath: /creds}]`,
		"\n\t\tautomountServiceAccountToken: true",
	)
}

// byKind decodes a manifest into its objects by kind (one of each here).
func byKind(t *testing.T, manifest string) map[string]object {
	t.Helper()
	out, err := parseByKind(manifest)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func parseByKind(manifest string) (map[string]object, error) {
	out := map[string]object{}
	for _, doc := range strings.Split(manifest, "\n---") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return nil, err
		}
		if len(o) == 0 {
			continue
		}
		kind := fmt.Sprint(o["kind"])
		if _, dup := out[kind]; dup {
			return nil, fmt.Errorf("two objects of kind %s", kind)
		}
		out[kind] = o
	}
	return out, nil
}

func asAny(objs map[string]object) map[string]any {
	out := map[string]any{}
	for k, o := range objs {
		out[k] = o
	}
	return out
}

// sameShape says how got differs from want beyond the value under test:
// the same maps with the same keys, the same lists with the same lengths;
// a scalar, or a map key, may differ only where want holds the valid
// value (marker), that is, where the value goes. A value that added a
// key, an item, an object, or changed any other value (such as
// automountServiceAccountToken) differs.
func sameShape(want, got any, marker, at string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %T, want a map", at, got)
		}
		if len(g) != len(w) {
			return fmt.Sprintf("%s: keys %v, want %v", at, slices.Sorted(maps.Keys(g)), slices.Sorted(maps.Keys(w)))
		}
		var onlyW, onlyG []string
		for k := range w {
			if _, ok := g[k]; !ok {
				onlyW = append(onlyW, k)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				onlyG = append(onlyG, k)
			}
		}
		// One key may differ: the value under test, as a key.
		if len(onlyW) > 1 || (len(onlyW) == 1 && !strings.Contains(onlyW[0], marker)) {
			return fmt.Sprintf("%s: keys %q, want %q", at, onlyG, onlyW)
		}
		for k, wv := range w {
			gk := k
			if len(onlyW) == 1 && k == onlyW[0] {
				gk = onlyG[0]
			}
			if p := sameShape(wv, g[gk], marker, at+"."+k); p != "" {
				return p
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: %T, want a list", at, got)
		}
		if len(g) != len(w) {
			return fmt.Sprintf("%s: %d items, want %d", at, len(g), len(w))
		}
		for i := range w {
			if p := sameShape(w[i], g[i], marker, fmt.Sprintf("%s[%d]", at, i)); p != "" {
				return p
			}
		}
	default:
		switch got.(type) {
		case map[string]any, []any:
			return fmt.Sprintf("%s: %T, want a scalar", at, got)
		}
		if !reflect.DeepEqual(want, got) && !strings.Contains(fmt.Sprint(want), marker) {
			return fmt.Sprintf("%s: %#v, want %#v", at, got, want)
		}
	}
	return ""
}

// TestFIPS: fips: true selects the -fips image and puts the plugin in
// FIPS-only mode; an explicit tag or digest still wins.
func TestFIPS(t *testing.T) {
	f := setup(t)
	app, _, err := repo.ChartAppVersion(f.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sets           []string
		image, godebug string
	}{
		{nil, "ghcr.io/trousseau-io/trousseau:" + app, ""},
		{[]string{"fips=true"}, "ghcr.io/trousseau-io/trousseau:" + app + "-fips", "fips140=only"},
		{[]string{"fips=true", "image.tag=v9.9.9-fips"}, "ghcr.io/trousseau-io/trousseau:v9.9.9-fips", "fips140=only"},
	} {
		c := container(f.render(t, f.values(t, nil, tc.sets...))["DaemonSet kube-system/trousseau"])
		godebug := ""
		for _, e := range asList(c["env"]) {
			if m, _ := e.(map[string]any); m["name"] == "GODEBUG" {
				godebug, _ = m["value"].(string)
			}
		}
		if c["image"] != tc.image || godebug != tc.godebug {
			t.Errorf("%v: image %v, GODEBUG %q; want %s, %q", tc.sets, c["image"], godebug, tc.image, tc.godebug)
		}
	}
}
