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
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// panicky is an envelope whose Decrypt panics: the recovery interceptor
// must turn that into codes.Internal and keep the server up.
type panicky struct{}

func (panicky) Encrypt([]byte) (envelope.Sealed, error) {
	return envelope.Sealed{Ciphertext: []byte{1}, Header: []byte{1}, KeyID: "k"}, nil
}
func (panicky) Decrypt(context.Context, []byte, []byte) ([]byte, error) { panic("boom") }
func (panicky) KeyID() string                                           { return "" }

func serveForTest(t *testing.T, env Envelope) kmsv2.KeyManagementServiceClient {
	return serveWithMetrics(t, env, NewMetrics())
}

func serveWithMetrics(t *testing.T, env Envelope, m *Metrics) kmsv2.KeyManagementServiceClient {
	dir, _ := os.MkdirTemp("", "trs")
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	srv := NewGRPCServer(NewServices(env, func() Snapshot { return Snapshot{Healthz: "ok", KeyID: "k"} }, "test", slog.New(slog.NewTextHandler(&logs, nil))), m)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "s"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kmsv2.NewKeyManagementServiceClient(conn)
}

// sealed makes a real header, ciphertext and key_id, so that requests get
// past the key_id check to the envelope under test.
func sealed(t *testing.T) envelope.Sealed {
	dir := t.TempDir()
	var backends []kmsclients.Backend
	for _, n := range []string{"a", "b"} {
		p := filepath.Join(dir, n+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		b, err := local.New(context.Background(), "local-"+n, local.Config{KeyFile: p})
		if err != nil {
			t.Fatal(err)
		}
		backends = append(backends, b)
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := env.Encrypt(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func decryptRequest(s envelope.Sealed) *kmsv2.DecryptRequest {
	return &kmsv2.DecryptRequest{Ciphertext: s.Ciphertext, KeyId: s.KeyID, Annotations: map[string][]byte{SharesAnnotation: s.Header}, Uid: "u"}
}

func TestRecoveryInterceptor(t *testing.T) {
	c := serveForTest(t, panicky{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := decryptRequest(sealed(t))
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

// TestPublicError: the code follows the error's kind, the message is a
// fixed reason with counts, and nothing of the error's text (paths, URLs,
// names from a header) gets through. Every "zz" below is such text.
func TestPublicError(t *testing.T) {
	quorum := &envelope.QuorumError{Threshold: 2, Backends: 3, Unwrapped: []string{"zzname-a"}, Failures: map[string]error{
		"zzname-b": fmt.Errorf("open /zzpath/b.key: %w", kmsclients.ErrUnavailable),
		"zzname-c": fmt.Errorf("arn:aws:kms:zzarn: %w", kmsclients.ErrPermission),
	}}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"tampered header", fmt.Errorf("backend zzname: %w", envelope.ErrInvalid), codes.InvalidArgument,
			"invalid ciphertext: the wrapped DEK or ciphertext is malformed or was tampered with (see the plugin log)"},
		// The envelope sets a QuorumError's kind; wrapping stands in for it here.
		{"quorum lost", fmt.Errorf("%w: %w", quorum, kmsclients.ErrUnavailable), codes.Unavailable,
			"unavailable: too few backends answered to recover the DEK: 2 of 3 needed, 1 answered; failed: 1 permission, 1 unavailable (see the plugin log)"},
		{"quorum of tampered shares", fmt.Errorf("%w: %w", quorum, envelope.ErrInvalid), codes.InvalidArgument,
			"invalid ciphertext: the wrapped DEK or ciphertext is malformed or was tampered with: 2 of 3 needed, 1 answered; failed: 1 permission, 1 unavailable (see the plugin log)"},
		{"quorum error of no kind", quorum, codes.Internal, "internal error (see the plugin log)"},
		{"not ready", fmt.Errorf("%w: %w", envelope.ErrNotReady, kmsclients.ErrUnavailable), codes.Unavailable,
			"not ready: no usable DEK yet (see the plugin log)"},
		{"deadline", fmt.Errorf("vault https://zzurl: %w", context.DeadlineExceeded), codes.DeadlineExceeded,
			"deadline exceeded: the DEK was not recovered in time (see the plugin log)"},
		{"canceled", fmt.Errorf("zzname: %w", context.Canceled), codes.Canceled, "canceled: the caller gave up"},
		{"permission", fmt.Errorf("vault https://zzurl: %w", kmsclients.ErrPermission), codes.Unavailable,
			"unavailable: a backend refused access (see the plugin log)"},
		{"unavailable", fmt.Errorf("open /zzpath: %w", kmsclients.ErrUnavailable), codes.Unavailable,
			"unavailable: a backend could not be reached (see the plugin log)"},
		{"busy", envelope.ErrBusy, codes.Unavailable, "unavailable: too many DEK unwraps in progress, retry (see the plugin log)"},
		{"other", errors.New("zzother"), codes.Internal, "internal error (see the plugin log)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := publicError(tc.err)
			if code != tc.code || msg != tc.msg {
				t.Errorf("publicError = %v %q\nwant           %v %q", code, msg, tc.code, tc.msg)
			}
			if strings.Contains(msg, "zz") {
				t.Errorf("message %q carries error text", msg)
			}
		})
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
	_, err := c.Decrypt(ctx, decryptRequest(sealed(t)))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

// counting is an envelope that counts Decrypt calls: each one would ask
// the backends on a cache miss.
type counting struct {
	panicky
	calls atomic.Int32
}

func (c *counting) Decrypt(context.Context, []byte, []byte) ([]byte, error) {
	c.calls.Add(1)
	return []byte("seed"), nil
}

// TestDecryptChecksKeyID: Decrypt must get back the key_id Encrypt
// returned with the annotations; anything else is refused before any
// backend is called.
func TestDecryptChecksKeyID(t *testing.T) {
	s, other := sealed(t), sealed(t)
	for _, tc := range []struct {
		name  string
		keyID string
		code  codes.Code
		msg   string
	}{
		{"empty key_id", "", codes.InvalidArgument, "key_id is empty"},
		{"key_id of another DEK", other.KeyID, codes.InvalidArgument, "key_id does not match the wrapped DEK in the annotations"},
		{"key_id with a byte changed", s.KeyID[:len(s.KeyID)-1] + "x", codes.InvalidArgument, "key_id does not match"},
		{"the right key_id", s.KeyID, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &counting{}
			c := serveForTest(t, env)
			req := decryptRequest(s)
			req.KeyId = tc.keyID
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Decrypt(ctx, req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v, want %v %q", err, tc.code, tc.msg)
			}
			wantCalls := int32(0)
			if tc.code == codes.OK {
				wantCalls = 1
			}
			if got := env.calls.Load(); got != wantCalls {
				t.Fatalf("envelope Decrypt called %d times, want %d", got, wantCalls)
			}
		})
	}
}
