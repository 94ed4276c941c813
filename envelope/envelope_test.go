package envelope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

var seed = []byte("0123456789abcdef0123456789abcdef") // what kube-apiserver sends: 32 bytes

func TestRoundTrip2of3(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	s := mustEncrypt(t, e, seed)
	if len(s.Ciphertext) > 1024/4 {
		t.Errorf("ciphertext is %d bytes; it should leave KMS v2's 1024 bytes plenty of room", len(s.Ciphertext))
	}
	if s.KeyID == "" || s.KeyID != e.KeyID() || len(s.KeyID) > 1024 {
		t.Errorf("key id %q, envelope says %q", s.KeyID, e.KeyID())
	}
	if bytes.Contains(s.Ciphertext, seed) || bytes.Contains(s.Header, seed) {
		t.Fatal("plaintext visible in the output")
	}
	e.lookup.cache.Purge() // decrypt through the backends, not the cache
	got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, seed) {
		t.Fatal("round trip changed the plaintext")
	}
}

func TestEncryptRejectsBadPlaintext(t *testing.T) {
	e := mustNew(t, Config{Threshold: 1, Backends: newLocals(t, 1)})
	for _, n := range []int{0, MaxPlaintextSize + 1} {
		if _, err := e.Encrypt(make([]byte, n)); err == nil {
			t.Errorf("Encrypt of %d bytes accepted", n)
		}
	}
	s := mustEncrypt(t, e, make([]byte, MaxPlaintextSize))
	if len(s.Ciphertext) > MaxCiphertextSize || MaxCiphertextSize > 1024 {
		t.Fatalf("largest ciphertext %d bytes, limit %d", len(s.Ciphertext), MaxCiphertextSize)
	}
}

// TestQuorumSubsets: every k-subset of backends decrypts, no (k-1)-subset does.
func TestQuorumSubsets(t *testing.T) {
	for _, tc := range []struct{ k, n int }{{1, 2}, {2, 3}, {3, 5}, {2, 2}} {
		t.Run(fmt.Sprintf("%dof%d", tc.k, tc.n), func(t *testing.T) {
			sw := wrapSwitchable(newLocals(t, tc.n))
			e := mustNew(t, Config{Threshold: tc.k, Backends: asBackends(sw)})
			s := mustEncrypt(t, e, seed)
			try := func(up []int) error {
				for i, b := range sw {
					b.down.Store(true)
					for _, u := range up {
						if u == i {
							b.down.Store(false)
						}
					}
				}
				fresh := mustNewLocked(t, tc.k, sw) // no cache, nothing unlocked
				got, err := fresh.Decrypt(ctxT(t), s.Ciphertext, s.Header)
				if err == nil && !bytes.Equal(got, seed) {
					t.Fatalf("subset %v decrypted to the wrong plaintext", up)
				}
				return err
			}
			forSubsets(tc.n, tc.k, func(up []int) {
				if err := try(up); err != nil {
					t.Errorf("backends %v (a quorum) failed: %v", up, err)
				}
			})
			forSubsets(tc.n, tc.k-1, func(up []int) {
				err := try(up)
				if err == nil {
					t.Fatalf("backends %v (below quorum) decrypted", up)
				}
				var qe *QuorumError
				if !errors.As(err, &qe) || !errors.Is(err, kmsclients.ErrUnavailable) {
					t.Errorf("backends %v: %v, want a QuorumError of kind unavailable", up, err)
				}
			})
		})
	}
}

