package kmsplugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/kmstest"
)

// conformance runs the shared suite against the fake plugin, through the
// KMS API given by opts.
func conformance(t *testing.T, opts ...func(*Config)) {
	kmstest.Run(t, kmstest.Harness{
		BackendKind: "kmsplugin",
		New: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "custodian", startFake(t).endpoint(), opts...)
		},
		OtherKey: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "other", startFake(t).endpoint(), opts...)
		},
		Unavailable: func(t *testing.T) kmsclients.Backend {
			return newTestBackend(t, "gone", "unix://"+filepath.Join(shortTemp(t), "none.sock"), opts...)
		},
	})
}

func TestConformanceV2(t *testing.T) { conformance(t) }

func TestConformanceV1(t *testing.T) { conformance(t, withV1) }

func share(t testing.TB) []byte {
	s := make([]byte, 33)
	rand.Read(s)
	return s
}

func wantKind(t testing.TB, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: %v (kind %s), want %v", what, err, kmsclients.Kind(err), kind)
	}
}

// TestWrappedShareKeepsTheCustodiansAnswer: the frame holds the key_id,
// ciphertext and annotations, and the key identity names the endpoint and
// key_id.
func TestWrappedShareKeepsTheCustodiansAnswer(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	w, err := b.Wrap(ctxFor(t, 10*time.Second), share(t), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := unmarshal(w.Ciphertext)
	if err != nil {
		t.Fatalf("Wrap stored a frame unmarshal refuses: %v", err)
	}
	if s.api != apiV2 || s.keyID != srv.kms.currentID() || len(s.annotations[saltAnnotation]) != 8 {
		t.Fatalf("frame: api %d, key_id %q, annotations %v", s.api, s.keyID, s.annotations)
	}
	if want := "kmsplugin:" + srv.endpoint() + ":" + srv.kms.currentID(); w.KeyIdentity != want {
		t.Fatalf("key identity %q, want %q", w.KeyIdentity, want)
	}
}

func TestProbeUnhealthy(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	srv.kms.set(func(k *fakeKMS) { k.healthz = "vault sealed\nsee runbook" })
	_, err := b.Probe(ctxFor(t, 10*time.Second))
	wantKind(t, "Probe of an unhealthy custodian", err, kmsclients.ErrUnavailable)
	if !strings.Contains(err.Error(), `"vault sealed\nsee runbook"`) || !strings.HasPrefix(err.Error(), "kmsplugin a: probe: ") {
		t.Fatalf("error does not carry the custodian's reason, quoted: %v", err)
	}
	srv.kms.set(func(k *fakeKMS) { k.healthz = "" })
	if _, err := b.Probe(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Probe once healthy again: %v", err)
	}
}

func TestProbeRefusesOtherVersions(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	srv.kms.set(func(k *fakeKMS) { k.version = "v2alpha1" })
	_, err := b.Probe(ctxFor(t, 10*time.Second))
	wantKind(t, "Probe of a v2alpha1 custodian", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "v2alpha1") || strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("error does not say what is wrong: %v", err)
	}
	srv.kms.set(func(k *fakeKMS) { k.version = "v2beta1" })
	if _, err := b.Probe(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("v2beta1 (Kubernetes 1.27, 1.28): %v", err)
	}
}

