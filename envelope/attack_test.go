package envelope

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// An attacker with fewer than k custodians (a key file, or an RSA public
// key) and write access to etcd or the state dir must not make the plugin
// decrypt to, or encrypt under, a DEK they chose.

// attacker holds a DEK they chose.
type attacker struct {
	dek []byte
}

func newAttacker(t testing.TB) *attacker {
	a := &attacker{dek: make([]byte, dekSize)}
	if _, err := rand.Read(a.dek); err != nil {
		t.Fatal(err)
	}
	return a
}

// finish seals h and pt under the attacker's DEK, as Encrypt would have.
func (a *attacker) finish(t testing.TB, h *Header, pt []byte) (raw, ct []byte) {
	t.Helper()
	raw, err := h.seal(a.dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDEK(a.dek, raw, h)
	if err != nil {
		t.Fatal(err)
	}
	ct, err = d.seal(pt)
	if err != nil {
		t.Fatal(err)
	}
	return raw, ct
}

// wrap wraps a framed share with a backend whose key the attacker holds.
func wrapFor(t testing.TB, b kmsclients.Backend, h *Header, index, n int, framed []byte) WrappedShare {
	t.Helper()
	w, err := b.Wrap(context.Background(), framed, h.shareAAD(index, n))
	if err != nil {
		t.Fatal(err)
	}
	return WrappedShare{Index: index, Backend: b.Name(), KeyIdentity: w.KeyIdentity, Wrapped: w.Ciphertext}
}

// frameShare frames a share by hand, with any x.
func frameShare(k, index int, value []byte) []byte {
	return append([]byte{2, byte(k), byte(index)}, value...)
}

var chosenPlaintext = []byte("attacker-chosen-seed-0123456789!")

// expectRefused asserts that neither e (which refuses by its cache) nor a
// cold node (which must combine and check the shares) decrypts the forgery.
func expectRefused(t *testing.T, e *Envelope, ct, raw []byte) error {
	t.Helper()
	for _, node := range []*Envelope{e, coldNode(t, e)} {
		got, err := node.Decrypt(ctxT(t), ct, raw)
		if err == nil {
			t.Fatalf("forged header accepted (attacker's plaintext returned: %v)", bytes.Equal(got, chosenPlaintext))
		}
		if node != e {
			return err
		}
	}
	panic("unreachable")
}

// coldNode is a node over e's backends with no DEK cached or made.
func coldNode(t testing.TB, e *Envelope) *Envelope {
	t.Helper()
	cold, err := New(Config{Threshold: e.cfg.Threshold, MinThreshold: e.cfg.MinThreshold, Backends: e.cfg.Backends})
	if err != nil {
		t.Fatal(err)
	}
	return cold
}

func TestShareAtXZeroCannotChooseTheDEK(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	genuine, _ := ParseHeader(mustEncrypt(t, e, seed).Header)
	a := newAttacker(t)
	// With b1's key file: share 1 at x = 0 with y = their DEK; share 2
	// genuine (same DEK id, so b2 unwraps it).
	h := *genuine
	h.Shares = append([]WrappedShare(nil), genuine.Shares...)
	h.Shares[0] = wrapFor(t, bs[0], &h, 1, 3, frameShare(2, 1, append(bytes.Clone(a.dek), 0)))
	raw, ct := a.finish(t, &h, chosenPlaintext)
	expectRefused(t, e, ct, raw)
}

func TestShareWithAnotherIndexAsXIsRefused(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	genuine, _ := ParseHeader(mustEncrypt(t, e, seed).Header)
	a := newAttacker(t)
	for _, x := range []byte{0, 2, 3, 200} {
		t.Run(fmt.Sprintf("x=%d", x), func(t *testing.T) {
			h := *genuine
			h.Shares = append([]WrappedShare(nil), genuine.Shares...)
			h.Shares[0] = wrapFor(t, bs[0], &h, 1, 3, frameShare(2, 1, append(bytes.Clone(a.dek), x)))
			raw, ct := a.finish(t, &h, chosenPlaintext)
			expectRefused(t, e, ct, raw)
		})
	}
}

func TestHeaderBelowTheThresholdFloorIsRefused(t *testing.T) {
	bs := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(bs)})
	a := newAttacker(t)
	// A 1-of-1 header naming b1, whose key the attacker holds.
	h := &Header{Threshold: 1, Generation: 99, Created: time.Now().UTC().Truncate(time.Second)}
	rand.Read(h.DEKID[:])
	one, err := split.Split(a.dek, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.Shares = []WrappedShare{wrapFor(t, bs[0].Backend, h, 1, 1, one[0].Marshal())}
	raw, ct := a.finish(t, h, chosenPlaintext)
	before := bs[0].calls.Load()
	err = expectRefused(t, e, ct, raw)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	if bs[0].calls.Load() != before {
		t.Fatal("a header below the floor reached a backend")
	}

	// While raising k, MinThreshold lets lower-k headers through (here
	// the attacker's).
	lowered := mustNew(t, Config{Threshold: 2, MinThreshold: 1, Backends: asBackends(bs)})
	if got, err := lowered.Decrypt(ctxT(t), ct, raw); err != nil || !bytes.Equal(got, chosenPlaintext) {
		t.Fatalf("minThreshold 1 should read a 1-of-1 header: %v", err)
	}
}

