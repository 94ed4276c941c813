package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHAKeyIDAgreement: two control-plane nodes over one etcd, each with
// its own kube-apiserver and its own Trousseau (own socket and state dir)
// over the same three key files. They must come to report one key_id,
// follow a rotation made on one of them, and leave nothing stale after a
// migration run through either (the test runs one through each). The bound: kube-apiserver's 60 s Status
// poll plus one cross-read; the test allows 150 s and logs what it took.
func TestHAKeyIDAgreement(t *testing.T) {
	c1 := newCluster(t)
	c1.startEtcd()
	c1.writePluginConfig()
	c1.startPlugin()
	c1.startAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"})
	c2 := c1.secondNode()
	c2.startPlugin()
	c2.startAPIServer(apiserverOptions{kmsAPIVersion: "v2", etcdPrefix: "/registry"})
	w1, w2 := newWorkload(t, c1, "/registry", "ha-1"), newWorkload(t, c2, "/registry", "ha-2")

	var agreed string
	step(t, "both nodes come to one key_id", func(t *testing.T) {
		// kube-apiserver writes ConfigMaps of its own at start (in
		// kube-system), so the second node may already have adopted the
		// first one's DEK by now.
		t.Logf("at start: node 1 on %s, node 2 on %s", pluginKeyID(t, c1), pluginKeyID(t, c2))
		start := time.Now()
		agreed = converge(t, start, w1, w2)
		t.Logf("nodes agree on %s after %s", agreed, time.Since(start).Round(time.Second))
		crossRead(t, w1, c2)
		crossRead(t, w2, c1)
	})

	step(t, "a rotation on one node spreads to the other", func(t *testing.T) {
		c1.plugin.signal(syscall.SIGHUP)
		start := time.Now()
		eventually(t, 30*time.Second, "node 1 rotated", func(context.Context) error {
			if pluginKeyID(t, c1) == agreed {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		rotated := converge(t, start, w1, w2)
		if rotated == agreed {
			t.Fatal("converged back on the old key_id")
		}
		t.Logf("both nodes on %s %s after the SIGHUP", rotated, time.Since(start).Round(time.Second))
		agreed = rotated
	})

	// Either node may run the migration: each writes under the one key_id.
	for _, via := range []*cluster{c2, c1} {
		name := "node 2"
		if via == c1 {
			name = "node 1"
		}
		step(t, "a migration through "+name+" leaves nothing stale on either", func(t *testing.T) {
			for _, w := range []*workload{w1, w2} {
				through := *w
				through.c = via
				through.migrate(t)
				w.checkStored(t, v2Prefix, agreed)
			}
			crossRead(t, w1, c2)
			crossRead(t, w2, c1)
			if pluginKeyID(t, c1) != agreed || pluginKeyID(t, c2) != agreed {
				t.Fatal("the nodes moved apart after the migration")
			}
		})
	}
}

// converge writes through both nodes (one object each every 2 s) until
// both plugins report one key_id and new writes through both nodes carry
// it. It returns that key_id.
func converge(t *testing.T, start time.Time, w1, w2 *workload) string {
	var agreed string
	eventually(t, 150*time.Second, "both nodes write under one key_id", func(context.Context) error {
		time.Sleep(2 * time.Second)
		n1, n2 := w1.create(t, "probe"), w2.create(t, "probe")
		k1, k2 := pluginKeyID(t, w1.c), pluginKeyID(t, w2.c)
		s1, s2 := w1.storedKeyID(t, "secrets", n1), w2.storedKeyID(t, "secrets", n2)
		if k1 != k2 || s1 != k1 || s2 != k1 {
			return fmt.Errorf("plugins %s / %s, stored %s / %s (%s)", k1, k2, s1, s2, time.Since(start).Round(time.Second))
		}
		agreed = k1
		return nil
	})
	return agreed
}

// crossRead reads every object of w through another node's apiserver.
func crossRead(t *testing.T, w *workload, other *cluster) {
	t.Helper()
	through := *w
	through.c = other
	through.checkReadBack(t)
}

// pluginKeyID reads the current key_id from the plugin's /readyz.
func pluginKeyID(t *testing.T, c *cluster) string {
	t.Helper()
	id, err := readyKeyID(context.Background(), c.pluginHC)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// readyKeyID reads the current key_id from /readyz at a plugin's health
// address.
func readyKeyID(ctx context.Context, hc string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+hc+"/readyz", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<16))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "current DEK: "); ok {
			id, _, _ := strings.Cut(rest, ",")
			return id, nil
		}
	}
	return "", fmt.Errorf("no current DEK in %s/readyz", hc)
}
