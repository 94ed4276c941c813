package gcpkms

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/compute/metadata"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// tlsFake serves a fake Cloud KMS on TLS that wants token, and returns
// the endpoint and the client option that trusts its certificate.
func tlsFake(t *testing.T, token string) (*fakeKMS, string, option.ClientOption) {
	t.Helper()
	pki := testutil.NewPKI(t, t.TempDir(), "test-ca")
	f := newFake(t, testKey).startTLS(t, pki, token)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(pki.CAPEM))
	_, port, _ := net.SplitHostPort(f.addr)
	trust := option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	return f, "localhost:" + port, trust
}

// tokenServer answers token requests with token, or with status when it
// is not 200.
func tokenServer(t *testing.T, token string, code int) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if code != http.StatusOK {
			w.WriteHeader(code)
			w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// serviceAccountFile writes a service account key file whose token
// endpoint is tokenURL.
func serviceAccountFile(t *testing.T, tokenURL string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "trousseau-test",
		"private_key_id": "abc123",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "trousseau@trousseau-test.iam.gserviceaccount.com",
		"client_id":      "1234567890",
		"token_uri":      tokenURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "sa.json", string(data))
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCredentialsFile: a service account key file, its token sent to
// Cloud KMS over TLS; a token endpoint that refuses or fails is a
// permission or an unavailable error.
func TestCredentialsFile(t *testing.T) {
	f, endpoint, trust := tlsFake(t, "tok-file")
	tokens, calls := tokenServer(t, "tok-file", http.StatusOK)
	cfg := Config{KeyName: testKey, Endpoint: endpoint, CredentialsFile: serviceAccountFile(t, tokens.URL)}
	b, err := newBackend(context.Background(), testName, cfg, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if calls.Load() != 0 {
		t.Fatal("New asked for a token")
	}
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	kmstest.MustUnwrap(t, b, w, aad, testShare)
	kmstest.MustProbe(t, b)
	if calls.Load() != 1 {
		t.Fatalf("%d token requests, want 1 (the token is reused)", calls.Load())
	}

	for _, tc := range []struct {
		code int
		kind error
	}{
		{http.StatusBadRequest, kmsclients.ErrPermission},
		{http.StatusServiceUnavailable, kmsclients.ErrUnavailable},
	} {
		t.Run(http.StatusText(tc.code), func(t *testing.T) {
			tokens, _ := tokenServer(t, "", tc.code)
			cfg := cfg
			cfg.CredentialsFile = serviceAccountFile(t, tokens.URL)
			wantTokenFailure(t, f, cfg, trust, tc.kind)
		})
	}
	// A wrong token is Cloud KMS's refusal.
	wrong, _ := tokenServer(t, "tok-wrong", http.StatusOK)
	cfg.CredentialsFile = serviceAccountFile(t, wrong.URL)
	b2, err := newBackend(context.Background(), testName, cfg, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	_, err = b2.Probe(ctxFor(t))
	wantKind(t, "Probe with a token Cloud KMS refuses", err, kmsclients.ErrPermission)
}

// wantTokenFailure probes a backend on cfg whose token cannot be had:
// the error is of kind, says so without showing a token, and nothing
// reached Cloud KMS.
func wantTokenFailure(t *testing.T, f *fakeKMS, cfg Config, trust option.ClientOption, kind error) {
	t.Helper()
	b, err := newBackend(context.Background(), testName, cfg, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	before := f.callCount("GetCryptoKey")
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kind)
	if !strings.Contains(err.Error(), "access token") || strings.Contains(err.Error(), "tok-") {
		t.Errorf("Probe: %q does not say the token failed, or shows one", err)
	}
	if f.callCount("GetCryptoKey") != before {
		t.Error("a call without a token reached Cloud KMS")
	}
}

// TestApplicationDefaultCredentials: with no credentials file, the
// metadata server's token is looked for at the first call, not at New.
func TestApplicationDefaultCredentials(t *testing.T) {
	var up atomic.Bool
	var calls atomic.Int32
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Metadata-Flavor") != "Google" || !strings.HasSuffix(r.URL.Path, "/service-accounts/default/token") {
			http.NotFound(w, r)
			return
		}
		if !up.Load() {
			http.Error(w, "metadata server starting", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-md", "token_type": "Bearer", "expires_in": 3600})
	}))
	defer md.Close()
	home := t.TempDir() // no gcloud credentials file
	t.Setenv("HOME", home)
	t.Setenv("CLOUDSDK_CONFIG", home)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))

	_, endpoint, trust := tlsFake(t, "tok-md")
	b, err := newBackend(context.Background(), testName, Config{KeyName: testKey, Endpoint: endpoint}, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if calls.Load() != 0 {
		t.Fatal("New asked the metadata server")
	}
	_, err = b.Probe(ctxFor(t))
	wantKind(t, "Probe with the metadata server failing", err, kmsclients.ErrUnavailable)
	up.Store(true)
	kmstest.MustProbe(t, b)
}

func TestCredentialsFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", " \n", "is empty"},
		{"not JSON", "hello", "is not a JSON credentials file"},
		{"unknown type", `{"type":"gdch_service_account"}`, `has type "gdch_service_account"`},
		{"no type", `{"client_email":"x@y.iam.gserviceaccount.com"}`, `has type ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "creds.json", tc.content)
			_, err := New(context.Background(), testName, Config{KeyName: testKey, CredentialsFile: path})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "gcpkms.credentialsFile: ") {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
	_, err := New(context.Background(), testName, Config{KeyName: testKey, CredentialsFile: filepath.Join(t.TempDir(), "missing.json")})
	if err == nil || !strings.Contains(err.Error(), "gcpkms.credentialsFile: ") {
		t.Fatalf("New with a missing file: %v", err)
	}
}

func TestTokenErrors(t *testing.T) {
	response := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"no credentials found", errors.New("credentials: could not find default credentials"), codes.Unauthenticated},
		{"token endpoint refuses", &auth.Error{Response: response(http.StatusBadRequest)}, codes.Unauthenticated},
		{"token endpoint throttles", &auth.Error{Response: response(http.StatusTooManyRequests)}, codes.Unavailable},
		{"token endpoint fails", &auth.Error{Response: response(http.StatusServiceUnavailable)}, codes.Unavailable},
		{"metadata server fails", &metadata.Error{Code: http.StatusInternalServerError}, codes.Unavailable},
		{"no such service account", &metadata.Error{Code: http.StatusNotFound}, codes.Unauthenticated},
		{"network", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, codes.Unavailable},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"canceled", context.Canceled, codes.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tokenError(tc.err)); got != tc.want {
				t.Fatalf("code %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDefaultCredentialsSearchedAgainAfterFailure(t *testing.T) {
	var searches atomic.Int32
	found := auth.NewCredentials(&auth.CredentialsOptions{TokenProvider: staticToken("tok")})
	release := make(chan struct{})
	d := &defaultCredentials{detect: func() (*auth.Credentials, error) {
		switch searches.Add(1) {
		case 1:
			return nil, errors.New("credentials: could not find default credentials")
		case 2:
			<-release // a slow metadata server
		}
		return found, nil
	}}
	if _, err := d.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "Application Default Credentials") {
		t.Fatalf("first Token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token while the search hangs: %v, want the caller's deadline", err)
	}
	close(release)
	for range 3 {
		tok, err := d.Token(context.Background())
		if err != nil || tok.Value != "tok" {
			t.Fatalf("Token: %v", err)
		}
	}
	if n := searches.Load(); n != 2 {
		t.Fatalf("%d searches, want 2 (one failed, one found and kept)", n)
	}
}

type staticToken string

func (s staticToken) Token(context.Context) (*auth.Token, error) {
	return &auth.Token{Value: string(s), Type: "Bearer", Expiry: time.Now().Add(time.Hour)}, nil
}

// fakeIAM is the IAM Credentials API's generateAccessToken for one
// service account: it wants the base credentials' token and answers
// with the impersonated one, or fails with code.
type fakeIAM struct {
	srv   *httptest.Server
	calls atomic.Int32
	code  atomic.Int32
}

const impersonated = "trousseau-kms@trousseau-test.iam.gserviceaccount.com"

func startFakeIAM(t *testing.T, baseToken, token string) *fakeIAM {
	t.Helper()
	f := &fakeIAM{}
	f.code.Store(http.StatusOK)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		var req struct {
			Scope []string `json:"scope"`
		}
		switch {
		case r.URL.Path != "/v1/projects/-/serviceAccounts/"+impersonated+":generateAccessToken":
			http.Error(w, `{"error":{"code":404,"status":"NOT_FOUND"}}`, http.StatusNotFound)
			return
		case r.Header.Get("Authorization") != "Bearer "+baseToken:
			http.Error(w, `{"error":{"code":401,"status":"UNAUTHENTICATED"}}`, http.StatusUnauthorized)
			return
		case json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Scope) != 1 || req.Scope[0] != scopeCloudKMS:
			http.Error(w, `{"error":{"code":400,"status":"INVALID_ARGUMENT"}}`, http.StatusBadRequest)
			return
		}
		if code := int(f.code.Load()); code != http.StatusOK {
			http.Error(w, `{"error":{"status":"`+http.StatusText(code)+`"}}`, code)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"accessToken": token, "expireTime": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	}))
	t.Cleanup(f.srv.Close)
	// Calls to the real IAM Credentials API reach the fake; any other
	// host is an error.
	iamTransport = roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host != "iamcredentials.googleapis.com" {
			return nil, errors.New("unexpected host " + r.URL.Host)
		}
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host = "http", strings.TrimPrefix(f.srv.URL, "http://")
		return http.DefaultTransport.RoundTrip(r)
	})
	t.Cleanup(func() { iamTransport = nil })
	return f
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestImpersonation: the key file's token mints the service account's
// token at the IAM Credentials API, and Cloud KMS sees only the latter;
// IAM refusing or failing is a permission or an unavailable error that
// names neither token.
func TestImpersonation(t *testing.T) {
	f, endpoint, trust := tlsFake(t, "tok-impersonated")
	tokens, _ := tokenServer(t, "tok-base", http.StatusOK)
	iam := startFakeIAM(t, "tok-base", "tok-impersonated")
	cfg := Config{KeyName: testKey, Endpoint: endpoint, CredentialsFile: serviceAccountFile(t, tokens.URL), ImpersonateServiceAccount: impersonated}
	b, err := newBackend(context.Background(), testName, cfg, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if iam.calls.Load() != 0 {
		t.Fatal("New asked IAM for a token")
	}
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	kmstest.MustUnwrap(t, b, w, aad, testShare)
	kmstest.MustProbe(t, b)
	if n := iam.calls.Load(); n != 1 {
		t.Fatalf("%d calls to IAM, want 1 (the token is reused)", n)
	}

	for _, tc := range []struct {
		code int
		kind error
	}{
		{http.StatusForbidden, kmsclients.ErrPermission},
		{http.StatusServiceUnavailable, kmsclients.ErrUnavailable},
	} {
		t.Run(http.StatusText(tc.code), func(t *testing.T) {
			iam.code.Store(int32(tc.code))
			defer iam.code.Store(http.StatusOK)
			wantTokenFailure(t, f, cfg, trust, tc.kind)
		})
	}

	// Without impersonation, the base token is what Cloud KMS sees, and
	// it refuses it: the fake does check which identity calls.
	cfg.ImpersonateServiceAccount = ""
	direct, err := newBackend(context.Background(), testName, cfg, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	_, err = direct.Probe(ctxFor(t))
	wantKind(t, "Probe with the base token", err, kmsclients.ErrPermission)
}
