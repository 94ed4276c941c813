package envelope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// A liar is named; a tampered header is not blamed on custodians and
// costs a few interpolations at any n.

// mismatches counts ShareMismatch calls by backend.
type mismatches struct {
	countingObserver
	mu  sync.Mutex
	got map[string]int
}

func (m *mismatches) ShareMismatch(backend string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.got == nil {
		m.got = map[string]int{}
	}
	m.got[backend]++
}

func (m *mismatches) count(backend string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.got[backend]
}

// liarFirst is a cold 2-of-3 node whose first backend lies, answering
// before the honest two.
func liarFirst(t *testing.T) (e *Envelope, obs *mismatches, logs *testutil.Buffer, s Sealed) {
	sw := wrapSwitchable(newLocals(t, 3))
	maker := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s = mustEncrypt(t, maker, seed)
	sw[1].delay.Store(int64(30 * time.Millisecond))
	sw[2].delay.Store(int64(60 * time.Millisecond))
	obs, logs = &mismatches{}, &testutil.Buffer{}
	e, err := New(Config{Threshold: 2, Backends: []kmsclients.Backend{liar{sw[0]}, sw[1], sw[2]},
		Observer: obs, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return e, obs, logs, s
}

func TestLyingCustodianIsNamedAfterADecrypt(t *testing.T) {
	e, obs, logs, s := liarFirst(t)
	got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	if err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("Decrypt with one liar of three: %v", err)
	}
	if obs.count("b1") != 1 || obs.count("b2")+obs.count("b3") != 0 {
		t.Errorf("mismatches counted: %v, want b1 once", obs.got)
	}
	line := logs.String()
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "backend=b1") || !strings.Contains(line, "does not fit") {
		t.Errorf("no WARN naming b1:\n%s", line)
	}
}

// Once named, a liar is the suspect when a later quorum fails.
func TestFailedQuorumNamesTheCaughtLiar(t *testing.T) {
	e, _, _, s := liarFirst(t)
	if _, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil {
		t.Fatal(err)
	}
	e.lookup.cache.Purge()
	e.open.backends["b3"].(*switchable).down.Store(true)
	_, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header)
	var qe *QuorumError
	if !errors.As(err, &qe) || !qe.Mismatch {
		t.Fatalf("want a mismatch, got %v", err)
	}
	if !strings.Contains(err.Error(), "caught before returning shares that do not fit: b1") {
		t.Errorf("error does not name b1: %v", err)
	}
}

// A changed generation: every share agrees, the commitment does not; the
// header is blamed at once.
func TestTamperedHeaderIsNotBlamedOnCustodians(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	obs := &mismatches{}
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	cold := coldNode(t, e)
	cold.open.obs = obs
	_, err := cold.Decrypt(ctxT(t), s.Ciphertext, variant(s.Header, 1))
	var qe *QuorumError
	if !errors.As(err, &qe) || !qe.Tampered || !errors.Is(err, ErrInvalid) {
		t.Fatalf("want a tampered-header error, got %v", err)
	}
	if !strings.Contains(err.Error(), "header was tampered with") {
		t.Errorf("error: %v", err)
	}
	for _, b := range []string{"b1", "b2", "b3"} {
		if obs.count(b) != 0 {
			t.Errorf("%s blamed for a tampered header", b)
		}
	}
}

func TestDrillBlamesTheLiarOnly(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	maker := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, maker, seed)
	e, err := New(Config{Threshold: 2, Backends: []kmsclients.Backend{sw[0], liar{sw[1]}, sw[2]}})
	if err != nil {
		t.Fatal(err)
	}
	check, err := e.Drill(ctxT(t), s.Header)
	if err != nil {
		t.Fatal(err)
	}
	if check.Working != 2 || check.Shares[1].OK || !errors.Is(check.Shares[1].Err, kmsclients.ErrInvalidCiphertext) {
		t.Fatalf("check %+v: want b2 alone not fitting", check)
	}
	if !e.NewDrillSession().drillsClean(t, s.Header) {
		t.Fatal("drill session disagrees")
	}
}

// drillsClean: a session's Check of the genuine header finds every share.
func (s *DrillSession) drillsClean(t *testing.T, raw []byte) bool {
	check, err := s.Check(ctxT(t), raw)
	return err == nil && check.Working == 2
}

