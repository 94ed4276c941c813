package azurekv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// The test in this file runs the SDK's real HTTP pipeline (challenge
// authentication, retries, JSON and base64url) against a TLS server that
// answers Key Vault's REST paths, with the JSON written here by hand.

const (
	httpTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	httpToken  = "test-access-token"
)

// splitKeyPath splits /keys/NAME[/VERSION][/OP]. The SDK drops the empty
// version segment of a versionless wrap (/keys/NAME/wrapkey), as Key Vault
// accepts, but keeps a trailing slash on a versionless GET (/keys/NAME/).
func splitKeyPath(path string) (name, version, op string, ok bool) {
	rest, found := strings.CutPrefix(path, "/keys/")
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if last := parts[len(parts)-1]; last == "wrapkey" || last == "unwrapkey" {
		op, parts = last, parts[:len(parts)-1]
	}
	switch len(parts) {
	case 1:
		return parts[0], "", op, parts[0] != ""
	case 2:
		return parts[0], parts[1], op, parts[0] != ""
	}
	return "", "", "", false
}

// vaultHandler serves a fakeVault over Key Vault's REST API.
type vaultHandler struct {
	v          *fakeVault
	challenges atomic.Int32
	attempts   atomic.Int32 // authorized requests
	// failNext answers that many authorized requests with failStatus.
	failNext atomic.Int32

	mu         sync.Mutex
	paths      []string
	failStatus int
	retryAfter string
}

func (h *vaultHandler) failWith(status int, retryAfter string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failStatus, h.retryAfter = status, retryAfter
}

