package recovery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	yaml "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// ErrUndecodable reports a decrypted value that is not an object this
// tool can read. Its messages never quote the value.
var ErrUndecodable = errors.New("decrypted, but not a readable Kubernetes object")

// serverFields are the metadata fields the API server owns: kubectl
// apply on another cluster rejects or ignores them, and ownerReferences
// name objects by the old cluster's UIDs, so the garbage collector of the
// new one would delete their dependents.
var serverFields = []string{
	"resourceVersion", "uid", "selfLink", "creationTimestamp", "generation",
	"managedFields", "deletionTimestamp", "deletionGracePeriodSeconds",
}

// Object is a recovered object, as kubectl apply takes it.
type Object map[string]any

// decodeObject turns a decrypted value (what kube-apiserver stored:
// protobuf with the "k8s\x00" magic, or JSON for custom resources) into
// an object with apiVersion and kind set. Kinds the client-go scheme
// knows are decoded with its deserializer; JSON of other kinds is kept
// as it is. Secrets and ConfigMaps may lack what [Object.prepare] strips.
func decodeObject(plain []byte) (Object, error) {
	return decode(plain, true)
}

// decode is decodeObject; without full, an object of a known kind keeps
// only what [Object.prepare] checks: a dry run writes nothing, and
// converting the rest to a map took a fifth of its time.
func decode(plain []byte, full bool) (Object, error) {
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(plain, nil, nil)
	switch {
	case err == nil && !full:
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, fmt.Errorf("%w: %s has no metadata", ErrUndecodable, gvk)
		}
		md := map[string]any{"name": m.GetName(), "namespace": m.GetNamespace()}
		return Object{"apiVersion": gvk.GroupVersion().String(), "kind": gvk.Kind, "metadata": md}, nil
	case err == nil:
		m, ok := quickMap(obj)
		if !ok {
			m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s does not convert", ErrUndecodable, gvk)
		}
		m["apiVersion"], m["kind"] = gvk.GroupVersion().String(), gvk.Kind
		return m, nil
	case runtime.IsNotRegisteredError(err) && isJSON(plain):
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(plain); err != nil {
			return nil, safeDecodeError(err)
		}
		return u.Object, nil
	case runtime.IsNotRegisteredError(err):
		// The message names the kind and version only.
		return nil, fmt.Errorf("%w: %v", ErrUndecodable, err)
	}
	return nil, safeDecodeError(err)
}

func isJSON(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// safeDecodeError keeps what locates a decoding problem and drops what
// could quote the plaintext (JSON errors echo values).
func safeDecodeError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("%w: invalid JSON at byte %d", ErrUndecodable, syn.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("%w: JSON field %q has the wrong type", ErrUndecodable, typ.Field)
	}
	return fmt.Errorf("%w (%T)", ErrUndecodable, err)
}

// prepare strips server-managed fields and checks the object against its
// etcd key: the key is authenticated by the encryption, the object's
// name is what the manifest creates.
func (o Object) prepare(k Key, keepOwners bool) error {
	md, ok := o["metadata"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: no metadata", ErrUndecodable)
	}
	name, _ := md["name"].(string)
	ns, _ := md["namespace"].(string)
	if name != k.Name || ns != k.Namespace {
		return fmt.Errorf("%w: metadata names %s/%s, the etcd key %s/%s", ErrUndecodable, ns, name, k.Namespace, k.Name)
	}
	if av, _ := o["apiVersion"].(string); av == "" {
		return fmt.Errorf("%w: no apiVersion", ErrUndecodable)
	}
	if kind, _ := o["kind"].(string); kind == "" {
		return fmt.Errorf("%w: no kind", ErrUndecodable)
	}
	for _, f := range serverFields {
		delete(md, f)
	}
	if !keepOwners {
		delete(md, "ownerReferences")
	}
	return nil
}

// Format is how objects are written.
type Format string

// The output formats.
const (
	YAML Format = "yaml"
	JSON Format = "json"
)

// ParseFormat reads -o.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case YAML, JSON:
		return Format(s), nil
	}
	return "", fmt.Errorf("output format %q: want yaml or json", s)
}

// render writes one object. The object holds only what JSON holds
// (strings, int64, float64, bool, lists and string-keyed maps), so
// marshalling it with yaml.v2 gives what sigs.k8s.io/yaml (JSON, then
// YAML) gives, at a third of the cost; [appendYAML] gives the same
// again several times faster.
func (o Object) render(f Format) ([]byte, error) {
	if f == JSON {
		b, err := json.MarshalIndent(o, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	if b, ok := appendYAML(make([]byte, 0, 1024), o); ok {
		return b, nil
	}
	return yaml.Marshal(map[string]any(o))
}
