// Package e2e runs Trousseau behind a real kube-apiserver and etcd, built
// from the Go module proxy by hack/kube.sh: Secrets and ConfigMaps go
// through the apiserver's real KMS v2 (and v1) code, into a real etcd, and
// back.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"

	"github.com/trousseau-io/trousseau/kmsclients/local"
)

const v2Prefix = "k8s:enc:kms:v2:trousseau:"

// TestKMSv2 is the main scenario, step by step on one cluster.
func TestKMSv2(t *testing.T) {
	c := newCluster(t)
	c.startEtcd()
	c.writePluginConfig()
	c.startPlugin()
	c.startAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"})
	w := newWorkload(t, c, "/registry", "e2e-v2")

	var keyID string
	step(t, "1 stored encrypted and read back", func(t *testing.T) {
		w.createMany(t, "first", 5)
		keyID = w.checkStored(t, v2Prefix, "")
		w.checkReadBack(t)
		eventually(t, 30*time.Second, "readyz/kms-providers", func(ctx context.Context) error {
			_, err := c.readyz(ctx, "kms-providers")
			return err
		})
		t.Logf("objects stored with prefix %s and key_id %s", v2Prefix, keyID)
	})

	step(t, "2 one backend down", func(t *testing.T) {
		c.backendDown(1)
		defer c.backendUp(1)
		eventually(t, 15*time.Second, "plugin sees local-b down", func(ctx context.Context) error {
			return metricIs(ctx, c, `trousseau_backends_reachable`, "2")
		})
		w.createMany(t, "one-down", 3)
		w.checkStored(t, v2Prefix, keyID)
		w.checkReadBack(t)
		if _, err := c.readyz(context.Background(), "kms-providers"); err != nil {
			t.Fatalf("kms-providers unhealthy with one backend down: %v", err)
		}
	})

	step(t, "3 plugin killed and restarted", func(t *testing.T) {
		c.restartPlugin()
		w.createMany(t, "after-restart", 3)
		w.checkStored(t, v2Prefix, keyID) // same key_id: no rotation on restart
		w.checkReadBack(t)
	})

	step(t, "4 rotation and storage migration", func(t *testing.T) {
		c.plugin.signal(syscall.SIGHUP)
		newKeyID := w.waitNewKeyID(t, "probe-rotation", keyID)
		t.Logf("key_id rotated to %s", newKeyID)
		w.migrate(t)
		w.checkStored(t, v2Prefix, newKeyID)
		w.checkReadBack(t)
		keyID = newKeyID
	})

	step(t, "6 quorum lost, then recovered", func(t *testing.T) {
		c.backendDown(0)
		c.backendDown(2)
		// The apiserver polls Status every 60 s while healthy, then its
		// health check reports the plugin's reason.
		eventually(t, 150*time.Second, "kms-providers unhealthy", func(ctx context.Context) error {
			if _, err := c.readyz(ctx, "kms-providers"); err == nil {
				return fmt.Errorf("still healthy")
			}
			return nil
		})
		// The apiserver withholds the reason from HTTP clients and logs it
		// when its aggregated /readyz fails.
		eventually(t, 30*time.Second, "Trousseau's reason in kube-apiserver's log", func(ctx context.Context) error {
			c.readyz(ctx, "")
			if !c.apiserver.logContains("quorum lost: 1 of 3 backends reachable, 2 needed") {
				return fmt.Errorf("not logged yet")
			}
			return nil
		})
		c.backendUp(0)
		c.backendUp(2)
		eventually(t, 150*time.Second, "kms-providers healthy again", func(ctx context.Context) error {
			_, err := c.readyz(ctx, "kms-providers")
			return err
		})
		w.createMany(t, "after-recovery", 2)
		w.checkStored(t, v2Prefix, keyID)
		w.checkReadBack(t) // nothing lost
	})

	step(t, "7 two key files replaced: the stored DEK is set aside, not stuck", func(t *testing.T) {
		old := w.snapshotNames()
		c.plugin.signal(syscall.SIGKILL)
		<-c.plugin.done
		for _, i := range []int{1, 2} {
			c.rename(c.keys[i], c.keys[i]+".orig")
			if err := local.GenerateKeyFile(c.keys[i]); err != nil {
				t.Fatal(err)
			}
		}
		c.startPlugin() // ready means a new DEK was made
		if !c.plugin.logContains("cannot be unlocked although every backend answered") || !c.plugin.logContains(keyID) {
			t.Fatalf("no ERROR naming the unusable DEK in the plugin's log:\n%s", c.plugin.tail(20))
		}
		newKeyID := w.waitNewKeyID(t, "after-new-keys", keyID)
		t.Logf("new DEK %s after the key files were replaced", newKeyID)
		// kube-apiserver caches decrypted seeds: restart it so that the old
		// objects go through the plugin again. It will not become ready:
		// its Secret informer cannot list objects it cannot decrypt.
		c.restartAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry", liveOnly: true})
		if _, err := c.kube.CoreV1().Secrets(w.ns).Get(context.Background(), old[0], metav1.GetOptions{}); err == nil {
			t.Fatal("an object under the unusable DEK read back with the wrong keys")
		}
		eventually(t, 10*time.Second, "the failed read explained in the plugin's log", func(context.Context) error {
			if !c.plugin.logContains("quorum not reached") {
				return fmt.Errorf("not logged yet")
			}
			return nil
		})
		// The old key files turn up again: the old objects read back.
		for _, i := range []int{1, 2} {
			c.rename(c.keys[i], c.keys[i]+".new")
			c.rename(c.keys[i]+".orig", c.keys[i])
		}
		eventually(t, 90*time.Second, "old objects readable with the old keys back", func(ctx context.Context) error {
			for _, name := range old {
				if _, err := c.kube.CoreV1().Secrets(w.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
					return err
				}
			}
			return nil
		})
		eventually(t, 2*time.Minute, "kube-apiserver ready once every Secret decrypts", func(ctx context.Context) error {
			_, err := c.readyz(ctx, "")
			return err
		})
	})

	step(t, "deploy manifests pass a server-side dry run", func(t *testing.T) {
		// No kube-controller-manager runs here to create the default
		// ServiceAccount that admission wants for a Pod.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "kube-system"}}
		if _, err := c.kube.CoreV1().ServiceAccounts("kube-system").Create(context.Background(), sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		dryRunDeployManifests(t, c)
	})
}

// TestKMSv1 stores through the deprecated KMS v1 API (feature gate KMSv1).
func TestKMSv1(t *testing.T) {
	c := newCluster(t)
	c.startEtcd()
	c.writePluginConfig()
	c.startPlugin()
	c.startAPIServer(apiserverOptions{kmsAPIVersion: "v1", etcdPrefix: "/registry", featureGates: "KMSv1=true"})
	w := newWorkload(t, c, "/registry", "e2e-v1")
	w.createMany(t, "v1", 4)
	w.checkStored(t, "k8s:enc:kms:v1:trousseau:", "")
	w.checkReadBack(t)
}

// step runs one named step; a failed step stops the scenario, since
// the next ones build on it.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Logf("==== step %s", name)
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// workload creates Secrets and ConfigMaps in one namespace and remembers
// what it wrote.
type workload struct {
	c       *cluster
	prefix  string
	ns      string
	secrets map[string]map[string][]byte
	configs map[string]map[string]string
	n       int
}

func newWorkload(t *testing.T, c *cluster, prefix, ns string) *workload {
	_, err := c.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &workload{c: c, prefix: prefix, ns: ns, secrets: map[string]map[string][]byte{}, configs: map[string]map[string]string{}}
}

// create makes one Secret and one ConfigMap and returns their name.
func (w *workload) create(t *testing.T, stem string) string {
	t.Helper()
	w.n++
	name := fmt.Sprintf("%s-%d", stem, w.n)
	data := map[string][]byte{"password": []byte("canary-" + randomHex(12)), "binary": {0, 1, 2, 0xff, 0xfe}}
	ctx := context.Background()
	if _, err := w.c.kube.CoreV1().Secrets(w.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret %s: %v", name, err)
	}
	cm := map[string]string{"config": "cm-canary-" + randomHex(12)}
	if _, err := w.c.kube.CoreV1().ConfigMaps(w.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: cm}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap %s: %v", name, err)
	}
	w.secrets[name], w.configs[name] = data, cm
	return name
}

