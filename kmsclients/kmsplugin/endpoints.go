package kmsplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// EndpointError is one endpoint that CheckEndpoints or CheckNotSelf
// refuses.
type EndpointError struct {
	// Index is the endpoint's position in the list given to
	// CheckEndpoints, or the backend's in the list given to CheckNotSelf.
	Index int
	// Other is the position of the earlier endpoint it is the same socket
	// as, or -1 when it is Trousseau's own socket.
	Other    int
	Endpoint string
	// OtherEndpoint is that earlier endpoint, or Trousseau's own socket.
	OtherEndpoint string
	// Name is the backend's name when CheckNotSelf refuses it; "" from
	// CheckEndpoints, whose caller names the field itself.
	Name string
}

func (e *EndpointError) Error() string {
	field := "kmsplugin.endpoint"
	if e.Name != "" {
		field = "kmsplugin " + e.Name + ": " + field
	}
	if e.Other < 0 {
		return fmt.Sprintf("%s: %s is Trousseau's own socket (%s): the plugin cannot be a custodian of its own shares", field, e.Endpoint, e.OtherEndpoint)
	}
	return fmt.Sprintf("%s: %s is the socket of another kmsplugin backend too (%s): one custodian would hold two shares", field, e.Endpoint, e.OtherEndpoint)
}

// CheckNotSelf refuses every kmsplugin backend among backends whose
// endpoint reaches ownSocket, Trousseau's own socket (a path, or
// unix:///path), which must exist: serve calls it right after it starts
// listening there, before it serves a request, and stops on an error.
//
// CheckEndpoints, run on the config before Trousseau listens, compares
// paths, and files only where both exist: an endpoint that reaches the
// socket through a bind mount of its directory (or another mount of its
// file system) has another path, and is caught there only when a stale
// socket file is in place. Here the socket exists, so each endpoint is
// compared with it as a file (os.SameFile: device and inode, with
// symlinks followed), however it is reached: symlink, hard link, bind
// mount.
//
// Backends of other kinds are skipped, and so are endpoints that cannot
// be stat'ed (nothing there, or a directory Trousseau may not search):
// connecting to one would fail the same way. The error is an
// *EndpointError (Index: the position in backends, Other: -1, Name: the
// backend's name) per endpoint refused, joined, or the error of stat'ing
// ownSocket.
func CheckNotSelf(backends []kmsclients.Backend, ownSocket string) error {
	ownPath := ownSocketPath(ownSocket)
	if ownPath == "" {
		return fmt.Errorf("kmsplugin: Trousseau's own socket %q: not a path or unix:///path", ownSocket)
	}
	own, err := os.Stat(ownPath)
	if err != nil {
		return fmt.Errorf("kmsplugin: Trousseau's own socket: %w", err)
	}
	var errs []error
	for i, backend := range backends {
		b, ok := backend.(*Backend)
		if !ok {
			continue
		}
		fi, err := os.Stat(b.path)
		if err != nil || !os.SameFile(fi, own) {
			continue
		}
		errs = append(errs, &EndpointError{Index: i, Other: -1, Endpoint: b.endpoint, OtherEndpoint: ownSocket, Name: b.Name()})
	}
	return errors.Join(errs...)
}

// CheckEndpoints enforces the rules no config may break, for the config
// layer to call with Trousseau's own socket (a path, or unix:///path) and
// the endpoints of every kmsplugin backend, in config order:
//   - no endpoint is Trousseau's own socket, directly or through a
//     symlink (or a hard link, or a bind mount of its directory);
//   - no two endpoints are one socket.
//
// Sockets are compared by their paths with symlinks resolved (also where
// the socket does not exist yet, as Trousseau's own does not before it
// starts), and with os.SameFile where both exist. The error joins one
// *EndpointError per endpoint refused; endpoints that Validate refuses are
// skipped. Custodians that are one key behind two sockets are caught
// later, by the key_id they report (see Backend.CustodianKey).
func CheckEndpoints(own string, endpoints []string) error {
	type socket struct {
		endpoint string
		path     string
		info     fs.FileInfo
	}
	resolve := func(endpoint, path string) socket {
		info, _ := os.Stat(path)
		return socket{endpoint, resolvePath(path), info}
	}
	same := func(a, b socket) bool {
		return a.path == b.path || (a.info != nil && b.info != nil && os.SameFile(a.info, b.info))
	}
	var self *socket
	if ownPath := ownSocketPath(own); ownPath != "" {
		s := resolve(own, ownPath)
		self = &s
	}
	var errs []error
	var seen []socket
	var index []int
	for i, ep := range endpoints {
		path, err := socketPath(ep)
		if err != nil {
			continue
		}
		s := resolve(ep, path)
		if self != nil && same(s, *self) {
			errs = append(errs, &EndpointError{Index: i, Other: -1, Endpoint: ep, OtherEndpoint: own})
			continue
		}
		dup := false
		for j, o := range seen {
			if same(s, o) {
				errs = append(errs, &EndpointError{Index: i, Other: index[j], Endpoint: ep, OtherEndpoint: o.endpoint})
				dup = true
				break
			}
		}
		if !dup {
			seen, index = append(seen, s), append(index, i)
		}
	}
	return errors.Join(errs...)
}

// ownSocketPath accepts Trousseau's socket as the config names it (a
// path) or as an EncryptionConfiguration does (unix:///path).
func ownSocketPath(own string) string {
	if own == "" {
		return ""
	}
	if strings.HasPrefix(own, "unix:") {
		if p, err := socketPath(own); err == nil {
			return p
		}
		return ""
	}
	return filepath.Clean(own)
}

// maxLinks bounds the symlinks followed, as the kernel does (40).
const maxLinks = 40

// resolvePath is path with every symlink resolved, also when the path
// or its target does not exist (yet): the part that exists is resolved
// and the rest appended.
func resolvePath(path string) string {
	path = filepath.Clean(path)
	for range maxLinks {
		if real, err := filepath.EvalSymlinks(path); err == nil {
			return real
		}
		fi, err := os.Lstat(path)
		if err != nil {
			dir := filepath.Dir(path)
			if dir == path {
				return path
			}
			return filepath.Join(resolvePath(dir), filepath.Base(path))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return path // exists, yet EvalSymlinks failed: a parent loops or is unreadable
		}
		target, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = filepath.Clean(target)
	}
	return path
}
