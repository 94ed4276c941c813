package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// vaultBinary finds the Vault server built by hack/vault.sh.
func vaultBinary(t testing.TB) string { return testutil.Vault.Binary(t) }

// The service account the TokenReview stand-in vouches for.
const (
	saNamespace   = "kms"
	saName        = "trousseau"
	saUID         = "5d0c1a4e-7b7e-4f0e-9a53-0d6f2b9c8e11"
	reviewerToken = "token-of-the-reviewer"
)

// vaultServer is one Vault process with file storage, so that it keeps
// its keys and tokens across a restart. It listens on 127.0.0.1 twice:
// TLS (for cert auth) and plain http.
type vaultServer struct {
	bin, dir                     string
	tlsPort, plainPort, clusPort int
	pki                          *testPKI
	review                       *tokenReview
	root, unsealKey              string

	starts  int
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// startVault starts a server of the test's own, stopped at cleanup.
func startVault(t testing.TB) *vaultServer {
	t.Helper()
	s := newVaultServer(t, t.TempDir())
	t.Cleanup(s.close)
	return s
}

// shared is the server most tests use; TestMain stops it.
var shared struct {
	once sync.Once
	srv  *vaultServer
	dir  string
}

func sharedVault(t testing.TB) *vaultServer {
	t.Helper()
	vaultBinary(t) // skips each test under -short, not only the first
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "trousseau-vault-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.srv = newVaultServer(t, dir)
	})
	if shared.srv == nil {
		t.Fatal("the shared Vault server failed to start (see the first test that used it)")
	}
	return shared.srv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func newVaultServer(t testing.TB, dir string) *vaultServer {
	t.Helper()
	s := &vaultServer{bin: vaultBinary(t), dir: dir, pki: newTestPKI(t, dir)}
	s.tlsPort, s.plainPort, s.clusPort = testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	s.review = newTokenReview(t)
	s.writeConfig(t)
	s.start(t)
	s.initialize(t)
	s.unseal(t)
	s.setup(t)
	return s
}

func (s *vaultServer) writeConfig(t testing.TB) {
	cfg := fmt.Sprintf(`
storage "file" { path = %q }
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_cert_file   = %q
  tls_key_file    = %q
}
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
api_addr      = "https://127.0.0.1:%d"
disable_mlock = true
ui            = false
log_level     = "warn"
`, filepath.Join(s.dir, "data"), s.tlsPort, s.clusPort, s.pki.serverCert, s.pki.serverKey, s.plainPort, s.tlsPort)
	writeFile(t, filepath.Join(s.dir, "vault.hcl"), cfg)
}

// start runs the server and waits until it answers on its plain listener.
func (s *vaultServer) start(t testing.TB) {
	t.Helper()
	s.starts++
	s.logPath = filepath.Join(s.dir, fmt.Sprintf("vault.%d.log", s.starts))
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin, "server", "-config", filepath.Join(s.dir, "vault.hcl"))
	// A whole environment, so that no VAULT_* variable of the test run
	// changes the server.
	cmd.Env = []string{"HOME=" + s.dir, "PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vault: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(s.exited)
	s.waitFor(t, "listening", func(h *api.HealthResponse) bool { return true })
}

// waitFor polls sys/health until ok says so.
func (s *vaultServer) waitFor(t testing.TB, what string, ok func(*api.HealthResponse) bool) {
	t.Helper()
	admin := s.client(t, "")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := admin.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && ok(h) {
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("vault exited while waiting until %s:\n%s", what, s.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("vault not %s in time:\n%s", what, s.log())
}

func (s *vaultServer) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func (s *vaultServer) initialize(t testing.TB) {
	t.Helper()
	resp, err := s.client(t, "").Sys().InitWithContext(ctxFor(t, 30*time.Second), &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vault operator init: %v\n%s", err, s.log())
	}
	s.root, s.unsealKey = resp.RootToken, resp.Keys[0]
}

func (s *vaultServer) unseal(t testing.TB) {
	t.Helper()
	if _, err := s.client(t, "").Sys().UnsealWithContext(ctxFor(t, 30*time.Second), s.unsealKey); err != nil {
		t.Fatalf("vault operator unseal: %v\n%s", err, s.log())
	}
	s.waitFor(t, "active", func(h *api.HealthResponse) bool { return h.Initialized && !h.Sealed && !h.Standby })
}

// stop kills the server, as a crash would, and waits for it to exit.
func (s *vaultServer) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// restart starts the server again on the same ports and storage, sealed.
func (s *vaultServer) restartSealed(t testing.TB) {
	t.Helper()
	s.stop()
	s.start(t)
}

func (s *vaultServer) close() {
	s.stop()
	s.review.srv.Close()
}

func (s *vaultServer) httpsAddr() string { return "https://127.0.0.1:" + strconv.Itoa(s.tlsPort) }
func (s *vaultServer) httpAddr() string  { return "http://127.0.0.1:" + strconv.Itoa(s.plainPort) }

// client is an api client on the plain listener with token, built the
// way the backend builds its own, so that the test's environment does not
// reach it either.
func (s *vaultServer) client(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := newAPIClient(Config{Address: s.httpAddr()}, newTransport(nil, true), 0)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		c.SetToken(token)
	}
	return c
}

func (s *vaultServer) admin(t testing.TB) *api.Client { return s.client(t, s.root) }

// write is a logical write as root that must succeed.
func (s *vaultServer) write(t testing.TB, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := s.admin(t).Logical().WriteWithContext(ctxFor(t, 30*time.Second), path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return sec
}

// Policies the tests give their logins.
const (
	fullPolicy = `
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
path "transit/keys/*"    { capabilities = ["read"] }
`
	encryptOnlyPolicy = `
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/keys/*"    { capabilities = ["read"] }
`
)

// setup mounts transit and the four login methods, with a role or
// certificate for each that grants the full policy.
func (s *vaultServer) setup(t testing.TB) {
	t.Helper()
	ctx := ctxFor(t, 60*time.Second)
	sys := s.admin(t).Sys()
	if err := sys.MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("mount transit: %v", err)
	}
	for _, method := range []string{"approle", "cert", "kubernetes"} {
		if err := sys.EnableAuthWithOptionsWithContext(ctx, method, &api.EnableAuthOptions{Type: method}); err != nil {
			t.Fatalf("enable %s auth: %v", method, err)
		}
	}
	for name, rules := range map[string]string{"trousseau": fullPolicy, "encrypt-only": encryptOnlyPolicy} {
		if err := sys.PutPolicyWithContext(ctx, name, rules); err != nil {
			t.Fatalf("policy %s: %v", name, err)
		}
	}
	s.write(t, "auth/approle/role/trousseau", map[string]any{"token_policies": "trousseau"})
	s.write(t, "auth/cert/certs/trousseau", map[string]any{"certificate": s.pki.caPEM, "token_policies": "trousseau"})
	s.write(t, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      s.review.srv.URL,
		"kubernetes_ca_cert":   s.review.caPEM,
		"token_reviewer_jwt":   reviewerToken,
		"disable_local_ca_jwt": true,
	})
	s.write(t, "auth/kubernetes/role/trousseau", map[string]any{
		"bound_service_account_names":      saName,
		"bound_service_account_namespaces": saNamespace,
		"token_policies":                   "trousseau",
	})
}

