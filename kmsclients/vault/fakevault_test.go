package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// fakeTransit answers the few paths the backend calls, for one transit
// key of a given type, and counts the calls. Unlike the real server tests
// it needs no Vault binary, it lets a test see which calls were made, and
// it ignores associated_data whatever the key type, so that the backend's
// own checks are what is tested, not Vault's.
type fakeTransit struct {
	t         *testing.T
	keyType   string
	clusterID string
	// plaintext is what decrypt answers.
	plaintext []byte

	mu    sync.Mutex
	calls map[string]int
	// healthNamespace is the namespace header sys/health was asked with.
	healthNamespace []string
}

func newFakeTransit(t *testing.T, keyType string) (*fakeTransit, string) {
	f := &fakeTransit{t: t, keyType: keyType, clusterID: "6c3b1c5e-0f6b-4d9a-8d7e-2a1f0c9b8e77", calls: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *fakeTransit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls[r.URL.Path]++
	if r.URL.Path == "/v1/sys/health" {
		f.healthNamespace = append(f.healthNamespace, r.Header.Get("X-Vault-Namespace"))
	}
	f.mu.Unlock()
	var data map[string]any
	switch strings.TrimPrefix(r.URL.Path, "/v1/") {
	case "sys/health":
		reply(w, map[string]any{"initialized": true, "sealed": false, "cluster_id": f.clusterID})
		return
	case "auth/token/lookup-self":
		data = map[string]any{"ttl": 0, "renewable": false}
	case "transit/keys/k":
		data = map[string]any{"type": f.keyType, "supports_encryption": true, "supports_decryption": true, "latest_version": 1}
	case "transit/encrypt/k":
		data = map[string]any{"ciphertext": "vault:v1:AAAA"}
	case "transit/decrypt/k":
		data = map[string]any{"plaintext": base64.StdEncoding.EncodeToString(f.plaintext)}
	default:
		http.NotFound(w, r)
		return
	}
	reply(w, map[string]any{"data": data})
}

func reply(w http.ResponseWriter, body any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(body)
}

func (f *fakeTransit) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls["/v1/"+path]
}

// fakeBackend is a backend on the fake at address, logged in by a token
// file.
func fakeBackend(t *testing.T, name, address, namespace string) *Backend {
	t.Helper()
	return newTestBackend(t, name, Config{Address: address, KeyName: "k", Namespace: namespace, Auth: Auth{TokenFile: secretFile(t, "token", "hvs.fake")}})
}

var fakeAAD = []byte("dek=1;share=1")

func TestBindingFor(t *testing.T) {
	for keyType, want := range map[string]byte{
		"aes128-gcm96": bindAssociatedData, "aes256-gcm96": bindAssociatedData, "chacha20-poly1305": bindAssociatedData,
		"rsa-2048": bindInPlaintext, "rsa-3072": bindInPlaintext, "rsa-4096": bindInPlaintext, "": bindInPlaintext,
	} {
		if got := bindingFor(keyType); got != want {
			t.Errorf("bindingFor(%q) = %d, want %d", keyType, got, want)
		}
	}
}

// TestBindingFollowsKeyType: the binding byte of a stored share is checked
// against the key's type, and a share framed otherwise is refused without
// a decrypt call, even as the backend's first call.
func TestBindingFollowsKeyType(t *testing.T) {
	share := []byte("a 33-byte share of some DEK, ok?!")
	for _, keyType := range []string{"aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-4096"} {
		t.Run(keyType, func(t *testing.T) {
			f, addr := newFakeTransit(t, keyType)
			want := bindingFor(keyType)
			f.plaintext = share
			if want == bindInPlaintext {
				f.plaintext = append(aadBinding(fakeAAD), share...)
			}
			b := fakeBackend(t, "vault-fake", addr, "")
			id := b.identity(1)
			for _, binding := range []byte{bindAssociatedData, bindInPlaintext} {
				got, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: frame(binding, "vault:v1:AAAA"), KeyIdentity: id}, fakeAAD)
				if binding == want {
					if err != nil || !bytes.Equal(got, share) {
						t.Fatalf("Unwrap of a share framed as the key's type requires: %q, %v", got, err)
					}
					continue
				}
				kmstest.WantKind(t, "Unwrap of a share framed for the other binding", err, kmsclients.ErrInvalidCiphertext)
			}
			if n := f.count("transit/decrypt/k"); n != 1 {
				t.Fatalf("%d decrypt calls, want 1 (none for the misframed share)", n)
			}
		})
	}
}

