package recovery

import (
	"encoding/base64"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// quickMap converts the kinds a recovery meets most (Secrets and
// ConfigMaps) to what ToUnstructured makes of them, without its
// reflection (a fifth of a YAML recovery's CPU). It leaves out what
// [Object.prepare] strips; false leaves the object to ToUnstructured.
// TestQuickMapMatchesToUnstructured compares the two.
func quickMap(obj runtime.Object) (map[string]any, bool) {
	switch o := obj.(type) {
	case *corev1.Secret:
		m, ok := quickMeta(&o.ObjectMeta, o.Immutable)
		putBytes(m, "data", o.Data, &ok)
		putStrings(m, "stringData", o.StringData)
		if o.Type != "" {
			m["type"] = string(o.Type)
		}
		return m, ok
	case *corev1.ConfigMap:
		m, ok := quickMeta(&o.ObjectMeta, o.Immutable)
		putStrings(m, "data", o.Data)
		putBytes(m, "binaryData", o.BinaryData, &ok)
		return m, ok
	}
	return nil, false
}

// quickMeta is the object with its metadata; owner references, which
// ToUnstructured writes with more care, send it there.
func quickMeta(om *metav1.ObjectMeta, immutable *bool) (map[string]any, bool) {
	md := map[string]any{}
	putString(md, "name", om.Name)
	putString(md, "generateName", om.GenerateName)
	putString(md, "namespace", om.Namespace)
	putStrings(md, "labels", om.Labels)
	putStrings(md, "annotations", om.Annotations)
	if len(om.Finalizers) > 0 {
		l := make([]any, len(om.Finalizers))
		for i, f := range om.Finalizers {
			l[i] = f
		}
		md["finalizers"] = l
	}
	m := map[string]any{"metadata": md}
	if immutable != nil {
		m["immutable"] = *immutable
	}
	return m, len(om.OwnerReferences) == 0
}

func putString(m map[string]any, key, s string) {
	if s != "" {
		m[key] = s
	}
}

func putStrings(m map[string]any, key string, s map[string]string) {
	if len(s) == 0 {
		return
	}
	out := make(map[string]any, len(s))
	for k, v := range s {
		out[k] = v
	}
	m[key] = out
}

// putBytes writes base64, as JSON does; a nil value (ToUnstructured
// writes null) clears ok.
func putBytes(m map[string]any, key string, b map[string][]byte, ok *bool) {
	if len(b) == 0 {
		return
	}
	out := make(map[string]any, len(b))
	for k, v := range b {
		if v == nil {
			*ok = false
		}
		out[k] = base64.StdEncoding.EncodeToString(v)
	}
	m[key] = out
}
