package gcpkms

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

const testName = "gcp-test"

// newTestBackend returns a backend named testName on key, through the
// real Cloud KMS client dialled to the fake at f (plaintext, no
// credentials: the fake is on loopback).
func newTestBackend(t testing.TB, f *fakeKMS, key string) *Backend {
	t.Helper()
	return newBackendWith(t, Config{KeyName: key, Endpoint: f.addr})
}

func newBackendWith(t testing.TB, cfg Config) *Backend {
	t.Helper()
	b, err := New(context.Background(), testName, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	kmstest.Run(t, kmstest.Harness{
		BackendKind: "gcpkms",
		New: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, startFake(t, testKey), testKey)
		},
		OtherKey: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, startFake(t, otherKey), otherKey)
		},
		Unavailable: func(t *testing.T) kmsclients.Backend {
			f := startFake(t, testKey)
			f.stop()
			return newTestBackend(t, f, testKey)
		},
	})
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A share whose text would show in an error message that held it.
var testShare = []byte("SECRET-SHARE-0123456789abcdef0123456")

func mustWrap(t testing.TB, b *Backend, share, aad []byte) kmsclients.Wrapped {
	t.Helper()
	w, err := b.Wrap(ctxFor(t), share, aad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if err := kmsclients.CheckWrapped(w); err != nil {
		t.Fatal(err)
	}
	return w
}

// wantKind checks err's kind and shape ("gcpkms gcp-test: <op>: ..."),
// and that it holds no share.
func wantKind(t testing.TB, what string, err, kind error) {
	t.Helper()
	kmstest.WantKind(t, what, err, kind)
	var e *kmsclients.Error
	if !errors.As(err, &e) || !strings.HasPrefix(err.Error(), "gcpkms "+testName+": "+e.Op+": ") || e.Op == "" {
		t.Fatalf("%s: %q is not a *kmsclients.Error with the backend's prefix", what, err)
	}
	if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("%s: %q holds the share or more than one line", what, err)
	}
}

func TestRequestsCarryChecksumsAndBoundAAD(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	aad := []byte("dek=1;share=2")
	w := mustWrap(t, b, testShare, aad)
	kmstest.MustUnwrap(t, b, w, aad, testShare)

	enc, dec := f.lastEnc.Load(), f.lastDec.Load()
	bound := append([]byte("trousseau/gcpkms/v1\x00"), aad...)
	switch {
	case enc.GetName() != testKey || dec.GetName() != testKey:
		t.Errorf("Encrypt to %q, Decrypt to %q; want the key %q", enc.GetName(), dec.GetName(), testKey)
	case !bytes.Equal(enc.GetAdditionalAuthenticatedData(), bound) || !bytes.Equal(dec.GetAdditionalAuthenticatedData(), bound):
		t.Errorf("additional authenticated data %q / %q, want %q", enc.GetAdditionalAuthenticatedData(), dec.GetAdditionalAuthenticatedData(), bound)
	case enc.GetPlaintextCrc32C().GetValue() != crc(testShare) || enc.PlaintextCrc32C == nil:
		t.Error("Encrypt without the plaintext's CRC32C")
	case enc.AdditionalAuthenticatedDataCrc32C == nil || enc.GetAdditionalAuthenticatedDataCrc32C().GetValue() != crc(bound):
		t.Error("Encrypt without the AAD's CRC32C")
	case dec.CiphertextCrc32C == nil || dec.GetCiphertextCrc32C().GetValue() != crc(w.Ciphertext[1:]):
		t.Error("Decrypt without the ciphertext's CRC32C")
	case dec.AdditionalAuthenticatedDataCrc32C == nil || dec.GetAdditionalAuthenticatedDataCrc32C().GetValue() != crc(bound):
		t.Error("Decrypt without the AAD's CRC32C")
	}
	if w.Ciphertext[0] != framing.Version {
		t.Errorf("stored share starts with %#x, want the format version", w.Ciphertext[0])
	}
}

