package grpcserver_test

import (
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsv2 "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

// noop is a KMS v2 server that does no work: the transport's floor.
type noop struct {
	kmsv2.UnimplementedKeyManagementServiceServer
}

func (noop) Status(context.Context, *kmsv2.StatusRequest) (*kmsv2.StatusResponse, error) {
	return &kmsv2.StatusResponse{Version: "v2", Healthz: "ok", KeyId: "noop"}, nil
}
func (noop) Encrypt(_ context.Context, r *kmsv2.EncryptRequest) (*kmsv2.EncryptResponse, error) {
	return &kmsv2.EncryptResponse{Ciphertext: r.Plaintext, KeyId: "noop", Annotations: map[string][]byte{"shares.trousseau.io": make([]byte, 400)}}, nil
}
func (noop) Decrypt(_ context.Context, r *kmsv2.DecryptRequest) (*kmsv2.DecryptResponse, error) {
	return &kmsv2.DecryptResponse{Plaintext: r.Ciphertext}, nil
}

func startNoop(b *testing.B, dir string) string {
	p := filepath.Join(dir, "noop.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(srv, noop{})
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	return "unix://" + p
}

// benchPair returns kube-apiserver's own client for Trousseau and for the no-op server.
func benchPair(b *testing.B) (trousseau, floor kmsservice.Service) {
	hb := newHarness(b)
	hb.start()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	var err error
	trousseau, err = kmsv2client.NewGRPCService(ctx, hb.endpoint(), "trousseau", 3*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	floor, err = kmsv2client.NewGRPCService(ctx, startNoop(b, hb.dir), "noop", 3*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	return trousseau, floor
}

// interleave times one call to each side per iteration, so that machine
// noise lands on both, and reports the ratio against the no-op server.
func interleave(b *testing.B, ours, floor func() error) {
	interleaveAs(b, ours, floor, "trousseau", "noop", "floor")
}

// interleaveAs is interleave with the metrics named: <ours>-us/op,
// <base>-us/op and x-<ratio>.
func interleaveAs(b *testing.B, ours, base func() error, oursName, baseName, ratio string) {
	var tOurs, tBase time.Duration
	for range 50 { // warm both connections
		ours()
		base()
	}
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := ours(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := base(); err != nil {
			b.Fatal(err)
		}
		tBase += time.Since(t1)
		tOurs += t1.Sub(t0)
	}
	b.ReportMetric(float64(tOurs.Microseconds())/float64(b.N), oursName+"-us/op")
	b.ReportMetric(float64(tBase.Microseconds())/float64(b.N), baseName+"-us/op")
	b.ReportMetric(float64(tOurs)/float64(tBase), "x-"+ratio)
}

func BenchmarkEncryptVsNoop(b *testing.B) {
	tr, floor := benchPair(b)
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx := context.Background()
	interleave(b,
		func() error { _, err := tr.Encrypt(ctx, "u", seed); return err },
		func() error { _, err := floor.Encrypt(ctx, "u", seed); return err })
}

func BenchmarkDecryptWarmVsNoop(b *testing.B) {
	tr, floor := benchPair(b)
	seed := make([]byte, 32)
	rand.Read(seed)
	ctx := context.Background()
	r, err := tr.Encrypt(ctx, "u", seed)
	if err != nil {
		b.Fatal(err)
	}
	f, _ := floor.Encrypt(ctx, "u", seed)
	req := &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}
	freq := &kmsservice.DecryptRequest{Ciphertext: f.Ciphertext, KeyID: f.KeyID, Annotations: f.Annotations}
	interleave(b,
		func() error { _, err := tr.Decrypt(ctx, "u", req); return err },
		func() error { _, err := floor.Decrypt(ctx, "u", freq); return err })
}
