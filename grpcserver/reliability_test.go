package grpcserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Operator reliability: what an operator sees when something is wrong,
// once, with its cause, and without kube-apiserver being told more than
// it needs.

// countLines counts log lines holding every one of parts.
func countLines(log string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// A rotation that cannot save its state is logged at WARN with
// its cause once (not at every probe), and shows in the snapshot's
// warnings once it has been due for long; Status stays ok.
func TestPostponedRotationIsLoggedOnceAndShown(t *testing.T) {
	h := newHarness(t)
	h.start()
	// Make the state file impossible to replace, as chattr +i would, in a
	// way that holds for root too: a directory where the file should be.
	state := filepath.Join(h.stateDir, "state.json")
	os.Remove(state)
	if err := os.MkdirAll(filepath.Join(state, "keep"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.plugin.Prober().ProbeOnce(t.Context(), true)
	for range 3 {
		h.probe()
	}
	logs := h.logs.String()
	if n := countLines(logs, `"level":"WARN"`, "DEK rotation postponed", "state"); n != 1 {
		t.Fatalf("postponed rotation logged %d times with its cause, want 1:\n%s", n, logs)
	}
	s := h.plugin.Prober().Snapshot()
	if s.Healthz != "ok" || s.RotationPending == "" || s.PendingSince.IsZero() {
		t.Fatalf("snapshot: healthz %q, pending %q since %v", s.Healthz, s.RotationPending, s.PendingSince)
	}
	if w := s.Warnings(time.Now()); len(w) != 0 {
		t.Fatalf("warned at once: %v", w)
	}
	w := s.Warnings(s.PendingSince.Add(grpcserver.RotationOverdue))
	if len(w) != 1 || !strings.Contains(w[0], "DEK rotation due since") {
		t.Fatalf("warnings after %s: %v", grpcserver.RotationOverdue, w)
	}
	os.RemoveAll(state)
	h.probe()
	if s := h.plugin.Prober().Snapshot(); s.RotationPending != "" || !s.PendingSince.IsZero() {
		t.Fatalf("still pending once the state can be written: %q", s.RotationPending)
	}
}

// Each backend's change of state is logged once, with the cause.
func TestBackendStateChangesAreLoggedOnce(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.down(2)
	for range 3 {
		h.probe()
	}
	logs := h.logs.String()
	if n := countLines(logs, `"level":"WARN"`, "backend down", "local-c", "c.key"); n != 1 {
		t.Fatalf("backend down logged %d times with its cause (the key file), want 1:\n%s", n, logs)
	}
	h.up(2)
	h.probe()
	h.probe()
	if n := countLines(h.logs.String(), "backend up again", "local-c"); n != 1 {
		t.Fatalf("backend up logged %d times, want 1", n)
	}
}

func TestReadyzShowsWarnings(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.down(1)
	h.probe()
	resp, err := http.Get("http://" + h.plugin.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok\n") || !strings.Contains(string(body), "warning: backend local-b down (unavailable)") {
		t.Fatalf("readyz %d:\n%s", resp.StatusCode, body)
	}
}

// refusesUnwrap answers probes and wraps, but may no longer unwrap: a
// KMS grant for decrypt revoked while the key itself is still there.
type refusesUnwrap struct {
	kmsclients.Backend
	refuse *atomic.Bool
}

func (r refusesUnwrap) Unwrap(ctx context.Context, w kmsclients.Wrapped, aad []byte) ([]byte, error) {
	if r.refuse.Load() {
		return nil, fmt.Errorf("decrypt not allowed: %w", kmsclients.ErrPermission)
	}
	return r.Backend.Unwrap(ctx, w, aad)
}

// The backend still answers its probe, so only the custody check of the
// current DEK can tell that its share is gone and the margin is 0.
func TestCustodyMarginShowsALostShare(t *testing.T) {
	h := newHarness(t)
	var refuse atomic.Bool
	h.wrap = func(i int, b kmsclients.Backend) kmsclients.Backend {
		if i == 2 {
			return refusesUnwrap{b, &refuse}
		}
		return b
	}
	h.start()
	if c := h.plugin.Prober().Snapshot().Custody; c == nil || c.Margin() != 1 {
		t.Fatalf("custody at start: %+v", c)
	}
	refuse.Store(true)
	h.probe()
	s := h.plugin.Prober().Snapshot()
	if !s.Backends[2].Up {
		t.Fatal("the probe should still see the backend up")
	}
	w := s.Warnings(time.Now())
	if len(w) == 0 || !strings.Contains(strings.Join(w, "\n"), "custody margin 0") || !strings.Contains(strings.Join(w, "\n"), "local-c permission") {
		t.Fatalf("warnings: %v", w)
	}
	body := metricsBody(t, h)
	margin := fmt.Sprintf("trousseau_dek_custody_margin{key_id_hash=%q} 0", grpcserver.KeyIDHash(s.KeyID))
	if !strings.Contains(body, margin) || !strings.Contains(body, `trousseau_dek_share_ok{backend="local-c"} 0`) {
		t.Fatalf("metrics, want %s:\n%s", margin, body)
	}
	info := fmt.Sprintf("trousseau_dek_current_info{key_id_hash=%q,origin=\"made\"} 1", grpcserver.KeyIDHash(s.KeyID))
	if !strings.Contains(body, info) {
		t.Fatalf("metrics, want %s:\n%s", info, body)
	}
}

func metricsBody(t *testing.T, h *harness) string {
	resp, err := http.Get("http://" + h.plugin.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
