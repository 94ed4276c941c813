// Package plugintest runs a real Trousseau plugin (envelope, prober, gRPC
// server on a unix socket) over any backends, talking to it with
// kube-apiserver's own KMS v2 client, for backends' end-to-end tests.
package plugintest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Plugin is a running plugin and a kube-apiserver client of it.
type Plugin struct {
	Plugin   *grpcserver.Plugin
	Env      *envelope.Envelope
	Client   kmsservice.Service
	StateDir string
}

// Start runs a k-of-n plugin over backends until the test ends, and
// waits until it is healthy. The probe interval is an hour: call Probe.
func Start(t testing.TB, k int, backends ...kmsclients.Backend) *Plugin {
	return StartIn(t, tempDir(t), k, backends...)
}

// StartIn is Start with a given state directory (to test restarts).
func StartIn(t testing.TB, stateDir string, k int, backends ...kmsclients.Backend) *Plugin {
	t.Helper()
	env, err := envelope.New(envelope.Config{Threshold: k, Backends: backends, StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(tempDir(t), "kms.sock")
	p := grpcserver.NewPlugin(env, nil, grpcserver.Options{Socket: socket, ProbeInterval: time.Hour, ProbeTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plugin: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("plugin did not start: %v", err)
	}
	client, err := kmsv2client.NewGRPCService(ctx, "unix://"+socket, "trousseau", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out := &Plugin{Plugin: p, Env: env, Client: client, StateDir: stateDir}
	deadline := time.Now().Add(30 * time.Second)
	for p.Prober().Snapshot().Healthz != "ok" {
		if time.Now().After(deadline) {
			t.Fatalf("plugin not healthy: %s", p.Prober().Snapshot().Healthz)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// Probe runs one probe now and returns the plugin's healthz.
func (p *Plugin) Probe() string {
	p.Plugin.Prober().ProbeOnce(context.Background(), false)
	return p.Plugin.Prober().Snapshot().Healthz
}

// WantRotatedOnce probes after a backend key change (named by what) that
// must rotate the DEK: the plugin stays healthy, its key_id moves from
// before, once. It returns the new key_id.
func (p *Plugin) WantRotatedOnce(t testing.TB, before, what string) string {
	t.Helper()
	if h := p.Probe(); h != "ok" {
		t.Fatalf("healthz after %s: %q", what, h)
	}
	rotated := p.Env.KeyID()
	if rotated == before {
		t.Fatalf("%s did not rotate the DEK", what)
	}
	if h := p.Probe(); h != "ok" || p.Env.KeyID() != rotated {
		t.Fatalf("a second probe moved the key_id again (%q -> %q, healthz %q)", rotated, p.Env.KeyID(), h)
	}
	return rotated
}

// Encrypt sends a random 32-byte seed through kube-apiserver's client.
func (p *Plugin) Encrypt(t testing.TB) (*kmsservice.EncryptResponse, []byte) {
	t.Helper()
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i*7 + len(t.Name()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := p.Client.Encrypt(ctx, "test", seed)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return resp, seed
}

// Decrypt sends back what Encrypt returned.
func (p *Plugin) Decrypt(r *kmsservice.EncryptResponse) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Client.Decrypt(ctx, "test", &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations})
}

// LocalBackend makes a key-file backend.
func LocalBackend(t testing.TB, name string) *local.Backend {
	t.Helper()
	path := filepath.Join(tempDir(t), name+".key")
	if err := local.GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := local.New(context.Background(), name, local.Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tempDir is short, for unix socket paths (108 bytes at most).
func tempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "trs")
	if err != nil {
		t.Fatal(fmt.Errorf("temp dir: %w", err))
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
