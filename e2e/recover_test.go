package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// TestRecoverFromSnapshot is the disaster-recovery promise, end to end: a
// cluster writes 1,000 Secrets and 200 ConfigMaps (rotating its DEK
// midway), an etcd snapshot is taken, everything is stopped and the
// plugin's state is deleted; then `trousseau recover` with any 2 of the 3
// backends gets every object back, byte for byte, and 1 of 3 gets nothing.
func TestRecoverFromSnapshot(t *testing.T) {
	c := newCluster(t)
	c.startEtcd()
	c.writePluginConfig()
	c.startPlugin()
	c.startAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"})

	want := writeAcrossRotation(t, c, []string{"rec-a", "rec-b", "rec-c"}, 1000, 100)

	snap := filepath.Join(c.dir, "etcd.snapshot")
	takeSnapshot(t, c, snap)
	c.apiserver.stop()
	c.plugin.stop()
	c.etcd.stop()
	if err := os.RemoveAll(filepath.Join(c.dir, "state")); err != nil {
		t.Fatal(err)
	}

	for _, pair := range [][2]int{{0, 1}, {0, 2}, {1, 2}} {
		t.Run(fmt.Sprintf("backends %d and %d", pair[0], pair[1]), func(t *testing.T) {
			out := filepath.Join(c.dir, fmt.Sprintf("recovered-%d%d", pair[0], pair[1]))
			stdout, stderr, err := c.recover(t, pair[:], "--etcd-snapshot", snap, "--out-dir", out)
			if err != nil {
				t.Fatalf("recover: %v\n%s%s", err, stdout, stderr)
			}
			want.check(t, out)
		})
	}
	t.Run("one backend is not a quorum", func(t *testing.T) {
		_, stderr, err := c.recover(t, []int{1}, "--etcd-snapshot", snap, "--dry-run", "-q")
		if err == nil {
			t.Fatal("recover with 1 of 3 backends succeeded")
		}
		if !strings.Contains(stderr, "quorum not reached") {
			t.Fatalf("stderr does not say why:\n%s", stderr)
		}
	})
	t.Run("custody drill", func(t *testing.T) { drillSnapshot(t, c, snap, len(want.secrets)+len(want.configs)) })
}

// writeAcrossRotation makes the namespaces and writes n Secrets (every
// large-th one 128 KiB) and n/5 ConfigMaps across them, half before a
// SIGHUP rotation of the plugin and half once new writes carry the new
// key_id, and returns what was written.
func writeAcrossRotation(t *testing.T, c *cluster, namespaces []string, n, large int) *expected {
	want := newExpected()
	for _, ns := range namespaces {
		if _, err := c.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeObjects(t, c, want, namespaces, 0, n/2, large)
	firstKey := c.apiserverKeyID(t, namespaces[0], "secret-0")
	c.plugin.signal(syscall.SIGHUP)
	eventually(t, 150*time.Second, "new writes carry a new key_id", func(ctx context.Context) error {
		time.Sleep(2 * time.Second)
		name := fmt.Sprintf("probe-%s", randomHex(4))
		want.addSecret(t, c, namespaces[0], name, map[string][]byte{"k": []byte(name)})
		if id := c.apiserverKeyID(t, namespaces[0], name); id == firstKey {
			return fmt.Errorf("still %s", id)
		}
		return nil
	})
	writeObjects(t, c, want, namespaces, n/2, n, large)
	t.Logf("wrote %d secrets and %d configmaps across a DEK rotation", len(want.secrets), len(want.configs))
	return want
}

// drillSnapshot: a drill of the snapshot's two DEKs with every backend,
// then with one and two key files replaced (lost in a safe).
func drillSnapshot(t *testing.T, c *cluster, snap string, objects int) {
	all := []int{0, 1, 2}
	drill := func(args ...string) (string, int) {
		out, errOut, err := c.tool(t, "drill", all, append([]string{"--etcd-snapshot", snap, "-q"}, args...)...)
		var ee *exec.ExitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ee):
			return out, ee.ExitCode()
		}
		t.Fatalf("drill: %v\n%s", err, errOut)
		return "", -1
	}
	out, code := drill()
	if code != 0 || strings.Count(out, "local-a=ok local-b=ok local-c=ok") != 2 {
		t.Fatalf("every backend: exit %d\n%s", code, out)
	}
	replace := func(i int) {
		c.rename(c.keys[i], c.keys[i]+".lost")
		if err := local.GenerateKeyFile(c.keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	replace(2)
	out, code = drill()
	if code != 1 || strings.Count(out, "local-c=invalid") != 2 || strings.Count(out, "0 (below 1)") != 2 {
		t.Fatalf("one key file replaced: exit %d\n%s", code, out)
	}
	replace(1)
	out, code = drill()
	if code != 2 || strings.Count(out, "UNRECOVERABLE") != 2 {
		t.Fatalf("two key files replaced: exit %d\n%s", code, out)
	}
	jsonOut, code := drill("-o", "json")
	var report struct {
		ExitCode int
		DEKs     []struct {
			Objects int
			Margin  int
		}
	}
	if err := json.Unmarshal([]byte(jsonOut), &report); err != nil || code != 2 || report.ExitCode != 2 || len(report.DEKs) != 2 {
		t.Fatalf("json: exit %d, %v\n%s", code, err, jsonOut)
	}
	total := 0
	for _, d := range report.DEKs {
		total += d.Objects
		if d.Margin >= 0 {
			t.Errorf("a DEK with two of three keys lost has margin %d", d.Margin)
		}
	}
	if total < objects {
		t.Errorf("the DEKs protect %d objects, want at least the %d written", total, objects)
	}
}

// expected is what the API returned for each object.
type expected struct {
	mu      sync.Mutex
	secrets map[string]map[string][]byte // ns/name
	configs map[string]map[string]string
}

func newExpected() *expected {
	return &expected{secrets: map[string]map[string][]byte{}, configs: map[string]map[string]string{}}
}

func (e *expected) addSecret(t *testing.T, c *cluster, ns, name string, data map[string][]byte) {
	got, err := c.kube.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("create secret %s/%s: %v", ns, name, err)
		return
	}
	e.mu.Lock()
	e.secrets[ns+"/"+name] = got.Data
	e.mu.Unlock()
}

