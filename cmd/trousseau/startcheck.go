package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/grpcserver"
	"github.com/trousseau-io/trousseau/internal/config"
	"github.com/trousseau-io/trousseau/internal/filelock"
	"github.com/trousseau-io/trousseau/internal/safedir"
)

// checkServeStart runs serve's own checks of this host
// ([envelope.CheckStateDir], [grpcserver.ListenUnix]'s, a bind of
// health.listen; not the backends) without changing anything: no
// directory made, no chmod, no clean-up, no lock taken. It prints what it
// found to out and returns one error per problem, naming its config field.
// A plugin already running on this config passes.
func checkServeStart(ctx context.Context, out io.Writer, cfg *config.Config) []error {
	var errs []error
	field := func(name string, err error) {
		if err == nil {
			return
		}
		joined, ok := err.(interface{ Unwrap() []error })
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		for _, e := range joined.Unwrap() {
			errs = append(errs, fmt.Errorf("%s: %w", name, e))
		}
	}
	noteOtherOwner(out, cfg.StateDir, filepath.Dir(cfg.Socket))
	running, sockErr, stateErr := runningPlugin(out, cfg)
	field("stateDir", errors.Join(stateErr, checkStateDirOf(out, cfg)))
	field("socket", errors.Join(sockErr, checkSocket(out, cfg.Socket, running)))
	field("health.listen", checkHealthListen(ctx, out, cfg.Health.Listen, running))
	return errs
}

// plugin is what config check can tell of a plugin on this config.
type plugin int

const (
	// pluginUnknown: a lock file is there, but [filelock.Holder] cannot
	// be sure who holds it: a socket or address in use gets a note.
	pluginUnknown plugin = iota
	// pluginRunning: one process holds both this config's locks.
	pluginRunning
	// pluginNone: no lock file, so a socket or address in use is not a
	// Trousseau's.
	pluginNone
)

// runningPlugin tells from the holders of the socket's and state dir's
// lock files (nothing is taken) whether a plugin runs on this config.
// Only what is certain is an error: the two held by different processes,
// or one held while the other's file does not exist.
func runningPlugin(out io.Writer, cfg *config.Config) (p plugin, sockErr, stateErr error) {
	sock, state := lockOf(grpcserver.SocketLock(cfg.Socket)), lockOf(envelope.StateLock(cfg.StateDir))
	switch {
	case sock.held && state.held && sock.pid == state.pid:
		fmt.Fprintf(out, "note: a plugin runs on this config (pid %d): its socket, state dir and health address are in use, as expected\n", sock.pid)
		return pluginRunning, nil, nil
	case !sock.exists && !state.exists:
		return pluginNone, nil, nil
	}
	if sock.held && (state.held || !state.exists) {
		sockErr = fmt.Errorf("socket %s is in use by another Trousseau (pid %d) that does not use this state dir: serve could not start on it; give each plugin its own socket", cfg.Socket, sock.pid)
	}
	if state.held && (sock.held || !sock.exists) {
		stateErr = fmt.Errorf("state dir %s is in use by another Trousseau (pid %d) that does not serve this socket: serve could not lock it; give each plugin its own state dir", cfg.StateDir, state.pid)
	}
	return pluginUnknown, sockErr, stateErr
}

// lockState is what is known of one lock file.
type lockState struct {
	exists, held bool
	pid          int
}

func lockOf(name string) lockState {
	if _, err := os.Lstat(name); err != nil {
		return lockState{}
	}
	pid, held, err := filelock.Holder(name)
	return lockState{exists: true, held: held && err == nil && pid > 0, pid: pid}
}

// checkStateDirOf checks cfg's state dir and says what is in it.
func checkStateDirOf(out io.Writer, cfg *config.Config) error {
	dir := cfg.StateDir
	st, err := envelope.CheckStateDir(dir)
	if !st.Exists && err == nil {
		if err := checkCreatable("state dir", dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "state dir %s: does not exist yet; serve creates it, then makes the first DEK (which needs all %d backends)\n", dir, len(cfg.Backends))
		return nil
	}
	switch h := st.Current; {
	case h != nil:
		fmt.Fprintf(out, "state dir %s: current DEK %s, generation %d, made %s\n", dir, h.KeyID(), h.Generation, h.Created.UTC().Format(time.RFC3339))
	case err == nil:
		fmt.Fprintf(out, "state dir %s: no DEK yet; serve makes the first one (which needs all %d backends)\n", dir, len(cfg.Backends))
	}
	for _, n := range st.Notes {
		fmt.Fprintln(out, "note: "+n)
	}
	return err
}

