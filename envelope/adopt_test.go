package envelope

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/split"
)

// Two nodes: each its own envelope and state dir, over the same backends.

func twoNodes(t *testing.T, bs []kmsclients.Backend) (a, b *Envelope, dirA string) {
	dirA = t.TempDir()
	a = mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dirA})
	b = mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir()})
	return a, b, dirA
}

// waitKeyID waits for the background adoption.
func waitKeyID(t *testing.T, e *Envelope, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.KeyID() != want {
		if time.Now().After(deadline) {
			t.Fatalf("key id %s, want %s", e.KeyID(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stays checks that e's key id does not move to another value.
func stays(t *testing.T, e *Envelope, want string) {
	t.Helper()
	time.Sleep(50 * time.Millisecond) // adoption runs in the background
	if got := e.KeyID(); got != want {
		t.Fatalf("key id moved to %s, want %s", got, want)
	}
}

func TestNodesConvergeOnTheNewestDEK(t *testing.T) {
	bs := newLocals(t, 3)
	a, b, dirA := twoNodes(t, bs)
	// Whichever first DEK is newer wins on both nodes after one cross-read.
	sa, sb := mustEncrypt(t, a, seed), mustEncrypt(t, b, seed)
	winner := sa.KeyID // judged before either node can adopt
	if newer(b.Current(), a.Current()) {
		winner = sb.KeyID
	}
	a.Decrypt(ctxT(t), sb.Ciphertext, sb.Header)
	b.Decrypt(ctxT(t), sa.Ciphertext, sa.Header)
	waitKeyID(t, a, winner)
	waitKeyID(t, b, winner)

	// B rotates to highest seen + 1; A adopts it from one object and keeps
	// it across a restart.
	if err := b.Rotate(ctxT(t), "operator"); err != nil {
		t.Fatal(err)
	}
	if g := b.Current().Generation; g != 2 {
		t.Fatalf("generation after rotation %d, want 2", g)
	}
	rotated := mustEncrypt(t, b, seed)
	a.lookup.cache.Purge()
	if _, err := a.Decrypt(ctxT(t), rotated.Ciphertext, rotated.Header); err != nil {
		t.Fatal(err)
	}
	waitKeyID(t, a, rotated.KeyID)
	if info := a.CurrentInfo(); info.Origin != OriginAdopted || info.Generation != 2 {
		t.Fatalf("current: %+v", info)
	}
	restarted := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dirA})
	if restarted.KeyID() != rotated.KeyID {
		t.Fatal("an adopted DEK was not kept across a restart")
	}

	// Never back: an older DEK read later changes nothing.
	old := sa
	if old.KeyID == winner {
		old = sb
	}
	a.lookup.cache.Purge()
	a.Decrypt(ctxT(t), old.Ciphertext, old.Header)
	stays(t, a, rotated.KeyID)

	// A rotation on A goes above everything seen.
	if err := a.Rotate(ctxT(t), "operator"); err != nil || a.Current().Generation != 3 {
		t.Fatalf("rotation after adoption: %v, generation %d", err, a.Current().Generation)
	}
}

func TestAdoptionRefusesWhatThisNodeWouldNotMake(t *testing.T) {
	bs := newLocals(t, 3)
	extra := newLocal(t, t.TempDir(), "b4")
	node := mustNew(t, Config{Threshold: 2, MinThreshold: 1, Backends: bs})
	cur := node.KeyID()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"another backend set", Config{Threshold: 2, Backends: []kmsclients.Backend{bs[0], bs[1], extra}}},
		{"backends in another order", Config{Threshold: 2, Backends: []kmsclients.Backend{bs[1], bs[0], bs[2]}}},
		{"a threshold below the configured one", Config{Threshold: 1, Backends: bs}},
		{"a higher threshold", Config{Threshold: 3, Backends: bs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := mustNew(t, tc.cfg)
			for range 3 { // a high generation: newer by every order
				other.Rotate(ctxT(t), "test")
			}
			s := mustEncrypt(t, other, seed)
			node.Decrypt(ctxT(t), s.Ciphertext, s.Header)
			stays(t, node, cur)
		})
	}
}

// With etcd write access and k RSA public keys an attacker's header
// decrypts (config check warns), but must never seal new writes.
func TestAdoptionNeverTakesADEKBuiltFromPublicKeys(t *testing.T) {
	r1, r2 := newRSACustodian(t, "rsa-a"), newRSACustodian(t, "rsa-b")
	bs := []kmsclients.Backend{r1, r2, newLocals(t, 1)[0]}
	node := mustNew(t, Config{Threshold: 2, Backends: bs})
	cur := node.KeyID()
	a := newAttacker(t)
	h := &Header{Threshold: 2, Generation: 1 << 20, Created: time.Now().UTC().Truncate(time.Second)}
	rand.Read(h.DEKID[:])
	shares, _ := split.Split(a.dek, 2, 3)
	for i, r := range []*rsaCustodian{r1, r2} {
		w, _ := publicWrap(&r.priv.PublicKey, r.identity(), shares[i].Marshal(), h.shareAAD(i+1, 3))
		h.Shares = append(h.Shares, WrappedShare{Index: i + 1, Backend: r.name, KeyIdentity: w.KeyIdentity, Wrapped: w.Ciphertext})
	}
	h.Shares = append(h.Shares, WrappedShare{Index: 3, Backend: bs[2].Name(), KeyIdentity: "local:x", Wrapped: []byte("x")})
	raw, ct := a.finish(t, h, chosenPlaintext)
	got, err := node.Decrypt(ctxT(t), ct, raw)
	if err != nil || !bytes.Equal(got, chosenPlaintext) {
		t.Fatalf("this config cannot tell a public-key forgery (the documented gap): %v", err)
	}
	stays(t, node, cur)
	assertNotSealedUnder(t, node, a.dek)
}

// A newer DEK recovered through an RSA share is confirmed by the two
// secret-key backends before it is adopted.
func TestAdoptionConfirmsWithSecretKeyBackends(t *testing.T) {
	r := newRSACustodian(t, "rsa")
	locals := wrapSwitchable(newLocals(t, 2))
	bs := []kmsclients.Backend{r, locals[0], locals[1]}
	a, b, _ := twoNodes(t, bs)
	for range 2 {
		b.Rotate(ctxT(t), "test")
	}
	s := mustEncrypt(t, b, seed)
	locals[1].delay.Store(int64(100 * time.Millisecond)) // the RSA share answers first
	if _, err := a.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	waitKeyID(t, a, s.KeyID)
}

// A missed adoption is retried on later reads, at most once per
// adoptRetry: here the node was not ready, then a confirming backend down.
func TestAdoptionRetriedOnLaterReads(t *testing.T) {
	r := newRSACustodian(t, "rsa")
	locals := wrapSwitchable(newLocals(t, 2))
	bs := []kmsclients.Backend{r, locals[0], locals[1]}
	dirA := t.TempDir()
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dirA})
	peer := mustNew(t, Config{Threshold: 2, Backends: bs})
	for range 2 {
		peer.Rotate(ctxT(t), "test")
	}
	s := mustEncrypt(t, peer, seed)

	clock := time.Now()
	now := func() time.Time { return clock }
	a, err := New(Config{Threshold: 2, Backends: bs, StateDir: dirA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	stored := a.Current().KeyID()
	// Not ready yet (Prepare not run): the read works, nothing is adopted.
	locals[1].down.Store(true) // the DEK is recovered from the RSA share and b1
	if _, err := a.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	locals[1].down.Store(false)
	if err := a.Prepare(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != stored {
		t.Fatal("adopted before Prepare")
	}
	// Ready, but b2, which must confirm, is down.
	locals[1].down.Store(true)
	a.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	stays(t, a, stored)
	// b2 is back, but the last try was just now: no new try yet.
	locals[1].down.Store(false)
	a.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	stays(t, a, stored)
	clock = clock.Add(adoptRetry)
	a.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	waitKeyID(t, a, s.KeyID)
}

// A DEK not adopted does not count for the next rotation's generation:
// a header built from public keys could push it to the end of the order.
func TestUnadoptedDEKsDoNotRaiseTheGeneration(t *testing.T) {
	bs := newLocals(t, 3)
	node := mustNew(t, Config{Threshold: 2, Backends: bs})
	other := mustNew(t, Config{Threshold: 2, Backends: []kmsclients.Backend{bs[1], bs[0], bs[2]}})
	for range 5 {
		other.Rotate(ctxT(t), "test")
	}
	s := mustEncrypt(t, other, seed)
	if _, err := node.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	stays(t, node, node.KeyID())
	if err := node.Rotate(ctxT(t), "operator"); err != nil {
		t.Fatal(err)
	}
	if g := node.Current().Generation; g != 2 {
		t.Fatalf("generation after rotation %d, want 2 (the unadopted DEK's %d must not count)", g, other.Current().Generation)
	}
}

// kube-apiserver caches what it decrypted, so the read that brought a
// newer DEK may be the only one: a DEK that could not be adopted then is
// adopted at a later probe without another read.
func TestAdoptionRetriedWithoutAnotherRead(t *testing.T) {
	bs := newLocals(t, 3)
	peer := mustNew(t, Config{Threshold: 2, Backends: bs})
	peer.Rotate(ctxT(t), "test")
	s := mustEncrypt(t, peer, seed)

	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir(), Now: now})
	if err := a.Prepare(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	stored := a.KeyID()
	a.life.adopting.Store(true) // another adoption is running
	if _, err := a.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	a.life.adopting.Store(false)
	a.RetryAdoption() // too soon after the last try
	stays(t, a, stored)
	mu.Lock()
	clock = clock.Add(adoptRetry)
	mu.Unlock()
	a.RetryAdoption()
	waitKeyID(t, a, s.KeyID)
	if a.life.candidate.Load() != nil {
		a.RetryAdoption()
		if a.life.candidate.Load() != nil {
			t.Error("the adopted DEK is still a candidate")
		}
	}
}

// A plugin killed after it saw a newer DEK but before it adopted it must
// not forget it: kube-apiserver will not ask it to decrypt that DEK again.
func TestAdoptionCandidateSurvivesRestart(t *testing.T) {
	ss := wrapSwitchable(newLocals(t, 3))
	bs := asBackends(ss)
	peer := mustNew(t, Config{Threshold: 2, Backends: bs})
	peer.Rotate(ctxT(t), "test")
	s := mustEncrypt(t, peer, seed)

	dir := t.TempDir()
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Now: now})
	stored := a.KeyID()
	a.life.adopting.Store(true) // the adoption does not start before the kill
	if _, err := a.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	recorded := filepath.Join(dir, candidateFileName)
	waitFile(t, recorded)

	// The restart: a new envelope over the same state dir, and no Decrypt.
	b := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Now: now})
	if b.KeyID() != stored {
		t.Fatalf("after the restart key id %s, want the stored %s", b.KeyID(), stored)
	}
	ss[0].down.Store(true)
	ss[1].down.Store(true)
	b.RetryAdoption() // only one custodian: not confirmed
	stays(t, b, stored)
	ss[0].down.Store(false)
	ss[1].down.Store(false)
	b.RetryAdoption() // too soon after the last try
	stays(t, b, stored)
	mu.Lock()
	clock = clock.Add(adoptRetry)
	mu.Unlock()
	b.RetryAdoption()
	waitKeyID(t, b, s.KeyID)
	waitGone(t, recorded)

	// A third start loads the adopted DEK and has nothing left to adopt.
	c := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Now: now})
	if c.KeyID() != s.KeyID || c.life.restored.Load() != nil {
		t.Fatalf("third start: key id %s (want %s), candidate left %v", c.KeyID(), s.KeyID, c.life.restored.Load() != nil)
	}
}

