package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// config is a backend config for key on srv's TLS listener.
func (s *vaultServer) config(key string, auth Auth) Config {
	return Config{Address: s.httpsAddr(), KeyName: key, CAFile: s.pki.caFile, Auth: auth}
}

// appRoleAuth logs in as the trousseau role with a new secret ID.
func (s *vaultServer) appRoleAuth(t testing.TB) Auth {
	t.Helper()
	roleID, secretID := s.appRole(t, "trousseau", map[string]any{"token_policies": "trousseau"})
	return Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretFile(t, "secret-id", secretID)}}
}

func (s *vaultServer) tokenFileAuth(t testing.TB, policies ...string) Auth {
	t.Helper()
	token := s.token(t, &api.TokenCreateRequest{Policies: policies, NoParent: true})
	return Auth{TokenFile: secretFile(t, "token", token)}
}

func secretFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	writeFile(t, path, content+"\n")
	return path
}

func newTestBackend(t testing.TB, name string, cfg Config) *Backend {
	t.Helper()
	b, err := New(context.Background(), name, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if b.WrapKindKnown() || !b.PublicWrap() {
		t.Fatal("New made no call, yet the backend claims to know its key type")
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	srv := sharedVault(t)
	// An AEAD key binds the associated data through transit; an RSA key
	// cannot, and the backend seals a digest of it with the share.
	for _, keyType := range []string{"aes256-gcm96", "rsa-2048"} {
		t.Run(keyType, func(t *testing.T) {
			one, two := "conf-"+keyType+"-one", "conf-"+keyType+"-two"
			srv.createKey(t, one, keyType)
			srv.createKey(t, two, keyType)
			kmstest.Run(t, kmstest.Harness{
				BackendKind: "vault",
				New: func(t *testing.T) kmsclients.Backend {
					return newTestBackend(t, "vault-one", srv.config(one, srv.appRoleAuth(t)))
				},
				OtherKey: func(t *testing.T) kmsclients.Backend {
					return newTestBackend(t, "vault-two", srv.config(two, srv.appRoleAuth(t)))
				},
				// New succeeds with nothing listening: a backend may be
				// down at start.
				Unavailable: func(t *testing.T) kmsclients.Backend {
					cfg := srv.config(one, srv.appRoleAuth(t))
					cfg.Address = fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t))
					return newTestBackend(t, "vault-down", cfg)
				},
			})
		})
	}
}

// mustWrap wraps a fresh share and returns it with its wrapped form.
func mustWrap(t testing.TB, b *Backend, aad []byte) ([]byte, kmsclients.Wrapped) {
	t.Helper()
	share := []byte("a 33-byte share of some DEK, ok?!")
	w, err := b.Wrap(ctxFor(t, 10*time.Second), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return share, w
}

func mustProbe(t testing.TB, b *Backend, want string) {
	t.Helper()
	id, err := b.Probe(ctxFor(t, 10*time.Second))
	if err != nil || id != want {
		t.Fatalf("Probe = %q, %v; want %q", id, err, want)
	}
}

func TestAuthMethods(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "auth-methods", "")
	cert := Auth{Cert: &CertAuth{CertFile: srv.pki.clientCert, KeyFile: srv.pki.clientKey}}
	for name, cfg := range map[string]Config{
		"token file": srv.config("auth-methods", srv.tokenFileAuth(t, "trousseau")),
		"approle":    srv.config("auth-methods", srv.appRoleAuth(t)),
		"kubernetes": srv.config("auth-methods", Auth{Kubernetes: &KubernetesAuth{Role: "trousseau", JWTFile: secretFile(t, "jwt", srv.review.newJWT(t))}}),
		"cert":       srv.config("auth-methods", cert),
		"cert with tlsServerName": func() Config {
			c := srv.config("auth-methods", cert)
			c.TLSServerName = serverName
			return c
		}(),
		"token file over plain http": func() Config {
			c := srv.config("auth-methods", srv.tokenFileAuth(t, "trousseau"))
			c.Address, c.CAFile = srv.httpAddr(), ""
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			b := newTestBackend(t, "vault-auth", cfg)
			aad := []byte("dek=1;share=1")
			share, w := mustWrap(t, b, aad)
			kmstest.MustUnwrap(t, b, w, aad, share)
			want := "vault:" + cfg.Address + "/transit/auth-methods:v1"
			if w.KeyIdentity != want {
				t.Fatalf("Wrap reports key %q, want %q", w.KeyIdentity, want)
			}
			mustProbe(t, b, want)
		})
	}
}

