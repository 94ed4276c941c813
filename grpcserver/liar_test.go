package grpcserver_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// liesAboutOlderDEKs unwraps honestly for the DEK it is told is current
// and returns a wrong share for any other: the current DEK's drill alone
// would never catch it.
type liesAboutOlderDEKs struct {
	kmsclients.Backend
	mu      sync.Mutex
	current []byte
}

func (l *liesAboutOlderDEKs) setCurrent(id []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.current = bytes.Clone(id)
}

func (l *liesAboutOlderDEKs) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	share, err := l.Backend.Unwrap(ctx, w, aad)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.current != nil && !bytes.Contains(aad, l.current) {
		share[4] ^= 0x20
	}
	return share, err
}

func TestProbeCatchesACustodianLyingAboutAnOlderDEK(t *testing.T) {
	h := newHarness(t)
	liar := &liesAboutOlderDEKs{}
	h.wrap = func(i int, b kmsclients.Backend) kmsclients.Backend {
		if i == 2 {
			liar.Backend = b
			return liar
		}
		return b
	}
	h.start()
	if !strings.Contains(metricsBody(t, h), `trousseau_backend_share_mismatches_total{backend="local-c"} 0`) {
		t.Fatal("the mismatch counter is not exported at 0 before any mismatch")
	}
	if err := h.env.Rotate(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	liar.setCurrent(h.env.Current().DEKID[:])
	h.probe()
	if c := h.plugin.Prober().Snapshot().Custody; c == nil || c.Working != 3 {
		t.Fatalf("the current DEK's drill should find every share: %+v", c)
	}
	body := metricsBody(t, h)
	if !strings.Contains(body, `trousseau_backend_share_mismatches_total{backend="local-c"} 1`) ||
		!strings.Contains(body, `trousseau_backend_share_mismatches_total{backend="local-a"} 0`) {
		t.Fatalf("metrics do not count local-c's lie about the older DEK:\n%s", grepLines(body, "share_mismatches"))
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"level":"WARN","msg":"a backend returned a share that does not fit its DEK`) || !strings.Contains(logs, `"backend":"local-c"`) {
		t.Fatalf("no WARN naming local-c:\n%s", logs)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// refusesOlderDEKs refuses to unwrap any share but the current DEK's.
type refusesOlderDEKs struct {
	*liesAboutOlderDEKs
}

func (r refusesOlderDEKs) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	r.mu.Lock()
	older := r.current != nil && !bytes.Contains(aad, r.current)
	r.mu.Unlock()
	if older {
		return nil, fmt.Errorf("grant revoked: %w", kmsclients.ErrPermission)
	}
	return r.Backend.Unwrap(ctx, w, aad)
}

// Two of three backends no longer open an earlier DEK: the probe's turn
// on it says so at WARN, once, although the current DEK is fine.
func TestProbeWarnsOnceAboutAnUnrecoverableEarlierDEK(t *testing.T) {
	h := newHarness(t)
	gates := []refusesOlderDEKs{{&liesAboutOlderDEKs{}}, {&liesAboutOlderDEKs{}}}
	h.wrap = func(i int, b kmsclients.Backend) kmsclients.Backend {
		if i < 2 {
			gates[i].Backend = b
			return gates[i]
		}
		return b
	}
	h.start()
	if err := h.env.Rotate(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	for _, g := range gates {
		g.setCurrent(h.env.Current().DEKID[:])
	}
	h.probe()
	h.probe()
	if n := strings.Count(h.logs.String(), "an earlier DEK kept in the state cannot be recovered"); n != 1 {
		t.Fatalf("warned %d times, want once:\n%s", n, grepLines(h.logs.String(), "earlier DEK"))
	}
}
