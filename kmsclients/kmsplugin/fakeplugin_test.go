package kmsplugin

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsv1 "k8s.io/kms/apis/v1beta1"
	kmsv2 "k8s.io/kms/apis/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

// fakeKMS is a small KMS plugin: AES-256-GCM keys named by key_id, served
// as KMS v2 through k8s.io/kms/pkg/service (and as v1beta1 beside it),
// with the faults the tests need injected: latency, an unhealthy Status,
// key rotation (and back), plaintexts that are not the one encrypted, an
// Encrypt that only encodes, and errors of any gRPC code.
type fakeKMS struct {
	mu       sync.Mutex
	keys     map[string]cipher.AEAD
	order    []string
	current  string
	healthz  string // "" is "ok"
	version  string // "" is "v2"
	latency  time.Duration
	lie      bool                // Decrypt returns another plaintext
	encode   func([]byte) []byte // Encrypt returns this of the plaintext as ciphertext
	sivLike  bool                // Encrypt derives salt and nonce from the plaintext
	fail     error               // every call fails with it
	failOp   string              // ...or only this one ("encrypt", "decrypt", "status")
	bigAnnot int                 // Encrypt adds an annotation of this many bytes
	fixedID  string              // name new keys so (two custodians on one key_id)
	last     []byte              // the last plaintext decrypted, for lie
	decrypts int                 // Decrypt calls answered
	calls    chan struct{}       // if set, told of every Decrypt call as it starts
}

const saltAnnotation = "salt.fake-kms.example.com"

func newFakeKMS() *fakeKMS {
	k := &fakeKMS{keys: map[string]cipher.AEAD{}}
	k.rotate()
	return k
}

// rotate makes a new key current and returns its key_id.
func (k *fakeKMS) rotate() string {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	k.mu.Lock()
	defer k.mu.Unlock()
	id := k.fixedID
	if id == "" {
		id = fmt.Sprintf("fake-key-%d-%x", len(k.order)+1, key[:4])
	}
	k.keys[id] = aead
	k.order = append(k.order, id)
	k.current = id
	return id
}

// use makes an existing key current again.
func (k *fakeKMS) use(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys[id] == nil {
		panic("no key " + id)
	}
	k.current = id
}

func (k *fakeKMS) set(f func(k *fakeKMS)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
}

func (k *fakeKMS) currentID() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.current
}

func (k *fakeKMS) decryptCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.decrypts
}

// enter applies the latency and the injected failure of op.
func (k *fakeKMS) enter(ctx context.Context, op string) error {
	k.mu.Lock()
	latency, fail, failOp := k.latency, k.fail, k.failOp
	k.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
	if fail != nil && (failOp == "" || failOp == op) {
		return fail
	}
	return nil
}

func (k *fakeKMS) Status(ctx context.Context) (*kmsservice.StatusResponse, error) {
	if err := k.enter(ctx, "status"); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	healthz, version := k.healthz, k.version
	if healthz == "" {
		healthz = "ok"
	}
	if version == "" {
		version = "v2"
	}
	return &kmsservice.StatusResponse{Version: version, Healthz: healthz, KeyID: k.current}, nil
}

func (k *fakeKMS) Encrypt(ctx context.Context, _ string, data []byte) (*kmsservice.EncryptResponse, error) {
	if err := k.enter(ctx, "encrypt"); err != nil {
		return nil, err
	}
	k.mu.Lock()
	id, aead, encode, sivLike, big := k.current, k.keys[k.current], k.encode, k.sivLike, k.bigAnnot
	k.mu.Unlock()
	if encode != nil {
		return &kmsservice.EncryptResponse{Ciphertext: encode(data), KeyID: id}, nil
	}
	salt, nonce := make([]byte, 8), make([]byte, aead.NonceSize())
	rand.Read(salt)
	rand.Read(nonce)
	if sivLike {
		// Deterministic, as AES-SIV or a convergent key is (the real
		// ones derive the nonce with a key; this is a test).
		sum := sha256.Sum256(data)
		copy(salt, sum[:])
		copy(nonce, sum[8:])
	}
	annotations := map[string][]byte{saltAnnotation: salt}
	if big > 0 {
		annotations["big.fake-kms.example.com"] = make([]byte, big)
	}
	return &kmsservice.EncryptResponse{
		Ciphertext:  aead.Seal(nonce, nonce, data, append([]byte(id), salt...)),
		KeyID:       id,
		Annotations: annotations,
	}, nil
}

func (k *fakeKMS) Decrypt(ctx context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	k.mu.Lock()
	calls := k.calls
	k.mu.Unlock()
	if calls != nil {
		select {
		case calls <- struct{}{}:
		default:
		}
	}
	if err := k.enter(ctx, "decrypt"); err != nil {
		return nil, err
	}
	pt, err := k.open(req.KeyID, req.Ciphertext, req.Annotations[saltAnnotation])
	if err != nil {
		return nil, err
	}
	return k.answer(pt), nil
}

