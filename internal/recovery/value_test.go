package recovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	envelopev1 "k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	"k8s.io/client-go/kubernetes/scheme"
	kmsservice "k8s.io/kms/pkg/service"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/safetext"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		in       string
		kind     ValueKind
		provider string
		err      bool
	}{
		{"k8s:enc:kms:v2:trousseau:\x0a\x01x", ValueKMSv2, "trousseau", false},
		{"k8s:enc:kms:v1:old-name:\x00\x10", ValueKMSv1, "old-name", false},
		{"k8s:enc:kms:v2::rest", 0, "", true},
		{"k8s:enc:kms:v2:no-colon", 0, "", true},
		{"k8s:enc:kms:v2:a b:x", 0, "", true},
		{"k8s:enc:kms:v2:" + strings.Repeat("n", 300) + ":", 0, "", true},
		{"k8s:enc:aescbc:v1:key1:\x01\x02", ValueOtherEncryption, "", false},
		{"k8s:enc:secretbox:v1:k:", ValueOtherEncryption, "", false},
		{"k8s:enc:", 0, "", true},
		{"k8s\x00\x0a\x0c", ValueProtobuf, "", false},
		{` {"kind":"Widget"}`, ValueJSON, "", false},
		{"", 0, "", true},
		{"\x00garbage", 0, "", true},
	} {
		v, err := ParseValue([]byte(tc.in))
		if (err != nil) != tc.err || (err == nil && (v.Kind != tc.kind || v.Provider != tc.provider)) {
			t.Errorf("ParseValue(%q) = %+v, %v", tc.in, v, err)
		}
		if err != nil && !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("ParseValue(%q): %v is not ErrUnknownFormat", tc.in, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		prefix, key string
		want        Key
		err         bool
	}{
		{"/registry", "/registry/secrets/default/db", Key{Resource: "secrets", Namespace: "default", Name: "db"}, false},
		{"/registry/", "/registry/namespaces/default", Key{Resource: "namespaces", Name: "default"}, false},
		{"registry", "/registry/example.com/widgets/ns/w", Key{Group: "example.com", Resource: "widgets", Namespace: "ns", Name: "w"}, false},
		{"/registry", "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com", Key{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "widgets.example.com"}, false},
		{"/registry", "/registry/services/specs/ns/svc", Key{Resource: "services/specs", Namespace: "ns", Name: "svc"}, false},
		{"/registry", "/registry/clusterroles/system:admin", Key{Resource: "clusterroles", Name: "system:admin"}, false},
		{"/k8s-alt", "/k8s-alt/secrets/a/b", Key{Resource: "secrets", Namespace: "a", Name: "b"}, false},
		{"/registry", "/other/secrets/a/b", Key{}, true},
		{"/registry", "/registry/health", Key{}, true},
		{"/registry", "/registry/secrets/../b", Key{}, true},
		{"/registry", "/registry/secrets//b", Key{}, true},
		{"/registry", "/registry/secrets/a/.", Key{}, true},
	} {
		got, err := ParseKey(tc.prefix, tc.key)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseKey(%q, %q) = %+v, %v", tc.prefix, tc.key, got, err)
		}
	}
}

func TestParseRevision(t *testing.T) {
	b := []byte{0, 0, 0, 0, 0, 0, 1, 2, '_', 0, 0, 0, 0, 0, 0, 0, 3}
	r, err := parseRevision(b)
	if err != nil || r.main != 258 || r.sub != 3 || r.tombstone {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = parseRevision(append(b, 't'))
	if err != nil || !r.tombstone {
		t.Fatalf("tombstone: %+v %v", r, err)
	}
	for _, bad := range [][]byte{b[:16], append(bytes.Clone(b), 'x'), append(bytes.Clone(b[:8]), append([]byte{'-'}, b[9:]...)...)} {
		if _, err := parseRevision(bad); err == nil {
			t.Errorf("parseRevision(%x) accepted", bad)
		}
	}
}

// Values for the fuzz targets, made in process by kube-apiserver's
// transformers with Trousseau's envelope as the KMS service.

type inProcessPlugin struct{ env *envelope.Envelope }

func (p inProcessPlugin) Encrypt(_ context.Context, _ string, pt []byte) (*kmsservice.EncryptResponse, error) {
	s, err := p.env.Encrypt(pt)
	if err != nil {
		return nil, err
	}
	return &kmsservice.EncryptResponse{Ciphertext: s.Ciphertext, KeyID: s.KeyID, Annotations: map[string][]byte{envelope.SharesAnnotation: s.Header}}, nil
}

func (p inProcessPlugin) Decrypt(context.Context, string, *kmsservice.DecryptRequest) ([]byte, error) {
	return nil, errors.New("not used")
}

func (p inProcessPlugin) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: p.env.KeyID()}, nil
}

