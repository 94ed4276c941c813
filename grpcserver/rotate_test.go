package grpcserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRotateWaitsForTheOutcome: Prober.Rotate returns once the DEK is
// rotated (with its key_id and generation), or postponed (with why); and
// it gives up when its context ends before the prober takes the request.
func TestRotateWaitsForTheOutcome(t *testing.T) {
	h := newHarness(t)
	h.start()
	p := h.plugin.Prober()
	before := p.Snapshot().KeyID
	r, err := p.Rotate(callCtx(t))
	if err != nil || !r.Rotated || r.KeyID == before || r.KeyID != p.Snapshot().KeyID || r.Generation != 2 || r.Postponed != "" {
		t.Fatalf("rotate: %+v %v (was %s)", r, err, before)
	}
	h.down(2)
	r2, err := p.Rotate(callCtx(t))
	if err != nil || r2.Rotated || r2.KeyID != r.KeyID || r2.Generation != 2 || !strings.Contains(r2.Postponed, "postponed: 2 of 3 backends reachable") {
		t.Fatalf("rotate with a backend down: %+v %v", r2, err)
	}
	h.stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Rotate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("rotate with no prober running: %v", err)
	}
}
