package recoverytest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Fixture is a small cluster's worth of etcd data written through
// kube-apiserver's write path, with what recovery must give back.
type Fixture struct {
	Etcd   *Etcd
	Plugin *Plugin
	Writer *Writer
	// Want holds, by etcd key, every object that must be decrypted from
	// the default prefix: *corev1.Secret, *corev1.ConfigMap, or a
	// map[string]any for the custom resource.
	Want map[string]any
	// Stored is what each key holds in etcd.
	Stored map[string][]byte
	// Counts of the default-prefix keys, for the summary.
	Found, NotEncrypted, OtherProvider int
	// AltPrefix holds one Secret under another --etcd-prefix.
	AltPrefix, AltKey string
	AltWant           *corev1.Secret
	// KeyIDs are the plugin's two DEKs: before and after a rotation.
	KeyIDs []string
}

// Provider is the EncryptionConfiguration's kms.name in fixtures.
const Provider = "trousseau"

// NewFixture starts etcd and the plugin and writes:
//   - Secrets in three namespaces under KMS v2, with two seeds of one
//     DEK, then more after the plugin rotated to a second DEK; one
//     updated (the latest value counts) and one deleted (a tombstone);
//   - a Secret under KMS v1, a ConfigMap under KMS v2, a custom resource
//     (JSON) under KMS v2;
//   - a Secret and a Pod stored unencrypted, a Secret of another KMS
//     plugin and one under aescbc;
//   - one Secret under another prefix, and apiserver's compaction key.
func NewFixture(t testing.TB, withTLS bool) *Fixture {
	t.Helper()
	f := &Fixture{Etcd: StartEtcd(t, withTLS), Plugin: StartPlugin(t), Want: map[string]any{}, Stored: map[string][]byte{}}
	f.Writer = NewWriter(t, f.Plugin, f.Etcd, Provider)
	f.KeyIDs = append(f.KeyIDs, f.Plugin.Env.KeyID())
	w := f.Writer

	f.secret(t, "default", "db-password", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"password": randomBytes(24), "binary": {0, 1, 2, 0xff, '\n'}})
	f.secret(t, "default", "tls", KMSv2, corev1.SecretTypeTLS, map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), "tls.key": randomBytes(64)})
	f.secret(t, "team-a", "api-token", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"token": randomBytes(32)})
	f.secret(t, "default", "rotated", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"v": []byte("old")})
	f.secret(t, "default", "rotated", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"v": []byte("new")})
	f.secret(t, "default", "deleted", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"v": []byte("gone")})
	w.Delete("/registry/secrets/default/deleted")
	delete(f.Want, "/registry/secrets/default/deleted")
	delete(f.Stored, "/registry/secrets/default/deleted")
	f.Found--
	// An apiserver restart: a new seed under the same plugin DEK.
	w.NewSeed()
	f.secret(t, "team-a", "second-seed", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"k": randomBytes(16)})
	f.secret(t, "default", "legacy-v1", KMSv1, corev1.SecretTypeOpaque, map[string][]byte{"k": randomBytes(16)})
	f.configMap(t, "default", "app-config", map[string]string{"app.properties": "color=blue\nsize=3\n"})
	f.widget(t, "default", "w1")

	// The plugin rotates; the apiserver sees the new key_id and makes a new seed.
	if err := f.Plugin.Env.Rotate(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	f.KeyIDs = append(f.KeyIDs, f.Plugin.Env.KeyID())
	w.NewSeed()
	f.secret(t, "team-b", "after-rotation", KMSv2, corev1.SecretTypeOpaque, map[string][]byte{"k": randomBytes(16)})

	// Skipped: stored in the clear, or by another provider.
	f.secret(t, "default", "plain", Identity, corev1.SecretTypeOpaque, map[string][]byte{"k": []byte("clear")})
	pod := &corev1.Pod{ObjectMeta: meta("default", "web"), Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}
	f.put(t, "/registry/pods/default/web", Encode(t, pod), Identity, nil)
	f.secret(t, "default", "other-kms", OtherKMSPlugin, corev1.SecretTypeOpaque, map[string][]byte{"k": []byte("x")})
	f.secret(t, "default", "aescbc", AESCBC, corev1.SecretTypeOpaque, map[string][]byte{"k": []byte("x")})

	// Outside the default prefix.
	f.AltPrefix, f.AltKey = "/k8s-alt", "/k8s-alt/secrets/default/alt"
	f.AltWant = &corev1.Secret{ObjectMeta: meta("default", "alt"), Data: map[string][]byte{"k": randomBytes(8)}}
	w.Put(f.AltKey, Encode(t, f.AltWant), KMSv2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.Etcd.Client.Put(ctx, "compact_rev_key", "1"); err != nil {
		t.Fatal(err)
	}
	return f
}

// Snapshot saves a snapshot of the fixture's etcd to dir and returns its path.
func (f *Fixture) Snapshot(t testing.TB, dir string) string {
	path := filepath.Join(dir, "etcd.snapshot")
	f.Etcd.Snapshot(t, path)
	return path
}

// Decrypted is how many objects of the default prefix must decrypt.
func (f *Fixture) Decrypted() int { return len(f.Want) }

func (f *Fixture) put(t testing.TB, key string, plain []byte, how Encryption, want any) {
	f.Stored[key] = f.Writer.Put(key, plain, how)
	f.Found++
	switch how {
	case Identity:
		f.NotEncrypted++
	case OtherKMSPlugin, AESCBC:
		f.OtherProvider++
	default:
		f.Want[key] = want
	}
}

func (f *Fixture) secret(t testing.TB, ns, name string, how Encryption, typ corev1.SecretType, data map[string][]byte) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: meta(ns, name), Type: typ, Data: data}
	key := fmt.Sprintf("/registry/secrets/%s/%s", ns, name)
	if _, exists := f.Stored[key]; exists {
		f.Found-- // an update
	}
	f.put(t, key, Encode(t, s), how, s)
	return s
}

func (f *Fixture) configMap(t testing.TB, ns, name string, data map[string]string) {
	cm := &corev1.ConfigMap{ObjectMeta: meta(ns, name), Data: data}
	f.put(t, fmt.Sprintf("/registry/configmaps/%s/%s", ns, name), Encode(t, cm), KMSv2, cm)
}

// widget is a custom resource: stored as JSON, as kube-apiserver stores
// CRs.
func (f *Fixture) widget(t testing.TB, ns, name string) {
	obj := map[string]any{
		"apiVersion": "example.com/v1",
		"kind":       "Widget",
		"metadata": map[string]any{
			"name": name, "namespace": ns, "uid": "0f6a4c6e-0000-4000-8000-000000000001",
			"creationTimestamp": "2025-01-01T00:00:00Z", "generation": 3.0,
		},
		"spec": map[string]any{"size": 3.0, "color": "blue"},
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	f.put(t, fmt.Sprintf("/registry/example.com/widgets/%s/%s", ns, name), b, KMSv2, obj)
}

// meta has every server-managed field recovery must strip.
func meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: ns,
		UID:               types.UID(fmt.Sprintf("uid-%s-%s", ns, name)),
		ResourceVersion:   "12345",
		Generation:        2,
		CreationTimestamp: metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
		Labels:            map[string]string{"app": name},
		Annotations:       map[string]string{"note": "keep me"},
		OwnerReferences:   []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "uid-owner"}},
		ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1"}},
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
