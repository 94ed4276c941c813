package kmsplugin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// buildTrousseau builds the real binary from the repository's root.
func buildTrousseau(t *testing.T) string {
	t.Helper()
	bin, err := testutil.BuildTrousseau(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startTrousseau runs `trousseau serve --dev` until the test ends and
// returns its socket's endpoint once it answers healthy.
func startTrousseau(t *testing.T, bin string) string {
	t.Helper()
	dir := shortTemp(t)
	socket := filepath.Join(dir, "kms.sock")
	var logs testutil.Buffer
	cmd := exec.Command(bin, "serve", "--dev", "--socket", socket, "--state-dir", filepath.Join(dir, "state"), "--health-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	endpoint := "unix://" + socket
	probe := newTestBackend(t, "probe", endpoint)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := probe.Probe(ctxFor(t, 5*time.Second))
		if err == nil {
			return endpoint
		}
		select {
		case err := <-exited:
			t.Fatalf("trousseau exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("trousseau not healthy: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTrousseauAsCustodian uses the real trousseau binary, in dev mode,
// as the custodian: through KMS v2 and v1beta1, the round trip and the
// conformance suite.
func TestTrousseauAsCustodian(t *testing.T) {
	bin := buildTrousseau(t)
	first, second := startTrousseau(t, bin), startTrousseau(t, bin)
	for _, api := range []string{APIVersionV2, APIVersionV1} {
		withAPI := func(c *Config) { c.APIVersion = api }
		t.Run(api, func(t *testing.T) {
			b := newTestBackend(t, "trousseau", first, withAPI)
			sh := share(t)
			w, err := b.Wrap(ctxFor(t, 10*time.Second), sh, []byte("dek=9;share=1"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Unwrap(ctxFor(t, 10*time.Second), w, []byte("dek=9;share=1"))
			if err != nil || !bytes.Equal(got, sh) {
				t.Fatalf("round trip through trousseau: %v", err)
			}
			id, err := b.Probe(ctxFor(t, 10*time.Second))
			if err != nil || id != w.KeyIdentity || !strings.HasPrefix(id, "kmsplugin:"+first) {
				t.Fatalf("Probe: %q %v, Wrap: %q", id, err, w.KeyIdentity)
			}
			if s, _ := unmarshal(w.Ciphertext); api == APIVersionV2 && len(s.annotations["shares.trousseau.io"]) == 0 {
				t.Fatal("the custodian's annotation was not kept")
			}
			kmstest.Run(t, kmstest.Harness{
				BackendKind: "kmsplugin",
				New:         func(t *testing.T) kmsclients.Backend { return newTestBackend(t, "trousseau", first, withAPI) },
				OtherKey:    func(t *testing.T) kmsclients.Backend { return newTestBackend(t, "other", second, withAPI) },
				Unavailable: func(t *testing.T) kmsclients.Backend {
					return newTestBackend(t, "gone", "unix://"+filepath.Join(shortTemp(t), "none.sock"), withAPI)
				},
			})
		})
	}
	if _, err := os.Stat(strings.TrimPrefix(first, "unix://")); err != nil {
		t.Fatal(err)
	}
}
