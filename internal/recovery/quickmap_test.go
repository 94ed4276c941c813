package recovery

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// randomMeta fills, or not, each field of ObjectMeta.
func randomMeta(r *rand.Rand) metav1.ObjectMeta {
	pick := func() bool { return r.IntN(2) == 0 }
	om := metav1.ObjectMeta{Name: "db", Namespace: "ns"}
	if pick() {
		om.GenerateName = "db-"
	}
	if pick() {
		om.UID, om.ResourceVersion, om.Generation = types.UID("u-1"), "42", 3
		om.CreationTimestamp = metav1.NewTime(time.Unix(1700000000, 0))
	}
	if pick() {
		now := metav1.NewTime(time.Unix(1700000100, 0))
		grace := int64(30)
		om.DeletionTimestamp, om.DeletionGracePeriodSeconds = &now, &grace
	}
	if pick() {
		om.Labels = map[string]string{"app": "x", "tier": ""}
	}
	if pick() {
		om.Annotations = map[string]string{"note": "a: b\nc"}
	}
	if pick() {
		om.Finalizers = []string{"example.com/keep"}
	}
	if pick() {
		om.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
			FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:data":{}}`)}}}
	}
	if r.IntN(8) == 0 {
		om.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "o", UID: "u-2"}}
	}
	return om
}

func randomObjects(r *rand.Rand) runtime.Object {
	immutable := r.IntN(3) == 0
	var imm *bool
	if r.IntN(2) == 0 {
		imm = &immutable
	}
	if r.IntN(2) == 0 {
		s := &corev1.Secret{ObjectMeta: randomMeta(r), Immutable: imm}
		switch r.IntN(4) {
		case 0:
			s.Data = map[string][]byte{"password": []byte("secret"), "empty": {}, "bin": {0, 0xff}}
		case 1:
			s.Data = map[string][]byte{"nil": nil}
		}
		if r.IntN(2) == 0 {
			s.Type = corev1.SecretTypeOpaque
		}
		if r.IntN(4) == 0 {
			s.StringData = map[string]string{"k": "v"}
		}
		return s
	}
	c := &corev1.ConfigMap{ObjectMeta: randomMeta(r), Immutable: imm}
	if r.IntN(2) == 0 {
		c.Data = map[string]string{"a": "1", "b": ""}
	}
	if r.IntN(3) == 0 {
		c.BinaryData = map[string][]byte{"z": {1, 2}}
	}
	return c
}

// TestQuickMapMatchesToUnstructured: once prepared, what quickMap makes
// of a Secret or ConfigMap is what ToUnstructured makes of it.
func TestQuickMapMatchesToUnstructured(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	k := Key{Resource: "secrets", Namespace: "ns", Name: "db"}
	quick := 0
	for i := range 2000 {
		obj := randomObjects(r)
		got, ok := quickMap(obj)
		if !ok {
			continue
		}
		quick++
		want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []map[string]any{got, want} {
			m["apiVersion"], m["kind"] = "v1", "Secret"
			if err := Object(m).prepare(k, true); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("object %d:\nquickMap:        %#v\nToUnstructured: %#v", i, got, want)
		}
	}
	if quick < 1000 {
		t.Errorf("quickMap took only %d of 2000 objects", quick)
	}
}