// TestLoginRefused: a refused login is a permission error, told apart
// from a Vault that cannot be reached, and its message holds no secret.
func TestLoginRefused(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "refused", "")
	roleID, _ := srv.appRole(t, "trousseau", map[string]any{"token_policies": "trousseau"})
	jwt := srv.review.newJWT(t)
	srv.review.revoke(jwt)
	badToken := "hvs.CAESIJustNotAValidTokenAtAll0123456789"
	for name, tc := range map[string]struct {
		auth   Auth
		kind   error
		secret string
	}{
		"wrong secret ID":           {Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretFile(t, "sid", "0f1e2d3c-not-a-secret-id")}}, kmsclients.ErrPermission, "0f1e2d3c-not-a-secret-id"},
		"unknown role ID":           {Auth{AppRole: &AppRoleAuth{RoleID: "no-such-role", SecretIDFile: secretFile(t, "sid", "x")}}, kmsclients.ErrPermission, ""},
		"invalid token":             {Auth{TokenFile: secretFile(t, "token", badToken)}, kmsclients.ErrPermission, badToken},
		"revoked JWT":               {Auth{Kubernetes: &KubernetesAuth{Role: "trousseau", JWTFile: secretFile(t, "jwt", jwt)}}, kmsclients.ErrPermission, jwt},
		"unknown k8s role":          {Auth{Kubernetes: &KubernetesAuth{Role: "nobody", JWTFile: secretFile(t, "jwt", srv.review.newJWT(t))}}, kmsclients.ErrPermission, ""},
		"certificate of a stranger": {Auth{Cert: &CertAuth{CertFile: srv.pki.strangerCert, KeyFile: srv.pki.strangerKey}}, kmsclients.ErrPermission, ""},
		"empty token file":          {Auth{TokenFile: secretFile(t, "token", "")}, kmsclients.ErrPermission, ""},
		"missing secret file":       {Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: filepath.Join(t.TempDir(), "absent")}}, kmsclients.ErrUnavailable, ""},
		"unknown auth mount":        {Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretFile(t, "sid", "x"), Mount: "elsewhere"}}, kmsclients.ErrPermission, ""},
	} {
		t.Run(name, func(t *testing.T) {
			b := newTestBackend(t, "vault-refused", srv.config("refused", tc.auth))
			_, err := b.Probe(ctxFor(t, 10*time.Second))
			kmstest.WantKind(t, "Probe", err, tc.kind)
			_, err = b.Wrap(ctxFor(t, 10*time.Second), []byte("share"), []byte("aad"))
			kmstest.WantKind(t, "Wrap", err, tc.kind)
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("error reveals the secret: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "vault vault-refused: ") {
				t.Fatalf("error %q lacks the backend prefix", err)
			}
		})
	}
}

