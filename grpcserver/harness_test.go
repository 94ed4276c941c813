package grpcserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/internal/testutil"
	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
)

// harness runs a real plugin on a temporary socket with three real
// key-file backends, 2 of 3. A backend is taken down the way it would be
// in life: its key file goes away.
type harness struct {
	t        testing.TB
	dir      string
	socket   string
	stateDir string
	keys     []string
	plugin   *grpcserver.Plugin
	env      *envelope.Envelope
	metrics  *grpcserver.Metrics
	cancel   context.CancelFunc
	done     chan error
	logs     *testutil.Buffer
	// fastProbe probes every 50 ms instead of waiting for explicit probes.
	fastProbe bool
	// wrap, if set, stands between the plugin and backend i.
	wrap func(i int, b kmsclients.Backend) kmsclients.Backend
	// checkListening, if set, is Options.CheckListening.
	checkListening func(socket string) error
	// now, if set, is Options.Now.
	now func() time.Time
	// configure, if set, is called with the plugin before it runs.
	configure func(*grpcserver.Plugin)
	// recovery, if set, is the envelope's officers' policy.
	recovery *envelope.Recovery
}

func newHarness(t testing.TB) *harness {
	// Unix socket paths are limited to ~108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("", "trs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{t: t, dir: dir, socket: filepath.Join(dir, "run", "kms.sock"), stateDir: filepath.Join(dir, "state")}
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(dir, n+".key")
		if err := local.GenerateKeyFile(p); err != nil {
			t.Fatal(err)
		}
		h.keys = append(h.keys, p)
	}
	return h
}

// start runs the plugin and waits until it serves and is healthy.
func (h *harness) start() {
	h.startNoWait()
	h.waitHealthz(func(s string) bool { return s == "ok" })
}

// startNoWait runs the plugin and waits until it serves.
func (h *harness) startNoWait() {
	if err := h.tryStart(); err != nil {
		h.t.Fatalf("plugin did not start: %v", err)
	}
}

// tryStart runs the plugin and waits until it serves, or returns why Run
// gave up.
func (h *harness) tryStart() error {
	t := h.t
	var backends []kmsclients.Backend
	for i := range h.keys {
		b := h.localBackend(i)
		if h.wrap != nil {
			backends = append(backends, h.wrap(i, b))
			continue
		}
		backends = append(backends, b)
	}
	h.logs = &testutil.Buffer{}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.metrics = grpcserver.NewMetrics()
	env, err := envelope.New(envelope.Config{Threshold: 2, Backends: backends, StateDir: h.stateDir, Logger: log, Observer: h.metrics, Recovery: h.recovery})
	if err != nil {
		t.Fatal(err)
	}
	h.env = env
	interval := time.Hour
	if h.fastProbe {
		interval = 50 * time.Millisecond
	}
	h.plugin = grpcserver.NewPlugin(env, h.metrics, grpcserver.Options{
		Socket: h.socket, HealthListen: "127.0.0.1:0", ProbeInterval: interval, ProbeTimeout: 5 * time.Second,
		Version: "test", Logger: log, CheckListening: h.checkListening, Now: h.now,
	})
	if h.configure != nil {
		h.configure(h.plugin)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.plugin.Run(ctx) }()
	select {
	case <-h.plugin.Ready():
	case err := <-h.done:
		cancel()
		h.cancel = nil
		return err
	}
	t.Cleanup(h.stop)
	return nil
}

// localBackend opens key file i as the backend local-a, local-b, ...
func (h *harness) localBackend(i int) kmsclients.Backend {
	b, err := local.New(context.Background(), fmt.Sprintf("local-%c", 'a'+i), local.Config{KeyFile: h.keys[i]})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("plugin Run: %v", err)
	}
	h.cancel = nil
}

// probe runs one probe now instead of waiting for the interval.
func (h *harness) probe() { h.plugin.Prober().ProbeOnce(context.Background(), false) }

func (h *harness) waitHealthz(ok func(string) bool) string {
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := h.plugin.Prober().Snapshot().Healthz
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("healthz still %q", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) down(i int) {
	if err := os.Rename(h.keys[i], h.keys[i]+".away"); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) up(i int) {
	if err := os.Rename(h.keys[i]+".away", h.keys[i]); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) endpoint() string { return "unix://" + h.socket }

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