func (w *workload) createMany(t *testing.T, stem string, n int) {
	for range n {
		w.create(t, stem)
	}
}

func (w *workload) raw(t *testing.T, resource, name string) []byte {
	key := fmt.Sprintf("%s/%s/%s/%s", w.prefix, resource, w.ns, name)
	resp, err := w.c.etcdCli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd get %s: %v (%d values)", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].Value
}

// storedKeyID reads the key_id kube-apiserver stored with an object.
func (w *workload) storedKeyID(t *testing.T, resource, name string) string {
	id, err := storedKeyIDOf(w.raw(t, resource, name))
	if err != nil {
		t.Fatalf("%s/%s: %v", resource, name, err)
	}
	return id
}

// storedKeyIDOf reads the key_id of a value kube-apiserver stored in etcd.
func storedKeyIDOf(v []byte) (string, error) {
	if !bytes.HasPrefix(v, []byte(v2Prefix)) {
		return "", fmt.Errorf("stored without %s", v2Prefix)
	}
	var obj kmstypes.EncryptedObject
	if err := proto.Unmarshal(v[len(v2Prefix):], &obj); err != nil {
		return "", fmt.Errorf("stored value is not an EncryptedObject: %v", err)
	}
	return obj.KeyID, nil
}

// checkStored checks every object in etcd: the prefix, no plaintext, and
// (for v2, if wantKeyID is set) the key_id. It returns the key_id seen.
func (w *workload) checkStored(t *testing.T, prefix, wantKeyID string) string {
	t.Helper()
	var seen string
	check := func(resource, name string, plaintexts ...[]byte) {
		v := w.raw(t, resource, name)
		if !bytes.HasPrefix(v, []byte(prefix)) {
			t.Fatalf("%s/%s stored as %q..., want prefix %s", resource, name, v[:min(40, len(v))], prefix)
		}
		for _, p := range plaintexts {
			if bytes.Contains(v, p) {
				t.Fatalf("%s/%s: plaintext visible in etcd", resource, name)
			}
		}
		if strings.HasPrefix(prefix, "k8s:enc:kms:v2:") {
			id := w.storedKeyID(t, resource, name)
			if wantKeyID != "" && id != wantKeyID {
				t.Fatalf("%s/%s stored with key_id %s, want %s", resource, name, id, wantKeyID)
			}
			seen = id
		}
	}
	for name, data := range w.secrets {
		check("secrets", name, data["password"])
	}
	for name, data := range w.configs {
		check("configmaps", name, []byte(data["config"]))
	}
	return seen
}

