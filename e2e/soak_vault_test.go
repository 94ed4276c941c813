//go:build soak

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// soakVault is a real Vault server with the transit engine, on file
// storage so that a SIGKILL and restart keeps its keys (a dev server's
// would be gone); each start is unsealed with its one unseal key.
type soakVault struct {
	t               *testing.T
	dir, bin, hcl   string
	port            int
	p               *proc
	unsealKey, root string
	tokenFile       string
}

func startSoakVault(t *testing.T, dir string) *soakVault {
	v := &soakVault{t: t, dir: dir, bin: testutil.Vault.Binary(t), port: testutil.FreePort(t)}
	os.MkdirAll(dir, 0o700)
	v.hcl = filepath.Join(dir, "vault.hcl")
	cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:%d"
disable_mlock = true
ui            = false
log_level     = "warn"
`, filepath.Join(dir, "data"), v.port, testutil.FreePort(t), v.port)
	if err := os.WriteFile(v.hcl, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.run(); err != nil {
		t.Fatal(err)
	}
	var init struct {
		Keys      []string `json:"keys"`
		RootToken string   `json:"root_token"`
	}
	if err := v.call("PUT", "sys/init", map[string]int{"secret_shares": 1, "secret_threshold": 1}, &init); err != nil || len(init.Keys) != 1 {
		t.Fatalf("vault init: %v", err)
	}
	v.unsealKey, v.root = init.Keys[0], init.RootToken
	if err := v.unseal(); err != nil {
		t.Fatal(err)
	}
	if err := v.call("POST", "sys/mounts/transit", map[string]string{"type": "transit"}, nil); err != nil {
		t.Fatalf("vault enable transit: %v", err)
	}
	if err := v.call("POST", "transit/keys/trousseau", map[string]string{}, nil); err != nil {
		t.Fatalf("vault transit key: %v", err)
	}
	v.tokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(v.tokenFile, []byte(v.root), 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *soakVault) addr() string { return fmt.Sprintf("http://127.0.0.1:%d", v.port) }

// run starts the server and waits until it answers (sealed).
func (v *soakVault) run() error {
	v.p = startProc(v.t, v.dir, "vault", v.bin, "server", "-config", v.hcl)
	return v.waitHealth(func(code int) bool { return code != 0 })
}

// restart is a crash and a start: SIGKILL, start, unseal.
func (v *soakVault) restart() error {
	if err := v.run(); err != nil {
		return err
	}
	return v.unseal()
}

func (v *soakVault) unseal() error {
	if err := v.call("PUT", "sys/unseal", map[string]string{"key": v.unsealKey}, nil); err != nil {
		return fmt.Errorf("vault unseal: %w", err)
	}
	return v.waitHealth(func(code int) bool { return code == http.StatusOK })
}

// waitHealth polls sys/health (200 when active, 503 while sealed) until
// ok(status) holds, for up to two minutes.
func (v *soakVault) waitHealth(ok func(code int) bool) error {
	var last error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if v.p.exited() {
			return fmt.Errorf("vault exited:\n%s", v.p.tail(20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", v.addr()+"/v1/sys/health", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		code := 0
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		if ok(code) {
			return nil
		}
		last = fmt.Errorf("sys/health: %d %v", code, err)
	}
	return fmt.Errorf("vault not healthy in 2m: %v", last)
}

// call is one Vault API request with the root token, once there is one.
func (v *soakVault) call(method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, v.addr()+"/v1/"+path, bytes.NewReader(b))
	if v.root != "" {
		req.Header.Set("X-Vault-Token", v.root)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