// mustNewLocked is a second plugin instance with the same backends and no state.
func mustNewLocked(t testing.TB, k int, sw []*switchable) *Envelope {
	e, err := New(Config{Threshold: k, Backends: asBackends(sw)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func forSubsets(n, size int, f func([]int)) {
	chooseSubsets(n, size, func(idx []int) bool { f(append([]int(nil), idx...)); return true })
}

func TestOneBackendDown(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	sw[1].down.Store(true)
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt with one of three down: %v", err)
	}
}

func TestWrongShareIsRoutedAround(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	s := mustEncrypt(t, e, seed)
	for lying := range bs {
		t.Run(fmt.Sprintf("b%d lies", lying+1), func(t *testing.T) {
			withLiar := append([]kmsclients.Backend(nil), bs...)
			withLiar[lying] = liar{bs[lying]}
			d, err := New(Config{Threshold: 2, Backends: withLiar})
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Decrypt(ctxT(t), s.Ciphertext, s.Header)
			if err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("decrypt with one lying backend of three: %v", err)
			}
		})
	}
	t.Run("no spare backend", func(t *testing.T) {
		two := newLocals(t, 2)
		e := mustNew(t, Config{Threshold: 2, Backends: two})
		s := mustEncrypt(t, e, seed)
		d, _ := New(Config{Threshold: 2, Backends: []kmsclients.Backend{two[0], liar{two[1]}}})
		_, err := d.Decrypt(ctxT(t), s.Ciphertext, s.Header)
		var qe *QuorumError
		if !errors.As(err, &qe) || !qe.Mismatch || !errors.Is(err, ErrInvalid) {
			t.Fatalf("2 of 2 with a liar: %v, want a mismatch", err)
		}
		if !strings.Contains(err.Error(), "wrong share") {
			t.Errorf("error does not say what happened: %v", err)
		}
	})
}

// TestEverySingleByteFlipFails flips each byte of the header and of the
// ciphertext in turn: each must fail cleanly, as invalid input.
func TestEverySingleByteFlipFails(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	s := mustEncrypt(t, e, seed)
	check := func(what string, ct, hdr []byte) {
		t.Helper()
		got, err := e.Decrypt(ctxT(t), ct, hdr)
		if err == nil {
			t.Fatalf("%s: decrypted to %x", what, got)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: %v, want an invalid-input error", what, err)
		}
	}
	for i := range s.Header {
		for _, bit := range []byte{0x01, 0x80} {
			hdr := bytes.Clone(s.Header)
			hdr[i] ^= bit
			check(fmt.Sprintf("header byte %d ^ %#x", i, bit), s.Ciphertext, hdr)
		}
	}
	for i := range s.Ciphertext {
		ct := bytes.Clone(s.Ciphertext)
		ct[i] ^= 0x01
		check(fmt.Sprintf("ciphertext byte %d", i), ct, s.Header)
	}
	check("truncated ciphertext", s.Ciphertext[:len(s.Ciphertext)-1], s.Header)
	check("truncated header", s.Ciphertext, s.Header[:len(s.Header)-1])
	check("extended header", s.Ciphertext, append(bytes.Clone(s.Header), 0))
	check("empty", nil, nil)
	// Still fine afterwards.
	if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("original no longer decrypts: %v", err)
	}
}

func TestCiphertextOfAnotherDEKFails(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	a := mustEncrypt(t, e, seed)
	if err := e.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	b := mustEncrypt(t, e, seed)
	if _, err := e.Decrypt(ctxT(t), a.Ciphertext, b.Header); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ciphertext paired with another DEK's header: %v", err)
	}
}

func TestRestartFromStateWithKBackends(t *testing.T) {
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	s := mustEncrypt(t, e, seed)
	st, err := os.Stat(filepath.Join(dir, stateFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v", err, st.Mode())
	}

	sw[2].down.Store(true) // one of three down across the restart
	again := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	if again.KeyID() != s.KeyID {
		t.Fatalf("key id changed across restart: %q -> %q", s.KeyID, again.KeyID())
	}
	if got, err := again.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("decrypt after restart: %v", err)
	}
	if s2 := mustEncrypt(t, again, seed); !bytes.Equal(s2.Header, s.Header) {
		t.Fatal("restart made a new DEK")
	}
}