func (e *expected) addConfigMap(t *testing.T, c *cluster, ns, name string, data map[string]string) {
	got, err := c.kube.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("create configmap %s/%s: %v", ns, name, err)
		return
	}
	e.mu.Lock()
	e.configs[ns+"/"+name] = got.Data
	e.mu.Unlock()
}

// writeObjects creates secrets [from, to) and every fifth index a
// ConfigMap, spread over the namespaces, with some binary and some large
// values, from a few goroutines.
func writeObjects(t *testing.T, c *cluster, e *expected, namespaces []string, from, to, large int) {
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ns := namespaces[i%len(namespaces)]
				data := map[string][]byte{"password": []byte("pw-" + randomHex(8))}
				if i%3 == 0 {
					data["binary"] = []byte{0, 1, 2, 0xff, byte(i), byte(i >> 8)}
				}
				if i%large == 7 {
					data["big"] = bytes.Repeat([]byte(randomHex(32)), 2000) // 128 KiB
				}
				e.addSecret(t, c, ns, fmt.Sprintf("secret-%d", i), data)
				if i%5 == 0 {
					e.addConfigMap(t, c, ns, fmt.Sprintf("config-%d", i), map[string]string{"setting": "v-" + randomHex(8)})
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// apiserverKeyID reads the key_id stored with a Secret.
func (c *cluster) apiserverKeyID(t *testing.T, ns, name string) string {
	w := &workload{c: c, prefix: "/registry", ns: ns}
	return w.storedKeyID(t, "secrets", name)
}

func takeSnapshot(t *testing.T, c *cluster, path string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := c.etcdCli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.ReadFrom(rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d bytes", n)
}

// recover runs the trousseau binary's recover with a config holding only
// the given backends.
func (c *cluster) recover(t *testing.T, backends []int, args ...string) (string, string, error) {
	return c.tool(t, "recover", backends, args...)
}

// tool runs `trousseau <command>` with a config of the given backends.
func (c *cluster) tool(t *testing.T, command string, backends []int, args ...string) (string, string, error) {
	var b strings.Builder
	b.WriteString("threshold: 1\nbackends:\n")
	for _, i := range backends {
		fmt.Fprintf(&b, "  - name: local-%c\n    local: {keyFile: %s}\n", 'a'+i, c.keys[i])
	}
	cfg := filepath.Join(c.dir, fmt.Sprintf("recover-%v.yaml", backends))
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, trousseauBin, append([]string{command, "--config", cfg}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s with backends %v took %s; summary:\n%s", command, backends, time.Since(start).Round(time.Millisecond), lastLines(stderr.String(), 12))
	return stdout.String(), stderr.String(), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// check compares every recovered manifest with what the API returned.
func (e *expected) check(t *testing.T, dir string) {
	for key, data := range e.secrets {
		ns, name, _ := strings.Cut(key, "/")
		var s corev1.Secret
		readManifest(t, filepath.Join(dir, ns, "secrets", name+".yaml"), &s)
		if len(s.Data) != len(data) {
			t.Fatalf("secret %s: %d keys recovered, want %d", key, len(s.Data), len(data))
		}
		for k, v := range data {
			if !bytes.Equal(s.Data[k], v) {
				t.Fatalf("secret %s key %s recovered different", key, k)
			}
		}
		if s.ResourceVersion != "" || s.UID != "" || len(s.ManagedFields) != 0 {
			t.Fatalf("secret %s keeps server-managed fields", key)
		}
	}
	for key, data := range e.configs {
		ns, name, _ := strings.Cut(key, "/")
		var cm corev1.ConfigMap
		readManifest(t, filepath.Join(dir, ns, "configmaps", name+".yaml"), &cm)
		if cm.Data["setting"] != data["setting"] {
			t.Fatalf("configmap %s recovered different", key)
		}
	}
	t.Logf("all %d secrets and %d configmaps recovered equal", len(e.secrets), len(e.configs))
}

func readManifest(t *testing.T, path string, into any) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("recovered manifest: %v", err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