// waitNewKeyID writes an object every ~2 s until new writes are stored
// under a key_id other than old (kube-apiserver polls Status every 60 s
// while healthy), and returns it.
func (w *workload) waitNewKeyID(t *testing.T, stem, old string) string {
	var id string
	eventually(t, 150*time.Second, "new writes carry a new key_id", func(context.Context) error {
		time.Sleep(2 * time.Second)
		id = w.storedKeyID(t, "secrets", w.create(t, stem))
		if id == old {
			return fmt.Errorf("still %s", id)
		}
		return nil
	})
	return id
}

// snapshotNames lists the Secrets written so far.
func (w *workload) snapshotNames() []string {
	var out []string
	for name := range w.secrets {
		out = append(out, name)
	}
	return out
}

// checkReadBack reads every object through the API and compares it.
func (w *workload) checkReadBack(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for name, data := range w.secrets {
		s, err := w.c.kube.CoreV1().Secrets(w.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get secret %s: %v", name, err)
		}
		for k, v := range data {
			if !bytes.Equal(s.Data[k], v) {
				t.Fatalf("secret %s key %s read back different", name, k)
			}
		}
	}
	for name, data := range w.configs {
		cm, err := w.c.kube.CoreV1().ConfigMaps(w.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get configmap %s: %v", name, err)
		}
		if cm.Data["config"] != data["config"] {
			t.Fatalf("configmap %s read back different", name)
		}
	}
}

// migrate rewrites every object with a no-op update: kube-apiserver sees
// the old key_id as stale and stores the object under the current one.
// This is `kubectl get secrets -A -o json | kubectl replace -f -`.
func (w *workload) migrate(t *testing.T) {
	ctx := context.Background()
	secrets, err := w.c.kube.CoreV1().Secrets(w.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range secrets.Items {
		if _, err := w.c.kube.CoreV1().Secrets(w.ns).Update(ctx, &secrets.Items[i], metav1.UpdateOptions{}); err != nil {
			t.Fatalf("migrate secret %s: %v", secrets.Items[i].Name, err)
		}
	}
	cms, err := w.c.kube.CoreV1().ConfigMaps(w.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range cms.Items {
		if _, err := w.c.kube.CoreV1().ConfigMaps(w.ns).Update(ctx, &cms.Items[i], metav1.UpdateOptions{}); err != nil {
			t.Fatalf("migrate configmap %s: %v", cms.Items[i].Name, err)
		}
	}
	t.Logf("migrated %d secrets and %d configmaps", len(secrets.Items), len(cms.Items))
}

// metricIs polls Trousseau's /metrics for a gauge value.
func metricIs(ctx context.Context, c *cluster, name, value string) error {
	body, err := httpGet(ctx, "http://"+c.pluginHC+"/metrics")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			if strings.TrimSpace(strings.TrimPrefix(line, name)) == value {
				return nil
			}
			return fmt.Errorf("%s", line)
		}
	}
	return fmt.Errorf("%s not in /metrics", name)
}