// With b1's key file and the state dir, the attacker's DEK must not
// become current.
func TestForgedStateFileIsNotAdopted(t *testing.T) {
	dir := t.TempDir()
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	genuine, _ := ParseHeader(mustEncrypt(t, e, seed).Header)
	a := newAttacker(t)
	for _, tc := range []struct {
		name  string
		forge func() *Header
	}{
		{"x zero", func() *Header {
			h := *genuine
			h.Shares = append([]WrappedShare(nil), genuine.Shares...)
			h.Shares[0] = wrapFor(t, bs[0], &h, 1, 3, frameShare(2, 1, append(bytes.Clone(a.dek), 0)))
			return &h
		}},
		{"1 of 1", func() *Header {
			h := &Header{Threshold: 1, Generation: genuine.Generation}
			rand.Read(h.DEKID[:])
			one, _ := split.Split(a.dek, 1, 1)
			h.Shares = []WrappedShare{wrapFor(t, bs[0], h, 1, 1, one[0].Marshal())}
			return h
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.forge()
			raw, _ := a.finish(t, h, chosenPlaintext)
			writeState(t, dir, raw)
			restarted := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
			if restarted.KeyID() == h.KeyID() {
				t.Fatal("the forged DEK became current")
			}
			assertNotSealedUnder(t, restarted, a.dek)
		})
	}
}

func writeState(t testing.TB, dir string, raw []byte) {
	t.Helper()
	if err := (&stateFile{dir: dir}).save(raw, "forged", time.Now()); err != nil {
		t.Fatal(err)
	}
}

// assertNotSealedUnder checks that new writes cannot be opened with key.
func assertNotSealedUnder(t *testing.T, e *Envelope, key []byte) {
	t.Helper()
	s := mustEncrypt(t, e, seed)
	h, err := ParseHeader(s.Header)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDEK(key, s.Header, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.open(s.Ciphertext); err == nil {
		t.Fatal("new writes are sealed under the attacker's DEK")
	}
}

// rsaCustodian wraps with RSA-OAEP (label = associated data): anyone with
// its public key can make a share it unwraps.
type rsaCustodian struct {
	name string
	priv *rsa.PrivateKey
}

func newRSACustodian(t testing.TB, name string) *rsaCustodian {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &rsaCustodian{name: name, priv: k}
}

func (r *rsaCustodian) Name() string     { return r.name }
func (r *rsaCustodian) Close() error     { return nil }
func (r *rsaCustodian) PublicWrap() bool { return true }
func (r *rsaCustodian) identity() string {
	sum := sha256.Sum256(r.priv.PublicKey.N.Bytes())
	return "rsa:" + hex.EncodeToString(sum[:8])
}
func (r *rsaCustodian) Probe(context.Context) (string, error) { return r.identity(), nil }
func (r *rsaCustodian) Wrap(_ context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	return publicWrap(&r.priv.PublicKey, r.identity(), share, aad)
}
func (r *rsaCustodian) Unwrap(_ context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, r.priv, w.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("rsa %s: %w", r.name, kmsclients.ErrInvalidCiphertext)
	}
	return pt, nil
}