// TestKeyRotation: a new key_id is reported once the custodian has named
// it twice in a row; shares wrapped before still unwrap.
func TestKeyRotation(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	probe := func() string {
		t.Helper()
		id, err := b.Probe(ctxFor(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	keyA := srv.kms.currentID()
	idA := probe()
	old := share(t)
	w, err := b.Wrap(ctxFor(t, 10*time.Second), old, []byte("aad"))
	if err != nil || w.KeyIdentity != idA {
		t.Fatalf("Wrap: %v, identity %q, want %q", err, w.KeyIdentity, idA)
	}

	keyB := srv.kms.rotate()
	if id := probe(); id != idA {
		t.Fatalf("first sighting of a new key_id reported at once: %q", id)
	}
	idB := probe()
	if idB == idA || !strings.HasSuffix(idB, ":"+keyB) {
		t.Fatalf("second sighting: %q, want the identity of %q", idB, keyB)
	}
	if got, err := b.Unwrap(ctxFor(t, 10*time.Second), w, []byte("aad")); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("share wrapped under the old key: %v", err)
	}

	t.Run("FlipFlop", func(t *testing.T) {
		for _, key := range []string{keyA, keyB, keyA, keyB} {
			srv.kms.use(key)
			if id := probe(); id != idB {
				t.Fatalf("custodian flipped to %s: Probe reports %q, want %q throughout", key, id, idB)
			}
		}
	})

	// A Wrap under a key_id Probe does not report yet fails, and counts
	// as a sighting: the next Probe reports it, and Wrap works again.
	t.Run("WrapOnlyUnderTheReportedKeyID", func(t *testing.T) {
		keyC := srv.kms.rotate()
		_, err := b.Wrap(ctxFor(t, 10*time.Second), share(t), []byte("aad"))
		wantKind(t, "Wrap under a key_id seen once", err, kmsclients.ErrUnavailable)
		if !strings.Contains(err.Error(), keyC) || !strings.Contains(err.Error(), keyB) {
			t.Fatalf("error does not name both key_ids: %v", err)
		}
		idC := probe()
		if !strings.HasSuffix(idC, ":"+keyC) {
			t.Fatalf("Probe after a Wrap and a Status naming %s: %q", keyC, idC)
		}
		w, err := b.Wrap(ctxFor(t, 10*time.Second), share(t), []byte("aad"))
		if err != nil || w.KeyIdentity != idC {
			t.Fatalf("Wrap once the key_id is reported: %v, identity %q", err, w.KeyIdentity)
		}
	})
}

func TestKeyTracker(t *testing.T) {
	for _, tc := range []struct {
		name string
		seen []string
		want []string
	}{
		{"steady", []string{"a", "a", "a"}, []string{"a", "a", "a"}},
		{"rotation", []string{"a", "b", "b", "b"}, []string{"a", "a", "b", "b"}},
		{"flip-flop", []string{"a", "b", "a", "b", "a"}, []string{"a", "a", "a", "a", "a"}},
		{"two new keys", []string{"a", "b", "c", "c"}, []string{"a", "a", "a", "c"}},
		{"back after rotation", []string{"a", "b", "b", "a", "a"}, []string{"a", "a", "b", "b", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k keyTracker
			for i, id := range tc.seen {
				if got := k.observe(id); got != tc.want[i] {
					t.Fatalf("after %v: %q, want %q", tc.seen[:i+1], got, tc.want[i])
				}
			}
		})
	}
}

// TestWrongPlaintext: a custodian that answers Decrypt with another
// plaintext (another share it holds, or noise) is caught by the binding.
func TestWrongPlaintext(t *testing.T) {
	for _, opts := range [][]func(*Config){nil, {withV1}} {
		srv := startFake(t)
		b := newTestBackend(t, "a", srv.endpoint(), opts...)
		ctx := ctxFor(t, 10*time.Second)
		w1, err := b.Wrap(ctx, share(t), []byte("dek=1;share=1"))
		if err != nil {
			t.Fatal(err)
		}
		w2, err := b.Wrap(ctx, share(t), []byte("dek=2;share=1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Unwrap(ctx, w1, []byte("dek=1;share=1")); err != nil {
			t.Fatal(err)
		}
		srv.kms.set(func(k *fakeKMS) { k.lie = true })
		// Asked for share 2, the liar returns share 1, a genuine share
		// bound to other associated data; then noise.
		for range 2 {
			_, err = b.Unwrap(ctx, w2, []byte("dek=2;share=1"))
			wantKind(t, "Unwrap through a lying custodian", err, kmsclients.ErrInvalidCiphertext)
		}
		if !strings.Contains(err.Error(), "binding") {
			t.Fatalf("error does not say the binding failed: %v", err)
		}
	}
}

// TestTamperedCustodianFields: a stored share whose custodian fields were
// altered (and its checksum made to fit) is refused by the custodian,
// which reports InvalidArgument: invalid ciphertext.
func TestTamperedCustodianFields(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	ctx := ctxFor(t, 10*time.Second)
	w, err := b.Wrap(ctx, share(t), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := unmarshal(w.Ciphertext)
	for name, alter := range map[string]func(s *sealed){
		"ciphertext":  func(s *sealed) { s.ciphertext[len(s.ciphertext)/2] ^= 1 },
		"key_id":      func(s *sealed) { s.keyID += "x" },
		"annotations": func(s *sealed) { s.annotations = map[string][]byte{saltAnnotation: []byte("00000000")} },
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := unmarshal(w.Ciphertext)
			alter(&s)
			raw, err := s.marshal()
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Unwrap(ctx, kmsclients.Wrapped{Ciphertext: raw, KeyIdentity: w.KeyIdentity}, []byte("aad"))
			wantKind(t, "Unwrap of an altered "+name, err, kmsclients.ErrInvalidCiphertext)
		})
	}
	if _, err := b.Unwrap(ctx, w, []byte("aad")); err != nil || orig.keyID == "" {
		t.Fatalf("the genuine share: %v", err)
	}
}

func TestRefusesOversizedAnswer(t *testing.T) {
	srv := startFake(t)
	srv.kms.set(func(k *fakeKMS) { k.bigAnnot = 5000 })
	b := newTestBackend(t, "a", srv.endpoint())
	_, err := b.Wrap(ctxFor(t, 10*time.Second), share(t), []byte("aad"))
	if err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("Wrap with 5000 bytes of annotations: %v", err)
	}
}

// TestErrorKinds sorts the custodian's gRPC codes.
func TestErrorKinds(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	ctx := ctxFor(t, 10*time.Second)
	w, err := b.Wrap(ctx, share(t), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code            codes.Code
		wrap, unwrap    string
		probe, contains string
	}{
		{codes.Unavailable, "unavailable", "unavailable", "unavailable", ""},
		{codes.DeadlineExceeded, "unavailable", "unavailable", "unavailable", ""},
		{codes.ResourceExhausted, "unavailable", "unavailable", "unavailable", ""},
		{codes.PermissionDenied, "permission", "permission", "permission", ""},
		{codes.Unauthenticated, "permission", "permission", "permission", ""},
		{codes.InvalidArgument, "other", "invalid", "other", ""},
		{codes.Unimplemented, "permission", "permission", "permission", "kmsplugin.apiVersion"},
		{codes.Internal, "other", "other", "other", ""},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			srv.kms.set(func(k *fakeKMS) { k.fail = status.Error(tc.code, "injected failure") })
			defer srv.kms.set(func(k *fakeKMS) { k.fail = nil })
			_, werr := b.Wrap(ctx, share(t), []byte("aad"))
			_, uerr := b.Unwrap(ctx, w, []byte("aad"))
			_, perr := b.Probe(ctx)
			for _, c := range []struct {
				op   string
				err  error
				want string
			}{{"wrap", werr, tc.wrap}, {"unwrap", uerr, tc.unwrap}, {"probe", perr, tc.probe}} {
				if got := kmsclients.Kind(c.err); got != c.want {
					t.Errorf("%s: kind %s, want %s (%v)", c.op, got, c.want, c.err)
				}
				if c.err != nil && (!strings.HasPrefix(c.err.Error(), "kmsplugin a: "+c.op+": ") || !strings.Contains(c.err.Error(), tc.contains)) {
					t.Errorf("%s: error %q", c.op, c.err)
				}
			}
		})
	}
}

