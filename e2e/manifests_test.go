package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func httpGet(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

const deployDir = "../deploy"

// notManifests are YAML files in deploy/ that are not Kubernetes API
// objects (they are read by kube-apiserver, Trousseau or Prometheus from
// disk), or not as they are: the Helm chart's templates and values,
// rendered below.
func notManifest(path string) bool {
	rel, _ := filepath.Rel(deployDir, path)
	return rel == "encryption-config.yaml" || strings.HasPrefix(rel, "config"+string(filepath.Separator)) ||
		strings.HasPrefix(rel, "kustomize"+string(filepath.Separator)) || strings.HasPrefix(rel, "helm"+string(filepath.Separator)) ||
		strings.HasPrefix(rel, "monitoring"+string(filepath.Separator))
}

// helmRender runs deploy/helm/render, which renders the Helm chart with
// Helm's own library: that lives in the deploy module, which this module
// does not import.
func helmRender(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run", "./helm/render"}, args...)...)
	cmd.Dir = deployDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run ./helm/render %s (in deploy/): %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// deployManifests returns every Kubernetes manifest in deploy/: plain
// YAML files, and each kustomization rendered with kustomize's own code.
func deployManifests(t *testing.T) map[string][]byte {
	out := map[string][]byte{}
	err := filepath.WalkDir(deployDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && fileExists(filepath.Join(p, "kustomization.yaml")):
			res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), p)
			if err != nil {
				return err
			}
			y, err := res.AsYaml()
			if err != nil {
				return err
			}
			out[p+" (kustomize build)"] = y
		case !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) && !notManifest(p) && filepath.Base(p) != "kustomization.yaml":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out[deployDir+"/helm/trousseau (default values)"] = helmRender(t)
	out[deployDir+"/helm/trousseau (helm/testdata/full-values.yaml)"] = helmRender(t, "-f", "helm/testdata/full-values.yaml")
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// dryRunDeployManifests creates every object of deploy/ with a
// server-side dry run: the apiserver validates it fully, stores nothing.
func dryRunDeployManifests(t *testing.T, c *cluster) {
	dc, err := discovery.NewDiscoveryClientForConfig(c.rest)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.rest)
	if err != nil {
		t.Fatal(err)
	}
	manifests := deployManifests(t)
	if len(manifests) == 0 {
		t.Fatal("no manifests found in deploy/")
	}
	for _, raw := range manifests {
		if bytes.Contains(raw, []byte("\nkind: ServiceMonitor\n")) {
			installServiceMonitorCRD(t, c, dyn, mapper)
			break
		}
	}
	objects := 0
	for source, raw := range manifests {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var obj unstructured.Unstructured
			err := dec.Decode(&obj.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", source, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			gvk := obj.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %s: %v", source, gvk, err)
			}
			var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				if obj.GetNamespace() == "" {
					t.Errorf("%s: %s %s has no namespace", source, gvk.Kind, obj.GetName())
				}
				ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
			}
			if _, err := ri.Create(context.Background(), &obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s: %s %s rejected by kube-apiserver: %v", source, gvk.Kind, obj.GetName(), err)
				continue
			}
			objects++
			t.Logf("dry run ok: %s %s/%s from %s", gvk.Kind, obj.GetNamespace(), obj.GetName(), source)
		}
	}
	if objects == 0 {
		t.Fatal("no objects in deploy/ manifests")
	}
}

// installServiceMonitorCRD creates prometheus-operator's own
// ServiceMonitor CRD (pinned in deploy/helm, fetched through the Go module
// proxy), for real, so that the chart's ServiceMonitor is validated
// against its schema; and waits until the apiserver serves the kind.
func installServiceMonitorCRD(t *testing.T, c *cluster, dyn dynamic.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper) {
	t.Helper()
	var crd unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(helmRender(t, "-servicemonitor-crd")), 4096)
	for len(crd.Object) == 0 {
		if err := dec.Decode(&crd.Object); err != nil {
			t.Fatalf("ServiceMonitor CRD: %v", err)
		}
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(context.Background(), &crd, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create CRD %s: %v", crd.GetName(), err)
	}
	eventually(t, 60*time.Second, "ServiceMonitor served", func(ctx context.Context) error {
		got, err := crds.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		established := false
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			established = established || (m["type"] == "Established" && m["status"] == "True")
		}
		if !established {
			return fmt.Errorf("CRD %s not established", crd.GetName())
		}
		mapper.Reset()
		_, err = mapper.RESTMapping(schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, "v1")
		return err
	})
	t.Logf("ServiceMonitor CRD %s installed", crd.GetName())
}
