package kmsplugin

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// BenchmarkDecryptColdTwoCustodians: 2 of 2 KMS plugin custodians, one
// answering in ~20 ms and one in ~40 ms. A cold Decrypt (both shares
// asked) should cost about the slower custodian's own Decrypt, not the
// sum: x-slow-custodian near 1 (the sum would be 1.5). The baseline is a
// direct KMS v2 Decrypt call to the slower custodian, timed in the same
// loop, so that a noisy machine moves both alike.
func BenchmarkDecryptColdTwoCustodians(b *testing.B) {
	fast, slow := startFake(b), startFake(b)
	fast.kms.set(func(k *fakeKMS) { k.latency = 20 * time.Millisecond })
	slow.kms.set(func(k *fakeKMS) { k.latency = 40 * time.Millisecond })
	backends := []kmsclients.Backend{newTestBackend(b, "fast", fast.endpoint()), newTestBackend(b, "slow", slow.endpoint())}
	ctx := context.Background()
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	if err != nil {
		b.Fatal(err)
	}
	if err := env.Prepare(ctx); err != nil {
		b.Fatal(err)
	}
	sealed, err := env.Encrypt([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}

	conn, err := grpc.NewClient("unix://"+slow.path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	direct := kmsv2.NewKeyManagementServiceClient(conn)
	enc, err := direct.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: make([]byte, 49)})
	if err != nil {
		b.Fatal(err)
	}
	dreq := &kmsv2.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations}
	if _, err := direct.Decrypt(ctx, dreq); err != nil { // connect before timing
		b.Fatal(err)
	}

	var ours, base time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		cold, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if _, err := cold.Decrypt(ctx, sealed.Ciphertext, sealed.Header); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := direct.Decrypt(ctx, dreq); err != nil {
			b.Fatal(err)
		}
		base += time.Since(t1)
		ours += t1.Sub(t0)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(ours.Microseconds())/1e3/n, "decrypt-ms/op")
	b.ReportMetric(float64(base.Microseconds())/1e3/n, "slow-custodian-ms/op")
	b.ReportMetric(float64(ours)/float64(base), "x-slow-custodian")
}