// TestDialPermission: a socket the plugin may not connect to is a
// permission problem, said so. (The tests run as root, whom no socket
// mode stops, so the refused dial is recorded by hand.)
func TestDialPermission(t *testing.T) {
	b := newTestBackend(t, "a", "unix:///nonexistent/kms.sock")
	b.lastDial.Store(dialResult{&netOpError{}})
	err := b.fail(context.Background(), kmsclients.OpProbe, apiV2, status.Error(codes.Unavailable, "connection error"))
	wantKind(t, "a refused dial", err, kmsclients.ErrPermission)
	if !strings.Contains(err.Error(), "socket's owner, group or mode") {
		t.Fatalf("error does not say what to fix: %v", err)
	}
}

// netOpError is what a dial refused for permission returns.
type netOpError struct{}

func (*netOpError) Error() string { return "dial unix /x: connect: permission denied" }
func (*netOpError) Unwrap() error { return syscall.EACCES }

// TestTimeout: the configured timeout bounds each call (a custodian too
// slow is unavailable); without it, the caller's deadline alone rules and
// is reported as such.
func TestTimeout(t *testing.T) {
	srv := startFake(t)
	srv.kms.set(func(k *fakeKMS) { k.latency = 2 * time.Second })
	bounded := newTestBackend(t, "bounded", srv.endpoint(), withTimeout(100*time.Millisecond))
	start := time.Now()
	_, err := bounded.Probe(ctxFor(t, 10*time.Second))
	wantKind(t, "Probe past the configured timeout", err, kmsclients.ErrUnavailable)
	if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("Probe past the timeout: %v after %s, want unavailable at about 100ms", err, time.Since(start))
	}

	free := newTestBackend(t, "free", srv.endpoint())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = free.Wrap(ctx, share(t), []byte("aad"))
	wantKind(t, "Wrap past the caller's deadline", err, context.DeadlineExceeded)

	srv.kms.set(func(k *fakeKMS) { k.latency = 20 * time.Millisecond })
	if _, err := bounded.Probe(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Probe within the timeout: %v", err)
	}
}

