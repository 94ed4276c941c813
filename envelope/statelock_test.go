package envelope

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A state dir the safety check refuses is refused before the lock file
// is made or opened in it: in a dir others can write, that file may be
// theirs (a link to a file of ours, one they hold the lock of).
func TestLockStateDirChecksTheDirFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	mustNoErr(t, os.Mkdir(dir, 0o700))
	mustNoErr(t, os.Chmod(dir, 0o777))
	lock, err := LockStateDir(dir)
	if err == nil {
		lock.Close()
		t.Fatal("a state dir others can write was locked")
	}
	if !strings.Contains(err.Error(), "is writable by group or others") {
		t.Errorf("error %q does not say why the dir is refused", err)
	}
	if _, err := os.Lstat(StateLock(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock file in the refused dir: %v", err)
	}
}