// TestKeyFactsReadOnce: the key's type and the cluster's ID cost calls on
// first use only, not on every Wrap or Unwrap.
func TestKeyFactsReadOnce(t *testing.T) {
	f, addr := newFakeTransit(t, "aes256-gcm96")
	f.plaintext = []byte("share")
	b := fakeBackend(t, "vault-fake", addr, "")
	for range 3 {
		if _, err := b.Unwrap(context.Background(), kmsclients.Wrapped{Ciphertext: frame(bindAssociatedData, "vault:v1:AAAA"), KeyIdentity: b.identity(1)}, fakeAAD); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Wrap(context.Background(), []byte("share"), fakeAAD); err != nil {
			t.Fatal(err)
		}
	}
	if keys, health := f.count("transit/keys/k"), f.count("sys/health"); keys != 1 || health != 1 {
		t.Fatalf("%d key reads and %d sys/health calls for 3 unwraps and wraps, want 1 and 1", keys, health)
	}
}

func TestPublicWrap(t *testing.T) {
	for keyType, want := range map[string]bool{
		"aes128-gcm96": false, "aes256-gcm96": false, "chacha20-poly1305": false,
		"rsa-2048": true, "rsa-3072": true, "rsa-4096": true,
	} {
		t.Run(keyType, func(t *testing.T) {
			_, addr := newFakeTransit(t, keyType)
			b := fakeBackend(t, "vault-fake", addr, "")
			if !kmsclients.IsPublicWrap(b) {
				t.Fatal("PublicWrap is false before the key's type is known")
			}
			if _, err := b.Probe(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := kmsclients.IsPublicWrap(b); got != want {
				t.Fatalf("PublicWrap = %v, want %v", got, want)
			}
		})
	}
}

// TestCustodianKeyFake: one key through two addresses is one custodian,
// the same path on another cluster is another, and sys/health is asked
// in the root namespace.
func TestCustodianKeyFake(t *testing.T) {
	f, addr := newFakeTransit(t, "aes256-gcm96")
	byIP := fakeBackend(t, "vault-ip", addr, "team-a")
	byName := fakeBackend(t, "vault-name", strings.Replace(addr, "127.0.0.1", "localhost", 1), "team-a")
	idIP, idName := byIP.identity(3), byName.identity(3)
	if idIP == idName {
		t.Fatal("the test needs two identities that differ")
	}
	if got := byIP.CustodianKey(idIP); got != idIP {
		t.Fatalf("CustodianKey before Vault was reached = %q, want the identity itself", got)
	}
	for _, b := range []*Backend{byIP, byName} {
		if _, err := b.Probe(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	want := "vault:cluster:" + f.clusterID + "/team-a/transit/k"
	for _, got := range []string{byIP.CustodianKey(idIP), byName.CustodianKey(idName), byIP.CustodianKey(idName), byName.CustodianKey(idIP)} {
		if got != want {
			t.Fatalf("CustodianKey = %q, want %q", got, want)
		}
	}
	if other := "vault:" + addr + "/team-a/transit/other:v1"; byIP.CustodianKey(other) != other {
		t.Fatalf("CustodianKey of another key's identity = %q, want it unchanged", byIP.CustodianKey(other))
	}
	for _, ns := range f.healthNamespace {
		if ns != "" {
			t.Fatalf("sys/health asked in namespace %q", ns)
		}
	}

	g, otherAddr := newFakeTransit(t, "aes256-gcm96")
	g.clusterID = "0d9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f00"
	elsewhere := fakeBackend(t, "vault-other", otherAddr, "team-a")
	if _, err := elsewhere.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if elsewhere.CustodianKey(elsewhere.identity(3)) == want {
		t.Fatal("the same key path on another cluster is the same custodian")
	}
}

// TestClusterIDRefused: a cluster ID that Vault does not report, or one
// that could not be part of a name, fails the probe and is not kept.
func TestClusterIDRefused(t *testing.T) {
	for name, id := range map[string]string{"missing": "", "odd": "a/b:c", "long": strings.Repeat("a", 65)} {
		t.Run(name, func(t *testing.T) {
			f, addr := newFakeTransit(t, "aes256-gcm96")
			f.clusterID = id
			b := fakeBackend(t, "vault-fake", addr, "")
			_, err := b.Probe(context.Background())
			kmstest.WantKind(t, "Probe with cluster ID "+id, err, kmsclients.ErrUnavailable)
			if got := b.CustodianKey(b.identity(1)); got != b.identity(1) {
				t.Fatalf("CustodianKey = %q after a refused cluster ID", got)
			}
		})
	}
}