func TestRestartBelowQuorumWaitsForBackends(t *testing.T) {
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	first := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	keyID := first.KeyID()
	sw[0].down.Store(true)
	sw[1].down.Store(true)
	e, err := New(Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Prepare(ctxT(t)); err == nil {
		t.Fatal("Prepare with 1 of 3 backends succeeded")
	}
	if e.KeyID() != keyID {
		t.Fatalf("key id while locked = %q, want the stored %q", e.KeyID(), keyID)
	}
	if _, err := e.Encrypt(seed); !errors.Is(err, ErrNotReady) || !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Fatalf("Encrypt while locked: %v", err)
	}
	sw[0].down.Store(false)
	if err := e.Prepare(ctxT(t)); err != nil {
		t.Fatalf("Prepare once a quorum is back: %v", err)
	}
	if e.KeyID() != keyID {
		t.Fatal("key id changed on unlock")
	}
}

func TestFirstStartNeedsAllBackends(t *testing.T) {
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	sw[1].down.Store(true)
	e, err := New(Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Prepare(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "b2") {
		t.Fatalf("first start with b2 down: %v, want an error naming b2", err)
	}
	if e.KeyID() != "" {
		t.Fatal("a key id exists without a DEK")
	}
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed first start wrote state")
	}
	sw[1].down.Store(false)
	if err := e.Prepare(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRotationKeepsOldDataReadable(t *testing.T) {
	dir := t.TempDir()
	obs := &countingObserver{}
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir, Observer: obs})
	var sealed []Sealed
	seen := map[string]bool{}
	for i := range 5 {
		s := mustEncrypt(t, e, fmt.Appendf(nil, "secret number %d", i))
		if seen[s.KeyID] {
			t.Fatalf("key id %q reused", s.KeyID)
		}
		seen[s.KeyID] = true
		sealed = append(sealed, s)
		if err := e.Rotate(ctxT(t), "test"); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.Current().Generation; got != 6 {
		t.Errorf("generation %d after 5 rotations, want 6", got)
	}
	restarted := mustNew(t, Config{Threshold: 2, Backends: e.Backends(), StateDir: dir})
	for i, s := range sealed {
		got, err := restarted.Decrypt(ctxT(t), s.Ciphertext, s.Header)
		if err != nil || string(got) != fmt.Sprintf("secret number %d", i) {
			t.Fatalf("object %d after rotations: %v", i, err)
		}
	}
	if obs.rotations.Load() != 6 { // the first DEK counts
		t.Errorf("observer saw %d rotations, want 6", obs.rotations.Load())
	}
}

func TestRotationWithABackendDownIsPostponed(t *testing.T) {
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	before := e.KeyID()
	stateBefore, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	sw[2].down.Store(true)
	err := e.Rotate(ctxT(t), "test")
	if err == nil || !strings.Contains(err.Error(), "postponed") || !strings.Contains(err.Error(), "b3") {
		t.Fatalf("rotation with b3 down: %v", err)
	}
	if e.KeyID() != before {
		t.Fatal("a failed rotation changed the key id")
	}
	stateAfter, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	if !bytes.Equal(stateBefore, stateAfter) {
		t.Fatal("a failed rotation changed the state file")
	}
	mustEncrypt(t, e, seed) // the current DEK keeps working
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries, want only the state file", len(entries))
	}
}