// createKey creates a transit key of the given type ("" for the default,
// aes256-gcm96).
func (s *vaultServer) createKey(t testing.TB, name, keyType string) {
	t.Helper()
	data := map[string]any{}
	if keyType != "" {
		data["type"] = keyType
	}
	s.write(t, "transit/keys/"+name, data)
}

// token creates a token with the given policies and options.
func (s *vaultServer) token(t testing.TB, req *api.TokenCreateRequest) string {
	t.Helper()
	sec, err := s.admin(t).Auth().Token().CreateWithContext(ctxFor(t, 30*time.Second), req)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// appRole creates an approle role and returns its role ID and a new
// secret ID.
func (s *vaultServer) appRole(t testing.TB, role string, params map[string]any) (roleID, secretID string) {
	t.Helper()
	s.write(t, "auth/approle/role/"+role, params)
	sec, err := s.admin(t).Logical().ReadWithContext(ctxFor(t, 30*time.Second), "auth/approle/role/"+role+"/role-id")
	if err != nil || sec == nil {
		t.Fatalf("read role ID: %v", err)
	}
	return sec.Data["role_id"].(string), s.secretID(t, role)
}

func (s *vaultServer) secretID(t testing.TB, role string) string {
	t.Helper()
	return s.write(t, "auth/approle/role/"+role+"/secret-id", nil).Data["secret_id"].(string)
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tokenReview stands in for the Kubernetes API server's TokenReview, the
// one call Vault's kubernetes auth makes: it vouches for the service
// account of the tokens it was given, and for no other.
type tokenReview struct {
	srv   *httptest.Server
	caPEM string
	key   *ecdsa.PrivateKey

	mu    sync.Mutex
	valid map[string]bool
}

func newTokenReview(t testing.TB) *tokenReview {
	r := &tokenReview{key: newKey(t), valid: map[string]bool{}}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	r.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw}))
	return r
}

func (r *tokenReview) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, req)
		return
	}
	if req.Header.Get("Authorization") != "Bearer "+reviewerToken {
		http.Error(w, `{"kind":"Status","status":"Failure","code":401}`, http.StatusUnauthorized)
		return
	}
	var body struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	ok := r.valid[body.Spec.Token]
	r.mu.Unlock()
	status := map[string]any{"authenticated": false}
	if ok {
		status = map[string]any{"authenticated": true, "user": map[string]any{
			"username": "system:serviceaccount:" + saNamespace + ":" + saName,
			"uid":      saUID,
		}}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
}

// newJWT returns a service-account token that the review accepts until
// revoked. Vault reads its claims (unverified, as no signing keys are
// configured) and asks the review whether it is valid.
func (r *tokenReview) newJWT(t testing.TB) string {
	t.Helper()
	jti := make([]byte, 8)
	rand.Read(jti)
	claims, _ := json.Marshal(map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + saNamespace + ":" + saName,
		"jti":                                    hex.EncodeToString(jti),
		"kubernetes.io/serviceaccount/namespace": saNamespace,
		"kubernetes.io/serviceaccount/service-account.name": saName,
		"kubernetes.io/serviceaccount/service-account.uid":  saUID,
	})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signing))
	rr, ss, err := ecdsa.Sign(rand.Reader, r.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(rr.FillBytes(make([]byte, 32)), ss.FillBytes(make([]byte, 32))...)
	jwt := signing + "." + enc.EncodeToString(sig)
	r.mu.Lock()
	r.valid[jwt] = true
	r.mu.Unlock()
	return jwt
}

func (r *tokenReview) revoke(jwt string) {
	r.mu.Lock()
	delete(r.valid, jwt)
	r.mu.Unlock()
}
