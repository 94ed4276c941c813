package envelope

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// Tampered headers are cheap to refuse: no backend call for a variant of
// a known DEK or a replay, never the whole deadline for a dark backend.

func totalCalls(sw []*switchable) int64 {
	var n int64
	for _, b := range sw {
		n += b.calls.Load()
	}
	return n
}

// variant changes the generation, which no share's associated data covers.
func variant(raw []byte, i int) []byte {
	v := bytes.Clone(raw)
	binary.BigEndian.PutUint32(v[len(headerMagic)+3:], uint32(1000+i))
	return v
}

func TestVariantOfAKnownDEKCostsNoBackendCall(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	before := totalCalls(sw)
	for i := range 50 {
		_, err := e.Decrypt(ctxT(t), s.Ciphertext, variant(s.Header, i))
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("variant %d: want ErrInvalid, got %v", i, err)
		}
	}
	if n := totalCalls(sw) - before; n != 0 {
		t.Fatalf("50 variants of a known header made %d backend calls", n)
	}
	if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("the genuine header after the variants: %v", err)
	}
}

func TestFailedHeaderIsNotRetriedAgainstBackends(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), Now: clock})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	bad := variant(s.Header, 1)
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("first try: %v", err)
	}
	before := totalCalls(sw)
	for range 10 {
		if _, err := e.Decrypt(ctxT(t), s.Ciphertext, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("replay: %v", err)
		}
	}
	if n := totalCalls(sw) - before; n != 0 {
		t.Fatalf("10 replays of a failed header made %d backend calls", n)
	}
	// Forgotten after a while: a backend that lied may have been fixed.
	mu.Lock()
	now = now.Add(failedHeaderTTL)
	mu.Unlock()
	e.Decrypt(ctxT(t), s.Ciphertext, bad)
	if totalCalls(sw) == before {
		t.Fatal("a failed header is refused for ever")
	}
}

// withADarkBackend is a cold 2-of-3 node with one sealed value whose
// third backend hangs until the deadline.
func withADarkBackend(t testing.TB) (sw []*switchable, e *Envelope, s Sealed) {
	sw = wrapSwitchable(newLocals(t, 3))
	e = mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s = mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	sw[2].down.Store(true)
	sw[2].hang.Store(true)
	return sw, e, s
}

func TestTamperedHeaderWithADarkBackendFailsFast(t *testing.T) {
	_, e, s := withADarkBackend(t)
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"generation changed", variant(s.Header, 1)},
		{"dek id changed", func() []byte { v := bytes.Clone(s.Header); v[dekIDOffset] ^= 1; return v }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := e.Decrypt(ctx, s.Ciphertext, tc.raw)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("a tampered header held the caller %s with one backend dark", took)
			}
		})
	}
}

// A tampered header with a dark backend is refused after the grace; a
// replay costs no call and no wait until a probe sees a change.
func TestTamperedHeaderReplayWithADarkBackend(t *testing.T) {
	sw, e, s := withADarkBackend(t)
	e.RotationDue(map[string]string{sw[0].Name(): "x", sw[1].Name(): "y"}) // a probe: b3 did not answer
	raw := variant(s.Header, 1)
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, raw); err == nil {
		t.Fatal("tampered header decrypted")
	}
	before := sw[0].calls.Load() + sw[1].calls.Load() + sw[2].calls.Load()
	start := time.Now()
	for range 5 {
		if _, err := e.Decrypt(ctxT(t), s.Ciphertext, raw); !errors.Is(err, kmsclients.ErrUnavailable) {
			t.Fatalf("replay: %v, want unavailable (b3 might have fitted)", err)
		}
	}
	if n := sw[0].calls.Load() + sw[1].calls.Load() + sw[2].calls.Load() - before; n != 0 {
		t.Fatalf("5 replays cost %d backend calls", n)
	}
	if took := time.Since(start); took >= minMismatchGrace {
		t.Fatalf("5 replays took %s: each waited for the grace again", took)
	}
	// b3 is back (a probe sees it): the header is asked about again.
	sw[2].down.Store(false)
	e.RotationDue(map[string]string{sw[0].Name(): "x", sw[1].Name(): "y", sw[2].Name(): "z"})
	asked := sw[2].calls.Load()
	e.Decrypt(ctxT(t), s.Ciphertext, raw)
	if sw[2].calls.Load() == asked {
		t.Fatal("the header was not asked about again once the backend came back")
	}
}