// expired is a caller's context whose deadline has passed while its Err
// is still nil: gRPC's own timer for the deadline can fail the call a
// moment before the context's timer marks it done.
type expired struct{ context.Context }

func (expired) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestDeadlineBeforeContextSaysSo: a gRPC DeadlineExceeded at or past the
// caller's deadline is the caller's deadline, even before ctx.Err() is
// set; without a caller's deadline passed, it is the configured timeout:
// the custodian did not answer in time.
func TestDeadlineBeforeContextSaysSo(t *testing.T) {
	b := newTestBackend(t, "a", "unix:///nonexistent/kms.sock")
	timedOut := status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	err := b.fail(expired{context.Background()}, kmsclients.OpUnwrap, apiV2, timedOut)
	wantKind(t, "DeadlineExceeded past the caller's deadline", err, context.DeadlineExceeded)
	if !strings.HasPrefix(err.Error(), "kmsplugin a: unwrap: context deadline exceeded: gRPC DeadlineExceeded") {
		t.Fatalf("error %q", err)
	}
	err = b.fail(context.Background(), kmsclients.OpUnwrap, apiV2, timedOut)
	wantKind(t, "DeadlineExceeded of the configured timeout", err, kmsclients.ErrUnavailable)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the configured timeout reported as the caller's deadline: %v", err)
	}
}

func TestCancelledDuringCall(t *testing.T) {
	srv := startFake(t)
	srv.kms.set(func(k *fakeKMS) { k.latency = 5 * time.Second })
	b := newTestBackend(t, "a", srv.endpoint())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := b.Probe(ctx)
	wantKind(t, "Probe cancelled during the call", err, context.Canceled)
}

