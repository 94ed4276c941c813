package gcpkms

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// TestServeOverThreeCustodians runs the real `trousseau serve` binary, 2
// of 3 over Cloud KMS (the fake, through the real client), AWS KMS
// (local-kms, through the AWS SDK) and a key file, and drives it with
// kube-apiserver's own client code: the KMS v2 client and the
// EncryptionConfiguration transformer. A primary-version rotation in
// Cloud KMS rotates the DEK once; with Cloud KMS gone the plugin keeps
// serving, decrypts everything written before, writes on, and restarts;
// with Cloud KMS back and AWS KMS gone, the same.
func TestServeOverThreeCustodians(t *testing.T) {
	gcp := startFake(t, testKey)
	aws := testutil.StartLocalKMS(t)
	dir, err := os.MkdirTemp("", "trs") // a socket path must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := testutil.BuildTrousseau(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "break-glass.key")
	if err := local.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "kms.sock")
	config := filepath.Join(dir, "config.yaml")
	writeFile(t, config, fmt.Sprintf(`socket: %s
stateDir: %s
threshold: 2
health: {listen: "127.0.0.1:%d", probeInterval: 1s, probeTimeout: 1s}
backends:
  - name: gcp-eu
    gcpkms: {keyName: %s, endpoint: "%s", timeout: 3s}
  - name: aws-eu
    awskms: {keyID: %s, endpoint: "%s"}
  - name: break-glass
    local: {keyFile: %s}
`, socket, filepath.Join(dir, "state"), testutil.FreePort(t), testKey, gcp.addr, testutil.AWSKey1ARN, aws.Endpoint(), keyFile))
	// AWS credentials from the environment, and nothing else of the
	// machine's: local-kms takes any.
	env := []string{
		"HOME=" + dir,
		"AWS_ACCESS_KEY_ID=AKIDTROUSSEAUTEST",
		"AWS_SECRET_ACCESS_KEY=not-a-secret",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	}

	p := startServe(t, bin, env, config, socket)
	tr := transformer(t, dir, socket)
	first := writeThrough(t, tr, "first")
	r, seed := p.encrypt(t)
	keyID := p.waitKeyID(t, func(string) bool { return true })

	// A new primary version in Cloud KMS: the prober sees it and rotates
	// the DEK, once.
	gcp.addVersion(t, testKey)
	rotated := p.waitKeyID(t, func(id string) bool { return id != keyID })
	time.Sleep(3 * time.Second) // three more probes
	if now := p.status(t); now.KeyID != rotated || now.Healthz != "ok" {
		t.Fatalf("after the rotation, key_id %q -> %q (healthz %q): rotated more than once", rotated, now.KeyID, now.Healthz)
	}
	second := writeThrough(t, tr, "second")
	r2, seed2 := p.encrypt(t)
	if r2.KeyID != rotated {
		t.Fatalf("new writes use key_id %q, want %q", r2.KeyID, rotated)
	}

	check := func(when string) {
		t.Helper()
		if st := p.status(t); st.Healthz != "ok" {
			t.Fatalf("%s: healthz %q, want ok with 2 of 3 backends up", when, st.Healthz)
		}
		for i, c := range []struct {
			r    *kmsservice.EncryptResponse
			seed []byte
		}{{r, seed}, {r2, seed2}} {
			if got, err := p.decrypt(c.r); err != nil || !bytes.Equal(got, c.seed) {
				t.Fatalf("%s: decrypt of seed %d: %v", when, i, err)
			}
		}
		readBack(t, tr, first)
		readBack(t, tr, second)
		readBack(t, tr, writeThrough(t, tr, when))
		// Another apiserver, with no cache, reads through the plugin.
		other := transformer(t, dir, socket)
		readBack(t, other, first)
		readBack(t, other, second)
	}

	gcp.stop()
	check("Cloud KMS stopped")

	// A restart with Cloud KMS still gone: the stored DEK unlocks with
	// AWS KMS and the key file.
	p.stop(t)
	p = startServe(t, bin, env, config, socket)
	if st := p.status(t); st.KeyID != rotated {
		t.Fatalf("after a restart without Cloud KMS, key_id %q, want %q", st.KeyID, rotated)
	}
	check("Cloud KMS stopped, plugin restarted")

	// Cloud KMS back, AWS KMS gone, and a restart: now Cloud KMS and the
	// key file unlock every DEK.
	gcp.restart(t)
	aws.Stop()
	p.stop(t)
	p = startServe(t, bin, env, config, socket)
	check("Cloud KMS back, AWS KMS stopped, plugin restarted")
	if log := p.out.String(); !strings.Contains(log, `"msg":"backend down","backend":"aws-eu"`) {
		t.Fatalf("the log does not say which backend is down:\n%s", log)
	}
}