func TestRotationDue(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs, MaxAge: time.Hour, Now: clock})
	if r := e.RotationDue(nil); r != "" {
		t.Fatalf("fresh DEK due: %s", r)
	}
	now = now.Add(61 * time.Minute)
	if r := e.RotationDue(nil); !strings.Contains(r, "old") {
		t.Fatalf("DEK past maxAge: %q", r)
	}
	if err := e.Rotate(ctxT(t), "age"); err != nil {
		t.Fatal(err)
	}
	if r := e.RotationDue(map[string]string{"b1": e.Current().Shares[0].KeyIdentity}); r != "" {
		t.Fatalf("unchanged identities due: %s", r)
	}
	if r := e.RotationDue(map[string]string{"b2": "local:0000"}); !strings.Contains(r, "b2 key changed") {
		t.Fatalf("changed identity: %q", r)
	}

	// Config changes: another threshold, another backend set.
	stateDir := filepath.Join(dir, "s")
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: stateDir})
	k3, _ := New(Config{Threshold: 3, Backends: bs, StateDir: stateDir})
	if r := k3.RotationDue(nil); !strings.Contains(r, "threshold changed") {
		t.Fatalf("threshold change: %q", r)
	}
	more := append(append([]kmsclients.Backend(nil), bs...), newLocal(t, dir, "b4"))
	e4, _ := New(Config{Threshold: 2, Backends: more, StateDir: stateDir})
	if r := e4.RotationDue(nil); !strings.Contains(r, "backends changed") {
		t.Fatalf("backend change: %q", r)
	}
}

func TestBackendSetReplacedAtStart(t *testing.T) {
	dir := t.TempDir()
	old := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: old, StateDir: dir})
	s := mustEncrypt(t, e, seed)
	// The operator replaces two backends: the stored DEK cannot be unlocked
	// by the new set, so Prepare makes a new one with all of it.
	newSet := []kmsclients.Backend{old[0], newLocal(t, t.TempDir(), "c2"), newLocal(t, t.TempDir(), "c3")}
	e2 := mustNew(t, Config{Threshold: 2, Backends: newSet, StateDir: dir})
	if e2.KeyID() == s.KeyID {
		t.Fatal("key id kept after the backend set changed")
	}
	if r := e2.RotationDue(nil); r != "" {
		t.Fatalf("still due after replacement: %s", r)
	}
}

func TestKeyIDUniqueAfterStateLoss(t *testing.T) {
	bs := newLocals(t, 3)
	a := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir()})
	b := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: t.TempDir()})
	if a.KeyID() == b.KeyID() {
		t.Fatal("two DEKs of generation 1 with the same backends share a key id")
	}
}

func TestColdDecryptDoesNotWaitForDeadBackend(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	sw[0].down.Store(true)
	sw[0].hang.Store(true) // never answers until cancelled
	done := make(chan error, 1)
	go func() {
		_, err := e.Decrypt(context.Background(), s.Ciphertext, s.Header)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Decrypt waited for a backend that never answers")
	}
	// The hung call is cancelled once the quorum answered.
	deadline := time.Now().Add(10 * time.Second)
	for sw[0].cancel.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if sw[0].cancel.Load() == 0 {
		t.Fatal("the hung backend call was not cancelled")
	}
}

func TestDecryptHonoursDeadline(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	for _, b := range sw[:2] {
		b.down.Store(true)
		b.hang.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := e.Decrypt(ctx, s.Ciphertext, s.Header)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
}

func TestConcurrentColdDecryptsShareOneUnwrap(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	obs := &countingObserver{}
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), Observer: obs})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	for _, b := range sw {
		b.calls.Store(0)
		b.delay.Store(int64(20 * time.Millisecond))
	}
	errs := make(chan error, 32)
	for range 32 {
		go func() {
			_, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header)
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var calls int64
	for _, b := range sw {
		calls += b.calls.Load()
	}
	if calls > 3 {
		t.Fatalf("32 concurrent cold decrypts of one DEK made %d backend calls, want at most 3", calls)
	}
}

func TestCacheIsBounded(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	obs := &countingObserver{}
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), CacheSize: 2, Observer: obs})
	var sealed []Sealed
	for range 3 {
		sealed = append(sealed, mustEncrypt(t, e, seed))
		if err := e.Rotate(ctxT(t), "test"); err != nil {
			t.Fatal(err)
		}
	}
	if e.lookup.cache.Len() != 2 {
		t.Fatalf("cache holds %d DEKs, limit 2", e.lookup.cache.Len())
	}
	misses := obs.misses.Load()
	if _, err := e.Decrypt(ctxT(t), sealed[0].Ciphertext, sealed[0].Header); err != nil {
		t.Fatal(err)
	}
	if obs.misses.Load() != misses+1 {
		t.Fatal("an evicted DEK was not a miss")
	}
	hits := obs.hits.Load()
	if _, err := e.Decrypt(ctxT(t), sealed[0].Ciphertext, sealed[0].Header); err != nil {
		t.Fatal(err)
	}
	if obs.hits.Load() != hits+1 {
		t.Fatal("a cached DEK was not a hit")
	}
}

