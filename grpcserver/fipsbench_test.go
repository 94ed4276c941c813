package grpcserver_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"
)

// benchBinaries are the plugin built twice, once on the frozen FIPS
// module: built once per benchmark process (the benchmark function runs
// several times), into one fixed directory that the next run reuses.
var benchBinaries = sync.OnceValues(func() (map[string]string, error) {
	dir := filepath.Join(os.TempDir(), "trousseau-fipsbench")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for name, gofips := range map[string]string{"default": "off", "fips": "v1.0.0"} {
		bins[name] = filepath.Join(dir, "trousseau-"+name)
		cmd := exec.Command("go", "build", "-o", bins[name], "./cmd/trousseau")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "GOFIPS140="+gofips)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build with GOFIPS140=%s: %v\n%s", gofips, err, out)
		}
	}
	return bins, nil
})

// startBinary runs `serve --dev` of bin with godebug and returns
// kube-apiserver's own client for it, once the plugin is healthy.
func startBinary(b *testing.B, bin, godebug string) kmsservice.Service {
	dir, err := os.MkdirTemp("", "trsb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "kms.sock")
	log, _ := os.Create(filepath.Join(dir, "log"))
	cmd := exec.Command(bin, "serve", "--dev", "--socket", socket, "--state-dir", filepath.Join(dir, "state"), "--health-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Stat(socket)
		var svc kmsservice.Service
		if err == nil {
			svc, err = kmsv2client.NewGRPCService(ctx, "unix://"+socket, "trousseau", 3*time.Second)
		}
		if err == nil {
			if st, err := svc.Status(ctx); err == nil && st.Healthz == "ok" {
				return svc
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			b.Fatalf("%s with GODEBUG=%s did not become healthy:\n%s", bin, godebug, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkDecryptWarmFIPSVsDefault drives the FIPS build under
// GODEBUG=fips140=only and the default build through their sockets, one
// warm Decrypt each per iteration, and reports the ratio (x-default).
func BenchmarkDecryptWarmFIPSVsDefault(b *testing.B) {
	bins, err := benchBinaries()
	if err != nil {
		b.Fatal(err)
	}
	fips, plain := startBinary(b, bins["fips"], "fips140=only"), startBinary(b, bins["default"], "fips140=off")
	ctx := context.Background()
	seed := make([]byte, 32)
	rand.Read(seed)
	decrypt := func(svc kmsservice.Service) func() error {
		r, err := svc.Encrypt(ctx, "u", seed)
		if err != nil {
			b.Fatal(err)
		}
		req := &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}
		return func() error { _, err := svc.Decrypt(ctx, "u", req); return err }
	}
	interleaveAs(b, decrypt(fips), decrypt(plain), "fips", "default", "default")
}
