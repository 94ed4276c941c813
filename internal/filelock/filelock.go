// Package filelock takes the exclusive, advisory locks that keep two
// Trousseau processes off one socket or one state dir. The lock is an
// flock on a small file that records the holder's pid, only to make the
// next process's error clearer; the kernel drops it when the process
// dies, so a crash never leaves a stale lock.
package filelock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrHeld reports that another process holds the lock.
var ErrHeld = errors.New("held by another process")

// Acquire locks the file name (created with mode 0600 if missing, never
// through a symlink) and returns it open: closing it releases the lock.
// When another process holds it, the error wraps ErrHeld and names that
// process's pid as far as it is known.
func Acquire(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
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

// holder names the process that wrote the lock file, as far as it can tell.
func holder(f *os.File) string {
	b, _ := io.ReadAll(io.LimitReader(f, 32))
	pid := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(pid); err != nil {
		return "pid unknown"
	}
	return "pid " + pid
}