// TestTokenExpiryAndRenewal runs requests across several token lifetimes
// (TTL 3s, max TTL 6s): the token is renewed, then replaced by a new login
// before it expires, and no request fails meanwhile.
func TestTokenExpiryAndRenewal(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "expiry", "")
	roleID, secretID := srv.appRole(t, "short", map[string]any{"token_policies": "trousseau", "token_ttl": "3s", "token_max_ttl": "6s"})
	b := newTestBackend(t, "vault-short", srv.config("expiry", Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretFile(t, "sid", secretID)}}))

	tokens := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(15 * time.Second)
	for worker := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			aad := fmt.Appendf(nil, "worker=%d", worker)
			for time.Now().Before(end) {
				if err := roundTrip(b, aad); err != nil {
					t.Errorf("worker %d at %s: %v", worker, time.Now().Format("15:04:05.000"), err)
					return
				}
				mu.Lock()
				tokens[b.currentToken()] = true
				mu.Unlock()
				time.Sleep(150 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d tokens in 15s", len(tokens))
	if len(tokens) < 3 {
		t.Errorf("saw %d tokens in 15s of 6s-max-TTL tokens; want new logins before expiry", len(tokens))
	}
}

func roundTrip(b *Backend, aad []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	share := []byte("share")
	w, err := b.Wrap(ctx, share, aad)
	if err != nil {
		return err
	}
	got, err := b.Unwrap(ctx, w, aad)
	if err == nil && !bytes.Equal(got, share) {
		err = errors.New("round trip returned another share")
	}
	if err != nil {
		return err
	}
	_, err = b.Probe(ctx)
	return err
}

// currentToken is the token the backend sends now, "" before a login.
func (b *Backend) currentToken() string {
	b.auth.mu.Lock()
	defer b.auth.mu.Unlock()
	if b.auth.current == nil {
		return ""
	}
	return b.auth.current.token
}

// TestTokenRevoked: a revoked token is answered 403; the backend logs in
// again (once, for all the callers that saw the 403) and the requests
// succeed.
func TestTokenRevoked(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "revoked", "")
	b := newTestBackend(t, "vault-revoked", srv.config("revoked", srv.appRoleAuth(t)))
	mustProbe(t, b, "vault:"+srv.httpsAddr()+"/transit/revoked:v1")
	old := b.currentToken()
	srv.write(t, "auth/token/revoke", map[string]any{"token": old})

	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := roundTrip(b, fmt.Appendf(nil, "share=%d", i)); err != nil {
				t.Errorf("after revocation: %v", err)
			}
		}()
	}
	wg.Wait()
	if now := b.currentToken(); now == old || now == "" {
		t.Fatal("the backend did not log in again")
	}
}

// TestSecretsReread: each login reads its secret file again.
func TestSecretsReread(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "reread", "")
	t.Run("secret ID", func(t *testing.T) {
		roleID, first := srv.appRole(t, "trousseau", map[string]any{"token_policies": "trousseau"})
		file := secretFile(t, "sid", first)
		b := newTestBackend(t, "vault-reread", srv.config("reread", Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: file}}))
		mustProbe(t, b, "vault:"+srv.httpsAddr()+"/transit/reread:v1")
		writeFile(t, file, srv.secretID(t, "trousseau"))
		srv.write(t, "auth/approle/role/trousseau/secret-id/destroy", map[string]any{"secret_id": first})
		srv.write(t, "auth/token/revoke", map[string]any{"token": b.currentToken()})
		if err := roundTrip(b, []byte("aad")); err != nil {
			t.Fatalf("after the secret ID was replaced: %v", err)
		}
	})
	t.Run("token file", func(t *testing.T) {
		first := srv.token(t, &api.TokenCreateRequest{Policies: []string{"trousseau"}, NoParent: true})
		file := secretFile(t, "token", first)
		b := newTestBackend(t, "vault-reread", srv.config("reread", Auth{TokenFile: file}))
		mustProbe(t, b, "vault:"+srv.httpsAddr()+"/transit/reread:v1")
		writeFile(t, file, srv.token(t, &api.TokenCreateRequest{Policies: []string{"trousseau"}, NoParent: true}))
		srv.write(t, "auth/token/revoke", map[string]any{"token": first})
		if err := roundTrip(b, []byte("aad")); err != nil {
			t.Fatalf("after the token file was rewritten: %v", err)
		}
	})
}