// served is a `trousseau serve` process and kube-apiserver's KMS v2
// client on its socket.
type served struct {
	cmd    *exec.Cmd
	out    *testutil.Buffer
	exited chan struct{}
	client kmsservice.Service
}

func startServe(t *testing.T, bin string, env []string, config, socket string) *served {
	t.Helper()
	p := &served{out: &testutil.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "--config", config)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t) })
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
			t.Fatalf("serve exited:\n%s", p.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy (%v):\n%s", err, p.out)
		}
	}
}

// stop ends the process with SIGTERM, as kubelet does.
func (p *served) stop(t *testing.T) {
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
		t.Errorf("serve did not stop on SIGINT:\n%s", p.out)
	}
}

func (p *served) tryStatus() (*kmsservice.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.client.Status(ctx)
}

func (p *served) status(t *testing.T) *kmsservice.StatusResponse {
	t.Helper()
	st, err := p.tryStatus()
	if err != nil {
		t.Fatalf("Status: %v\n%s", err, p.out)
	}
	return st
}

// waitKeyID waits for a healthy Status whose key_id passes ok.
func (p *served) waitKeyID(t *testing.T, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := p.status(t)
		if st.Healthz == "ok" && st.KeyID != "" && ok(st.KeyID) {
			return st.KeyID
		}
		if time.Now().After(deadline) {
			t.Fatalf("key_id still %q (healthz %q):\n%s", st.KeyID, st.Healthz, p.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *served) encrypt(t *testing.T) (*kmsservice.EncryptResponse, []byte) {
	t.Helper()
	seed := []byte(t.Name() + time.Now().String())[:32]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.client.Encrypt(ctx, "uid", seed)
	if err != nil {
		t.Fatalf("Encrypt: %v\n%s", err, p.out)
	}
	return r, seed
}

func (p *served) decrypt(r *kmsservice.EncryptResponse) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations})
}

// transformer is what a kube-apiserver builds from an
// EncryptionConfiguration naming the plugin's socket.
func transformer(t *testing.T, dir, socket string) value.Transformer {
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
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, path, false, "apiserver-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
}

// stored is a Secret as etcd holds it.
type stored struct {
	key           value.Context
	plain, inEtcd []byte
}

// writeThrough stores a Secret through tr, retrying while the
// transformer makes its first Status/Encrypt round in the background.
func writeThrough(t *testing.T, tr value.Transformer, name string) stored {
	t.Helper()
	s := stored{key: value.DefaultContext("/registry/secrets/default/" + strings.ReplaceAll(name, " ", "-")), plain: []byte("password of " + name)}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := tr.TransformToStorage(ctx, s.plain, s.key)
		cancel()
		if err == nil {
			if !bytes.HasPrefix(out, []byte("k8s:enc:kms:v2:trousseau:")) || bytes.Contains(out, s.plain) {
				t.Fatalf("stored %q is not sealed by the plugin", out[:min(40, len(out))])
			}
			s.inEtcd = out
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("TransformToStorage of %q: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readBack(t *testing.T, tr value.Transformer, s stored) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, _, err := tr.TransformFromStorage(ctx, s.inEtcd, s.key)
	if err != nil || !bytes.Equal(got, s.plain) {
		t.Fatalf("TransformFromStorage of %s: %v", s.key.AuthenticatedData(), err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
