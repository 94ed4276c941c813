package envelope

import (
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