// checkSocket checks what [grpcserver.ListenUnix] would refuse. A stale
// socket passes (serve removes it), and so does the running plugin's.
func checkSocket(out io.Writer, path string, running plugin) error {
	dir := filepath.Dir(path)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return checkCreatable("socket directory", dir)
	}
	if err := safedir.Check("socket directory", dir, true); err != nil {
		return err
	}
	var errs []error
	if err := syscall.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		errs = append(errs, fmt.Errorf("socket directory %s: the socket cannot be created in it (%v): make it writable by the plugin's user (a read-only mount? an immutable dir? lsattr -d %s), or use another directory", dir, err, dir))
	}
	if err := filelock.Check(grpcserver.SocketLock(path)); err != nil {
		errs = append(errs, fmt.Errorf("%w; serve would refuse the socket", err))
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&fs.ModeSocket == 0 {
		// As grpcserver's removeStale says it.
		errs = append(errs, fmt.Errorf("socket %s: a file that is not a socket is in the way; remove it or choose another path", path))
	} else if err == nil && running != pluginRunning {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			if running == pluginNone {
				errs = append(errs, fmt.Errorf("socket %s: another process is serving on it (no Trousseau lock file beside it): serve would refuse it; stop that process or choose another path", path))
			} else {
				fmt.Fprintf(out, "note: socket %s is being served; fine if it is this config's plugin (who holds its lock cannot be read here)\n", path)
			}
		}
	}
	return errors.Join(errs...)
}

// checkCreatable tells whether serve's MkdirAll could create dir.
func checkCreatable(what, dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		switch {
		case err == nil && !st.IsDir():
			return fmt.Errorf("%s %s cannot be created: %s is not a directory; choose another path", what, dir, p)
		case err == nil:
			if err := syscall.Access(p, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s %s cannot be created: nothing can be created in %s (%v); create %s for the plugin's user, or choose another path", what, dir, p, err, dir)
			}
			// Serve would then refuse it under a dir others can write.
			return safedir.CheckCreatable(what, dir)
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("%s %s cannot be created: %w", what, dir, err)
		case p == filepath.Dir(p):
			return fmt.Errorf("%s %s cannot be created: %w", what, dir, err)
		}
	}
}

// checkHealthListen binds addr as serve will, and releases it at once.
// An address in use passes if this config's plugin may hold it.
func checkHealthListen(ctx context.Context, out io.Writer, addr string, running plugin) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	switch {
	case err == nil:
		l.Close()
		return nil
	case errors.Is(err, syscall.EADDRINUSE) && running == pluginRunning:
		return nil // the running plugin's (see runningPlugin's note)
	case errors.Is(err, syscall.EADDRINUSE) && running == pluginNone:
		return fmt.Errorf("%s is in use by another process, and no plugin runs on this config: serve could not listen on it; stop that process or give another address", addr)
	case errors.Is(err, syscall.EADDRINUSE):
		fmt.Fprintf(out, "note: health.listen %s is in use; fine if it is this config's plugin, serving (serve cannot start on it otherwise)\n", addr)
		return nil
	}
	return fmt.Errorf("serve could not listen on %s on this host (%v): give an address of this machine, such as %q", addr, unwrapOpError(err), config.DefaultHealthListen)
}

// unwrapOpError drops net.OpError's "listen tcp ADDR:" prefix, which the
// message already says.
func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// noteOtherOwner warns a check run as root on another user's directories:
// serve checks ownership and access as its own user, so should this.
func noteOtherOwner(out io.Writer, dirs ...string) {
	if os.Geteuid() != 0 {
		return
	}
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
			fmt.Fprintf(out, "note: %s belongs to uid %d: if serve runs as that user, check as that user too (setpriv --reuid=%d --regid=%d --clear-groups trousseau config check ...), since ownership and access are checked as the user who runs the check\n",
				dir, sys.Uid, sys.Uid, sys.Gid)
			return
		}
	}
}