// TestKeyRotation: the prober notices a rotated transit key, new shares
// use the new version, and old shares unwrap while min_decryption_version
// allows.
func TestKeyRotation(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "rotating", "")
	b := newTestBackend(t, "vault-rot", srv.config("rotating", srv.appRoleAuth(t)))
	prefix := "vault:" + srv.httpsAddr() + "/transit/rotating:v"
	aad := []byte("dek=7;share=2")
	share1, w1 := mustWrap(t, b, aad)
	if w1.KeyIdentity != prefix+"1" {
		t.Fatalf("Wrap reports %q, want %q", w1.KeyIdentity, prefix+"1")
	}

	srv.write(t, "transit/keys/rotating/rotate", nil)
	mustProbe(t, b, prefix+"2")
	share2, w2 := mustWrap(t, b, aad)
	if w2.KeyIdentity != prefix+"2" {
		t.Fatalf("Wrap after rotation reports %q, want %q", w2.KeyIdentity, prefix+"2")
	}
	kmstest.MustUnwrap(t, b, w1, aad, share1)

	srv.write(t, "transit/keys/rotating/config", map[string]any{"min_decryption_version": 2})
	_, err := b.Unwrap(ctxFor(t, 10*time.Second), w1, aad)
	kmstest.WantKind(t, "Unwrap of a version below min_decryption_version", err, kmsclients.ErrPermission)
	kmstest.MustUnwrap(t, b, w2, aad, share2)
}

// TestWrongPolicy: a token whose policy refuses a path gets a permission
// error, not a loop of logins.
func TestWrongPolicy(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "policy", "")
	aad := []byte("aad")
	good := newTestBackend(t, "vault-good", srv.config("policy", srv.appRoleAuth(t)))
	_, w := mustWrap(t, good, aad)

	encryptOnly := newTestBackend(t, "vault-enc", srv.config("policy", srv.tokenFileAuth(t, "encrypt-only")))
	mustProbe(t, encryptOnly, "vault:"+srv.httpsAddr()+"/transit/policy:v1")
	mustWrap(t, encryptOnly, aad)
	_, err := encryptOnly.Unwrap(ctxFor(t, 10*time.Second), w, aad)
	kmstest.WantKind(t, "Unwrap without transit/decrypt", err, kmsclients.ErrPermission)

	none := newTestBackend(t, "vault-none", srv.config("policy", srv.tokenFileAuth(t, "default")))
	_, err = none.Probe(ctxFor(t, 10*time.Second))
	kmstest.WantKind(t, "Probe without transit/keys read", err, kmsclients.ErrPermission)
	_, err = none.Wrap(ctxFor(t, 10*time.Second), []byte("share"), aad)
	kmstest.WantKind(t, "Wrap without any transit policy", err, kmsclients.ErrPermission)

	missing := newTestBackend(t, "vault-missing", srv.config("no-such-key", srv.appRoleAuth(t)))
	_, err = missing.Probe(ctxFor(t, 10*time.Second))
	kmstest.WantKind(t, "Probe of a missing key", err, kmsclients.ErrPermission)
}

// TestServerStoppedAndRestarted: a stopped Vault is reported unavailable
// within the caller's deadline, a sealed one too, and once it is back the
// same backend works again, old shares included.
func TestServerStoppedAndRestarted(t *testing.T) {
	srv := startVault(t)
	srv.createKey(t, "restart", "")
	cfg := srv.config("restart", srv.appRoleAuth(t))
	b := newTestBackend(t, "vault-restart", cfg)
	aad := []byte("dek=5;share=1")
	share, w := mustWrap(t, b, aad)
	lateCfg := srv.config("restart", srv.appRoleAuth(t))

	srv.stop()
	checkUnavailable(t, "stopped", b, w, aad)
	// A backend created while Vault is down starts, and is down.
	late := newTestBackend(t, "vault-late", lateCfg)
	checkUnavailable(t, "stopped, at start", late, w, aad)

	srv.restartSealed(t)
	checkUnavailable(t, "sealed", b, w, aad)

	srv.unseal(t)
	kmstest.MustUnwrap(t, b, w, aad, share)
	mustProbe(t, b, "vault:"+srv.httpsAddr()+"/transit/restart:v1")
	mustWrap(t, b, aad)
	kmstest.MustUnwrap(t, late, w, aad, share)
}