// publicWrap needs only the public key.
func publicWrap(pub *rsa.PublicKey, identity string, share, aad []byte) (kmsclients.Wrapped, error) {
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, share, aad)
	return kmsclients.Wrapped{Ciphertext: ct, KeyIdentity: identity}, err
}

// An RSA public key and one key file of a 2-of-3 make k shares, but only
// one proves authorship: a planted state DEK is not used.
func TestPublicKeyWrapDoesNotMakeACurrentDEK(t *testing.T) {
	dir := t.TempDir()
	rsaB := newRSACustodian(t, "rsa")
	locals := newLocals(t, 2)
	bs := []kmsclients.Backend{rsaB, locals[0], locals[1]}
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	a := newAttacker(t)
	h := &Header{Threshold: 2, Generation: 7, Created: time.Now().UTC().Truncate(time.Second)}
	rand.Read(h.DEKID[:])
	shares, _ := split.Split(a.dek, 2, 3)
	w, err := publicWrap(&rsaB.priv.PublicKey, rsaB.identity(), shares[0].Marshal(), h.shareAAD(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	h.Shares = []WrappedShare{
		{Index: 1, Backend: "rsa", KeyIdentity: w.KeyIdentity, Wrapped: w.Ciphertext},
		wrapFor(t, locals[0], h, 2, 3, shares[1].Marshal()),
		{Index: 3, Backend: locals[1].Name(), KeyIdentity: "local:unknown", Wrapped: []byte("not a share")},
	}
	raw, _ := a.finish(t, h, chosenPlaintext)
	writeState(t, dir, raw)
	restarted := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	if restarted.KeyID() == h.KeyID() {
		t.Fatal("a DEK built from a public-key wrap became current")
	}
	assertNotSealedUnder(t, restarted, a.dek)
}

// One RSA public key is one share of a 2-of-3: no forged object opens.
func TestPublicKeyAloneCannotForgeAnObject(t *testing.T) {
	rsaB := newRSACustodian(t, "rsa")
	locals := newLocals(t, 2)
	e := mustNew(t, Config{Threshold: 2, Backends: []kmsclients.Backend{rsaB, locals[0], locals[1]}})
	genuine, _ := ParseHeader(mustEncrypt(t, e, seed).Header)
	a := newAttacker(t)
	for _, x := range []byte{0, 1} {
		h := *genuine
		h.Shares = append([]WrappedShare(nil), genuine.Shares...)
		w, _ := publicWrap(&rsaB.priv.PublicKey, rsaB.identity(), frameShare(2, 1, append(bytes.Clone(a.dek), x)), h.shareAAD(1, 3))
		h.Shares[0].Wrapped = w.Ciphertext
		raw, ct := a.finish(t, &h, chosenPlaintext)
		expectRefused(t, e, ct, raw)
	}
}

func TestAuthenticationGapIsReported(t *testing.T) {
	rsa1, rsa2 := newRSACustodian(t, "rsa-a"), newRSACustodian(t, "rsa-b")
	locals := newLocals(t, 1)
	bs := []kmsclients.Backend{rsa1, rsa2, locals[0]}
	if gap := AuthenticationGap(2, bs); gap == "" {
		t.Fatal("2 of 3 with two RSA backends: no warning")
	}
	if gap := AuthenticationGap(1, bs); gap != "" {
		t.Fatalf("1 of 3 with one secret-key backend: %s", gap)
	}
}

// unknownKind does not know its key type yet, like Vault before its first
// answer.
type unknownKind struct {
	kmsclients.Backend
	known *bool
}

func (u unknownKind) PublicWrap() bool    { return !*u.known }
func (u unknownKind) WrapKindKnown() bool { return *u.known }

// A key file and an RSA public key of a 2-of-3 whose third backend's key
// type is not known yet: not knowing must not relax the rule; the stored
// DEK waits.
func TestUnknownKeyTypeDoesNotRelaxTheUnlock(t *testing.T) {
	dir := t.TempDir()
	rsaB := newRSACustodian(t, "rsa")
	locals := newLocals(t, 2)
	known := true
	third := wrapSwitchable([]kmsclients.Backend{unknownKind{locals[1], &known}})[0]
	bs := []kmsclients.Backend{rsaB, locals[0], third}
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})

	a := newAttacker(t)
	h := &Header{Threshold: 2, Generation: 7, Created: time.Now().UTC().Truncate(time.Second)}
	rand.Read(h.DEKID[:])
	shares, _ := split.Split(a.dek, 2, 3)
	w, _ := publicWrap(&rsaB.priv.PublicKey, rsaB.identity(), shares[0].Marshal(), h.shareAAD(1, 3))
	h.Shares = []WrappedShare{
		{Index: 1, Backend: "rsa", KeyIdentity: w.KeyIdentity, Wrapped: w.Ciphertext},
		wrapFor(t, locals[0], h, 2, 3, shares[1].Marshal()),
		{Index: 3, Backend: third.Name(), KeyIdentity: "local:unknown", Wrapped: []byte("not a share")},
	}
	raw, _ := a.finish(t, h, chosenPlaintext)
	writeState(t, dir, raw)

	known = false
	third.down.Store(true)
	e, err := New(Config{Threshold: 2, Backends: bs, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Prepare(ctxT(t)); !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Fatalf("Prepare with the third backend's key type unknown: %v", err)
	}
	if e.Ready() {
		t.Fatal("the attacker's DEK became current")
	}
	// Type known: the DEK needs both secret-key shares, fails, is replaced.
	known = true
	third.down.Store(false)
	if err := e.Prepare(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	assertNotSealedUnder(t, e, a.dek)
}

// The gap is logged once probes tell every key type, not only at start.
func TestAuthenticationGapLoggedAfterProbe(t *testing.T) {
	r := newRSACustodian(t, "rsa")
	locals := newLocals(t, 2)
	known := false
	vaultLike := publicLater{newRSACustodian(t, "rsa-later"), &known}
	var log bytes.Buffer
	e := mustNew(t, Config{Threshold: 2, Backends: []kmsclients.Backend{r, vaultLike, locals[0]},
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	e.RotationDue(map[string]string{"rsa": "a"})
	if strings.Contains(log.String(), "public-key backends") {
		t.Fatalf("gap logged before the key type was known:\n%s", log.String())
	}
	known = true
	for range 2 {
		e.RotationDue(map[string]string{"rsa": "a", "rsa-later": "b"})
		e.RotationDue(map[string]string{"rsa": "a", "rsa-later": "b", locals[0].Name(): "c"})
	}
	if n := strings.Count(log.String(), "public-key backends"); n != 1 {
		t.Fatalf("gap logged %d times, want once:\n%s", n, log.String())
	}
}

// publicLater wraps with a public key it learns of only when it answers.
type publicLater struct {
	*rsaCustodian
	known *bool
}

func (p publicLater) WrapKindKnown() bool { return *p.known }

// A planted header of the highest generation that opens nowhere is
// replaced, and its generation not trusted: otherwise later rotations
// would tie at the end of the order.
func TestPlantedGenerationIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	bs := newLocals(t, 3)
	genuine := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir}).Current()
	h := *genuine
	h.Generation = math.MaxUint32
	h.Shares = append([]WrappedShare(nil), genuine.Shares...)
	for i := range h.Shares {
		h.Shares[i].Wrapped = []byte("opens nowhere")
	}
	a := newAttacker(t)
	raw, _ := a.finish(t, &h, chosenPlaintext)
	writeState(t, dir, raw)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	if g := e.Current().Generation; g == math.MaxUint32 || g > genuine.Generation+1 {
		t.Fatalf("the replacement DEK took generation %d from the planted header", g)
	}
	if err := e.Rotate(ctxT(t), "operator"); err != nil || e.Current().Generation == math.MaxUint32 {
		t.Fatalf("rotation: %v, generation %d", err, e.Current().Generation)
	}
}
