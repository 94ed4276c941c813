package filelock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// A FIFO planted as the lock file is refused (O_RDWR opens it at once):
// locking it would keep no other instance out.
func TestNonRegularLockFileIsRefused(t *testing.T) {
	name := filepath.Join(t.TempDir(), "lock")
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := Acquire(name); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		f.Close()
		t.Fatalf("a FIFO as the lock file: %v", err)
	}
}

// Holder finds the pid that holds a lock, from /proc/locks, without
// taking it; a released lock, or no lock file, is not held.
func TestHolder(t *testing.T) {
	name := filepath.Join(t.TempDir(), "lock")
	if _, held, err := Holder(name); held || err != nil {
		t.Fatalf("no lock file: held %v, %v", held, err)
	}
	f, err := Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	if pid, held, err := Holder(name); !held || pid != os.Getpid() || err != nil {
		t.Fatalf("held: pid %d %v %v, want %d", pid, held, err, os.Getpid())
	}
	f.Close()
	if _, held, err := Holder(name); held || err != nil {
		t.Fatalf("released: held %v, %v", held, err)
	}
}