func checkUnavailable(t *testing.T, state string, b *Backend, w kmsclients.Wrapped, aad []byte) {
	t.Helper()
	const budget = 3 * time.Second
	start := time.Now()
	ctx := ctxFor(t, budget)
	_, errWrap := b.Wrap(ctx, []byte("share"), aad)
	_, errUnwrap := b.Unwrap(ctx, w, aad)
	_, errProbe := b.Probe(ctx)
	if elapsed := time.Since(start); elapsed > budget+time.Second {
		t.Errorf("calls to a %s Vault took %v, beyond the caller's %v deadline", state, elapsed, budget)
	}
	t.Logf("%s Vault: %v for three calls", state, time.Since(start))
	for what, err := range map[string]error{"Wrap": errWrap, "Unwrap": errUnwrap, "Probe": errProbe} {
		t.Logf("%s: %v", what, err)
		if !errors.Is(err, kmsclients.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a %s Vault: %v (kind %s), want unavailable", what, state, err, kmsclients.Kind(err))
		}
	}
}

// TestServerRejectsTamperedCiphertext gets damaged ciphertexts past the
// frame checksum, so that transit's own refusal and its mapping are what
// is tested.
func TestServerRejectsTamperedCiphertext(t *testing.T) {
	srv := sharedVault(t)
	for _, keyType := range []string{"aes256-gcm96", "rsa-2048"} {
		t.Run(keyType, func(t *testing.T) {
			key := "tamper-" + keyType
			srv.createKey(t, key, keyType)
			srv.createKey(t, key+"-other", keyType)
			b := newTestBackend(t, "vault-tamper", srv.config(key, srv.appRoleAuth(t)))
			other := newTestBackend(t, "vault-other", srv.config(key+"-other", srv.appRoleAuth(t)))
			testForgedCiphertexts(t, b, other)
		})
	}
}

func testForgedCiphertexts(t *testing.T, b, other *Backend) {
	aad := []byte("dek=6;share=1")
	_, w := mustWrap(t, b, aad)
	_, wOther := mustWrap(t, other, aad)
	binding, ct, _, _ := unframe(w.Ciphertext)
	_, ctOther, _, _ := unframe(wOther.Ciphertext)
	body := strings.TrimPrefix(ct, "vault:v1:")

	for name, forged := range map[string]string{
		"body byte changed":       "vault:v1:" + flipBase64(body, len(body)/2),
		"body truncated":          "vault:v1:" + body[:len(body)-8],
		"not base64":              "vault:v1:" + body[:10] + "!" + body[11:],
		"version that is not yet": "vault:v9:" + body,
		"another key's share":     ctOther,
	} {
		t.Run(name, func(t *testing.T) {
			bad := w
			bad.Ciphertext = frame(binding, forged)
			if v, ok := ciphertextVersion(forged); ok {
				bad.KeyIdentity = b.identity(v)
			}
			_, err := b.Unwrap(ctxFor(t, 10*time.Second), bad, aad)
			t.Logf("%v", err)
			kmstest.WantKind(t, "Unwrap of a forged ciphertext", err, kmsclients.ErrInvalidCiphertext)
		})
	}
}

