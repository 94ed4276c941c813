//go:build soak

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/internal/soak"
)

// migrate rewrites every Secret and ConfigMap through one node, as
// `kubectl get -A -o json | kubectl replace -f -` does (an update at the
// read resourceVersion; on a conflict with a writer, read and try
// again), then checks that nothing is stored under another key_id.
func (r *soakRig) migrate(f soak.Fault) {
	n := r.node(f.Targets[0])
	agreed, _ := r.keyIDWithin(n, time.Minute)
	end := r.rec.FaultStarted(f.Kind, f.Targets, time.Now())
	count := 0
	for _, res := range []string{"secrets", "configmaps"} {
		count += r.migrateResource(n, res)
	}
	end(time.Now(), "")
	r.rec.Update(func(rep *soak.Report) { rep.Migrations++ })
	r.logf("migrated %d objects through %s", count, n.name)
	k1, err1 := r.keyIDWithin(r.nodes[0], time.Minute)
	k2, err2 := r.keyIDWithin(r.nodes[1], time.Minute)
	if err1 != nil || err2 != nil || k1 != agreed || k2 != agreed {
		r.logf("%s: the nodes moved (%s, %s; was %s): stale key_ids not checked", f, k1, k2, agreed)
		return
	}
	ids, err := r.storedKeyIDs()
	if err != nil {
		r.rec.Problem("%s: etcd scan: %v", f, err)
		return
	}
	for key, id := range ids {
		if id != agreed {
			r.rec.Update(func(rep *soak.Report) { rep.StaleKeyIDs++ })
			r.rec.Problem("%s: %s stored under %s after the migration, want %s", f, key, id, agreed)
		}
	}
}

// migrateResource rewrites every object of one resource; it returns how
// many it rewrote.
func (r *soakRig) migrateResource(n *soakNode, res string) int {
	var keys []soak.Object
	r.retry(n, "migrate-list", func(ctx context.Context) error {
		keys = keys[:0]
		kube := n.kube.Load().CoreV1()
		if res == "secrets" {
			l, err := kube.Secrets("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, s := range l.Items {
				keys = append(keys, soak.Object{Resource: res, Namespace: s.Namespace, Name: s.Name})
			}
			return nil
		}
		l, err := kube.ConfigMaps("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, c := range l.Items {
			keys = append(keys, soak.Object{Resource: res, Namespace: c.Namespace, Name: c.Name})
		}
		return nil
	})
	for _, o := range keys {
		r.retry(n, "migrate", func(ctx context.Context) error { return r.rewrite(ctx, n, o) })
	}
	return len(keys)
}

// rewrite reads o and writes it back unchanged at the read version.
func (r *soakRig) rewrite(ctx context.Context, n *soakNode, o soak.Object) error {
	kube := n.kube.Load().CoreV1()
	var err error
	if o.Resource == "secrets" {
		var s *corev1.Secret
		if s, err = kube.Secrets(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
			_, err = kube.Secrets(o.Namespace).Update(ctx, s, metav1.UpdateOptions{})
		}
	} else {
		var c *corev1.ConfigMap
		if c, err = kube.ConfigMaps(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
			_, err = kube.ConfigMaps(o.Namespace).Update(ctx, c, metav1.UpdateOptions{})
		}
	}
	if apierrors.IsNotFound(err) {
		return nil // deleted since the list: kube-apiserver's own objects
	}
	return err
}

// retry runs f until it succeeds, for up to ten minutes; each failure is
// recorded. A conflict is retried at once and is not a failure: the API
// refused to overwrite a newer write, as it must.
func (r *soakRig) retry(n *soakNode, op string, f func(ctx context.Context) error) {
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err := f(ctx)
		cancel()
		switch {
		case err == nil:
			r.rec.Request(op, n.name, time.Now(), "")
			return
		case apierrors.IsConflict(err):
			continue
		}
		r.failed(op, n, soak.Object{}, err)
		time.Sleep(2 * time.Second)
	}
	r.rec.Problem("%s through %s: no success in 10m", op, n.name)
}

// finalCheck names the final checks where a fault would be named.
const finalCheck soak.Kind = "final"

