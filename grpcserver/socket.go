package grpcserver

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/trousseau-io/trousseau/internal/filelock"
	"github.com/trousseau-io/trousseau/internal/safedir"
)

// Listener is the plugin's socket; it holds [SocketLock] until closed.
type Listener struct {
	*net.UnixListener
	lock *os.File
	once sync.Once
}

// Close removes the socket before releasing the lock, so the next
// instance, waiting on the lock, never has its new socket unlinked by us.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { l.lock.Close() })
	return err
}

// ListenUnix creates the plugin's socket with mode (and group, if set),
// in a directory others cannot write (checkSocketDir). It holds
// [SocketLock] while listening, so two Trousseaus never share a path; the
// lock file stays, as removing it races with the next taker. A stale
// socket goes only if nothing answers: other KMS plugins take no lock.
func ListenUnix(path string, mode os.FileMode, group string) (*Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockSocket(path)
	if err != nil {
		return nil, err
	}
	l, err := listen(path, mode, group)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &Listener{UnixListener: l, lock: lock}, nil
}

// checkSocketDir refuses a directory where another user could replace
// the socket and point kube-apiserver at their server. The sticky bit
// does not help: it stops removal, not taking the name first. Group write
// is refused even with a socket group: kube-apiserver needs only search.
func checkSocketDir(dir string) error {
	return safedir.Check("socket directory", dir, true)
}

// lockSocket makes this process the only Trousseau on path.
func lockSocket(path string) (*os.File, error) {
	f, err := filelock.Acquire(SocketLock(path))
	if errors.Is(err, filelock.ErrHeld) {
		return nil, fmt.Errorf("socket %s: another Trousseau instance serves it (%w); stop it or choose another socket path", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return f, nil
}

// listen binds the socket, first removing a stale one; the caller holds
// the lock.
func listen(path string, mode os.FileMode, group string) (*net.UnixListener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// Created private, then widened: never more open than asked. The
	// umask is process-wide, which is fine at start-up.
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if group != "" {
		gid, err := lookupGroup(group)
		if err == nil {
			err = os.Chown(path, -1, gid)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("socket group %q: %w", group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return l, nil
}

func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a file that is not a socket is in the way; remove it or choose another path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("socket %s: another process is serving on it (another KMS plugin, or a Trousseau that takes no lock); stop it or choose another path", path)
	}
	// Only a refusal proves nobody listens; a timeout may be a busy plugin.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s exists and cannot be probed (%v); not removing it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

func lookupGroup(group string) (int, error) {
	if gid, err := strconv.Atoi(group); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// SocketLock is the lock file held while a plugin serves on path.
func SocketLock(path string) string { return path + ".lock" }