func (p inProcessPlugin) v1Encrypt(pt []byte) ([]byte, error) {
	s, err := p.env.Encrypt(pt)
	if err != nil {
		return nil, err
	}
	return envelope.MarshalCombined(s.Header, s.Ciphertext), nil
}

type v1Adapter struct{ p inProcessPlugin }

func (a v1Adapter) Encrypt(pt []byte) ([]byte, error) { return a.p.v1Encrypt(pt) }
func (a v1Adapter) Decrypt([]byte) ([]byte, error)    { return nil, errors.New("not used") }

const fuzzKey = "/registry/secrets/default/fuzz"

// sealer stores objects as kube-apiserver does, in process.
type sealer struct {
	env    *envelope.Envelope
	v2, v1 value.Transformer
}

// seal returns the KMS v2 and v1 values of plain under key.
func (s sealer) seal(t testing.TB, key string, plain []byte) [][]byte {
	var out [][]byte
	for _, tr := range []value.Transformer{s.v2, s.v1} {
		v, err := tr.TransformToStorage(context.Background(), plain, value.DefaultContext(key))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func newSealer(t testing.TB) sealer { return newSealerIn(t, t.TempDir(), true) }

// newSealerIn keeps the key files of backends a, b and c in dir, made
// first if generate.
func newSealerIn(t testing.TB, dir string, generate bool) sealer {
	var backends []kmsclients.Backend
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(dir, n+".key")
		if generate {
			if err := local.GenerateKeyFile(p); err != nil {
				t.Fatal(err)
			}
		}
		b, err := local.New(context.Background(), n, local.Config{KeyFile: p})
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
	plugin := inProcessPlugin{env}
	tr, obj, cacheKey, err := kmsv2.GenerateTransformer(context.Background(), "fuzz", plugin, true)
	if err != nil {
		t.Fatal(err)
	}
	state := kmsv2.State{Transformer: tr, EncryptedObjectKeyID: obj.KeyID, EncryptedObjectEncryptedDEKSource: obj.EncryptedDEKSource,
		EncryptedObjectAnnotations: obj.Annotations, EncryptedObjectEncryptedDEKSourceType: obj.EncryptedDEKSourceType,
		UID: "fuzz", ExpirationTimestamp: time.Now().Add(time.Hour), CacheKey: cacheKey, KMSProviderName: "trousseau"}
	return sealer{
		env: env,
		v2: value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte(kmsV2Prefix + "trousseau:"),
			Transformer: kmsv2.NewEnvelopeTransformer(plugin, "trousseau", func() (kmsv2.State, error) { return state, nil }, "fuzz")}),
		v1: value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte(kmsV1Prefix + "trousseau:"),
			Transformer: envelopev1.NewEnvelopeTransformer(v1Adapter{plugin}, 10, aestransformer.NewGCMTransformer)}),
	}
}

// secretBytes is a Secret as kube-apiserver stores it (protobuf).
func secretBytes(t testing.TB, ns, name string) []byte {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"k": []byte("fuzz-secret-value")}}
	info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	plain, err := runtime.Encode(scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion), secret)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// fuzzValues returns a decrypt-capable envelope, a KMS v2 and a KMS v1
// value of one Secret under fuzzKey, and the Secret's stored bytes.
func fuzzValues(t testing.TB) (*envelope.Envelope, [][]byte, []byte) {
	s := newSealer(t)
	plain := secretBytes(t, "default", "fuzz")
	return s.env, s.seal(t, fuzzKey, plain), plain
}

