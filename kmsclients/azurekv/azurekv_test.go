package azurekv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// testConfig is a valid config for a key in the fake vault; the
// credential is replaced by the tests' hooks.
func testConfig(keyName string) Config {
	return Config{
		VaultURL:   testVaultURL + "/",
		KeyName:    keyName,
		Credential: Credential{Default: &DefaultCredential{}},
	}
}

// newTestBackend returns a backend talking to v through the SDK's fake
// transport, with the SDK's fake credential.
func newTestBackend(t testing.TB, v *fakeVault, cfg Config) *Backend {
	t.Helper()
	b, err := newBackend(context.Background(), "azure-test", cfg, hooks{
		cred:      &azfake.TokenCredential{},
		transport: v.fakeServer(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vaultWithKey returns a fake vault holding key "trousseau" of the kind.
func vaultWithKey(t testing.TB, kind string) (*fakeVault, string) {
	v := newFakeVault(testVaultURL)
	return v, v.addVersion(t, "trousseau", kind)
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct{ kind, alg string }{
		{"rsa2048", ""},
		{"rsa3072", "RSA-OAEP"},
		{"aes256", "A256KW"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			cfg := testConfig("trousseau")
			cfg.Algorithm = tc.alg
			kmstest.Run(t, kmstest.Harness{
				BackendKind: "azurekv",
				New: func(t *testing.T) kmsclients.Backend {
					v, _ := vaultWithKey(t, tc.kind)
					return newTestBackend(t, v, cfg)
				},
				OtherKey: func(t *testing.T) kmsclients.Backend {
					v := newFakeVault(testVaultURL)
					v.addVersion(t, "other", tc.kind)
					other := cfg
					other.KeyName = "other"
					return newTestBackend(t, v, other)
				},
				Unavailable: func(t *testing.T) kmsclients.Backend {
					v, _ := vaultWithKey(t, tc.kind)
					v.down.Store(true)
					return newTestBackend(t, v, cfg)
				},
			})
		})
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustWrap(t testing.TB, b *Backend, share, aad []byte) kmsclients.Wrapped {
	t.Helper()
	w, err := b.Wrap(ctxFor(t), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return w
}

func wantKind(t testing.TB, what string, err, kind error) {
	t.Helper()
	kmstest.WantKind(t, what, err, kind)
	if !strings.HasPrefix(err.Error(), "azurekv azure-test: ") {
		t.Fatalf("%s: message %q lacks the backend prefix", what, err)
	}
}

func TestRotationNoticedAndOldSharesUnwrap(t *testing.T) {
	v, v1 := vaultWithKey(t, "rsa2048")
	b := newTestBackend(t, v, testConfig("trousseau"))
	share, aad := []byte("share-one-0123456789abcdef0123456789"), []byte("dek=1;share=1")
	old := mustWrap(t, b, share, aad)
	if old.KeyIdentity != v1 || kmstest.MustProbe(t, b) != v1 {
		t.Fatalf("before rotation: wrapped by %q, want %q", old.KeyIdentity, v1)
	}

	v2 := v.addVersion(t, "trousseau", "rsa3072")
	if got := kmstest.MustProbe(t, b); got != v2 {
		t.Fatalf("after rotation Probe reports %q, want the new version %q", got, v2)
	}
	if w := mustWrap(t, b, share, aad); w.KeyIdentity != v2 {
		t.Fatalf("after rotation Wrap used %q, want %q", w.KeyIdentity, v2)
	}
	kmstest.MustUnwrap(t, b, old, aad, share)
}

func TestPinnedVersion(t *testing.T) {
	v, v1 := vaultWithKey(t, "rsa2048")
	cfg := testConfig("trousseau")
	cfg.KeyVersion = v1[strings.LastIndex(v1, "/")+1:]
	b := newTestBackend(t, v, cfg)
	v.addVersion(t, "trousseau", "rsa2048")

	share, aad := []byte("pinned-share"), []byte("aad")
	w := mustWrap(t, b, share, aad)
	if w.KeyIdentity != v1 {
		t.Fatalf("pinned backend wrapped with %q, want %q", w.KeyIdentity, v1)
	}
	if got := kmstest.MustProbe(t, b); got != v1 {
		t.Fatalf("pinned backend probes %q, want %q", got, v1)
	}
	kmstest.MustUnwrap(t, b, w, aad, share)
}

func TestKeyStates(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name   string
		change func(*fakeVersion)
		probe  string // in Probe's message
	}{
		{"disabled", func(k *fakeVersion) { k.enabled = false }, "is disabled"},
		{"expired", func(k *fakeVersion) { k.expires = &past }, "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, kid := vaultWithKey(t, "rsa2048")
			b := newTestBackend(t, v, testConfig("trousseau"))
			share, aad := []byte("a share"), []byte("aad")
			w := mustWrap(t, b, share, aad)
			v.update(kid, tc.change)

			_, err := b.Probe(ctxFor(t))
			wantKind(t, "Probe", err, kmsclients.ErrPermission)
			if !strings.Contains(err.Error(), tc.probe) {
				t.Errorf("Probe: %q does not say %q", err, tc.probe)
			}
			_, err = b.Wrap(ctxFor(t), share, aad)
			wantKind(t, "Wrap", err, kmsclients.ErrPermission)
			if tc.name == "expired" {
				kmstest.MustUnwrap(t, b, w, aad, share) // Key Vault still unwraps with an expired key
			} else {
				_, err = b.Unwrap(ctxFor(t), w, aad)
				wantKind(t, "Unwrap", err, kmsclients.ErrPermission)
			}
		})
	}
}

func TestThrottled(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	b := newTestBackend(t, v, testConfig("trousseau"))
	share, aad := []byte("a share"), []byte("aad")
	w := mustWrap(t, b, share, aad)

	v.throttle.Store(true)
	_, err := b.Wrap(ctxFor(t), share, aad)
	wantKind(t, "Wrap", err, kmsclients.ErrUnavailable)
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantKind(t, "Unwrap", err, kmsclients.ErrUnavailable)
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kmsclients.ErrUnavailable)
	if !strings.Contains(err.Error(), "429") {
		t.Errorf("Probe: %q does not say 429", err)
	}

	v.throttle.Store(false)
	kmstest.MustUnwrap(t, b, w, aad, share)
}

func TestCredentialFailureIsPermission(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	cred := &azfake.TokenCredential{}
	cred.SetError(errors.New("AADSTS7000215: Invalid client secret provided"))
	b, err := newBackend(context.Background(), "azure-test", testConfig("trousseau"), hooks{cred: cred, transport: v.fakeServer()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "AADSTS7000215") || !strings.Contains(err.Error(), "sign-in") {
		t.Errorf("Probe: %q does not explain the sign-in failure", err)
	}
	_, err = b.Wrap(ctxFor(t), []byte("share"), []byte("aad"))
	wantKind(t, "Wrap", err, kmsclients.ErrPermission)
}

// refusingTransport fails every request as a closed port does.
type refusingTransport struct{}

func (refusingTransport) Do(req *http.Request) (*http.Response, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

func TestConnectionRefused(t *testing.T) {
	b, err := newBackend(context.Background(), "azure-test", testConfig("trousseau"), hooks{
		cred: &azfake.TokenCredential{}, transport: refusingTransport{},
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kmsclients.ErrUnavailable)
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Probe: %q does not say why", err)
	}
	// Two retries with short delays, not the SDK's default backoff.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Probe took %v to give up", d)
	}
}

func TestCallerDeadlineRules(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	b := newTestBackend(t, v, testConfig("trousseau"))
	v.stall.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := b.Wrap(ctx, []byte("share"), []byte("aad"))
	if !errors.Is(err, context.DeadlineExceeded) || kmsclients.Kind(err) != "deadline" {
		t.Fatalf("Wrap past the deadline: %v (kind %s)", err, kmsclients.Kind(err))
	}
}

func TestUnwrapRefusesOtherKeysWithoutAsking(t *testing.T) {
	v, kid := vaultWithKey(t, "rsa2048")
	b := newTestBackend(t, v, testConfig("trousseau"))
	w := mustWrap(t, b, []byte("share"), []byte("aad"))
	version := kid[strings.LastIndex(kid, "/")+1:]
	before := v.requests.Load()
	for _, id := range []string{
		"https://other.vault.azure.net/keys/trousseau/" + version,
		testVaultURL + "/keys/other/" + version,
		testVaultURL + "/keys/trousseau",
		testVaultURL + "/keys/trousseau/" + version + "/wrapkey",
		testVaultURL + "/keys/trousseau/../x/" + version,
		"http://trousseau-test.vault.azure.net/keys/trousseau/" + version,
		"",
	} {
		bad := w
		bad.KeyIdentity = id
		_, err := b.Unwrap(ctxFor(t), bad, []byte("aad"))
		wantKind(t, "Unwrap of "+id, err, kmsclients.ErrInvalidCiphertext)
	}
	if n := v.requests.Load() - before; n != 0 {
		t.Fatalf("%d requests sent to the vault for foreign key IDs", n)
	}
	// Key Vault ignores case in host and key name.
	w.KeyIdentity = "https://TROUSSEAU-TEST.vault.azure.net/keys/TrouSSeau/" + version
	kmstest.MustUnwrap(t, b, w, []byte("aad"), []byte("share"))
}

func TestAlgorithmDoesNotFitKey(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	cfg := testConfig("trousseau")
	cfg.Algorithm = "A256KW"
	b := newTestBackend(t, v, cfg)
	_, err := b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "cannot wrap with A256KW") {
		t.Errorf("Probe: %q", err)
	}
	_, err = b.Wrap(ctxFor(t), []byte("share"), []byte("aad"))
	wantKind(t, "Wrap", err, kmsclients.ErrPermission)
}

// The algorithm travels with the wrapped share, so changing the config
// does not strand shares wrapped before.
func TestAlgorithmChangeKeepsOldShares(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	share, aad := []byte("share"), []byte("aad")
	w := mustWrap(t, newTestBackend(t, v, testConfig("trousseau")), share, aad)
	cfg := testConfig("trousseau")
	cfg.Algorithm = "RSA-OAEP"
	kmstest.MustUnwrap(t, newTestBackend(t, v, cfg), w, aad, share)
}

func TestPublicWrap(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	for alg, want := range map[string]bool{
		"": true, "RSA-OAEP-256": true, "RSA-OAEP": true,
		"A256KW": false, "A192KW": false, "A128KW": false, "CKM_AES_KEY_WRAP_PAD": false,
	} {
		cfg := testConfig("trousseau")
		cfg.Algorithm = alg
		if got := kmsclients.IsPublicWrap(newTestBackend(t, v, cfg)); got != want {
			t.Errorf("PublicWrap with algorithm %q = %v, want %v", alg, got, want)
		}
	}
}

// TestAESBackendRefusesRSAShares: a backend that wraps with AES key wrap
// says its shares need a secret key; so it does not open a share made
// with the public half of an older RSA version of its key, which anyone
// could have made, and does not ask the vault to.
func TestAESBackendRefusesRSAShares(t *testing.T) {
	v := newFakeVault(testVaultURL)
	rsaKID := v.addVersion(t, "trousseau", "rsa2048")
	v.addVersion(t, "trousseau", "aes256")
	cfg := testConfig("trousseau")
	cfg.Algorithm = "A256KW"
	b := newTestBackend(t, v, cfg)
	share, aad := []byte("a share chosen by who wrote etcd"), []byte("aad")
	kmstest.MustUnwrap(t, b, mustWrap(t, b, share, aad), aad, share)

	v.mu.Lock()
	pub := &v.keys["trousseau"][0].rsa.PublicKey
	v.mu.Unlock()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, seal(share, aad), nil)
	if err != nil {
		t.Fatal(err)
	}
	rsaAlg, _ := algorithmNamed("RSA-OAEP-256")
	forged := kmsclients.Wrapped{Ciphertext: framing.Frame(append([]byte{rsaAlg.id}, ct...)), KeyIdentity: rsaKID}
	before := v.requests.Load()
	_, err = b.Unwrap(ctxFor(t), forged, aad)
	wantKind(t, "Unwrap of an RSA share by an AES backend", err, kmsclients.ErrInvalidCiphertext)
	if n := v.requests.Load() - before; n != 0 {
		t.Fatalf("%d requests sent to the vault for an RSA share", n)
	}
	// The same share opens for a backend that says its wraps are public.
	kmstest.MustUnwrap(t, newTestBackend(t, v, testConfig("trousseau")), forged, aad, share)
}

func TestShareSizeLimits(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	b := newTestBackend(t, v, testConfig("trousseau"))
	for _, n := range []int{1, 7, 8, 9, maxShareSize} {
		share := bytes.Repeat([]byte{0xaa}, n)
		kmstest.MustUnwrap(t, b, mustWrap(t, b, share, nil), nil, share)
	}
	for _, n := range []int{0, maxShareSize + 1} {
		if _, err := b.Wrap(ctxFor(t), make([]byte, n), nil); err == nil {
			t.Errorf("Wrap of a %d-byte share succeeded", n)
		}
	}
}

func TestNewDoesNoNetworkIO(t *testing.T) {
	v, _ := vaultWithKey(t, "rsa2048")
	newTestBackend(t, v, testConfig("trousseau"))
	if n := v.requests.Load(); n != 0 {
		t.Fatalf("New sent %d requests", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(ctx, "azure-test", testConfig("trousseau")); !errors.Is(err, context.Canceled) {
		t.Fatalf("New with a cancelled context: %v", err)
	}
}

func TestRetryOptionsBounded(t *testing.T) {
	var o policy.RetryOptions = retryOptions
	if o.MaxRetries < 1 || o.MaxRetries > 3 || o.TryTimeout != 0 || o.MaxRetryDelay <= 0 || o.MaxRetryDelay > 5*time.Second {
		t.Fatalf("retry options %+v: want a few retries, short delays, no per-try timeout", o)
	}
}

// TestStoredFormatUnchanged: a share stored by an earlier release (this
// frame was made by the backend's own code before kmsclients.Framing)
// still decodes.
func TestStoredFormatUnchanged(t *testing.T) {
	stored, _ := hex.DecodeString("0103777261707065642d62792d6b65797661756c74")
	alg, ct, err := parseWrapped(stored)
	if err != nil || alg.id != 3 || string(ct) != "wrapped-by-keyvault" {
		t.Fatalf("parseWrapped = %v, %q, %v", alg, ct, err)
	}
	if got := framing.Frame(append([]byte{alg.id}, ct...)); !bytes.Equal(got, stored) {
		t.Fatalf("Frame = %x, want %x", got, stored)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(seal([]byte("share"), []byte("aad")), []byte("aad"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, plain, aad []byte) {
		share, err := open(plain, aad)
		if err == nil && !bytes.Equal(seal(share, aad), plain) {
			t.Fatal("open accepted bytes that seal would not produce")
		}
	})
}

func FuzzVersionOf(f *testing.F) {
	b := &Backend{baseURL: testVaultURL, keyName: "trousseau"}
	f.Add(testVaultURL + "/keys/trousseau/0123456789abcdef0123456789abcdef")
	f.Add("https://x/keys/a/b/c")
	f.Fuzz(func(t *testing.T, kid string) {
		version, err := b.versionOf(kid)
		if err == nil && !keyVersionRE.MatchString(version) {
			t.Fatalf("versionOf(%q) = %q", kid, version)
		}
	})
}