// TestCorruptAnswersAreRefused: an answer whose integrity fields do not
// hold is discarded, retried once, then refused as invalid.
func TestCorruptAnswersAreRefused(t *testing.T) {
	flip := func(b []byte) { b[len(b)/2] ^= 0x01 }
	for _, tc := range []struct {
		name   string
		method string
		mangle func(proto.Message)
	}{
		{"ciphertext checksum wrong", "Encrypt", func(m proto.Message) {
			r := m.(*kmspb.EncryptResponse)
			r.CiphertextCrc32C = wrapperspb.Int64(r.CiphertextCrc32C.GetValue() ^ 1)
		}},
		{"ciphertext checksum missing", "Encrypt", func(m proto.Message) { m.(*kmspb.EncryptResponse).CiphertextCrc32C = nil }},
		{"ciphertext corrupted on the way", "Encrypt", func(m proto.Message) { flip(m.(*kmspb.EncryptResponse).Ciphertext) }},
		{"plaintext checksum not verified", "Encrypt", func(m proto.Message) { m.(*kmspb.EncryptResponse).VerifiedPlaintextCrc32C = false }},
		{"AAD checksum not verified", "Encrypt", func(m proto.Message) {
			m.(*kmspb.EncryptResponse).VerifiedAdditionalAuthenticatedDataCrc32C = false
		}},
		{"plaintext checksum wrong", "Decrypt", func(m proto.Message) {
			r := m.(*kmspb.DecryptResponse)
			r.PlaintextCrc32C = wrapperspb.Int64(r.PlaintextCrc32C.GetValue() ^ 1)
		}},
		{"plaintext checksum missing", "Decrypt", func(m proto.Message) { m.(*kmspb.DecryptResponse).PlaintextCrc32C = nil }},
		{"plaintext corrupted on the way", "Decrypt", func(m proto.Message) { flip(m.(*kmspb.DecryptResponse).Plaintext) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, testKey)
			b := newTestBackend(t, f, testKey)
			aad := []byte("aad")
			w := mustWrap(t, b, testShare, aad)
			before := f.callCount(tc.method)
			f.setMangle(func(m proto.Message) {
				if strings.HasPrefix(string(m.ProtoReflect().Descriptor().Name()), tc.method) {
					tc.mangle(m)
				}
			})
			var err error
			if tc.method == "Encrypt" {
				_, err = b.Wrap(ctxFor(t), testShare, aad)
			} else {
				_, err = b.Unwrap(ctxFor(t), w, aad)
			}
			wantKind(t, tc.method, err, kmsclients.ErrInvalidCiphertext)
			if n := f.callCount(tc.method) - before; n != integrityAttempts {
				t.Errorf("%d calls of %s, want %d (a limited retry)", n, tc.method, integrityAttempts)
			}

			// Corruption of one answer only: the retry gets a good one.
			var once bool
			f.setMangle(func(m proto.Message) {
				if !once && strings.HasPrefix(string(m.ProtoReflect().Descriptor().Name()), tc.method) {
					once = true
					tc.mangle(m)
				}
			})
			w2 := mustWrap(t, b, testShare, aad)
			kmstest.MustUnwrap(t, b, w2, aad, testShare)
		})
	}
}

// TestRequestCorruptedOnTheWay: Cloud KMS refuses a request whose data
// does not match the checksum the backend computed.
func TestRequestCorruptedOnTheWay(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	b.client = corrupting{b.client}
	if _, err := b.Wrap(ctxFor(t), testShare, aad); err == nil {
		t.Fatal("Wrap of a share corrupted on the way succeeded")
	}
	_, err := b.Unwrap(ctxFor(t), w, aad)
	wantKind(t, "Unwrap of a ciphertext corrupted on the way", err, kmsclients.ErrInvalidCiphertext)
	if !strings.Contains(err.Error(), "checksum") {
		t.Errorf("error %q does not say why", err)
	}
}

// corrupting flips a bit of what it sends, after the checksums were made.
type corrupting struct{ kmsAPI }

func (c corrupting) Encrypt(ctx context.Context, req *kmspb.EncryptRequest, opts ...gax.CallOption) (*kmspb.EncryptResponse, error) {
	req = proto.Clone(req).(*kmspb.EncryptRequest)
	req.Plaintext[0] ^= 1
	return c.kmsAPI.Encrypt(ctx, req, opts...)
}

func (c corrupting) Decrypt(ctx context.Context, req *kmspb.DecryptRequest, opts ...gax.CallOption) (*kmspb.DecryptResponse, error) {
	req = proto.Clone(req).(*kmspb.DecryptRequest)
	req.Ciphertext[len(req.Ciphertext)-1] ^= 1
	return c.kmsAPI.Decrypt(ctx, req, opts...)
}

