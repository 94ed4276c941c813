package grpcserver_test

import (
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	kmsv2client "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsv2 "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

// noop is a KMS v2 server that does no work, answering with fixed bytes:
// the transport's floor.
type noop struct {
	kmsv2.UnimplementedKeyManagementServiceServer
}

var (
	noopSeed        = make([]byte, 32)
	noopCiphertext  = make([]byte, 85) // the size of Trousseau's for a 32-byte seed
	noopAnnotations = map[string][]byte{"shares.trousseau.io": make([]byte, 400)}
)

func (noop) Status(context.Context, *kmsv2.StatusRequest) (*kmsv2.StatusResponse, error) {
	return &kmsv2.StatusResponse{Version: "v2", Healthz: "ok", KeyId: "noop"}, nil
}
func (noop) Encrypt(context.Context, *kmsv2.EncryptRequest) (*kmsv2.EncryptResponse, error) {
	return &kmsv2.EncryptResponse{Ciphertext: noopCiphertext, KeyId: "noop", Annotations: noopAnnotations}, nil
}
func (noop) Decrypt(context.Context, *kmsv2.DecryptRequest) (*kmsv2.DecryptResponse, error) {
	return &kmsv2.DecryptResponse{Plaintext: noopSeed}, nil
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
	start := time.Now()
	wall := func() time.Duration { return time.Since(start) }
	interleaveSides(b, 1, side{oursName, ours, wall}, side{baseName, base, wall}, ratio)
}

// side is one server of an interleaved benchmark: call makes one request,
// spent is a running total of what is measured (wall clock, or the
// server process's CPU time).
type side struct {
	name  string
	call  func() error
	spent func() time.Duration
}

// interleaveSides makes b.N requests to each side, by callers concurrent
// callers, in alternating rounds, so that machine noise lands on both.
// It reports <name>-us/op for each side and x-<ratio>, ours over base.
func interleaveSides(b *testing.B, callers int, ours, base side, ratio string) {
	sides := []side{ours, base}
	for _, s := range sides { // warm both connections
		callConcurrently(b, 50*callers, callers, s.call)
	}
	round := 8 * callers
	if callers == 1 {
		round = 1
	}
	spent := make([]time.Duration, len(sides))
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		for i, s := range sides {
			t0 := s.spent()
			callConcurrently(b, min(round, b.N-done), callers, s.call)
			spent[i] += s.spent() - t0
		}
	}
	for i, s := range sides {
		b.ReportMetric(float64(spent[i].Microseconds())/float64(b.N), s.name+"-us/op")
	}
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "x-"+ratio)
}

// callConcurrently makes n calls, by callers goroutines at once.
func callConcurrently(b *testing.B, n, callers int, call func() error) {
	if callers == 1 {
		for range n {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var next atomic.Int64
	var g errgroup.Group
	for range callers {
		g.Go(func() error {
			for next.Add(1) <= int64(n) {
				if err := call(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
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

// BenchmarkDecryptWarmWithOfficers: warm Decrypts through kube-apiserver's
// client from a plugin with a recovery policy (a 2.8 KB header in every
// request's annotations) and from one without, alternately.
func BenchmarkDecryptWarmWithOfficers(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	decrypt := func(withOfficers bool) func() error {
		h := newHarness(b)
		if withOfficers {
			h.withOfficers()
		}
		h.start()
		c, err := kmsv2client.NewGRPCService(ctx, h.endpoint(), "trousseau", 3*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		seed := make([]byte, 32)
		rand.Read(seed)
		r, err := c.Encrypt(ctx, "u", seed)
		if err != nil {
			b.Fatal(err)
		}
		req := &kmsservice.DecryptRequest{Ciphertext: r.Ciphertext, KeyID: r.KeyID, Annotations: r.Annotations}
		return func() error { _, err := c.Decrypt(ctx, "u", req); return err }
	}
	interleaveAs(b, decrypt(true), decrypt(false), "officers", "none", "without-officers")
}
