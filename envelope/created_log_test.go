package envelope

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestFirstDEKIsLoggedAsCreated: the first DEK is "created" (nothing
// was rotated out), a later one "rotated".
func TestFirstDEKIsLoggedAsCreated(t *testing.T) {
	var log bytes.Buffer
	e, err := New(Config{Threshold: 2, Backends: newLocals(t, 3), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.Rotate(context.Background(), "test"); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `msg="first DEK created"`) || !strings.Contains(lines[1], `msg="DEK rotated"`) || !strings.Contains(lines[1], "generation=2") {
		t.Fatalf("log:\n%s", log.String())
	}
}