// The probe's view must not cut the grace that routes around a liar: an
// honest backend the probe missed still completes the quorum.
func TestLiarWithABackendTheProbeMissed(t *testing.T) {
	locals := newLocals(t, 3)
	sw := wrapSwitchable([]kmsclients.Backend{liar{locals[0]}, locals[1], locals[2]})
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	e.lookup.cache.Purge()
	sw[2].delay.Store(int64(50 * time.Millisecond))
	e.RotationDue(map[string]string{sw[0].Name(): "x", sw[1].Name(): "y"}) // b3 missed by the probe
	for range 2 {
		e.lookup.cache.Purge()
		if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
			t.Fatalf("genuine header with a liar and two honest backends: %v", err)
		}
	}
}

func TestUnwrapsInFlightAreBounded(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), MaxUnwraps: 1, UnwrapTimeout: time.Second})
	// Distinct headers (distinct DEK ids) cannot share an unwrap.
	var sealed []Sealed
	for range 6 {
		if err := e.Rotate(ctxT(t), "test"); err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, mustEncrypt(t, e, seed))
	}
	e.lookup.cache.Purge()
	for _, b := range sw {
		b.down.Store(true)
		b.hang.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errs := make(chan error, len(sealed))
	for _, s := range sealed {
		go func() { _, err := e.Decrypt(ctx, s.Ciphertext, s.Header); errs <- err }()
	}
	busy := 0
	for range sealed {
		if err := <-errs; errors.Is(err, ErrBusy) {
			busy++
		}
	}
	// One running, four waiting, the sixth refused at once.
	if busy != 1 {
		t.Fatalf("%d of 6 unwraps refused as busy with a bound of 1 (+4 waiting), want 1", busy)
	}
	if !errors.Is(ErrBusy, kmsclients.ErrUnavailable) {
		t.Fatal("ErrBusy should be of kind unavailable")
	}
}

// Objects of earlier builds stay readable.
func TestLegacyCiphertextsStillOpen(t *testing.T) {
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3)})
	s := mustEncrypt(t, e, seed)
	d, _ := e.lookup.cache.Get([dekIDSize]byte(s.Header[dekIDOffset : dekIDOffset+dekIDSize]))
	for _, v := range []byte{ciphertextVersion1, ciphertextVersion2} {
		ct := sealLegacy(t, d, v, seed)
		e.lookup.cache.Purge()
		if got, err := e.Decrypt(ctxT(t), ct, s.Header); err != nil || !bytes.Equal(got, seed) {
			t.Fatalf("version %d ciphertext: %v", v, err)
		}
	}
}

// A stored DEK that fails with every backend up must not leave the node
// stuck.
func TestUnusableStoredDEKIsReplaced(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string, keys []string)
	}{
		{"two key files replaced", func(t *testing.T, dir string, keys []string) {
			for _, k := range keys[1:] {
				os.Remove(k)
				if err := local.GenerateKeyFile(k); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"a byte of the stored header flipped", func(t *testing.T, dir string, _ []string) {
			raw, err := (&stateFile{dir: dir}).load(slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			raw[len(raw)-commitSize-3] ^= 1 // inside the last wrapped share
			writeState(t, dir, raw)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, keyDir := t.TempDir(), t.TempDir()
			var keys []string
			var bs []kmsclients.Backend
			for _, n := range []string{"a", "b", "c"} {
				bs = append(bs, newLocal(t, keyDir, n))
				keys = append(keys, filepath.Join(keyDir, n+".key"))
			}
			first := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
			old := first.KeyID()
			tc.break_(t, dir, keys)
			var log bytes.Buffer
			obs := &countingObserver{}
			restarted := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Observer: obs, Logger: slog.New(slog.NewTextHandler(&log, nil))})
			if obs.unusable.Load() != 1 {
				t.Fatalf("unusable DEKs counted: %d, want 1", obs.unusable.Load())
			}
			if restarted.KeyID() == old || !restarted.Ready() {
				t.Fatalf("still on the unusable DEK %s (ready %v)", old, restarted.Ready())
			}
			mustEncrypt(t, restarted, seed)
			aside, _ := filepath.Glob(filepath.Join(dir, stateFileName+".unusable-*"))
			if len(aside) != 1 {
				t.Fatalf("old state not kept aside: %v", aside)
			}
			if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), old) {
				t.Fatalf("no ERROR naming the old key id in the log:\n%s", log.String())
			}
		})
	}
}