func TestPrimaryRotation(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	aad := []byte("dek=1;share=1")
	old := mustWrap(t, b, testShare, aad)
	v1 := testKey + "/cryptoKeyVersions/1"
	if old.KeyIdentity != v1 || kmstest.MustProbe(t, b) != v1 {
		t.Fatalf("before rotation: wrapped by %q, want %q", old.KeyIdentity, v1)
	}
	v2 := f.addVersion(t, testKey)
	if got := kmstest.MustProbe(t, b); got != v2 {
		t.Fatalf("after rotation Probe reports %q, want the new primary %q", got, v2)
	}
	if w := mustWrap(t, b, testShare, aad); w.KeyIdentity != v2 {
		t.Fatalf("after rotation Wrap used %q, want %q", w.KeyIdentity, v2)
	}
	kmstest.MustUnwrap(t, b, old, aad, testShare)
	if c1, c2 := b.CustodianKey(v1), b.CustodianKey(v2); c1 != c2 || c1 != "gcpkms:"+testKey {
		t.Fatalf("custodian keys %q and %q, want both gcpkms:%s", c1, c2, testKey)
	}
}

// TestVersionStates: a primary version that cannot encrypt is refused
// alike by Probe and Wrap: permission when only an operator can change
// it, unavailable while it is still being generated or imported (it
// becomes usable by itself).
func TestVersionStates(t *testing.T) {
	for _, tc := range []struct {
		state      kmspb.CryptoKeyVersion_CryptoKeyVersionState
		kind       error // of Probe and Wrap
		unwrapKind error // nil: the old share still unwraps after re-enabling
	}{
		{kmspb.CryptoKeyVersion_DISABLED, kmsclients.ErrPermission, kmsclients.ErrPermission},
		{kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmsclients.ErrPermission, kmsclients.ErrPermission},
		{kmspb.CryptoKeyVersion_DESTROYED, kmsclients.ErrPermission, kmsclients.ErrPermission},
		{kmspb.CryptoKeyVersion_PENDING_GENERATION, kmsclients.ErrUnavailable, kmsclients.ErrPermission},
		{kmspb.CryptoKeyVersion_PENDING_IMPORT, kmsclients.ErrUnavailable, kmsclients.ErrPermission},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			f := startFake(t, testKey)
			b := newTestBackend(t, f, testKey)
			aad := []byte("aad")
			w := mustWrap(t, b, testShare, aad)
			f.setState(t, w.KeyIdentity, tc.state)

			_, err := b.Probe(ctxFor(t))
			wantKind(t, "Probe", err, tc.kind)
			if !strings.Contains(err.Error(), tc.state.String()) {
				t.Errorf("Probe: %q does not name the state", err)
			}
			_, err = b.Wrap(ctxFor(t), testShare, aad)
			wantKind(t, "Wrap", err, tc.kind)
			if !strings.Contains(err.Error(), tc.state.String()) || !strings.Contains(err.Error(), "FailedPrecondition") {
				t.Errorf("Wrap: %q does not name the state and Cloud KMS's answer", err)
			}
			_, err = b.Unwrap(ctxFor(t), w, aad)
			wantKind(t, "Unwrap", err, tc.unwrapKind)

			if tc.state != kmspb.CryptoKeyVersion_DESTROYED {
				f.setState(t, w.KeyIdentity, kmspb.CryptoKeyVersion_ENABLED) // restored by an operator
				kmstest.MustUnwrap(t, b, w, aad, testShare)
				kmstest.MustProbe(t, b)
			}
		})
	}
}

