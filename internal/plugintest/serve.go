package plugintest

import (
	"bytes"
	"context"
	"crypto/fips140"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/internal/testutil"
)

// BuildInShortDir builds the trousseau binary into a temporary directory
// with a short path, as a socket path holds 107 bytes and t.TempDir's are
// long. It returns the directory (removed after the test) and the binary.
func BuildInShortDir(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "trs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if bin, err = testutil.BuildTrousseau(dir); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// Served is a `trousseau serve` process and kube-apiserver's KMS v2
// client on its socket.
type Served struct {
	cmd    *exec.Cmd
	Out    *testutil.Buffer // what it logged
	exited chan struct{}
	client kmsservice.Service
}

// StartServe runs `bin serve --config config` with exactly env plus the
// test's GODEBUG (so the FIPS pass's fips140=only reaches the plugin)
// until the test ends, and waits until it is healthy on socket.
func StartServe(t *testing.T, bin string, env []string, config, socket string) *Served {
	t.Helper()
	p := &Served{Out: &testutil.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "--config", config)
	p.cmd.Env = env
	if v, ok := os.LookupEnv("GODEBUG"); ok {
		p.cmd.Env = append(slices.Clip(env), "GODEBUG="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.Stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		if p.client == nil {
			if _, err = os.Stat(socket); err == nil {
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				if p.client, err = kmsv2client.NewGRPCService(ctx, "unix://"+socket, "trousseau", 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		if p.client != nil {
			var st *kmsservice.StatusResponse
			if st, err = p.tryStatus(); err == nil && st.Healthz == "ok" {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("serve exited:\n%s", p.Out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy (%v):\n%s", err, p.Out)
		}
	}
}

// Stop ends the process with SIGINT (as a terminal does; kubelet sends
// SIGTERM, which serve handles alike) and waits for it.
func (p *Served) Stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("serve did not stop on SIGINT:\n%s", p.Out)
	}
}

func (p *Served) tryStatus() (*kmsservice.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.client.Status(ctx)
}

// Status asks the plugin for its status, failing the test on error.
func (p *Served) Status(t *testing.T) *kmsservice.StatusResponse {
	t.Helper()
	st, err := p.tryStatus()
	if err != nil {
		t.Fatalf("Status: %v\n%s", err, p.Out)
	}
	return st
}

// WaitKeyID waits for a healthy Status whose key_id passes ok.
func (p *Served) WaitKeyID(t *testing.T, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := p.Status(t)
		if st.Healthz == "ok" && st.KeyID != "" && ok(st.KeyID) {
			return st.KeyID
		}
		if time.Now().After(deadline) {
			t.Fatalf("key_id still %q (healthz %q):\n%s", st.KeyID, st.Healthz, p.Out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Encrypt sends a fresh 32-byte seed.
func (p *Served) Encrypt(t *testing.T) (*kmsservice.EncryptResponse, []byte) {
	t.Helper()
	seed := []byte(t.Name() + time.Now().String())[:32]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.client.Encrypt(ctx, "uid", seed)
	if err != nil {
		t.Fatalf("Encrypt: %v\n%s", err, p.Out)
	}
	return r, seed
}

// Decrypt sends back what Encrypt returned.
func (p *Served) Decrypt(r *kmsservice.EncryptResponse) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations})
}

// Transformer is what a kube-apiserver builds from an
// EncryptionConfiguration naming the plugin's socket.
func Transformer(t *testing.T, dir, socket string) value.Transformer {
	t.Helper()
	path := filepath.Join(dir, "encryption-config.yaml")
	writeFile(t, path, `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - kms: {apiVersion: v2, name: trousseau, endpoint: unix://`+socket+`, timeout: 10s}
`)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var cfg *encryptionconfig.EncryptionConfiguration
	var err error
	AsAPIServer(func() { cfg, err = encryptionconfig.LoadEncryptionConfig(ctx, path, false, "apiserver-"+t.Name()) })
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
}

// AsAPIServer runs f, which stands for kube-apiserver, outside FIPS
// 140-only enforcement (hack/test.sh's FIPS pass), and so do the
// goroutines f starts: the apiserver is another process, and its data
// encryption (AES-GCM under nonces it picks) is not the plugin's.
func AsAPIServer(f func()) { fips140.WithoutEnforcement(f) }

// Stored is a Secret as etcd holds it.
type Stored struct {
	Key           value.Context // its etcd key
	Plain, InEtcd []byte        // the Secret, and what etcd holds
}

// WriteThrough stores a Secret through tr, retrying while the
// transformer makes its first Status/Encrypt round in the background.
func WriteThrough(t *testing.T, tr value.Transformer, name string) Stored {
	t.Helper()
	s := Stored{Key: value.DefaultContext("/registry/secrets/default/" + strings.ReplaceAll(name, " ", "-")), Plain: []byte("password of " + name)}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out []byte
		var err error
		AsAPIServer(func() { out, err = tr.TransformToStorage(ctx, s.Plain, s.Key) })
		cancel()
		if err == nil {
			if !bytes.HasPrefix(out, []byte("k8s:enc:kms:v2:trousseau:")) || bytes.Contains(out, s.Plain) {
				t.Fatalf("stored %q is not sealed by the plugin", out[:min(40, len(out))])
			}
			s.InEtcd = out
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("TransformToStorage of %q: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ReadBack reads s back through tr.
func ReadBack(t *testing.T, tr value.Transformer, s Stored) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	var err error
	AsAPIServer(func() { got, _, err = tr.TransformFromStorage(ctx, s.InEtcd, s.Key) })
	if err != nil || !bytes.Equal(got, s.Plain) {
		t.Fatalf("TransformFromStorage of %s: %v", s.Key.AuthenticatedData(), err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
