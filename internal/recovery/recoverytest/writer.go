package recoverytest

import (
	"context"
	"crypto/aes"
	"crypto/fips140"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	envelopev1 "k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	"k8s.io/client-go/kubernetes/scheme"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Backends are the plugin's backends, 2 of 3.
var Backends = []string{"local-a", "local-b", "local-c"}

// Plugin is Trousseau's plugin serving on a unix socket over three real
// key-file backends, 2 of 3.
type Plugin struct {
	Dir      string
	Socket   string
	StateDir string
	KeyFiles map[string]string // by backend name
	Env      *envelope.Envelope
	// Recovery is its officers' policy, nil without one.
	Recovery *envelope.Recovery
}

// StartPlugin runs the plugin until the test ends.
func StartPlugin(t testing.TB) *Plugin {
	t.Helper()
	return startPlugin(t, nil)
}

// startPlugin runs a plugin; policy, if set, makes its officers' policy
// over its backends.
func startPlugin(t testing.TB, policy func([]kmsclients.Backend) *envelope.Recovery) *Plugin {
	t.Helper()
	// Unix socket paths are limited to ~108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "trsrec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &Plugin{Dir: dir, Socket: filepath.Join(dir, "kms.sock"), StateDir: filepath.Join(dir, "state"), KeyFiles: map[string]string{}}
	var backends []kmsclients.Backend
	for _, name := range Backends {
		path := filepath.Join(dir, name+".key")
		if err := local.GenerateKeyFile(path); err != nil {
			t.Fatal(err)
		}
		p.KeyFiles[name] = path
		b, err := local.New(context.Background(), name, local.Config{KeyFile: path})
		if err != nil {
			t.Fatal(err)
		}
		backends = append(backends, b)
	}
	if policy != nil {
		p.Recovery = policy(backends)
	}
	p.Env, err = envelope.New(envelope.Config{Threshold: 2, Backends: backends, StateDir: p.StateDir, Recovery: p.Recovery})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Env.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	health := func() grpcserver.Snapshot {
		return grpcserver.Snapshot{Healthz: "ok", KeyID: p.Env.KeyID(), Ready: true}
	}
	srv := grpcserver.NewGRPCServer(grpcserver.NewServices(p.Env, health, "test", slog.New(slog.DiscardHandler)), nil)
	ln, err := net.Listen("unix", p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return p
}

// WriteConfig writes a config file (the format of serve) with the named
// backends only, and returns its path.
func (p *Plugin) WriteConfig(t testing.TB, names ...string) string {
	t.Helper()
	var b strings.Builder
	// A state dir of its own that does not exist: drills over etcd then
	// check only what etcd holds, whatever this machine's default holds.
	fmt.Fprintf(&b, "stateDir: %s\n", filepath.Join(p.Dir, "no-state-"+strings.Join(names, "_")))
	fmt.Fprintf(&b, "threshold: %d\nbackends:\n", min(2, len(names)))
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    local: {keyFile: %s}\n", n, p.KeyFiles[n])
	}
	path := filepath.Join(p.Dir, "config-"+strings.Join(names, "_")+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Encryption is how a Writer stores a value.
type Encryption int

// The ways a value is stored.
const (
	KMSv2 Encryption = iota
	KMSv1
	Identity
	OtherKMSPlugin // KMS v2 of another plugin, named "other-plugin"
	AESCBC         // the aescbc provider, key "key1"
)

// Writer stores objects in etcd the way kube-apiserver does: protobuf
// encoding, then the EncryptionConfiguration's transformers (its own KMS
// v2 and v1 envelope transformers and gRPC clients, talking to the
// plugin), with the etcd key as authenticated data.
type Writer struct {
	t        testing.TB
	etcd     *Etcd
	Provider string
	v2svc    kmsservice.Service
	v2       value.Transformer
	v1       value.Transformer
	other    value.Transformer
	cbc      value.Transformer
}

// NewWriter connects kube-apiserver's KMS v2 and v1 clients to the
// plugin under the provider name given.
func NewWriter(t testing.TB, p *Plugin, e *Etcd, provider string) (w *Writer) {
	t.Helper()
	asAPIServer(func() { w = newWriter(t, p, e, provider) })
	return w
}

// asAPIServer runs f, which stands for kube-apiserver, outside FIPS
// 140-only enforcement: the apiserver is another process, and its data
// encryption (AES-GCM under nonces it picks) is not the plugin's. The
// plugin's own goroutines were not started by f and stay enforced.
func asAPIServer(f func()) { fips140.WithoutEnforcement(f) }

func newWriter(t testing.TB, p *Plugin, e *Etcd, provider string) *Writer {
	ctx := context.Background()
	w := &Writer{t: t, etcd: e, Provider: provider}
	var err error
	w.v2svc, err = kmsv2.NewGRPCService(ctx, "unix://"+p.Socket, provider, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w.NewSeed()
	v1svc, err := envelopev1.NewGRPCService(ctx, "unix://"+p.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w.v1 = value.NewPrefixTransformers(nil, value.PrefixTransformer{
		Prefix:      []byte("k8s:enc:kms:v1:" + provider + ":"),
		Transformer: envelopev1.NewEnvelopeTransformer(v1svc, 1000, aestransformer.NewGCMTransformer),
	})
	w.other = w.seedTransformer(otherPlugin{}, "other-plugin")
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	w.cbc = value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte("k8s:enc:aescbc:v1:key1:"), Transformer: aestransformer.NewCBCTransformer(block)})
	return w
}

// NewSeed makes kube-apiserver generate a new DEK seed and have the
// plugin encrypt it, as it does at start and when the plugin's key_id
// changes (after a rotation).
func (w *Writer) NewSeed() {
	asAPIServer(func() { w.v2 = w.seedTransformer(w.v2svc, w.Provider) })
}

// seedTransformer is what kube-apiserver's KMS v2 probe sets up: a
// fresh seed, encrypted by the service, as the write state.
func (w *Writer) seedTransformer(svc kmsservice.Service, provider string) value.Transformer {
	ctx := context.Background()
	uid := fmt.Sprintf("seed-%d", time.Now().UnixNano())
	tr, obj, cacheKey, err := kmsv2.GenerateTransformer(ctx, uid, svc, true)
	if err != nil {
		w.t.Fatalf("generate DEK seed: %v", err)
	}
	state := kmsv2.State{
		Transformer:                           tr,
		EncryptedObjectKeyID:                  obj.KeyID,
		EncryptedObjectEncryptedDEKSource:     obj.EncryptedDEKSource,
		EncryptedObjectAnnotations:            obj.Annotations,
		EncryptedObjectEncryptedDEKSourceType: obj.EncryptedDEKSourceType,
		UID:                                   uid,
		ExpirationTimestamp:                   time.Now().Add(time.Hour),
		CacheKey:                              cacheKey,
		KMSProviderName:                       provider,
	}
	return value.NewPrefixTransformers(nil, value.PrefixTransformer{
		Prefix:      []byte("k8s:enc:kms:v2:" + provider + ":"),
		Transformer: kmsv2.NewEnvelopeTransformer(svc, provider, func() (kmsv2.State, error) { return state, nil }, "recoverytest"),
	})
}

// Encode is kube-apiserver's storage encoding of a typed object: protobuf.
func Encode(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		t.Fatal("no protobuf serializer")
	}
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil {
		t.Fatal(err)
	}
	b, err := runtime.Encode(scheme.Codecs.EncoderForVersion(info.Serializer, gvks[0].GroupVersion()), obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Seal transforms plain for storage under key.
func (w *Writer) Seal(key string, plain []byte, how Encryption) []byte {
	w.t.Helper()
	var tr value.Transformer
	switch how {
	case Identity:
		return plain
	case KMSv2:
		tr = w.v2
	case KMSv1:
		tr = w.v1
	case OtherKMSPlugin:
		tr = w.other
	case AESCBC:
		tr = w.cbc
	}
	var stored []byte
	var err error
	asAPIServer(func() { stored, err = tr.TransformToStorage(context.Background(), plain, value.DefaultContext(key)) })
	if err != nil {
		w.t.Fatalf("transform %s: %v", key, err)
	}
	return stored
}

// Put stores plain under key, transformed as how says, and returns what
// was stored.
func (w *Writer) Put(key string, plain []byte, how Encryption) []byte {
	w.t.Helper()
	stored := w.Seal(key, plain, how)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.etcd.Client.Put(ctx, key, string(stored)); err != nil {
		w.t.Fatalf("put %s: %v", key, err)
	}
	return stored
}

// Delete removes key (a tombstone in the next snapshot).
func (w *Writer) Delete(key string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.etcd.Client.Delete(ctx, key); err != nil {
		w.t.Fatalf("delete %s: %v", key, err)
	}
}

// otherPlugin is some other KMS v2 plugin: its ciphertext carries no
// Trousseau header.
type otherPlugin struct{}

func (otherPlugin) Encrypt(context.Context, string, []byte) (*kmsservice.EncryptResponse, error) {
	ct := make([]byte, 48)
	rand.Read(ct)
	return &kmsservice.EncryptResponse{Ciphertext: ct, KeyID: "other-key-1", Annotations: map[string][]byte{"key.vendor.example.com": []byte("v1")}}, nil
}

func (otherPlugin) Decrypt(context.Context, string, *kmsservice.DecryptRequest) ([]byte, error) {
	return nil, fmt.Errorf("other plugin: not available")
}

func (otherPlugin) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: "other-key-1"}, nil
}

// PutBatch stores many values, transformed as how says, in transactions
// of at most 100 keys (etcd's default limit is 128 operations).
func (w *Writer) PutBatch(keys []string, plains [][]byte, how Encryption) {
	w.t.Helper()
	for start := 0; start < len(keys); start += 100 {
		end := min(start+100, len(keys))
		ops := make([]clientv3.Op, 0, end-start)
		for i := start; i < end; i++ {
			ops = append(ops, clientv3.OpPut(keys[i], string(w.Seal(keys[i], plains[i], how))))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := w.etcd.Client.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			w.t.Fatalf("put batch: %v", err)
		}
	}
}