// TestBindingFollowsKeyTypeOnVault: a stored share whose frame claims the
// other binding than the key's type calls for is refused, even when the
// key could decrypt it.
func TestBindingFollowsKeyTypeOnVault(t *testing.T) {
	srv := sharedVault(t)
	for _, keyType := range []string{"aes256-gcm96", "rsa-2048"} {
		t.Run(keyType, func(t *testing.T) {
			key := "binding-" + keyType
			srv.createKey(t, key, keyType)
			b := newTestBackend(t, "vault-binding", srv.config(key, srv.appRoleAuth(t)))
			aad := []byte("dek=8;share=1")
			share, w := mustWrap(t, b, aad)
			binding, ct, _, _ := unframe(w.Ciphertext)
			if binding != bindingFor(keyType) {
				t.Fatalf("Wrap framed binding %d under a %s key", binding, keyType)
			}
			other := bindAssociatedData
			if binding == bindAssociatedData {
				other = bindInPlaintext
			}
			misframed := w
			misframed.Ciphertext = frame(other, ct)
			_, err := b.Unwrap(ctxFor(t, 10*time.Second), misframed, aad)
			kmstest.WantKind(t, "Unwrap of a share framed for the other binding", err, kmsclients.ErrInvalidCiphertext)
			kmstest.MustUnwrap(t, b, w, aad, share)
			if got, want := b.PublicWrap(), keyType == "rsa-2048"; got != want || !b.WrapKindKnown() {
				t.Fatalf("PublicWrap = %v (known %v) under a %s key, want %v", got, b.WrapKindKnown(), keyType, want)
			}
		})
	}
}

// TestAEADKeyNeedsAssociatedData: under an AES key, a share must carry
// Trousseau's associated_data. A ciphertext that another user of the key
// made without it (an application that encrypts what it is handed, say),
// holding the digest and a chosen share, is refused even though its frame
// claims the digest binding and the digest fits.
func TestAEADKeyNeedsAssociatedData(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "aead-only", "")
	b := newTestBackend(t, "vault-aead", srv.config("aead-only", srv.appRoleAuth(t)))
	aad := []byte("dek=11;share=1")
	chosen := []byte("a share chosen by who wrote etcd")
	plaintext := append(aadBinding(aad), chosen...)
	sec := srv.write(t, "transit/encrypt/aead-only", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plaintext)})
	ct, _ := sec.Data["ciphertext"].(string)
	forged := kmsclients.Wrapped{Ciphertext: frame(bindInPlaintext, ct), KeyIdentity: b.identity(1)}
	_, err := b.Unwrap(ctxFor(t, 10*time.Second), forged, aad)
	kmstest.WantKind(t, "Unwrap of a ciphertext made without associated_data", err, kmsclients.ErrInvalidCiphertext)
	if b.PublicWrap() {
		t.Fatal("PublicWrap is true for an AES key")
	}
}

// TestRSAPublicKeyShares: anyone with an RSA transit key's public half can
// make a share. Framed as bound by associated_data, which RSA does not
// take, it would skip the digest check; it is refused, from the backend's
// first call on. (Vault 1.21 also refuses associated_data for an RSA key;
// TestBindingFollowsKeyType shows the backend does not rely on that.)
// Bound as the key's type requires, it opens: hence PublicWrap.
func TestRSAPublicKeyShares(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "public-rsa", "rsa-2048")
	b := newTestBackend(t, "vault-public", srv.config("public-rsa", srv.appRoleAuth(t)))
	pub := srv.publicKey(t, "public-rsa", "1")
	chosen := []byte("a share chosen by who wrote etcd")
	aad := []byte("dek=9;share=2")
	seal := func(plaintext []byte) string {
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, plaintext, nil)
		if err != nil {
			t.Fatal(err)
		}
		return "vault:v1:" + base64.StdEncoding.EncodeToString(ct)
	}
	forged := kmsclients.Wrapped{Ciphertext: frame(bindAssociatedData, seal(chosen)), KeyIdentity: b.identity(1)}
	_, err := b.Unwrap(ctxFor(t, 10*time.Second), forged, aad)
	kmstest.WantKind(t, "Unwrap of a public-key share framed as bound by associated_data", err, kmsclients.ErrInvalidCiphertext)

	bound := kmsclients.Wrapped{Ciphertext: frame(bindInPlaintext, seal(append(aadBinding(aad), chosen...))), KeyIdentity: b.identity(1)}
	kmstest.MustUnwrap(t, b, bound, aad, chosen)
	if !b.PublicWrap() {
		t.Fatal("PublicWrap is false for a key whose public half makes shares the backend unwraps")
	}
}

