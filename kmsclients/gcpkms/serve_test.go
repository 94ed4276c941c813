package gcpkms

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/internal/plugintest"
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
	dir, bin := plugintest.BuildInShortDir(t)
	keyFile := filepath.Join(dir, "break-glass.key")
	if err := local.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "kms.sock")
	config := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`socket: %s
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
`, socket, filepath.Join(dir, "state"), testutil.FreePort(t), testKey, gcp.addr, testutil.AWSKey1ARN, aws.Endpoint(), keyFile)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
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

	p := plugintest.StartServe(t, bin, env, config, socket)
	tr := plugintest.Transformer(t, dir, socket)
	first := plugintest.WriteThrough(t, tr, "first")
	r, seed := p.Encrypt(t)
	keyID := p.WaitKeyID(t, func(string) bool { return true })

	// A new primary version in Cloud KMS: the prober sees it and rotates
	// the DEK, once.
	gcp.addVersion(t, testKey)
	rotated := p.WaitKeyID(t, func(id string) bool { return id != keyID })
	time.Sleep(3 * time.Second) // three more probes
	if now := p.Status(t); now.KeyID != rotated || now.Healthz != "ok" {
		t.Fatalf("after the rotation, key_id %q -> %q (healthz %q): rotated more than once", rotated, now.KeyID, now.Healthz)
	}
	second := plugintest.WriteThrough(t, tr, "second")
	r2, seed2 := p.Encrypt(t)
	if r2.KeyID != rotated {
		t.Fatalf("new writes use key_id %q, want %q", r2.KeyID, rotated)
	}

	check := func(when string) {
		t.Helper()
		if st := p.Status(t); st.Healthz != "ok" {
			t.Fatalf("%s: healthz %q, want ok with 2 of 3 backends up", when, st.Healthz)
		}
		for i, c := range []struct {
			r    *kmsservice.EncryptResponse
			seed []byte
		}{{r, seed}, {r2, seed2}} {
			if got, err := p.Decrypt(c.r); err != nil || !bytes.Equal(got, c.seed) {
				t.Fatalf("%s: decrypt of seed %d: %v", when, i, err)
			}
		}
		plugintest.ReadBack(t, tr, first)
		plugintest.ReadBack(t, tr, second)
		plugintest.ReadBack(t, tr, plugintest.WriteThrough(t, tr, when))
		// Another apiserver, with no cache, reads through the plugin.
		other := plugintest.Transformer(t, dir, socket)
		plugintest.ReadBack(t, other, first)
		plugintest.ReadBack(t, other, second)
	}

	gcp.stop()
	check("Cloud KMS stopped")

	// A restart with Cloud KMS still gone: the stored DEK unlocks with
	// AWS KMS and the key file.
	p.Stop(t)
	p = plugintest.StartServe(t, bin, env, config, socket)
	if st := p.Status(t); st.KeyID != rotated {
		t.Fatalf("after a restart without Cloud KMS, key_id %q, want %q", st.KeyID, rotated)
	}
	check("Cloud KMS stopped, plugin restarted")

	// Cloud KMS back, AWS KMS gone, and a restart: now Cloud KMS and the
	// key file unlock every DEK.
	gcp.restart(t)
	aws.Stop()
	p.Stop(t)
	p = plugintest.StartServe(t, bin, env, config, socket)
	check("Cloud KMS back, AWS KMS stopped, plugin restarted")
	if log := p.Out.String(); !strings.Contains(log, `"msg":"backend down","backend":"aws-eu"`) {
		t.Fatalf("the log does not say which backend is down:\n%s", log)
	}
}