func TestThresholdOneIsRedundancy(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 1, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	for i := range sw {
		for j, b := range sw {
			b.down.Store(i != j)
		}
		d := mustNewLocked(t, 1, sw)
		if _, err := d.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
			t.Fatalf("k=1: backend b%d alone failed: %v", i+1, err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	bs := newLocals(t, 2)
	for name, cfg := range map[string]Config{
		"k above n":  {Threshold: 3, Backends: bs},
		"k zero":     {Threshold: 0, Backends: bs},
		"no backend": {Threshold: 1},
		"duplicate":  {Threshold: 1, Backends: []kmsclients.Backend{bs[0], bs[0]}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFileName), []byte("{not json"), 0o600)
	if _, err := New(Config{Threshold: 1, Backends: bs, StateDir: dir}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt state file: %v", err)
	}
}

func TestCombinedFormat(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	s := mustEncrypt(t, e, seed)
	blob := MarshalCombined(s.Header, s.Ciphertext)
	h, ct, err := ParseCombined(blob)
	if err != nil || !bytes.Equal(h, s.Header) || !bytes.Equal(ct, s.Ciphertext) {
		t.Fatalf("combined round trip: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("TRS1"), blob[:6], append([]byte("XXXX"), blob[4:]...)} {
		if _, _, err := ParseCombined(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCombined(%q): %v", bad, err)
		}
	}
}

func TestSameKeyTwiceIsRefused(t *testing.T) {
	dir := t.TempDir()
	one := newLocal(t, dir, "b1")
	path := filepath.Join(dir, "b1.key")
	twin, err := local.New(context.Background(), "b2", local.Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Threshold: 2, Backends: []kmsclients.Backend{one, twin, newLocal(t, dir, "b3")}})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Prepare(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "same key") {
		t.Fatalf("two backends on one key file: %v", err)
	}
}

func TestUnconfiguredBackendInHeaderIsInvalid(t *testing.T) {
	// 2 of 2: a header naming a backend this plugin does not have cannot
	// be decrypted, and retrying will not help: invalid, not unavailable.
	bs := newLocals(t, 2)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	s := mustEncrypt(t, e, seed)
	other, _ := New(Config{Threshold: 2, Backends: []kmsclients.Backend{bs[0], newLocal(t, t.TempDir(), "zz")}})
	_, err := other.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if !errors.Is(err, ErrInvalid) || errors.Is(err, kmsclients.ErrUnavailable) || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("got %v", err)
	}
}

func TestLiarPlusOutageIsUnavailable(t *testing.T) {
	// 2 of 3, one backend lies and one is down: the down one could have
	// made a quorum with the honest one, so the caller should retry.
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	sw[2].down.Store(true)
	d, _ := New(Config{Threshold: 2, Backends: []kmsclients.Backend{sw[0], liar{sw[1]}, sw[2]}})
	_, err := d.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Fatalf("got %v, want unavailable", err)
	}
}

func TestEmptyStateHeaderIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"version":1,"header":null}`), 0o600)
	if _, err := New(Config{Threshold: 1, Backends: newLocals(t, 1), StateDir: dir}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("got %v", err)
	}
}

func TestDecryptWithDoneContextStartsNothing(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	for _, b := range sw {
		b.calls.Store(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	for _, b := range sw {
		if b.calls.Load() != 0 {
			t.Fatal("a cancelled Decrypt called a backend")
		}
	}
}