// TestForeignKeyInAnswers: an answer of Cloud KMS that names another key
// or project than keyName (a misrouted endpoint, a server answering for
// another key) is refused as permission, in every operation that reads
// it: the fault is the configuration's or the server's, not a share's, and
// no retry helps until an operator acts. The error says so.
func TestForeignKeyInAnswers(t *testing.T) {
	otherProject := strings.Replace(testKey, "trousseau-test", "attacker-project", 1)
	for _, foreign := range []string{otherKey, otherProject} {
		rename := func(name string) string { return strings.Replace(name, testKey, foreign, 1) }
		for _, tc := range []struct {
			name   string
			mangle func(proto.Message)
			call   func(t *testing.T, b *Backend, w kmsclients.Wrapped) error
		}{
			{"Wrap: Encrypt answers for another key", func(m proto.Message) {
				if r, ok := m.(*kmspb.EncryptResponse); ok {
					r.Name = rename(r.Name)
				}
			}, func(t *testing.T, b *Backend, _ kmsclients.Wrapped) error {
				_, err := b.Wrap(ctxFor(t), testShare, []byte("aad"))
				return err
			}},
			{"Probe: GetCryptoKey answers for another key", func(m proto.Message) {
				if r, ok := m.(*kmspb.CryptoKey); ok {
					r.Name = rename(r.Name)
				}
			}, func(t *testing.T, b *Backend, _ kmsclients.Wrapped) error {
				_, err := b.Probe(ctxFor(t))
				return err
			}},
			{"Probe: the primary is another key's version", func(m proto.Message) {
				if r, ok := m.(*kmspb.CryptoKey); ok {
					r.Primary.Name = rename(r.Primary.Name)
				}
			}, func(t *testing.T, b *Backend, _ kmsclients.Wrapped) error {
				_, err := b.Probe(ctxFor(t))
				return err
			}},
			{"Unwrap: GetCryptoKey, asked how the project is named, answers for another key", func(m proto.Message) {
				if r, ok := m.(*kmspb.CryptoKey); ok {
					r.Name = rename(r.Name)
				}
			}, func(t *testing.T, b *Backend, w kmsclients.Wrapped) error {
				// A share recorded under the project's number makes a
				// fresh backend ask GetCryptoKey.
				w.KeyIdentity = strings.Replace(w.KeyIdentity, "trousseau-test", "123456789012", 1)
				_, err := b.Unwrap(ctxFor(t), w, []byte("aad"))
				return err
			}},
		} {
			t.Run(foreign+"/"+tc.name, func(t *testing.T) {
				f := startFake(t, testKey)
				w := mustWrap(t, newTestBackend(t, f, testKey), testShare, []byte("aad"))
				b := newTestBackend(t, f, testKey)
				f.setMangle(tc.mangle)
				err := tc.call(t, b, w)
				wantKind(t, tc.name, err, kmsclients.ErrPermission)
				if !strings.Contains(err.Error(), foreign) || !strings.Contains(err.Error(), "which keyName "+testKey+" does not name") ||
					!strings.Contains(err.Error(), "gcpkms.endpoint") {
					t.Errorf("error %q does not say what Cloud KMS answered and what to check", err)
				}
			})
		}
	}
}

// TestForeignKeyIdentityRefused: a share whose key identity (chosen by
// whoever can write etcd) names another key is refused without a call.
func TestForeignKeyIdentityRefused(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	for _, id := range []string{
		"",
		"local:abc",
		testKey,
		testKey + "/cryptoKeyVersions/0",
		testKey + "/cryptoKeyVersions/1/x",
		testKey + "/cryptoKeyVersions/1 ",
		strings.Replace(testKey, "trousseau-test", "attacker-project", 1) + "/cryptoKeyVersions/1",
		strings.Replace(testKey, "trousseau-test", "123456789012", 1) + "/cryptoKeyVersions/1",
		strings.Replace(testKey, "europe-west1", "us-east1", 1) + "/cryptoKeyVersions/1",
		strings.Replace(testKey, "keyRings/ring", "keyRings/other", 1) + "/cryptoKeyVersions/1",
		otherKey + "/cryptoKeyVersions/1",
		"/" + testKey + "/cryptoKeyVersions/1",
		testKey + "/cryptoKeyVersions/1/cryptoKeyVersions/1",
	} {
		t.Run(id, func(t *testing.T) {
			decrypts, gets := f.callCount("Decrypt"), f.callCount("GetCryptoKey")
			bad := w
			bad.KeyIdentity = id
			_, err := b.Unwrap(ctxFor(t), bad, aad)
			wantKind(t, "Unwrap", err, kmsclients.ErrInvalidCiphertext)
			if f.callCount("Decrypt") != decrypts || f.callCount("GetCryptoKey") != gets {
				t.Error("a call was made for a share of another key")
			}
		})
	}
}