// TestRenderMatchesSigsYAML: the YAML rendering is what kubectl's own
// YAML library (JSON, then YAML) writes for the same object.
func TestRenderMatchesSigsYAML(t *testing.T) {
	secret, err := decodeObject(secretBytes(t, "default", "fuzz"))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := decodeObject([]byte(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"n","labels":{"a":"true"}},
		"spec":{"int":3,"float":2.5,"big":12345678901,"exp":1e21,"neg":-0.5,"yes":"yes","null":null,"list":[1,"two",{"three":3.0}],"empty":{},"emptyList":[],
		"multi":"line one\nline two\n","long":"` + strings.Repeat("word ", 40) + `","unicode":"héllo ✓","colon":"a: b","num":"0123"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Object{secret, cr} {
		got, err := o.render(YAML)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sigsyaml.Marshal(map[string]any(o))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("render:\n%s\nsigs.k8s.io/yaml:\n%s", got, want)
		}
	}
}

func TestDecrypterRoundTrip(t *testing.T) {
	NeedsDataDecryption(t)
	env, values, plain := fuzzValues(t)
	d := NewDecrypter(context.Background(), env, DecrypterOptions{})
	for i, v := range values {
		if _, err := d.Decrypt(context.Background(), fuzzKey, v); err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
	}
	if deks := d.DEKs(); len(deks) != 1 || deks[0].Err != nil || deks[0].Threshold != 2 {
		t.Fatalf("DEKs: %+v", deks)
	}
	for i, v := range values {
		got, err := d.Decrypt(context.Background(), fuzzKey, v)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("value %d: %v", i, err)
		}
		if _, err := d.Decrypt(context.Background(), fuzzKey+"x", v); err == nil {
			t.Fatalf("value %d decrypted under another key", i)
		}
		// Every byte matters: a change anywhere fails or, if it falls
		// where the formats allow slack, still gives the same plaintext.
		for j := range v {
			m := bytes.Clone(v)
			m[j] ^= 0x01
			if got, err := d.Decrypt(context.Background(), fuzzKey, m); err == nil && !bytes.Equal(got, plain) {
				t.Fatalf("value %d, byte %d changed: decrypted to something else", i, j)
			}
		}
	}
}

// FuzzParseValue: the value classifier never panics, and what it reports
// is what the value starts with.
func FuzzParseValue(f *testing.F) {
	for _, s := range []string{"k8s:enc:kms:v2:trousseau:\x0a", "k8s:enc:kms:v1:x:\x00\x01", "k8s:enc:aescbc:v1:k:", "k8s\x00", "{}", "", "k8s:enc:kms:v2:"} {
		f.Add([]byte(s), "/registry/secrets/ns/name")
	}
	f.Fuzz(func(t *testing.T, b []byte, key string) {
		v, err := ParseValue(b)
		if err != nil {
			if !errors.Is(err, ErrUnknownFormat) {
				t.Fatalf("error kind: %v", err)
			}
			return
		}
		switch v.Kind {
		case ValueKMSv2, ValueKMSv1:
			p := kmsV2Prefix
			if v.Kind == ValueKMSv1 {
				p = kmsV1Prefix
			}
			if !bytes.HasPrefix(b, []byte(p+v.Provider+":")) || v.Provider == "" || strings.ContainsAny(v.Provider, ":/") {
				t.Fatalf("%q: provider %q", b, v.Provider)
			}
		case ValueUnknown:
			t.Fatal("unknown kind without error")
		}
		if k, err := ParseKey("/registry", key); err == nil {
			p, err := PathOf(k, YAML)
			if err != nil && safetext.Printable(key) {
				t.Fatalf("key %q parsed to %+v, but has no path: %v", key, k, err)
			}
			if err == nil && (!safetext.Printable(p) || !filepath.IsLocal(p)) {
				t.Fatalf("key %q has the path %q", key, p)
			}
		}
	})
}

// FuzzDecryptValue runs arbitrary stored values through the whole read
// path (the apiserver's transformers, the header and ciphertext parsers,
// the envelope). It must never panic, and anything it accepts must be the
// one Secret that was encrypted: the value is authenticated end to end.
func FuzzDecryptValue(f *testing.F) {
	NeedsDataDecryption(f)
	env, values, plain := fuzzValues(f)
	for _, v := range values {
		f.Add(v)
		f.Add(v[:len(v)/2])
	}
	f.Add([]byte("k8s:enc:kms:v2:trousseau:"))
	f.Add([]byte("k8s:enc:kms:v1:trousseau:\x00\x08TRS1\x00\x00\x00\x00"))
	d := NewDecrypter(context.Background(), env, DecrypterOptions{UnwrapTimeout: 5 * time.Second})
	f.Fuzz(func(t *testing.T, v []byte) {
		got, err := d.Decrypt(context.Background(), fuzzKey, v)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatalf("accepted a value that decrypts to something else (%d bytes)", len(got))
		}
		if err != nil && strings.Contains(fmt.Sprint(err), "fuzz-secret-value") {
			t.Fatal("error holds the plaintext")
		}
	})
}
