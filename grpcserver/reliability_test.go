package grpcserver_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/grpcserver"
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

// Case 2: a rotation that cannot save its state is logged at WARN with
// its cause once (not at every probe), and shows in the snapshot's
// warnings once it has been due for long; Status stays ok.
func TestCase2_PostponedRotationIsLoggedOnceAndShown(t *testing.T) {
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

// Case 5: each backend's change of state is logged once, with the cause.
func TestCase5_BackendStateChangesAreLoggedOnce(t *testing.T) {
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
