// Package filelock keeps two Trousseau processes off one socket or state
// dir with an flock, which the kernel drops when the process dies, so a
// crash leaves no stale lock. The file records the holder's pid for the
// next process's error.
package filelock

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/trousseau-io/trousseau/internal/safedir"
)

// ErrHeld reports that another process holds the lock.
var ErrHeld = errors.New("held by another process")

// Acquire locks the file name (created 0600 if missing, never through a
// symlink) and returns it open; closing it releases the lock. If another
// process holds it, the error wraps [ErrHeld] and names its pid if known.
func Acquire(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// A planted FIFO or device would take a lock no one else sees.
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("a %s, not a regular file: remove it", safedir.Kind(st.Mode()))
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := holder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s is %w (%s)", name, ErrHeld, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// Failing to record the pid changes nothing but the next error's text.
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holder names the pid written in the lock file, if any.
func holder(f *os.File) string {
	b, _ := io.ReadAll(io.LimitReader(f, 32))
	pid := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(pid); err != nil {
		return "pid unknown"
	}
	return "pid " + pid
}

// Holder reports whether the lock file name is held, and by which pid,
// from /proc/locks, without touching it. A missing file is not held.
//
// Only "held" is certain: /proc/locks omits holders in another pid
// namespace, and on btrfs or a multi-layer overlayfs names a device other
// than the one stat reports.
func Holder(name string) (pid int, held bool, err error) {
	st, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false, fmt.Errorf("lock %s: no inode", name)
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, false, fmt.Errorf("lock %s: %w", name, err)
	}
	// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": device in hex,
	// inode in decimal; blocked waiters ("->") hold nothing.
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(sys.Dev), unix.Minor(sys.Dev), sys.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] == "->" || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		pid, _ := strconv.Atoi(f[4])
		return pid, true, nil
	}
	return 0, false, nil
}

// Check reports, without opening name, what would make [Acquire] refuse
// it: not a regular file (symlinks are not followed) or not writable (an
// immutable file, a read-only mount). A missing file passes.
func Check(name string) error {
	st, err := os.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("lock file %s: %w", name, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("lock file %s is a %s, not a regular file: remove it", name, safedir.Kind(st.Mode()))
	}
	if err := unix.Access(name, unix.W_OK); err != nil {
		return fmt.Errorf("lock file %s cannot be opened for writing (%v): make it writable (an immutable file? lsattr), or remove it", name, err)
	}
	return nil
}