func (h *vaultHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.paths = append(h.paths, r.Method+" "+r.URL.EscapedPath())
	failStatus, retryAfter := h.failStatus, h.retryAfter
	h.mu.Unlock()
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "api-version is required")
		return
	}
	if r.Header.Get("Authorization") == "" {
		h.challenges.Add(1)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer authorization="https://login.microsoftonline.com/%s", resource="https://vault.azure.net"`, httpTenant))
		writeError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+httpToken {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "bad token")
		return
	}
	h.attempts.Add(1)
	if h.failNext.Add(-1) >= 0 {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeError(w, failStatus, "Unavailable", "try again later")
		return
	}
	h.route(w, r)
}

func (h *vaultHandler) route(w http.ResponseWriter, r *http.Request) {
	name, version, op, ok := splitKeyPath(r.URL.Path)
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, "NotFound", "no such path "+r.URL.Path)
	case r.Method == http.MethodGet && op == "":
		k, err := h.v.getKey(r.Context(), name, version)
		answer(w, bundleJSON(k), err)
	case r.Method == http.MethodPost && op != "":
		h.operate(w, r, name, version, op)
	default:
		writeError(w, http.StatusMethodNotAllowed, "BadRequest", r.Method+" "+r.URL.Path)
	}
}

func (h *vaultHandler) operate(w http.ResponseWriter, r *http.Request, name, version, op string) {
	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "body: "+err.Error())
		return
	}
	value, err := base64.RawURLEncoding.DecodeString(req.Value)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "value is not base64url: "+err.Error())
		return
	}
	alg := azkeys.EncryptionAlgorithm(req.Alg)
	p := azkeys.KeyOperationParameters{Algorithm: &alg, Value: value}
	var res azkeys.KeyOperationResult
	if op == "wrapkey" {
		res, err = h.v.wrapKey(r.Context(), name, version, p)
	} else {
		res, err = h.v.unwrapKey(r.Context(), name, version, p)
	}
	if err != nil {
		answer(w, nil, err)
		return
	}
	answer(w, map[string]string{"kid": string(*res.KID), "value": base64.RawURLEncoding.EncodeToString(res.Result)}, nil)
}

// bundleJSON spells a key as Key Vault's REST API does.
func bundleJSON(k azkeys.KeyBundle) map[string]any {
	if k.Key == nil {
		return nil
	}
	key := map[string]any{"kid": string(*k.Key.KID), "kty": string(*k.Key.Kty), "key_ops": []string{"wrapKey", "unwrapKey"}}
	if k.Key.N != nil {
		key["n"] = base64.RawURLEncoding.EncodeToString(k.Key.N)
		key["e"] = base64.RawURLEncoding.EncodeToString(k.Key.E)
	}
	attrs := map[string]any{"enabled": *k.Attributes.Enabled, "recoveryLevel": "Recoverable+Purgeable"}
	if k.Attributes.Expires != nil {
		attrs["exp"] = k.Attributes.Expires.Unix()
	}
	return map[string]any{"key": key, "attributes": attrs}
}

func answer(w http.ResponseWriter, body any, err error) {
	var ve *vaultError
	switch {
	case errors.As(err, &ve):
		writeError(w, ve.status, ve.code, ve.msg)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "InternalError", err.Error())
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(body)
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// recordingCredential hands out httpToken and records what it was asked.
type recordingCredential struct {
	mu  sync.Mutex
	got []policy.TokenRequestOptions
}

func (c *recordingCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, o)
	return azcore.AccessToken{Token: httpToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func newHTTPVault(t *testing.T) (*vaultHandler, *Backend, *recordingCredential) {
	h := &vaultHandler{failStatus: http.StatusServiceUnavailable}
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	h.v = newFakeVault(srv.URL)
	h.v.addVersion(t, "trousseau", "rsa2048")
	cfg := testConfig("trousseau")
	cfg.VaultURL = srv.URL + "/"
	cred := &recordingCredential{}
	b, err := newBackend(context.Background(), "azure-test", cfg, hooks{
		cred: cred, transport: srv.Client(), skipResourceCheck: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, b, cred
}

func TestHTTPEndToEnd(t *testing.T) {
	h, b, cred := newHTTPVault(t)
	share, aad := []byte("0123456789abcdef0123456789abcdef!"), []byte("dek=7;share=1")

	kid := kmstest.MustProbe(t, b)
	w := mustWrap(t, b, share, aad)
	if w.KeyIdentity != kid {
		t.Fatalf("Wrap used %q, Probe reported %q", w.KeyIdentity, kid)
	}
	kmstest.MustUnwrap(t, b, w, aad, share)

	version := kid[strings.LastIndex(kid, "/")+1:]
	h.mu.Lock()
	paths := strings.Join(h.paths, "\n")
	h.mu.Unlock()
	t.Logf("requests:\n%s", paths)
	for _, want := range []string{"GET /keys/trousseau/", "POST /keys/trousseau/wrapkey", "POST /keys/trousseau/" + version + "/unwrapkey"} {
		if !strings.Contains(paths, want) {
			t.Errorf("no request %q", want)
		}
	}
	if n := h.challenges.Load(); n != 1 {
		t.Errorf("%d bearer challenges, want 1 (the first request only)", n)
	}
	cred.mu.Lock()
	defer cred.mu.Unlock()
	if len(cred.got) == 0 || cred.got[0].TenantID != httpTenant ||
		len(cred.got[0].Scopes) != 1 || cred.got[0].Scopes[0] != "https://vault.azure.net/.default" {
		t.Errorf("token requests %+v, want the challenge's tenant and scope", cred.got)
	}
}

func TestHTTPTamperedIsInvalid(t *testing.T) {
	_, b, _ := newHTTPVault(t)
	w := mustWrap(t, b, []byte("share"), []byte("aad"))
	bad := w
	bad.Ciphertext = bytes.Clone(w.Ciphertext)
	bad.Ciphertext[len(bad.Ciphertext)/2] ^= 1
	_, err := b.Unwrap(ctxFor(t), bad, []byte("aad"))
	wantKind(t, "Unwrap of a tampered share", err, kmsclients.ErrInvalidCiphertext)
	if !strings.Contains(err.Error(), "HTTP 400") || strings.Contains(err.Error(), "\n") {
		t.Errorf("message %q: want one line naming the status", err)
	}
}

func TestHTTPRetriesAreBounded(t *testing.T) {
	h, b, _ := newHTTPVault(t)
	kmstest.MustProbe(t, b) // past the challenge

	h.attempts.Store(0)
	h.failNext.Store(2)
	kmstest.MustProbe(t, b)
	if n := h.attempts.Load(); n != 3 {
		t.Errorf("two 503s then success took %d attempts, want 3", n)
	}

	h.attempts.Store(0)
	h.failNext.Store(100)
	_, err := b.Probe(ctxFor(t))
	wantKind(t, "Probe of a failing vault", err, kmsclients.ErrUnavailable)
	if n := h.attempts.Load(); n != 3 {
		t.Errorf("a failing vault got %d attempts, want 3 (two retries)", n)
	}
}

func TestHTTPLongRetryAfterFailsAtOnce(t *testing.T) {
	h, b, _ := newHTTPVault(t)
	kmstest.MustProbe(t, b)
	h.failWith(http.StatusTooManyRequests, "60")
	h.failNext.Store(100)
	start := time.Now()
	_, err := b.Probe(ctxFor(t))
	wantKind(t, "Probe of a throttled vault", err, kmsclients.ErrUnavailable)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Probe waited %v on Retry-After: 60", d)
	}
}

func TestHTTPDisabledKey(t *testing.T) {
	h, b, _ := newHTTPVault(t)
	kid := kmstest.MustProbe(t, b)
	h.v.update(kid, func(k *fakeVersion) { k.enabled = false })
	_, err := b.Wrap(ctxFor(t), []byte("share"), []byte("aad"))
	wantKind(t, "Wrap with a disabled key", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "not allowed on a disabled key") {
		t.Errorf("message %q lacks the vault's explanation", err)
	}
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe of a disabled key", err, kmsclients.ErrPermission)
}