// What a writer of the state dir plants as a candidate is never adopted
// unless k secret-key backends open it, and junk does not stop a start.
func TestPlantedAdoptionCandidate(t *testing.T) {
	bs := newLocals(t, 3)
	peer := mustNew(t, Config{Threshold: 2, Backends: bs})
	peer.Rotate(ctxT(t), "test")
	genuine := mustEncrypt(t, peer, seed).Header

	for name, content := range map[string]func(t *testing.T) []byte{
		"junk": func(*testing.T) []byte { return []byte("{not json") },
		"wrong version": func(*testing.T) []byte {
			return mustJSON(t, candidateDoc{Version: 99, Header: genuine})
		},
		"share bytes changed": func(t *testing.T) []byte {
			h := append([]byte(nil), genuine...)
			p, err := ParseHeader(h)
			if err != nil {
				t.Fatal(err)
			}
			for _, sh := range p.Shares[:2] {
				at := bytes.Index(h, sh.Wrapped)
				if at < 0 {
					t.Fatal("share not found in the header")
				}
				h[at+len(sh.Wrapped)/2] ^= 1
			}
			return mustJSON(t, candidateDoc{Version: stateVersion, Header: h})
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
			stored := a.KeyID()
			path := filepath.Join(dir, candidateFileName)
			if err := os.WriteFile(path, content(t), 0o600); err != nil {
				t.Fatal(err)
			}
			b := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
			b.RetryAdoption()
			stays(t, b, stored)
			if b.life.restored.Load() == nil {
				waitGone(t, path) // unreadable: removed at start
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written", path)
		}
	}
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there", path)
		}
	}
}
