package grpcserver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// renamed is a key-file backend that reports another name and key
// identity: what someone who can write to etcd can put in a header.
type renamed struct {
	*local.Backend
	name, identity string
}

func (r renamed) Name() string { return r.name }

func (r renamed) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	w, err := r.Backend.Wrap(ctx, share, aad)
	w.KeyIdentity = r.identity
	return w, err
}

func (r renamed) Probe(context.Context) (string, error) { return r.identity, nil }

// forge seals a seed under a header whose backends have the given names
// and key identity. The header is well formed and its key_id matches it,
// so only the unwrap can fail.
func forge(t *testing.T, names []string, identity string) *kmsv2.DecryptRequest {
	dir := shortDir(t)
	var backends []kmsclients.Backend
	for _, n := range names {
		p := filepath.Join(dir, n+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		b, err := local.New(context.Background(), n, local.Config{KeyFile: p})
		if err != nil {
			t.Fatal(err)
		}
		// Distinct identities: one key may not hold two shares.
		backends = append(backends, renamed{Backend: b, name: n, identity: identity + n})
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Prepare(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	s, err := env.Encrypt(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &kmsv2.DecryptRequest{Ciphertext: s.Ciphertext, KeyId: s.KeyID, Annotations: map[string][]byte{grpcserver.SharesAnnotation: s.Header}}
}

// TestErrorTextStaysInTheLog: what a gRPC caller reads of a failure (and
// kube-apiserver may pass on in a 500) holds no backend error text and
// nothing a header supplied; the plugin's log keeps all of it.
func TestErrorTextStaysInTheLog(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, _ := rawClient(t, h)
	stored, _ := encrypt(t, c)
	storedReq := &kmsv2.DecryptRequest{Ciphertext: stored.Ciphertext, KeyId: stored.KeyId, Annotations: stored.Annotations}
	for _, tc := range []struct {
		name   string
		req    func(t *testing.T) *kmsv2.DecryptRequest
		setup  func(t *testing.T)
		code   codes.Code
		level  string
		marker string
	}{
		{
			name: "backend names from a header",
			req: func(t *testing.T) *kmsv2.DecryptRequest {
				return forge(t, []string{"zzname-a", "zzname-b", "zzname-c"}, "k1")
			},
			code:   codes.InvalidArgument,
			level:  "WARN",
			marker: "zzname",
		},
		{
			name: "key identities from a header",
			req: func(t *testing.T) *kmsv2.DecryptRequest {
				return forge(t, []string{"local-a", "local-b", "local-c"}, "zzidentity-https://evil.example/key-")
			},
			code:   codes.InvalidArgument,
			level:  "WARN",
			marker: "zzidentity",
		},
		{
			name: "backend errors with key file paths",
			req:  func(*testing.T) *kmsv2.DecryptRequest { return storedReq },
			setup: func(t *testing.T) {
				// stored's DEK is neither current nor cached after this,
				// so the backends are asked for it.
				h.plugin.Prober().ProbeOnce(callCtx(t), true)
				h.stop()
				h.startNoWait()
				h.down(0)
				t.Cleanup(func() { h.up(0) })
				if err := os.Chmod(h.keys[2], 0o644); err != nil { // refused: mode too open
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chmod(h.keys[2], 0o600) })
			},
			code:   codes.Unavailable,
			level:  "ERROR",
			marker: h.dir,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			c, _ := rawClient(t, h)
			req := tc.req(t)
			req.Uid = "uid-" + strings.ReplaceAll(tc.name, " ", "-")
			_, err := c.Decrypt(callCtx(t), req)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if msg := status.Convert(err).Message(); strings.Contains(msg, tc.marker) || !strings.Contains(msg, "see the plugin log") {
				t.Errorf("gRPC message %q carries %q, or does not point to the log", msg, tc.marker)
			}
			line := logLine(h.logs.String(), req.Uid)
			for _, want := range []string{tc.marker, `"level":"` + tc.level + `"`, "/v2.KeyManagementService/Decrypt"} {
				if !strings.Contains(line, want) {
					t.Errorf("log line of the request lacks %q: %s", want, line)
				}
			}
		})
	}
}

// logLine is the first line of logs that holds s.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestRequestBytesAreNotEchoed: a refused request's message names the
// field, never repeats what the caller sent.
func TestRequestBytesAreNotEchoed(t *testing.T) {
	h := newHarness(t)
	h.start()
	c, c1 := rawClient(t, h)
	good, _ := encrypt(t, c)
	const marker = "zzecho"
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"v1 version", func() error {
			_, err := c1.Decrypt(callCtx(t), &kmsv1.DecryptRequest{Version: marker, Cipher: []byte("x")})
			return err
		}},
		{"v1 cipher", func() error {
			_, err := c1.Decrypt(callCtx(t), &kmsv1.DecryptRequest{Version: "v1beta1", Cipher: []byte("TRS1" + marker)})
			return err
		}},
		{"key_id", func() error {
			_, err := c.Decrypt(callCtx(t), &kmsv2.DecryptRequest{Ciphertext: good.Ciphertext, KeyId: marker, Annotations: good.Annotations})
			return err
		}},
		{"annotation", func() error {
			_, err := c.Decrypt(callCtx(t), &kmsv2.DecryptRequest{Ciphertext: good.Ciphertext, KeyId: good.KeyId,
				Annotations: map[string][]byte{grpcserver.SharesAnnotation: []byte("TRSH" + marker)}})
			return err
		}},
		{"ciphertext", func() error {
			_, err := c.Decrypt(callCtx(t), &kmsv2.DecryptRequest{Ciphertext: []byte(marker), KeyId: good.KeyId, Annotations: good.Annotations})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if strings.Contains(status.Convert(err).Message(), marker) {
				t.Fatalf("message echoes the request: %q", status.Convert(err).Message())
			}
		})
	}
}