// TestProjectNumberInAnswers: a service may name a project by its number
// in answers to a request that named it by ID. Shares recorded so are
// this key's; a share naming another project's number is not.
func TestProjectNumberInAnswers(t *testing.T) {
	f := startFake(t, testKey)
	f.useProjectNumber("trousseau-test", "123456789012")
	numbered := strings.Replace(testKey, "trousseau-test", "123456789012", 1)
	b := newTestBackend(t, f, testKey)
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	if w.KeyIdentity != numbered+"/cryptoKeyVersions/1" || kmstest.MustProbe(t, b) != w.KeyIdentity {
		t.Fatalf("key identity %q, want the name Cloud KMS answered with", w.KeyIdentity)
	}
	kmstest.MustUnwrap(t, b, w, aad, testShare)

	// A backend that has not asked Cloud KMS anything yet (a restart,
	// a recovery) asks once how it names the key.
	fresh := newTestBackend(t, f, testKey)
	gets := f.callCount("GetCryptoKey")
	kmstest.MustUnwrap(t, fresh, w, aad, testShare)
	kmstest.MustUnwrap(t, fresh, w, aad, testShare)
	if n := f.callCount("GetCryptoKey") - gets; n != 1 {
		t.Fatalf("%d GetCryptoKey calls, want 1", n)
	}
	bad := w
	bad.KeyIdentity = strings.Replace(w.KeyIdentity, "123456789012", "999999999999", 1)
	_, err := fresh.Unwrap(ctxFor(t), bad, aad)
	wantKind(t, "Unwrap of a share naming another project number", err, kmsclients.ErrInvalidCiphertext)
}

func TestPermissionDenied(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	aad := []byte("aad")
	w := mustWrap(t, b, testShare, aad)
	f.deny(testKey)
	_, err := b.Probe(ctxFor(t))
	wantKind(t, "Probe", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "cloudkms.cryptoKeys.get") {
		t.Errorf("Probe: %q does not say what was denied", err)
	}
	_, err = b.Wrap(ctxFor(t), testShare, aad)
	wantKind(t, "Wrap", err, kmsclients.ErrPermission)
	_, err = b.Unwrap(ctxFor(t), w, aad)
	wantKind(t, "Unwrap", err, kmsclients.ErrPermission)
}

func TestInjectedCodes(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		kind error
	}{
		{codes.Unauthenticated, kmsclients.ErrPermission},
		{codes.NotFound, kmsclients.ErrPermission},
		{codes.Internal, kmsclients.ErrUnavailable},
		{codes.DeadlineExceeded, kmsclients.ErrUnavailable},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			f := startFake(t, testKey)
			b := newTestBackend(t, f, testKey)
			f.failNext(tc.code, 1)
			_, err := b.Probe(ctxFor(t))
			wantKind(t, "Probe", err, tc.kind)
			if f.callCount("GetCryptoKey") != 1 {
				t.Errorf("%s was retried", tc.code)
			}
		})
	}
}

func TestQuotaRetriedWithinDeadline(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)

	f.failNext(codes.ResourceExhausted, 2)
	w := mustWrap(t, b, testShare, []byte("aad"))
	if n := f.callCount("Encrypt"); n != 3 {
		t.Fatalf("%d Encrypt calls, want 3 (two refused for quota, then one answered)", n)
	}
	kmstest.MustUnwrap(t, b, w, []byte("aad"), testShare)

	f.failNext(codes.Unavailable, 1)
	kmstest.MustProbe(t, b)

	// A quota that does not clear: the retries end, within the caller's
	// deadline, with what Cloud KMS said.
	f.failNext(codes.ResourceExhausted, 1000)
	before := f.callCount("Encrypt")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := b.Wrap(ctx, testShare, []byte("aad"))
	wantKind(t, "Wrap under a quota", err, kmsclients.ErrUnavailable)
	if !strings.Contains(err.Error(), "ResourceExhausted") {
		t.Errorf("error %q does not say quota", err)
	}
	if n := f.callCount("Encrypt") - before; n != maxAttempts {
		t.Errorf("%d attempts, want %d", n, maxAttempts)
	}

	// A deadline shorter than the backoff: fewer retries, and still the
	// answer rather than a bare deadline.
	ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.Wrap(ctx, testShare, []byte("aad"))
	wantKind(t, "Wrap under a quota, short deadline", err, kmsclients.ErrUnavailable)
	if took := time.Since(start); took >= 150*time.Millisecond {
		t.Errorf("took %s, past the caller's deadline", took)
	}
}

