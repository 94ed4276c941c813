package envelope

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

func TestDrillAsksEveryBackendAndReportsTheMargin(t *testing.T) {
	dir := t.TempDir()
	var bs []kmsclients.Backend
	for _, n := range []string{"a", "b", "c"} {
		bs = append(bs, newLocal(t, dir, n))
	}
	sw := wrapSwitchable(bs)
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)

	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil || check.Working != 3 || check.Margin() != 1 || check.KeyID != s.KeyID {
		t.Fatalf("all up: %+v, %v", check, err)
	}
	for _, b := range sw {
		if b.calls.Load() != 2 { // one wrap, one drill unwrap
			t.Fatalf("backend %s called %d times", b.Name(), b.calls.Load())
		}
	}

	// One backend down: the other two check each other; margin 0.
	sw[1].down.Store(true)
	check, _ = e.Drill(ctxT(t), s.Header)
	if check.Working != 2 || check.Margin() != 0 || check.Shares[1].OK {
		t.Fatalf("one down: %+v", check)
	}

	// And a key file replaced (lost in a safe): unrecoverable.
	os.Remove(filepath.Join(dir, "c.key"))
	local.GenerateKeyFile(filepath.Join(dir, "c.key"))
	check, err = e.Drill(ctxT(t), s.Header)
	if err != nil || check.Working != 0 || check.Margin() >= 0 {
		t.Fatalf("one lost, one down: %+v, %v", check, err)
	}
	if !errors.Is(check.Shares[0].Err, ErrShareUnverified) {
		t.Errorf("a lone share reported as %v", check.Shares[0].Err)
	}
	if k := kmsclients.Kind(check.Shares[1].Err); k != "unavailable" {
		t.Errorf("down backend reported as %s", k)
	}
	if k := kmsclients.Kind(check.Shares[2].Err); k != "invalid" {
		t.Errorf("replaced key reported as %s", k)
	}

}

// A backend that returns a wrong share is found out even though the others
// make a quorum without it.
func TestDrillFindsALyingBackend(t *testing.T) {
	bs := newLocals(t, 3)
	e := mustNew(t, Config{Threshold: 2, Backends: bs})
	s := mustEncrypt(t, e, seed)
	lying := mustNew(t, Config{Threshold: 2, Backends: []kmsclients.Backend{bs[0], bs[1], liar{bs[2]}}})
	check, err := lying.Drill(ctxT(t), s.Header)
	if err != nil || check.Working != 2 || check.Shares[2].OK || !errors.Is(check.Shares[2].Err, kmsclients.ErrInvalidCiphertext) {
		t.Fatalf("%+v, %v", check, err)
	}
}

func TestDrillChangesNothing(t *testing.T) {
	bs := newLocals(t, 3)
	a, b, _ := twoNodes(t, bs)
	b.Rotate(ctxT(t), "newer")
	newer := mustEncrypt(t, b, seed)
	before := a.KeyID()
	a.lookup.cache.Purge()
	if _, err := a.Drill(ctxT(t), newer.Header); err != nil {
		t.Fatal(err)
	}
	stays(t, a, before)
	if a.lookup.cache.Len() != 0 {
		t.Fatal("a drill filled the DEK cache")
	}
}

func TestStateHeadersListsCurrentAndSetAside(t *testing.T) {
	dir := t.TempDir()
	bs := newLocals(t, 3)
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: dir})
	state := filepath.Join(dir, stateFileName)
	// A copy of the current state set aside: the same header, listed once.
	os.WriteFile(state+".unusable-20260101T000000Z", mustRead(t, state), 0o600)
	headers, files, err := StateHeaders(dir)
	if err != nil || len(headers) != 1 || files[0] != state {
		t.Fatalf("%v %v", files, err)
	}
	// Another DEK's state set aside: listed after the current one.
	otherDir := t.TempDir()
	mustNew(t, Config{Threshold: 2, Backends: bs, StateDir: otherDir})
	os.WriteFile(state+".unusable-20260102T000000Z", mustRead(t, filepath.Join(otherDir, stateFileName)), 0o600)
	headers, files, err = StateHeaders(dir)
	if err != nil || len(headers) != 2 || files[0] != state || files[1] != state+".unusable-20260102T000000Z" {
		t.Fatalf("%v %v", files, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
