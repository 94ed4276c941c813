package recovery_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trousseau-io/trousseau/internal/recovery"
	"github.com/trousseau-io/trousseau/internal/recovery/recoverytest"
)

// BenchmarkRecover recovers every Secret of a snapshot of 10,000
// Secrets (KMS v2, written through kube-apiserver's transformers, built
// once), from a cold start (a new keyring, so the DEK is unwrapped
// again), to YAML and as a dry run (decrypt and decode only). In the same
// loop it times a plain read of the same snapshot (the bbolt walk and
// record decoding, no decryption), and reports objects/s and the ratio.
func BenchmarkRecover(b *testing.B) {
	const n = 10000
	etcd := recoverytest.StartEtcd(b, false)
	plugin := recoverytest.StartPlugin(b)
	w := recoverytest.NewWriter(b, plugin, etcd, recoverytest.Provider)
	keys := make([]string, n)
	plains := make([][]byte, n)
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%10), fmt.Sprintf("secret-%05d", i)
		keys[i] = "/registry/secrets/" + ns + "/" + name
		plains[i] = recoverytest.Encode(b, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "uid", ResourceVersion: "1", Labels: map[string]string{"app": "bench"}},
			Data:       map[string][]byte{"username": []byte("user"), "password": []byte(fmt.Sprintf("password-%08d-abcdefghijklmnop", i))},
		})
	}
	start := time.Now()
	w.PutBatch(keys, plains, recoverytest.KMSv2)
	snap := b.TempDir() + "/10k.snapshot"
	etcd.Snapshot(b, snap)
	b.Logf("wrote %d Secrets and saved the snapshot in %s", n, time.Since(start).Round(time.Millisecond))
	cfg := plugin.WriteConfig(b, "local-a", "local-b")

	for _, bc := range []struct {
		name string
		sink func() recovery.Sink
	}{
		{"10k-secrets-to-yaml", func() recovery.Sink { return recovery.NewStreamSink(io.Discard, recovery.YAML) }},
		{"10k-secrets-dry-run", func() recovery.Sink { return nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			var ours, plain time.Duration
			for range b.N {
				t0 := time.Now()
				read := 0
				_, err := recovery.SnapshotFile{Path: snap}.Scan(ctx, recovery.ScanRequest{Prefix: "/registry", Visit: func(recovery.KV) error { read++; return nil }})
				if err != nil || read != n {
					b.Fatalf("plain read: %v", err)
				}
				t1 := time.Now()
				kr := openKeyring(b, cfg)
				sum, err := recovery.Run(ctx, recovery.Options{Source: recovery.SnapshotFile{Path: snap}, Envelope: kr, Sink: bc.sink()})
				ours += time.Since(t1)
				plain += t1.Sub(t0)
				if err != nil || sum.Decrypted != n || !sum.OK() {
					b.Fatalf("recover: %v %+v", err, sum)
				}
			}
			objs := float64(n * b.N)
			b.ReportMetric(objs/ours.Seconds(), "objects/s")
			b.ReportMetric(objs/plain.Seconds(), "plain-read-objects/s")
			b.ReportMetric(float64(ours)/float64(plain), "x-plain-read")
		})
	}

	// A drill reads the same snapshot but decrypts no object: timed
	// against recover --dry-run of it, in the same loop. Both get the
	// config of all three backends, so the drill asks every one of them.
	all := plugin.WriteConfig(b, "local-a", "local-b", "local-c")
	b.Run("10k-secrets-drill-vs-dry-run", func(b *testing.B) {
		ctx := context.Background()
		cfg := all
		var drill, dry time.Duration
		for range b.N {
			t0 := time.Now()
			kr := openKeyring(b, cfg)
			r, err := recovery.Drill(ctx, recovery.DrillOptions{Source: recovery.SnapshotFile{Path: snap}, Envelope: kr.Envelope})
			drill += time.Since(t0)
			if err != nil || len(r.DEKs) != 1 || r.DEKs[0].Objects != n || r.DEKs[0].Working != 3 {
				b.Fatalf("drill: %v %+v", err, r)
			}
			t1 := time.Now()
			kr = openKeyring(b, cfg)
			if _, err := recovery.Run(ctx, recovery.Options{Source: recovery.SnapshotFile{Path: snap}, Envelope: kr}); err != nil {
				b.Fatal(err)
			}
			dry += time.Since(t1)
		}
		b.ReportMetric(float64(n*b.N)/drill.Seconds(), "drill-objects/s")
		b.ReportMetric(float64(drill)/float64(dry), "x-dry-run")
	})
}
