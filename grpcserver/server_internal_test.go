package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// panicky is an envelope whose Decrypt panics: the recovery interceptor
// must turn that into codes.Internal and keep the server up.
type panicky struct{}

func (panicky) Encrypt([]byte) (envelope.Sealed, error) {
	return envelope.Sealed{Ciphertext: []byte{1}, Header: []byte{1}, KeyID: "k"}, nil
}
func (panicky) Decrypt(context.Context, []byte, []byte) ([]byte, error) { panic("boom") }

func serveForTest(t *testing.T, env Envelope) kmsv2.KeyManagementServiceClient {
	dir, _ := os.MkdirTemp("", "trs")
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	srv := NewGRPCServer(NewServices(env, func() Snapshot { return Snapshot{Healthz: "ok", KeyID: "k"} }, "test", slog.New(slog.NewTextHandler(&logs, nil))), NewMetrics())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "s"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kmsv2.NewKeyManagementServiceClient(conn)
}

func TestRecoveryInterceptor(t *testing.T) {
	c := serveForTest(t, panicky{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &kmsv2.DecryptRequest{Ciphertext: []byte{1}, Annotations: map[string][]byte{SharesAnnotation: []byte("seed-secret")}}
	for range 3 {
		_, err := c.Decrypt(ctx, req)
		if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
			t.Fatalf("panic became %v, want a bare Internal", err)
		}
	}
	if st, err := c.Status(ctx, &kmsv2.StatusRequest{}); err != nil || st.Healthz != "ok" {
		t.Fatalf("server down after panics: %v", err)
	}
}

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", envelope.ErrInvalid), codes.InvalidArgument},
		{&envelope.QuorumError{}, codes.Internal},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", kmsclients.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("%w: %w", envelope.ErrNotReady, kmsclients.ErrUnavailable), codes.Unavailable},
		{errors.New("other"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// slow blocks Decrypt until the caller's deadline.
type slow struct{ panicky }

func (slow) Decrypt(ctx context.Context, _, _ []byte) ([]byte, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("unwrap: %w", ctx.Err())
}

func TestDeadlineExceeded(t *testing.T) {
	c := serveForTest(t, slow{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Decrypt(ctx, &kmsv2.DecryptRequest{Ciphertext: []byte{1}, Annotations: map[string][]byte{SharesAnnotation: {1}}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}