func (k *fakeKMS) open(keyID string, ct, salt []byte) ([]byte, error) {
	k.mu.Lock()
	aead := k.keys[keyID]
	k.mu.Unlock()
	if aead == nil {
		return nil, status.Errorf(codes.InvalidArgument, "unknown key_id %q", keyID)
	}
	if len(ct) < aead.NonceSize() {
		return nil, status.Error(codes.InvalidArgument, "ciphertext too short")
	}
	pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], append([]byte(keyID), salt...))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "ciphertext failed authentication")
	}
	return pt, nil
}

// answer is what Decrypt returns for pt: pt, or when lying, the last
// other plaintext it decrypted (a real share of another DEK or index),
// or random bytes.
func (k *fakeKMS) answer(pt []byte) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.decrypts++
	last := k.last
	k.last = pt
	if !k.lie {
		return pt
	}
	if last != nil && string(last) != string(pt) {
		return last
	}
	other := make([]byte, len(pt))
	rand.Read(other)
	return other
}

// v1Server is the same keys served as KMS v1beta1, which has no key_id
// or annotations: the key_id travels in the ciphertext.
type v1Server struct {
	kmsv1.UnimplementedKeyManagementServiceServer
	k *fakeKMS
}

func (s v1Server) Version(ctx context.Context, _ *kmsv1.VersionRequest) (*kmsv1.VersionResponse, error) {
	if err := s.k.enter(ctx, "status"); err != nil {
		return nil, err
	}
	return &kmsv1.VersionResponse{Version: "v1beta1", RuntimeName: "fake-kms", RuntimeVersion: "0"}, nil
}

func (s v1Server) Encrypt(ctx context.Context, req *kmsv1.EncryptRequest) (*kmsv1.EncryptResponse, error) {
	resp, err := s.k.Encrypt(ctx, "", req.Plain)
	if err != nil {
		return nil, err
	}
	salt := resp.Annotations[saltAnnotation]
	blob := append([]byte{byte(len(resp.KeyID))}, resp.KeyID...)
	blob = append(append(blob, salt...), resp.Ciphertext...)
	return &kmsv1.EncryptResponse{Cipher: blob}, nil
}

func (s v1Server) Decrypt(ctx context.Context, req *kmsv1.DecryptRequest) (*kmsv1.DecryptResponse, error) {
	if err := s.k.enter(ctx, "decrypt"); err != nil {
		return nil, err
	}
	c := req.Cipher
	if len(c) < 1 || len(c) < 1+int(c[0])+8 {
		return nil, status.Error(codes.InvalidArgument, "malformed ciphertext")
	}
	n := int(c[0])
	pt, err := s.k.open(string(c[1:1+n]), c[1+n+8:], c[1+n:1+n+8])
	if err != nil {
		return nil, err
	}
	return &kmsv1.DecryptResponse{Plain: s.k.answer(pt)}, nil
}

// fakeServer serves a fakeKMS on a unix socket until stopped.
type fakeServer struct {
	kms  *fakeKMS
	path string
	mu   sync.Mutex
	gs   *grpc.Server
	done chan struct{}
}

// startFake serves a new fakeKMS on a socket in a short temp dir until
// the test ends.
func startFake(t testing.TB) *fakeServer {
	t.Helper()
	s := &fakeServer{kms: newFakeKMS(), path: filepath.Join(shortTemp(t), "kms.sock")}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *fakeServer) endpoint() string { return "unix://" + s.path }

// start serves on the socket; the service is k8s.io/kms's own wrapper of
// a Service, registered on a server whose listener the test controls.
func (s *fakeServer) start(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	kmsv2.RegisterKeyManagementServiceServer(gs, kmsservice.NewGRPCService(s.path, time.Minute, s.kms))
	kmsv1.RegisterKeyManagementServiceServer(gs, v1Server{k: s.kms})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("fake KMS plugin: %v", err)
		}
	}()
	s.mu.Lock()
	s.gs, s.done = gs, done
	s.mu.Unlock()
}

// stop stops the server at once (connections closed, calls cut short);
// the socket file goes with it.
func (s *fakeServer) stop() {
	s.mu.Lock()
	gs, done := s.gs, s.done
	s.gs = nil
	s.mu.Unlock()
	if gs != nil {
		gs.Stop()
		<-done
	}
}

// shortTemp is a temp dir with a short path, for unix sockets (108 bytes
// at most).
func shortTemp(t testing.TB) string {
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newTestBackend makes a backend on endpoint, closed when the test ends.
func newTestBackend(t testing.TB, name, endpoint string, opts ...func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Endpoint: endpoint}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := New(context.Background(), name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func withV1(c *Config) { c.APIVersion = APIVersionV1 }

func withTimeout(d time.Duration) func(*Config) {
	return func(c *Config) { c.Timeout = Duration{Duration: d} }
}

// ctxFor is a context that ends with the test, or after d.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
