package grpcserver_test

import (
	"bytes"
	"context"
	"crypto/fips140"
	"crypto/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	kmsv1client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"
)

// These tests drive the plugin with kube-apiserver's own client code.

func TestAPIServerKMSv2Client(t *testing.T) {
	h := newHarness(t)
	h.start()
	svc, err := kmsv2client.NewGRPCService(callCtx(t), h.endpoint(), "trousseau", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, err := svc.Status(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "v2" || st.Healthz != "ok" || st.KeyID == "" || st.KeyID != h.env.KeyID() {
		t.Fatalf("Status = %+v", st)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	resp, err := svc.Encrypt(callCtx(t), "uid-1", seed)
	if err != nil {
		t.Fatal(err)
	}
	if resp.KeyID != st.KeyID || len(resp.Ciphertext) > 1024 || len(resp.Annotations) != 1 {
		t.Fatalf("Encrypt = key %q, %d-byte ciphertext, %d annotations", resp.KeyID, len(resp.Ciphertext), len(resp.Annotations))
	}
	got, err := svc.Decrypt(callCtx(t), "uid-2", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID, Annotations: resp.Annotations})
	if err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("Decrypt: %v", err)
	}
}

func writeEncryptionConfig(t *testing.T, dir, endpoint, apiVersion string) string {
	p := filepath.Join(dir, "encryption-config.yaml")
	cfg := `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets, configmaps]
  providers:
  - kms: {apiVersion: ` + apiVersion + `, name: trousseau, endpoint: ` + endpoint + `, timeout: 3s}
  - identity: {}
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEncryptionConfiguration runs the apiserver's real Status -> Encrypt
// state machine through LoadEncryptionConfig, then stores and reads a
// Secret-sized value the way kube-apiserver does.
func TestEncryptionConfiguration(t *testing.T) {
	h := newHarness(t)
	h.start()
	asAPIServer(func() { encryptionConfigurationRoundTrip(t, h) })
}

// asAPIServer runs f, which stands for kube-apiserver, outside FIPS
// 140-only enforcement (hack/test.sh's FIPS pass): the apiserver is
// another process, and its data encryption (AES-GCM under nonces it
// picks) is not the plugin's. The plugin's goroutines were started
// before f and stay enforced.
func asAPIServer(f func()) { fips140.WithoutEnforcement(f) }

func encryptionConfigurationRoundTrip(t *testing.T, h *harness) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, writeEncryptionConfig(t, h.dir, h.endpoint(), "v2"), false, "apiserver-1")
	if err != nil {
		t.Fatal(err)
	}
	tr := cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
	if tr == nil {
		t.Fatal("no transformer for secrets")
	}
	secret := make([]byte, 8*1024)
	rand.Read(secret)
	key := value.DefaultContext("/registry/secrets/default/db-password")
	stored := transformToStorageEventually(t, tr, secret, key)
	if !bytes.HasPrefix(stored, []byte("k8s:enc:kms:v2:trousseau:")) {
		t.Fatalf("stored value starts %q", stored[:min(40, len(stored))])
	}
	if bytes.Contains(stored, secret[:64]) {
		t.Fatal("plaintext visible in the stored value")
	}
	got, stale, err := tr.TransformFromStorage(callCtx(t), stored, key)
	if err != nil || stale || !bytes.Equal(got, secret) {
		t.Fatalf("TransformFromStorage: stale=%v err=%v", stale, err)
	}
	// A different etcd key (the AAD) must not decrypt.
	if _, _, err := tr.TransformFromStorage(callCtx(t), stored, value.DefaultContext("/registry/secrets/default/other")); err == nil {
		t.Fatal("value decrypted under another etcd key")
	}
	for _, hc := range cfg.HealthChecks {
		if err := hc.Check(httptest.NewRequest("GET", "/healthz", nil)); err != nil {
			t.Fatalf("health check %s: %v", hc.Name(), err)
		}
	}

	// A second apiserver (another node, empty caches) reads what the first wrote.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	cfg2, err := encryptionconfig.LoadEncryptionConfig(ctx2, writeEncryptionConfig(t, h.dir, h.endpoint(), "v2"), false, "apiserver-2")
	if err != nil {
		t.Fatal(err)
	}
	got, _, err = cfg2.Transformers[schema.GroupResource{Resource: "secrets"}].TransformFromStorage(callCtx(t), stored, key)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("second apiserver: %v", err)
	}
}

// transformToStorageEventually retries while the apiserver's transformer
// finishes its first Status/Encrypt round in the background.
func transformToStorageEventually(t *testing.T, tr value.Transformer, data []byte, key value.Context) []byte {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := tr.TransformToStorage(callCtx(t), data, key)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("TransformToStorage: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAPIServerKMSv1Client(t *testing.T) {
	h := newHarness(t)
	h.start()
	svc, err := kmsv1client.NewGRPCService(callCtx(t), h.endpoint(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dek := make([]byte, 32)
	rand.Read(dek)
	var blobs [][]byte
	for i := range 3 { // called on every write under v1: no remote call, so it works with backends down too
		if i == 1 {
			h.down(0)
			h.down(1)
		}
		blob, err := svc.Encrypt(dek)
		if err != nil {
			t.Fatal(err)
		}
		if len(blob) > 1<<16-1 {
			t.Fatalf("v1 ciphertext of %d bytes does not fit etcd's uint16 length", len(blob))
		}
		blobs = append(blobs, blob)
	}
	h.up(0)
	h.up(1)
	for _, blob := range blobs {
		got, err := svc.Decrypt(blob)
		if err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("v1 Decrypt: %v", err)
		}
	}
	bad := bytes.Clone(blobs[0])
	bad[len(bad)-1] ^= 1
	if _, err := svc.Decrypt(bad); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("tampered v1 ciphertext: %v", err)
	}
}
