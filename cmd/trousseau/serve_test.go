package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/envelope"
)

// serve refuses a state dir others can write before it makes or opens
// its lock file there.
func TestServeChecksTheStateDirBeforeLocking(t *testing.T) {
	dir := shortTemp(t)
	state := filepath.Join(dir, "state") // serve --dev's state dir
	must(t, os.Mkdir(state, 0o700))
	must(t, os.Chmod(state, 0o777))
	_, _, err := run(t, "", "serve", "--dev", "--socket", filepath.Join(dir, "kms.sock"), "--state-dir", dir, "--health-listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "state dir "+state) || !strings.Contains(err.Error(), "is writable by group or others") {
		t.Fatalf("serve: %v, want the state dir refused", err)
	}
	if _, err := os.Lstat(envelope.StateLock(state)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock file in the refused state dir: %v", err)
	}
}
