package envelope

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO planted as the state file (or a set-aside copy) is refused, not
// waited on: a save reads the stored state for its history, and hanging
// there would hold every rotation.
func TestFIFOInTheStateDirDoesNotHang(t *testing.T) {
	dir := t.TempDir()
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
	for _, name := range []string{stateFileName, stateFileName + ".unusable-20260101T000000Z-1"} {
		path := filepath.Join(dir, name)
		os.Remove(path)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- e.Rotate(ctxT(t), "test") }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("a FIFO named %s hangs a rotation", name)
		}
		if _, _, err := StateHeaders(dir); err == nil && name != stateFileName {
			t.Fatalf("a FIFO set-aside copy was read as state")
		}
		os.Remove(path)
	}
}

// A writer of the state dir plants a history far over the bound: a drill
// reads at most maxPrevious of it, and the next save keeps at most that
// many.
func TestPlantedHistoryIsBounded(t *testing.T) {
	dir := t.TempDir()
	e := mustNew(t, Config{Threshold: 2, Backends: newLocals(t, 3), StateDir: dir})
	planted := make([][]byte, 10*maxPrevious)
	for i := range planted {
		planted[i] = []byte(fmt.Sprintf("planted header %d", i))
	}
	doc, err := json.Marshal(stateDoc{Version: stateVersion, KeyID: e.KeyID(), Header: e.CurrentHeader(), Previous: planted})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFileName), doc, 0o600); err != nil {
		t.Fatal(err)
	}
	headers, _, err := StateHeaders(dir)
	if err != nil || len(headers) != 1+maxPrevious {
		t.Fatalf("a drill reads %d headers (%v), want at most %d", len(headers), err, 1+maxPrevious)
	}
	if err := e.Rotate(ctxT(t), "test"); err != nil {
		t.Fatal(err)
	}
	var saved stateDoc
	if err := json.Unmarshal(mustRead(t, filepath.Join(dir, stateFileName)), &saved); err != nil || len(saved.Previous) != maxPrevious {
		t.Fatalf("saved history of %d (%v), want %d", len(saved.Previous), err, maxPrevious)
	}
}
