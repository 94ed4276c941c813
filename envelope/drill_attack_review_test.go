package envelope

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// A cancelled check keeps no answer: the next check asks again.
func TestDrillSessionDoesNotKeepAnAnswerCutShort(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	session := e.NewDrillSession()
	defer session.Close()
	sw[2].delay.Store(int64(time.Minute))
	ctx, cancel := context.WithCancel(ctxT(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	first, err := session.Check(ctx, s.Header)
	if err == nil && first.Shares[2].OK {
		t.Fatalf("a backend that did not answer counted: %+v", first)
	}
	if n := session.Unasked(s.Header); n != 1 {
		t.Fatalf("after a cut-short check %d backends would be asked, want the one that did not answer", n)
	}
	sw[2].delay.Store(0)
	check, err := session.Check(ctxT(t), s.Header)
	if err != nil || check.Working != 3 {
		t.Fatalf("second check: %+v, %v", check, err)
	}
}

// A changed threshold byte changes every share's associated data: each
// backend is asked again, refuses, and none is named or counted working.
func TestDrillOfACopyWithAnotherThresholdBlamesNoCustodian(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	obs := &mismatches{}
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw), Observer: obs})
	s := mustEncrypt(t, e, seed)
	session := e.NewDrillSession()
	defer session.Close()
	if _, err := session.Check(ctxT(t), s.Header); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(s.Header)
	forged[len(headerMagic)+1] = 3 // k: 2 -> 3 of 3
	if n := session.Unasked(forged); n != 3 {
		t.Fatalf("copy with k changed: %d backends to ask, want 3 (its associated data differs)", n)
	}
	check, err := session.Check(ctxT(t), forged)
	if err != nil {
		t.Fatal(err)
	}
	if check.Working != 0 || check.HeaderTampered {
		t.Fatalf("copy with k changed: %+v", check)
	}
	for _, sc := range check.Shares {
		if sc.OK || errors.Is(sc.Err, errShareDoesNotFit) || obs.count(sc.Backend) != 0 {
			t.Errorf("%s: ok=%v err=%v mismatches=%d", sc.Backend, sc.OK, sc.Err, obs.count(sc.Backend))
		}
	}
}

// A backend that timed out on a header is not asked again for its copies
// (each would wait the whole time again).
func TestDrillSessionKeepsABackendThatRanOutOfTime(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	session := e.NewDrillSession()
	defer session.Close()
	sw[2].delay.Store(int64(time.Minute))
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	first, err := session.Check(ctx, s.Header)
	if err != nil || first.Shares[2].OK || !errors.Is(first.Shares[2].Err, context.DeadlineExceeded) {
		t.Fatalf("first check: %+v, %v", first, err)
	}
	if n := session.Unasked(s.Header); n != 0 {
		t.Fatalf("%d backends would be asked again", n)
	}
}
