package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trousseau-io/trousseau/grpcserver"
)

// The admin socket is how `trousseau rotate` asks a plugin to rotate with
// no shell, signal or network (`kubectl exec POD -- trousseau rotate`):
// a 0600 unix socket in the state dir that answers only the plugin's uid
// and root. Threat model: docs/how-it-works.md.

// adminSocketName is the admin socket's name in the state dir.
const adminSocketName = "admin.sock"

// adminSocket is the admin socket of the plugin on stateDir.
func adminSocket(stateDir string) string { return filepath.Join(stateDir, adminSocketName) }

// rotateResult is what the admin socket answers to POST /rotate, and
// what `trousseau rotate -o json` prints (docs/reference/cli.md).
type rotateResult struct {
	Result             string `json:"result"` // rotated or postponed
	KeyID              string `json:"keyID"`
	Generation         uint32 `json:"generation"`
	PreviousKeyID      string `json:"previousKeyID"`
	PreviousGeneration uint32 `json:"previousGeneration"`
	Reason             string `json:"reason,omitempty"` // why postponed
	ExitCode           int    `json:"exitCode"`
}

// serveAdmin listens on stateDir's admin socket until stop is called.
// Call it with the state dir locked and stop before unlocking, so that a
// socket there is this plugin's or a stopped one's.
func serveAdmin(stateDir string, prober *grpcserver.Prober, log *slog.Logger) (stop func(), err error) {
	path := adminSocket(stateDir)
	if st, err := os.Lstat(path); err == nil && st.Mode()&fs.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rotate", func(w http.ResponseWriter, r *http.Request) {
		log.Info("DEK rotation requested (trousseau rotate)")
		before := prober.Snapshot()
		rot, err := prober.Rotate(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(newRotateResult(before, rot))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ownUIDOnly{ln.(*net.UnixListener)})
	return func() { srv.Close(); os.Remove(path) }, nil
}

func newRotateResult(before grpcserver.Snapshot, r grpcserver.Rotation) rotateResult {
	out := rotateResult{Result: "rotated", KeyID: r.KeyID, Generation: r.Generation,
		PreviousKeyID: before.Current.KeyID, PreviousGeneration: before.Current.Generation}
	if !r.Rotated {
		out.Result, out.Reason, out.ExitCode = "postponed", r.Postponed, 1
	}
	return out
}

// ownUIDOnly accepts only the process's own uid and root, should the
// state dir's mode be loosened.
type ownUIDOnly struct{ *net.UnixListener }

func (l ownUIDOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if uid, err := peerUID(c); err == nil && (uid == 0 || uid == os.Geteuid()) {
			return c, nil
		}
		c.Close()
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if credErr != nil {
		return -1, credErr
	}
	return int(cred.Uid), nil
}

// askRotate asks the plugin on stateDir's admin socket to rotate, and
// waits for the outcome (at most timeout).
func askRotate(ctx context.Context, stateDir string, timeout time.Duration) (rotateResult, error) {
	path := adminSocket(stateDir)
	var dialed atomic.Bool
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
			dialed.Store(err == nil)
			return c, err
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://trousseau/rotate", nil)
	if err != nil {
		return rotateResult{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return rotateResult{}, adminDialError(path, err, dialed.Load())
	}
	defer resp.Body.Close()
	var r rotateResult
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("the plugin on %s did not rotate: %s", stateDir, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("the plugin on %s answered: %w", stateDir, err)
	}
	return r, nil
}

// adminDialError says what to do when no plugin answers. A connection
// the plugin accepted and closed without an answer is the refusal of a
// caller it does not serve; how the HTTP client words that close depends
// on timing, so dialed decides rather than the error's text.
func adminDialError(path string, err error, dialed bool) error {
	var netErr net.Error
	timedOut := errors.As(err, &netErr) && netErr.Timeout() || errors.Is(err, context.Canceled)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no plugin answers on %s: is `trousseau serve` running with this state dir? (give --config with its config, or --state-dir)", path)
	case dialed && !timedOut, errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("the plugin on %s closed the connection: only its own user and root may ask it to rotate", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %w: run rotate as the plugin's user (uid 65532 in the image: kubectl exec POD -- trousseau rotate) or root", path, fs.ErrPermission)
	}
	return fmt.Errorf("ask %s to rotate: %w", path, err)
}
