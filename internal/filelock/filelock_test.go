package filelock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSecondAcquireFailsUntilTheFirstIsReleased(t *testing.T) {
	name := filepath.Join(t.TempDir(), "lock")
	first, err := Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(name)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second acquire: %v", err)
	}
	first.Close()
	again, err := Acquire(name)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.Close()
	if st, _ := os.Stat(name); st.Mode().Perm() != 0o600 {
		t.Fatalf("lock file mode %v", st.Mode().Perm())
	}
}

func TestSymlinkIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, []byte("keep"), 0o600)
	link := filepath.Join(dir, "lock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if f, err := Acquire(link); err == nil {
		f.Close()
		t.Fatal("locked through a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatal("the symlink's target was written")
	}
}