// publicKey reads the public half of an RSA transit key's version.
func (s *vaultServer) publicKey(t testing.TB, key, version string) *rsa.PublicKey {
	t.Helper()
	sec, err := s.admin(t).Logical().ReadWithContext(ctxFor(t, 10*time.Second), "transit/keys/"+key)
	if err != nil || sec == nil {
		t.Fatalf("read transit key %s: %v", key, err)
	}
	versions, _ := sec.Data["keys"].(map[string]any)
	v, _ := versions[version].(map[string]any)
	text, _ := v["public_key"].(string)
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatalf("transit key %s v%s has no PEM public key: %v", key, version, sec.Data["keys"])
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("transit key %s v%s is a %T", key, version, pub)
	}
	return rsaPub
}

// TestCustodianKeyAcrossAddresses: one transit key configured through
// 127.0.0.1, localhost and the plain listener is one custodian, named by
// the cluster's ID.
func TestCustodianKeyAcrossAddresses(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "custodian", "")
	auth := srv.appRoleAuth(t)
	byIP := srv.config("custodian", auth)
	byName := byIP
	byName.Address = "https://localhost:" + strconv.Itoa(srv.tlsPort)
	plain := byIP
	plain.Address, plain.CAFile = srv.httpAddr(), ""
	aad := []byte("dek=10;share=1")
	var first kmsclients.Wrapped
	var backends []*Backend
	for i, cfg := range []Config{byIP, byName, plain} {
		b := newTestBackend(t, fmt.Sprintf("vault-%d", i), cfg)
		backends = append(backends, b)
		if i == 0 {
			_, first = mustWrap(t, b, aad)
			continue
		}
		mustProbe(t, b, "vault:"+cfg.Address+"/transit/custodian:v1")
	}
	health, err := srv.admin(t).Sys().HealthWithContext(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := "vault:cluster:" + health.ClusterID + "/transit/custodian"
	for _, b := range backends {
		for _, id := range []string{b.identity(1), first.KeyIdentity} {
			if got := b.CustodianKey(id); got != want {
				t.Errorf("%s: CustodianKey(%q) = %q, want %q", b.Name(), id, got, want)
			}
		}
	}
	if backends[0].identity(1) == backends[1].identity(1) {
		t.Fatal("the two addresses give one key identity: the test proves nothing")
	}
}

func flipBase64(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// TestEnvironmentIgnored: the VAULT_* variables the api client reads do
// not change which Vault the backend talks to, as whom, or how.
func TestEnvironmentIgnored(t *testing.T) {
	srv := sharedVault(t)
	srv.createKey(t, "env", "")
	noPolicy := srv.tokenFileAuth(t, "default")
	good := srv.appRoleAuth(t)
	t.Setenv("VAULT_TOKEN", srv.root)
	t.Setenv("VAULT_ADDR", fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t)))
	t.Setenv("VAULT_NAMESPACE", "elsewhere")
	t.Setenv("VAULT_WRAP_TTL", "60s")
	t.Setenv("VAULT_HEADERS", `{"X-Trousseau-Test": "1"}`)
	t.Setenv("HTTPS_PROXY", fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t)))

	b := newTestBackend(t, "vault-env", srv.config("env", good))
	if err := roundTrip(b, []byte("aad")); err != nil {
		t.Fatalf("with VAULT_* set: %v", err)
	}
	weak := newTestBackend(t, "vault-weak", srv.config("env", noPolicy))
	_, err := weak.Probe(ctxFor(t, 10*time.Second))
	kmstest.WantKind(t, "Probe with a weak token file and VAULT_TOKEN=root", err, kmsclients.ErrPermission)
}