// While a backend is down, an unlock failure may be temporary: wait.
func TestStoredDEKIsNotReplacedWhileBackendsAreDown(t *testing.T) {
	dir := t.TempDir()
	sw := wrapSwitchable(newLocals(t, 3))
	first := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	sw[0].down.Store(true)
	sw[1].down.Store(true)
	e, err := New(Config{Threshold: 2, Backends: asBackends(sw), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Prepare(ctxT(t)); !errors.Is(err, kmsclients.ErrUnavailable) {
		t.Fatalf("want unavailable, got %v", err)
	}
	if e.KeyID() != first.KeyID() {
		t.Fatal("the stored DEK was replaced while backends were down")
	}
}

// A config adding an unreachable backend: the stored DEK serves until a
// new one can be made, if it unlocks under the new floor.
func TestConfigChangeWithNewBackendDown(t *testing.T) {
	dir := t.TempDir()
	old := newLocals(t, 3)
	first := mustNew(t, Config{Threshold: 2, Backends: old, StateDir: dir})
	s := mustEncrypt(t, first, seed)
	added := wrapSwitchable([]kmsclients.Backend{newLocal(t, t.TempDir(), "b4")})[0]
	added.down.Store(true)
	grown := append(append([]kmsclients.Backend(nil), old...), added)

	e := mustNew(t, Config{Threshold: 2, Backends: grown, StateDir: dir})
	if e.KeyID() != s.KeyID {
		t.Fatal("the stored DEK was dropped although no new one could be made")
	}
	if e.RotationDue(nil) == "" {
		t.Fatal("no rotation due after the backend set changed")
	}
	added.down.Store(false)
	if err := e.Rotate(ctxT(t), e.RotationDue(nil)); err != nil || e.KeyID() == s.KeyID {
		t.Fatalf("rotation once the new backend is up: %v", err)
	}

	// Raising k to 3: the 2-of-3 DEK is below the floor without MinThreshold.
	raised, err := New(Config{Threshold: 3, Backends: append(old[:3:3], newLocal(t, t.TempDir(), "b5")), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := raised.Prepare(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := raised.Decrypt(ctxT(t), s.Ciphertext, s.Header); !errors.Is(err, ErrInvalid) {
		t.Fatalf("2-of-3 data under a 3-of-4 config without minThreshold: %v", err)
	}
	window := mustNew(t, Config{Threshold: 3, MinThreshold: 2, Backends: append(old[:3:3], newLocal(t, t.TempDir(), "b6"))})
	if got, err := window.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("2-of-3 data with minThreshold 2: %v", err)
	}
}

// wrapFails answers Unwrap but not Wrap (encrypt permission revoked).
type wrapFails struct {
	kmsclients.Backend
	fail *atomic.Bool
}

func (w wrapFails) Wrap(ctx context.Context, share, aad []byte) (kmsclients.Wrapped, error) {
	if w.fail.Load() {
		return kmsclients.Wrapped{}, fmt.Errorf("%s: encrypt refused: %w", w.Name(), kmsclients.ErrPermission)
	}
	return w.Backend.Wrap(ctx, share, aad)
}

// An unusable DEK whose replacement waits is set aside and counted once,
// however often Prepare runs; the new state keeps it in its history.
func TestUnusableStoredDEKSetAsideOnce(t *testing.T) {
	dir, keyDir := t.TempDir(), t.TempDir()
	var fail atomic.Bool
	var bs []kmsclients.Backend
	for _, n := range []string{"a", "b", "c"} {
		bs = append(bs, wrapFails{newLocal(t, keyDir, n), &fail})
	}
	old := mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir}).Current()
	for _, n := range []string{"b", "c"} {
		k := filepath.Join(keyDir, n+".key")
		os.Remove(k)
		if err := local.GenerateKeyFile(k); err != nil {
			t.Fatal(err)
		}
	}
	fail.Store(true)
	obs := &countingObserver{}
	e, err := New(Config{Threshold: 2, Backends: bs, StateDir: dir, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.Prepare(ctxT(t)); err == nil {
			t.Fatal("a DEK was made although a backend cannot wrap")
		}
	}
	aside, _ := filepath.Glob(filepath.Join(dir, stateFileName+".unusable-*"))
	if len(aside) != 1 || obs.unusable.Load() != 1 {
		t.Fatalf("set aside %d times (%v), counted %d: want once", len(aside), aside, obs.unusable.Load())
	}
	fail.Store(false)
	if err := e.Prepare(ctxT(t)); err != nil || !e.Ready() {
		t.Fatalf("a new DEK once every backend wraps: %v", err)
	}
	if e.KeyID() == old.KeyID() {
		t.Fatal("still the set-aside DEK")
	}
	headers, files, err := StateHeaders(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for i, h := range headers {
		if p, _ := ParseHeader(h); p != nil && p.DEKID == old.DEKID {
			found = append(found, files[i])
		}
	}
	if len(found) != 1 {
		t.Fatalf("the old DEK should be listed once (state history and set-aside copy hold the same header), found in %v", found)
	}
}

// A DEK set aside at an earlier start is not copied again.
func TestSetAsideReusesAnIdenticalCopy(t *testing.T) {
	dir := t.TempDir()
	mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
	st := &stateFile{dir: dir}
	first, err := st.setAside(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	second, err := st.setAside(time.Now().Add(time.Hour))
	if err != nil || second != first {
		t.Fatalf("second set-aside wrote %s (%v), want the copy %s reused", second, err, first)
	}
}

// The state keeps earlier DEKs, newest first and bounded.
func TestStateKeepsPreviousDEKs(t *testing.T) {
	dir := t.TempDir()
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
	var ids []string
	for range maxPrevious + 3 {
		ids = append(ids, e.KeyID())
		if err := e.Rotate(ctxT(t), "test"); err != nil {
			t.Fatal(err)
		}
	}
	headers, _, err := StateHeaders(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(headers) != 1+maxPrevious {
		t.Fatalf("%d headers kept, want the current one and %d previous", len(headers), maxPrevious)
	}
	for i, h := range headers[1:] {
		p, _ := ParseHeader(h)
		if want := ids[len(ids)-1-i]; p.KeyID() != want {
			t.Fatalf("previous %d is %s, want %s (newest first)", i+1, p.KeyID(), want)
		}
	}
}

// After raising k or dropping a custodian, the old DEK seals nothing more
// while a new one cannot be made.
func TestStricterConfigNeverServesTheOldDEK(t *testing.T) {
	old := newLocals(t, 3)
	for _, tc := range []struct {
		name     string
		k        int
		backends func(down kmsclients.Backend) []kmsclients.Backend
	}{
		{"threshold raised", 3, func(down kmsclients.Backend) []kmsclients.Backend {
			return []kmsclients.Backend{old[0], old[1], down}
		}},
		{"backend removed", 2, func(down kmsclients.Backend) []kmsclients.Backend {
			return []kmsclients.Backend{old[0], old[1], down}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustEncrypt(t, mustNew(t, Config{Threshold: 2, Backends: old, StateDir: dir}), seed)
			third := old[2]
			if tc.name == "backend removed" {
				third = newLocal(t, t.TempDir(), "b4")
			}
			down := wrapSwitchable([]kmsclients.Backend{third})[0]
			down.down.Store(true)
			e, err := New(Config{Threshold: tc.k, MinThreshold: 2, Backends: tc.backends(down), StateDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Prepare(ctxT(t)); err == nil || e.Ready() {
				t.Fatalf("the old DEK serves under a stricter config: %v", err)
			}
			if _, err := e.Encrypt(seed); !errors.Is(err, ErrNotReady) {
				t.Fatalf("Encrypt: %v", err)
			}
			if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
				t.Fatalf("old data must stay readable: %v", err)
			}
			down.down.Store(false)
			if err := e.Prepare(ctxT(t)); err != nil || e.KeyID() == s.KeyID {
				t.Fatalf("a new DEK once every backend answers: %v", err)
			}
		})
	}
}

// Leftovers are removed, an open state file made 0600, and two plugins
// cannot share a state dir.
func TestStateDirHousekeeping(t *testing.T) {
	dir := t.TempDir()
	bs := newLocals(t, 3)
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	leftover := filepath.Join(dir, ".state-123.tmp")
	os.WriteFile(leftover, []byte("{}"), 0o600)
	os.Chmod(filepath.Join(dir, stateFileName), 0o644)
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover temporary file still there: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, stateFileName)); st.Mode().Perm() != 0o600 {
		t.Fatalf("state file left at %v", st.Mode().Perm())
	}
	lock, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := LockStateDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another Trousseau") {
		t.Fatalf("second lock on one state dir: %v", err)
	}
}

// A state file that is not Trousseau's says what to do.
func TestUnreadableStateSaysWhatToDo(t *testing.T) {
	for _, content := range []string{"{}", "null", "not json"} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, stateFileName), []byte(content), 0o600)
		_, err := New(Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
		if err == nil || !strings.Contains(err.Error(), "move it aside") || strings.Contains(err.Error(), "version 0") {
			t.Errorf("%s: %v", content, err)
		}
	}
}

// Old keys put back: failed headers open as soon as a probe sees the
// change, not after the TTL.
func TestFailedHeadersForgottenWhenBackendKeysChange(t *testing.T) {
	dir := t.TempDir()
	var bs []kmsclients.Backend
	for _, n := range []string{"a", "b", "c"} {
		bs = append(bs, newLocal(t, dir, n))
	}
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	s := mustEncrypt(t, e, seed)
	probe := func() map[string]string {
		m := map[string]string{}
		for _, b := range bs {
			id, _ := b.Probe(ctxT(t))
			m[b.Name()] = id
		}
		return m
	}
	e.RotationDue(probe())
	e.lookup.cache.Purge()
	for _, n := range []string{"b", "c"} {
		p := filepath.Join(dir, n+".key")
		os.Rename(p, p+".orig")
		local.GenerateKeyFile(p)
	}
	e.RotationDue(probe()) // the prober runs all along
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); !errors.Is(err, ErrInvalid) {
		t.Fatalf("with the wrong keys: %v", err)
	}
	for _, n := range []string{"b", "c"} {
		p := filepath.Join(dir, n+".key")
		os.Rename(p+".orig", p)
	}
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil {
		t.Fatal("the failure was not remembered before any probe")
	}
	e.RotationDue(probe())
	if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("after the probe saw the keys back: %v", err)
	}
}

