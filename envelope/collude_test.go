package envelope

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Two colluders of 3-of-5 (b1, b2) add c*x*(x-3): with b3 they make a
// polynomial whose constant term is the DEK. Only three shares are on it,
// too few to prove the other two wrong, so the honest b4 and b5 are not
// blamed (nor counted as liars).
func TestDrillDoesNotBlameHonestCustodiansForColluders(t *testing.T) {
	bs := newLocals(t, 5)
	maker := mustNew(t, Config{Threshold: 3, Backends: bs})
	s := mustEncrypt(t, maker, seed)
	roots := []byte{0, 3}
	obs := &mismatches{}
	e, err := New(Config{Threshold: 3, Observer: obs, Backends: []kmsclients.Backend{testutil.Colluder{Backend: bs[0], Roots: roots}, testutil.Colluder{Backend: bs[1], Roots: roots}, bs[2], bs[3], bs[4]}})
	if err != nil {
		t.Fatal(err)
	}
	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	for i, sc := range check.Shares {
		honest := i >= 2
		if honest && (errors.Is(sc.Err, errShareDoesNotFit) || obs.count(sc.Backend) != 0) {
			t.Errorf("honest %s blamed: %v (mismatch metric %d)", sc.Backend, sc.Err, obs.count(sc.Backend))
		}
		if honest && !sc.OK && !errors.Is(sc.Err, ErrSharesDisagree) {
			t.Errorf("honest %s: %v, want ok or ErrSharesDisagree", sc.Backend, sc.Err)
		}
	}
}

// Two colluders of 3-of-4 add c*(x-3)(x-4): with the two honest shares
// they make four shares on one wrong polynomial. Four is below
// TamperedQuorum(3), so neither Decrypt nor the drill calls the genuine
// header tampered.
func TestDrillOfAGenuineHeaderIsNotCalledTamperedByColluders(t *testing.T) {
	bs := newLocals(t, 4)
	maker := mustNew(t, Config{Threshold: 3, Backends: bs})
	s := mustEncrypt(t, maker, seed)
	roots := []byte{3, 4}
	e, err := New(Config{Threshold: 3, Backends: []kmsclients.Backend{testutil.Colluder{Backend: bs[0], Roots: roots}, testutil.Colluder{Backend: bs[1], Roots: roots}, bs[2], bs[3]}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err == nil {
		t.Fatal("decrypted with two colluders of 3-of-4")
	} else {
		if qe := (*QuorumError)(nil); errors.As(err, &qe) && qe.Tampered {
			t.Fatalf("decrypt calls the genuine header tampered: %v", err)
		}
	}
	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	if check.HeaderTampered {
		t.Fatalf("genuine header judged tampered by two colluders: %+v", check)
	}
}

// Unprovable disagreement is warned once per DEK, not at every probe's
// drill.
func TestDisagreementIsWarnedOncePerDEK(t *testing.T) {
	bs := newLocals(t, 5)
	s := mustEncrypt(t, mustNew(t, Config{Threshold: 3, Backends: bs}), seed)
	roots := []byte{0, 3}
	logs := &testutil.Buffer{}
	e, err := New(Config{Threshold: 3, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Backends: []kmsclients.Backend{testutil.Colluder{Backend: bs[0], Roots: roots}, testutil.Colluder{Backend: bs[1], Roots: roots}, bs[2], bs[3], bs[4]}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.Drill(ctxT(t), s.Header); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "too few fit the DEK to tell which lie"); n != 1 {
		t.Fatalf("warned %d times, want once:\n%s", n, logs)
	}
}