// A tampered copy is reported tampered, no share blamed; the genuine
// header then costs the session no backend call.
func TestDrillSessionJudgesCopiesByTheSameShares(t *testing.T) {
	sw := wrapSwitchable(newLocals(t, 3))
	e := mustNew(t, Config{Threshold: 2, Backends: asBackends(sw)})
	s := mustEncrypt(t, e, seed)
	session := e.NewDrillSession()
	defer session.Close()
	copyCheck, err := session.Check(ctxT(t), variant(s.Header, 7))
	if err != nil {
		t.Fatal(err)
	}
	if !copyCheck.HeaderTampered || copyCheck.Working != 0 {
		t.Fatalf("copy: %+v, want tampered", copyCheck)
	}
	for _, sc := range copyCheck.Shares {
		if !errors.Is(sc.Err, ErrHeaderTampered) {
			t.Errorf("%s: %v, want ErrHeaderTampered", sc.Backend, sc.Err)
		}
	}
	before := totalCalls(sw)
	if session.Unasked(s.Header) != 0 {
		t.Errorf("the genuine header would ask %d backends again", session.Unasked(s.Header))
	}
	check, err := session.Check(ctxT(t), s.Header)
	if err != nil || check.Working != 3 || check.HeaderTampered {
		t.Fatalf("genuine: %+v, %v", check, err)
	}
	if n := totalCalls(sw) - before; n != 0 {
		t.Errorf("the genuine header cost %d backend calls after its copy", n)
	}
}

// largeNode makes a k-of-n node with one sealed value, and a cold node
// over the same backends.
func largeNode(t testing.TB, k, n int) (cold *Envelope, s Sealed) {
	e, err := New(Config{Threshold: k, Backends: newLocals(t, n)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return coldNode(t, e), mustEncrypt(t, e, seed)
}

// At 8 of 16, a forged copy is refused as tampered, with every backend
// asked once, and a liar among the first to answer is routed around.
func TestLargeThresholdForgedAndLyingHeaders(t *testing.T) {
	cold, s := largeNode(t, 8, 16)
	_, err := cold.Decrypt(ctxT(t), s.Ciphertext, variant(s.Header, 3))
	var qe *QuorumError
	if !errors.As(err, &qe) || !qe.Tampered {
		t.Fatalf("forged copy at 8 of 16: %v", err)
	}
	lying := append([]kmsclients.Backend{liar{cold.cfg.Backends[0]}}, cold.cfg.Backends[1:]...)
	e, err := New(Config{Threshold: 8, Backends: lying})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.Decrypt(ctxT(t), s.Ciphertext, s.Header); err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("one liar at 8 of 16: %v", err)
	}
}

// cpuTime is the process' user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkForgedVariants: forged copies on a cold node, each unwrapped
// and searched; cpu-ms/variant is CPU per copy, x-warm its time against
// a warm Decrypt.
func BenchmarkForgedVariants(b *testing.B) {
	for _, tc := range []struct{ k, n int }{{2, 3}, {5, 9}, {8, 16}} {
		b.Run(fmt.Sprintf("%dof%d", tc.k, tc.n), func(b *testing.B) {
			cold, s := largeNode(b, tc.k, tc.n)
			warm := mustNew(b, Config{Threshold: tc.k, Backends: cold.cfg.Backends})
			ws := mustEncrypt(b, warm, seed)
			ctx := context.Background()
			i := 0
			var cpu time.Duration
			interleave(b, "warm", func() {
				t0 := cpuTime()
				if _, err := cold.Decrypt(ctx, s.Ciphertext, variant(s.Header, i)); err == nil {
					b.Fatal("a forged copy decrypted")
				}
				cpu += cpuTime() - t0
				i++
			}, func() {
				if _, err := warm.Decrypt(ctx, ws.Ciphertext, ws.Header); err != nil {
					b.Fatal(err)
				}
			})
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/variant")
		})
	}
}

// oldLiar lies only about DEKs other than the one it is told is current.
type oldLiar struct {
	kmsclients.Backend
	current *[]byte // DEK id of the current DEK
}

func (l oldLiar) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := l.Backend.Unwrap(ctx, w, aad)
	if err == nil && !bytes.Contains(aad, *l.current) {
		share[5] ^= 0x40
	}
	return share, err
}

// A custodian lying only about an older DEK is caught by drilling history.
func TestPreviousHeadersCatchALiarAboutOlderDEKs(t *testing.T) {
	dir := t.TempDir()
	bs := newLocals(t, 3)
	var current []byte
	obs := &mismatches{}
	lying := []kmsclients.Backend{oldLiar{bs[0], &current}, bs[1], bs[2]}
	e := mustNew(t, Config{Threshold: 2, Backends: lying, StateDir: dir, Observer: obs})
	first := e.CurrentHeader()
	if err := e.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	current = e.Current().DEKID[:]
	if check, err := e.Drill(ctxT(t), e.CurrentHeader()); err != nil || check.Working != 3 {
		t.Fatalf("current DEK: %+v, %v", check, err)
	}
	prev := e.PreviousHeaders()
	if len(prev) != 1 || !bytes.Equal(prev[0], first) {
		t.Fatalf("previous headers: %d", len(prev))
	}
	check, err := e.Drill(ctxT(t), prev[0])
	if err != nil || check.Working != 2 || check.Shares[0].OK {
		t.Fatalf("older DEK: %+v, %v", check, err)
	}
	if obs.count("b1") != 1 {
		t.Errorf("b1 counted %d times", obs.count("b1"))
	}
}