// A state-dir writer must not make the plugin write, chmod or read any
// other file through planted symlinks; a dir others can write is refused.
func TestStateDirWriterCannotReachOtherFiles(t *testing.T) {
	t.Run("state.json a symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(t.TempDir(), "precious")
		os.WriteFile(target, []byte("keep"), 0o644)
		os.Symlink(target, filepath.Join(dir, stateFileName))
		_, err := New(Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
		if err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("a symlinked state file: %v", err)
		}
		if st, _ := os.Stat(target); st.Mode().Perm() != 0o644 {
			t.Fatalf("the symlink's target was chmodded to %v", st.Mode().Perm())
		}
	})
	t.Run("set-aside names planted as symlinks", func(t *testing.T) {
		dir, keyDir := t.TempDir(), t.TempDir()
		var bs []kmsclients.Backend
		for _, n := range []string{"a", "b", "c"} {
			bs = append(bs, newLocal(t, keyDir, n))
		}
		now := time.Now()
		mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Now: func() time.Time { return now }})
		victim := filepath.Join(t.TempDir(), "victim")
		for d := -2; d <= 2; d++ {
			name := stateFileName + ".unusable-" + now.Add(time.Duration(d)*time.Second).UTC().Format("20060102T150405Z")
			os.Symlink(victim, filepath.Join(dir, name))
		}
		for _, n := range []string{"b", "c"} {
			os.Remove(filepath.Join(keyDir, n+".key"))
			local.GenerateKeyFile(filepath.Join(keyDir, n+".key"))
		}
		mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir, Now: func() time.Time { return now }})
		if _, err := os.Lstat(victim); !os.IsNotExist(err) {
			t.Fatalf("a file was written through a planted symlink: %v", err)
		}
	})
	t.Run("state dir writable by others", func(t *testing.T) {
		dir := t.TempDir()
		os.Chmod(dir, 0o777)
		_, err := New(Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
		if err == nil || !strings.Contains(err.Error(), "chmod go-w") {
			t.Fatalf("a world-writable state dir: %v", err)
		}
	})
}

// A fast liar in a 2-of-3 must not make the slow honest share (a cloud
// KMS beside a key file) miss the quorum.
func TestLiarDoesNotCutOffASlowHonestBackend(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	s := mustEncrypt(t, e, seed)
	slow := wrapSwitchable([]kmsclients.Backend{bs[2]})[0]
	slow.delay.Store(int64(300 * time.Millisecond))
	node := mustNew(t, Config{Threshold: 2, Backends: []kmsclients.Backend{liar{bs[0]}, bs[1], slow}})
	for i := range 3 {
		node.lookup.cache.Purge()
		if got, err := node.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
			t.Fatalf("try %d: a liar blocked the quorum of the two honest backends: %v", i, err)
		}
	}
}
