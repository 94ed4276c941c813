package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
// objects (they are read by kube-apiserver or Trousseau from disk).
func notManifest(path string) bool {
	rel, _ := filepath.Rel(deployDir, path)
	return rel == "encryption-config.yaml" || strings.HasPrefix(rel, "config"+string(filepath.Separator)) ||
		strings.HasPrefix(rel, "kustomize"+string(filepath.Separator))
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
