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
	Index int // position in the list checked
	// Other is the position of the earlier endpoint naming the same
	// socket, or -1 for Trousseau's own socket (OtherEndpoint).
	Other         int
	Endpoint      string
	OtherEndpoint string
	Name          string // the backend's, from CheckNotSelf only
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

// CheckNotSelf refuses each kmsplugin backend whose endpoint reaches
// ownSocket (a path or unix:///path), which must exist: serve calls it
// once listening. Unlike [CheckEndpoints] it compares files (device and
// inode), so a bind mount of the socket's directory is caught too.
// Endpoints that cannot be stat'ed are skipped (a connect would fail
// anyway). The error joins one [*EndpointError] per backend refused.
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

// CheckEndpoints, for the config layer, refuses an endpoint that is
// Trousseau's own socket (own) or one an earlier endpoint names. Paths
// are compared with symlinks resolved (sockets may not exist yet), and
// files where both exist. The error joins one [*EndpointError] per
// endpoint refused; invalid endpoints are skipped. One key behind two
// sockets is caught later, by [Backend.CustodianKey].
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

// ownSocketPath accepts a path or unix:///path.
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

// maxLinks is the kernel's bound on symlinks followed.
const maxLinks = 40

// resolvePath resolves symlinks in the part of path that exists and
// appends the rest.
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