func TestLatency(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	w := mustWrap(t, b, testShare, []byte("aad"))
	f.setLatency(5 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Unwrap(ctx, w, []byte("aad"))
	wantKind(t, "Unwrap past the caller's deadline", err, context.DeadlineExceeded)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Unwrap took %s with a 200ms deadline", took)
	}

	// The configured timeout is the backend's: its expiry is the
	// backend being unavailable, not the caller's deadline.
	timed := newBackendWith(t, Config{KeyName: testKey, Endpoint: f.addr, Timeout: Duration{Duration: 200 * time.Millisecond}})
	start = time.Now()
	_, err = timed.Probe(ctxFor(t))
	wantKind(t, "Probe past the configured timeout", err, kmsclients.ErrUnavailable)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Probe took %s with a 200ms timeout", took)
	}

	f.setLatency(50 * time.Millisecond)
	kmstest.MustUnwrap(t, b, w, []byte("aad"), testShare)
}

func TestServerComesBack(t *testing.T) {
	f := startFake(t, testKey)
	b := newTestBackend(t, f, testKey)
	kmstest.MustProbe(t, b)
	f.stop()
	_, err := b.Probe(ctxFor(t))
	wantKind(t, "Probe with the server stopped", err, kmsclients.ErrUnavailable)
	f.restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := b.Probe(ctxFor(t)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("Probe after the server came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestWrapRefusesBadShares(t *testing.T) {
	b := newTestBackend(t, startFake(t, testKey), testKey)
	for _, share := range [][]byte{nil, make([]byte, maxShareSize+1)} {
		if _, err := b.Wrap(ctxFor(t), share, []byte("aad")); err == nil {
			t.Errorf("Wrap of a %d-byte share succeeded", len(share))
		}
	}
}

func TestNewMakesNoRemoteCall(t *testing.T) {
	f := startFake(t, testKey)
	f.stop() // nothing listens
	start := time.Now()
	b, err := New(context.Background(), testName, Config{KeyName: testKey, Endpoint: f.addr})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("New took %s", took)
	}
	// Application Default Credentials, impersonation, the real endpoint:
	// all left to the first call.
	b, err = New(context.Background(), testName, Config{KeyName: testKey, ImpersonateServiceAccount: "trousseau@p.iam.gserviceaccount.com"})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	for _, tc := range []struct {
		name, want string
		cfg        Config
	}{
		{"bad name", "invalid backend name", Config{KeyName: testKey}},
		{"bad config", "gcpkms.keyName: required", Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := testName
			if tc.name == "bad name" {
				name = "Bad_Name"
			}
			_, err := New(context.Background(), name, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "gcpkms") {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestStoredFormatUnchanged: a share stored by an earlier release (this
// frame was made by the backend's own code before kmsclients.Framing)
// still decodes, and Wrap still stores the same bytes.
func TestStoredFormatUnchanged(t *testing.T) {
	stored, _ := hex.DecodeString("01636c6f75646b6d732d63697068657274657874")
	ct, err := framing.Unframe(stored)
	if err != nil || string(ct) != "cloudkms-ciphertext" {
		t.Fatalf("Unframe = %q, %v", ct, err)
	}
	if got := framing.Frame(ct); !bytes.Equal(got, stored) {
		t.Fatalf("Frame = %x, want %x", got, stored)
	}
}

// TestSDKDebugLogHoldsNoShare: the Google libraries log every request
// and answer when GOOGLE_SDK_GO_LOGGING_LEVEL=debug; the backend's own
// logger keeps shares out of stderr whatever the environment says.
func TestSDKDebugLogHoldsNoShare(t *testing.T) {
	t.Setenv("GOOGLE_SDK_GO_LOGGING_LEVEL", "debug")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	logged := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		logged <- b
	}()
	func() {
		defer func() { os.Stderr = stderr }()
		b := newTestBackend(t, startFake(t, testKey), testKey)
		wrapped := mustWrap(t, b, testShare, []byte("aad"))
		kmstest.MustUnwrap(t, b, wrapped, []byte("aad"), testShare)
	}()
	w.Close()
	out := <-logged
	if bytes.Contains(out, []byte("SECRET")) || bytes.Contains(out, []byte(base64.StdEncoding.EncodeToString(testShare)[:20])) {
		t.Fatalf("the share reached stderr:\n%s", out)
	}
}