// final waits for both nodes, then checks everything once more: every
// object through both nodes, etcd raw, the key_id agreement, recovery
// from a snapshot by each pair of custodians, and the plugins' logs.
func (r *soakRig) final() {
	r.logf("final checks")
	for _, n := range r.nodes {
		if err := r.waitPluginReady(n, 5*time.Minute); err != nil {
			r.rec.Problem("final: %s's plugin not ready: %v", n.name, err)
		}
	}
	r.converge(soak.Fault{Kind: finalCheck}, time.Now(), "")
	want := r.checkAll("final")
	r.scanEtcd()
	snap := filepath.Join(r.nodes[0].c.dir, "final.snapshot")
	takeSnapshot(r.t, r.nodes[0].c, snap)
	for _, pair := range [][2]string{{soak.Vault, soak.AWS}, {soak.Vault, soak.KeyFile}, {soak.AWS, soak.KeyFile}} {
		r.recoverWith(pair, snap, want)
	}
	for _, n := range r.nodes {
		r.scanLog(n.c.plugin.logPath)
	}
}

// recoverWith runs `trousseau recover` with two custodians on the
// snapshot and compares every object of the history with what the API
// returned at the end.
func (r *soakRig) recoverWith(pair [2]string, snap string, want map[soak.Object]map[string][]byte) {
	name := pair[0] + "+" + pair[1]
	dir := filepath.Join(r.nodes[0].c.dir, "recover-"+name)
	cfg := dir + ".yaml"
	if err := os.WriteFile(cfg, []byte("threshold: 1\nbackends:\n"+r.custodianBackends(pair[0], pair[1])), 0o600); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, trousseauBin, "recover", "--config", cfg, "--etcd-snapshot", snap, "--out-dir", dir)
	cmd.Env = append(os.Environ(), awsEnv(dir)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		r.rec.Problem("recover with %s: %v\n%s", name, err, lastLines(stderr.String(), 10))
		return
	}
	recovered, mismatches := 0, 0
	for o, data := range want {
		got, err := readRecovered(filepath.Join(dir, o.Namespace, o.Resource, o.Name+".yaml"), o.Resource)
		if err != nil || soak.Hash(got) != soak.Hash(data) {
			mismatches++
			r.rec.Problem("recover with %s: %s differs from the API's last read (%v)", name, o, err)
			continue
		}
		recovered++
	}
	for _, ns := range []string{"soak-node1", "soak-node2", "soak-probe"} {
		for _, res := range []string{"secrets", "configmaps"} {
			entries, _ := os.ReadDir(filepath.Join(dir, ns, res))
			for _, e := range entries {
				o := soak.Object{Resource: res, Namespace: ns, Name: e.Name()[:len(e.Name())-len(".yaml")]}
				if _, ok := want[o]; !ok {
					mismatches++
					r.rec.Problem("recover with %s: %s recovered, never acknowledged", name, o)
				}
			}
		}
	}
	r.rec.Update(func(rep *soak.Report) {
		rep.RecoveredObjects[name] = recovered
		rep.RecoveryMismatches += mismatches
	})
	r.logf("recover with %s: %d objects equal, %d mismatches", name, recovered, mismatches)
}

func readRecovered(path, resource string) (map[string][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if resource == "secrets" {
		var s corev1.Secret
		err = yaml.UnmarshalStrict(b, &s)
		return s.Data, err
	}
	var c corev1.ConfigMap
	err = yaml.UnmarshalStrict(b, &c)
	return configMapData(&c), err
}

var panicRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[running\])`)

// scanLog checks a plugin's log (every start of it) for a panic and for
// any canary.
func (r *soakRig) scanLog(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		r.rec.Problem("plugin log %s: %v", path, err)
		return
	}
	panics, leaks := len(panicRE.FindAll(b, -1)), len(soak.Leaks(b))
	r.rec.Update(func(rep *soak.Report) { rep.Panics += panics; rep.LogLeaks += leaks })
	if panics+leaks > 0 {
		r.rec.Problem("plugin log %s: %d panics, %d canaries", path, panics, leaks)
	}
	r.logf("plugin log %s: %d bytes, %d panics, %d canaries", filepath.Base(filepath.Dir(path)), len(b), panics, leaks)
}