// TestCustodianComesAndGoes: New needs no custodian; one that starts
// later, or stops and comes back, is used without a new backend.
func TestCustodianComesAndGoes(t *testing.T) {
	srv := &fakeServer{kms: newFakeKMS(), path: filepath.Join(shortTemp(t), "kms.sock")}
	t.Cleanup(srv.stop)
	b := newTestBackend(t, "a", srv.endpoint())
	_, err := b.Probe(ctxFor(t, 10*time.Second))
	wantKind(t, "Probe before the custodian starts", err, kmsclients.ErrUnavailable)

	srv.start(t)
	waitUp(t, b)
	w, err := b.Wrap(ctxFor(t, 10*time.Second), share(t), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	srv.stop()
	_, err = b.Unwrap(ctxFor(t, 10*time.Second), w, []byte("aad"))
	wantKind(t, "Unwrap with the custodian stopped", err, kmsclients.ErrUnavailable)
	srv.start(t)
	waitUp(t, b)
	if _, err := b.Unwrap(ctxFor(t, 10*time.Second), w, []byte("aad")); err != nil {
		t.Fatalf("Unwrap once the custodian is back: %v", err)
	}
}

// waitUp waits until b's custodian answers a probe; gRPC reconnects with
// a backoff of at most a second.
func waitUp(t testing.TB, b *Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.Probe(ctxFor(t, 10*time.Second))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("custodian not back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSameKeyIDIsOneCustodian: two custodians on two sockets that report
// one key_id are one custodian, and the envelope refuses a DEK whose two
// shares they would hold.
func TestSameKeyIDIsOneCustodian(t *testing.T) {
	one, two := startFake(t), startFake(t)
	for _, s := range []*fakeServer{one, two} {
		s.kms.set(func(k *fakeKMS) { k.fixedID = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1" })
		s.kms.rotate()
	}
	a, b := newTestBackend(t, "a", one.endpoint()), newTestBackend(t, "b", two.endpoint())
	idA, errA := a.Probe(ctxFor(t, 10*time.Second))
	idB, errB := b.Probe(ctxFor(t, 10*time.Second))
	if errA != nil || errB != nil || idA == idB {
		t.Fatalf("probes: %q %v, %q %v", idA, errA, idB, errB)
	}
	wantOneCustodian(t, a, b, idA, idB)

	three := startFake(t)
	c := newTestBackend(t, "c", three.endpoint())
	idC, err := c.Probe(ctxFor(t, 10*time.Second))
	if err != nil || kmsclients.CustodianKey(c, idC) == kmsclients.CustodianKey(a, idA) {
		t.Fatalf("another key_id: %q %v", idC, err)
	}
}

func TestIdentity(t *testing.T) {
	ep := "unix:///var/run/kmsplugin/aws.sock"
	long := strings.Repeat("k", 600)
	for _, tc := range []struct{ keyID, want string }{
		{"arn:aws:kms:us-east-1:111122223333:key/1234", ep + ":arn:aws:kms:us-east-1:111122223333:key/1234"},
		{"", ep},
		{"key with spaces", ep + ":sha256-"},
		{"tab\there", ep + ":sha256-"},
		{"not-utf8-\xff", ep + ":sha256-"},
		{long, ep + ":sha256-"},
		{"sha256-" + strings.Repeat("0", 64), ep + ":sha256-"},
	} {
		got := identity(ep, tc.keyID)
		if !strings.HasPrefix(got, "kmsplugin:"+tc.want) || len(got) > kmsclients.MaxKeyIdentitySize {
			t.Errorf("identity(%q) = %q, want kmsplugin:%s...", tc.keyID, got, tc.want)
		}
		if tc.keyID != "" && custodianKey(got) != custodianKey(identity("unix:///x.sock", tc.keyID)) {
			t.Errorf("custodian key of %q depends on the endpoint", tc.keyID)
		}
	}
	// Every endpoint Validate accepts, with the longest key_id, fits.
	maxEP := "unix:///" + strings.Repeat("p", maxSocketPath-1)
	if id := identity(maxEP, long); len(id) > kmsclients.MaxKeyIdentitySize {
		t.Fatalf("identity of %d bytes", len(id))
	}
	for id, want := range map[string]string{
		"kmsplugin:unix:///a.sock:k1:with:colons": "kmsplugin:key_id:k1:with:colons",
		"kmsplugin:unix:///a.sock":                "kmsplugin:unix:///a.sock",
		"kmsplugin:unix:///a.sock:":               "kmsplugin:unix:///a.sock:",
		"local:abc":                               "local:abc",
	} {
		if got := custodianKey(id); got != want {
			t.Errorf("custodianKey(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestLongKeyIDIsOneCustodianUnderAnyEndpoint: a key_id kept as it is
// under a short endpoint but hashed under a long one gives one custodian
// key under both; identities keep their spelling.
func TestLongKeyIDIsOneCustodianUnderAnyEndpoint(t *testing.T) {
	short, long := "unix:///run/k.sock", "unix:///"+strings.Repeat("p", maxSocketPath-1)
	keyID := "arn:" + strings.Repeat("k", 466)
	idShort, idLong := identity(short, keyID), identity(long, keyID)
	sum := sha256.Sum256([]byte(keyID))
	if !strings.HasSuffix(idShort, ":"+keyID) || !strings.HasSuffix(idLong, ":sha256-"+hex.EncodeToString(sum[:])) {
		t.Fatalf("a %d-byte key_id: identity %q under %s, %q under %s; want it kept, then hashed", len(keyID), idShort, short, idLong, long)
	}
	if cs, cl := custodianKey(idShort), custodianKey(idLong); cs != cl {
		t.Fatalf("a %d-byte key_id is two custodians: %q under %s, %q under %s", len(keyID), cs, short, cl, long)
	}
	if custodianKey(idShort) == custodianKey(identity(short, keyID+"x")) {
		t.Fatal("two key_ids are one custodian")
	}
	// A key_id that fits under every endpoint is kept as it is, in the
	// identity and in the custodian key, as before.
	fits := strings.Repeat("f", maxRawKeyID)
	for _, ep := range []string{short, long} {
		if id := identity(ep, fits); !strings.HasSuffix(id, ":"+fits) || custodianKey(id) != custodianPrefix+fits {
			t.Fatalf("a %d-byte key_id under %s: identity %q, custodian key %q", len(fits), ep, id, custodianKey(id))
		}
	}

	// Through two custodians on one key_id, one reached by a short
	// endpoint and one by a long one: the envelope refuses a DEK with
	// a share on each.
	one, two := startFake(t), startFake(t)
	for _, s := range []*fakeServer{one, two} {
		s.kms.set(func(k *fakeKMS) { k.fixedID = keyID })
		s.kms.rotate()
	}
	shortPath := filepath.Join(shortTemp(t), "s")
	longPath := filepath.Join(shortTemp(t), strings.Repeat("l", 80))
	for p, target := range map[string]string{shortPath: one.path, longPath: two.path} {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	a, b := newTestBackend(t, "a", "unix://"+shortPath), newTestBackend(t, "b", "unix://"+longPath)
	idA, errA := a.Probe(ctxFor(t, 10*time.Second))
	idB, errB := b.Probe(ctxFor(t, 10*time.Second))
	if errA != nil || errB != nil || !strings.HasSuffix(idA, ":"+keyID) || strings.Contains(idB, keyID) {
		t.Fatalf("probes: %q %v, %q %v; want the key_id kept under the short endpoint and hashed under the long one", idA, errA, idB, errB)
	}
	wantOneCustodian(t, a, b, idA, idB)
}

// wantOneCustodian checks that backends a and b, whose probes reported
// idA and idB, are one custodian: the same custodian key, and no DEK can
// be made with a share on each.
func wantOneCustodian(t *testing.T, a, b *Backend, idA, idB string) {
	t.Helper()
	if kmsclients.CustodianKey(a, idA) != kmsclients.CustodianKey(b, idB) {
		t.Fatalf("custodian keys differ: %q, %q", kmsclients.CustodianKey(a, idA), kmsclients.CustodianKey(b, idB))
	}
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: []kmsclients.Backend{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Prepare(ctxFor(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "same key") {
		t.Fatalf("a DEK with two shares on one custodian: %v", err)
	}
}

// FuzzIdentity: a key_id is whatever a custodian's Status or Encrypt
// says, and an identity is read back from etcd. Whatever they hold, an
// identity fits the header, is printable without spaces, names its
// endpoint, and its custodian key depends on the key_id alone, one per
// key_id; custodianKey takes any string.
func FuzzIdentity(f *testing.F) {
	f.Add("arn:aws:kms:us-east-1:111122223333:key/1234", "k2", "kmsplugin:unix:///a.sock:k")
	f.Add("sha256-"+strings.Repeat("0", 64), "", "kmsplugin:unix://")
	f.Add("tab\there", "\x00", "kmsplugin:unix:///:")
	f.Add(strings.Repeat("k", 600), strings.Repeat("k", 599), "local:abc")
	f.Add(strings.Repeat("k", 470), strings.Repeat("k", 471), "kmsplugin:unix:///x.sock:"+strings.Repeat("k", 470))
	const ep1, ep2 = "unix:///var/run/kmsplugin/aws.sock", "unix:///x.sock"
	f.Fuzz(func(t *testing.T, keyID, other, stored string) {
		custodianKey(stored)
		id := identity(ep1, keyID)
		if len(id) > kmsclients.MaxKeyIdentitySize || !strings.HasPrefix(id, identityPrefix+ep1) {
			t.Fatalf("identity(%q) = %q", keyID, id)
		}
		if !utf8.ValidString(id) || strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
			t.Fatalf("identity(%q) = %q holds a space or a control character", keyID, id)
		}
		if id != identity(ep1, keyID) {
			t.Fatal("identity is not deterministic")
		}
		if keyID == "" {
			return
		}
		if custodianKey(id) != custodianKey(identity(ep2, keyID)) {
			t.Fatalf("the custodian key of %q depends on the endpoint", keyID)
		}
		if other != "" && other != keyID && custodianKey(id) == custodianKey(identity(ep1, other)) {
			t.Fatalf("key_ids %q and %q are one custodian", keyID, other)
		}
	})
}

func TestPublicWrap(t *testing.T) {
	secret := newTestBackend(t, "aws", "unix:///run/kmsplugin/aws.sock")
	public := newTestBackend(t, "azure", "unix:///run/kmsplugin/azure.sock", func(c *Config) { c.PublicKey = true })
	if kmsclients.IsPublicWrap(secret) || !kmsclients.IsPublicWrap(public) {
		t.Fatalf("IsPublicWrap: %v, %v", kmsclients.IsPublicWrap(secret), kmsclients.IsPublicWrap(public))
	}
}

// TestCustodianTextIsBounded: the custodian's error text reaches the log
// bounded, on one line.
func TestCustodianTextIsBounded(t *testing.T) {
	srv := startFake(t)
	b := newTestBackend(t, "a", srv.endpoint())
	srv.kms.set(func(k *fakeKMS) {
		k.fail = status.Error(codes.Internal, "line one\nline two\x00"+strings.Repeat("x", 5000))
	})
	_, err := b.Probe(ctxFor(t, 10*time.Second))
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\x00") || len(msg) > 400 || !strings.Contains(msg, `gRPC Internal: line one\nline two\x00xxx`) {
		t.Fatalf("error text: %q", msg)
	}
	if status.Code(err) != codes.Internal {
		t.Fatalf("the gRPC code is lost: %v", err)
	}
}

// Whoever can write the custodian's socket directory could put a fake
// custodian there and be handed shares: such a directory is refused at
// every dial, as a permission error that says what to fix.
func TestCustodianSocketDirectoryOthersCanWriteIsRefused(t *testing.T) {
	s := startFake(t)
	b := newTestBackend(t, "open-dir", s.endpoint())
	if _, err := b.Probe(context.Background()); err != nil {
		t.Fatalf("probe with a private directory: %v", err)
	}
	if err := os.Chmod(filepath.Dir(s.path), 0o777); err != nil {
		t.Fatal(err)
	}
	fresh := newTestBackend(t, "open-dir-2", s.endpoint())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := fresh.Probe(ctx)
	if !errors.Is(err, kmsclients.ErrPermission) || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("probe with a world-writable socket directory: %v", err)
	}
}

// The socket directory is judged where the endpoint leads: a symlink to a
// world-writable directory, or a private directory under a
// world-writable one, is a permission error naming the directory.
func TestCustodianSocketThroughSymlinkOrOpenAncestorIsRefused(t *testing.T) {
	probe := func(b *Backend) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := b.Probe(ctx)
		return err
	}
	t.Run("symlink into a world-writable directory", func(t *testing.T) {
		s := startFake(t)
		open := filepath.Dir(s.path)
		link := filepath.Join(shortTemp(t), "s.sock") // shortTemp is 0700
		if err := os.Symlink(s.path, link); err != nil {
			t.Fatal(err)
		}
		if err := probe(newTestBackend(t, "private", "unix://"+link)); err != nil {
			t.Fatalf("probe through a symlink to a private directory: %v", err)
		}
		if err := os.Chmod(open, 0o777); err != nil {
			t.Fatal(err)
		}
		err := probe(newTestBackend(t, "through-link", "unix://"+link))
		if !errors.Is(err, kmsclients.ErrPermission) || !strings.Contains(err.Error(), "kmsplugin.endpoint: custodian socket "+link+": its directory "+open) ||
			!strings.Contains(err.Error(), "chmod go-w "+open) {
			t.Fatalf("probe through a symlink to a world-writable directory: %v", err)
		}
	})
	t.Run("world-writable ancestor", func(t *testing.T) {
		open := shortTemp(t)
		dir := filepath.Join(open, "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		s := &fakeServer{kms: newFakeKMS(), path: filepath.Join(dir, "kms.sock")}
		s.start(t)
		t.Cleanup(s.stop)
		if err := probe(newTestBackend(t, "private", s.endpoint())); err != nil {
			t.Fatalf("probe with private directories: %v", err)
		}
		if err := os.Chmod(open, 0o777); err != nil {
			t.Fatal(err)
		}
		err := probe(newTestBackend(t, "open-ancestor", s.endpoint()))
		if !errors.Is(err, kmsclients.ErrPermission) || !strings.Contains(err.Error(), open+", on the way to it") || !strings.Contains(err.Error(), "chmod go-w "+open) {
			t.Fatalf("probe with a world-writable ancestor: %v", err)
		}
		// With the sticky bit (like /tmp) no one else may rename d.
		if err := os.Chmod(open, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		if err := probe(newTestBackend(t, "sticky-ancestor", s.endpoint())); err != nil {
			t.Fatalf("probe with a sticky ancestor: %v", err)
		}
	})
}
