package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/trousseau-io/trousseau/internal/filelock"
	"github.com/trousseau-io/trousseau/internal/safedir"
)

// StateDirCheck is what CheckStateDir found in a state dir.
type StateDirCheck struct {
	Exists  bool    // serve creates a missing dir
	Current *Header // nil: serve makes the first DEK (needs every backend)
	// Notes: what serve fixes at start (mode, leftovers) and what an
	// operator may want to know (DEKs set aside).
	Notes []string
}

// CheckStateDir reports, changing nothing, what would make a plugin
// refuse dir at start ([LockStateDir], [New]) or fail to save a DEK there;
// its errors say what to do. Access is checked as this process, so run it
// as the plugin's user. A missing dir passes (the caller checks parents),
// and so does one a running plugin has locked.
func CheckStateDir(dir string) (StateDirCheck, error) {
	var c StateDirCheck
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return c, nil
	} else if err != nil {
		return c, fmt.Errorf("state dir %s: %w", dir, err)
	}
	c.Exists = true
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return c, fmt.Errorf("state dir %s is not a directory but a %s, so serve cannot create it: move that aside, or choose another path", dir, safedir.Kind(st.Mode()))
	}
	if err := checkStateDir(dir); err != nil {
		return c, err
	}
	var errs []error
	writable := syscall.Access(dir, unix.W_OK|unix.X_OK)
	if writable != nil {
		errs = append(errs, fmt.Errorf("state dir %s: no file can be created in it (%v): serve could save neither a first DEK nor a rotation there, nor create its lock file; "+
			"make it writable by the plugin's user (a read-only mount? an immutable dir? lsattr -d %s), or use another directory", dir, writable, dir))
	}
	if err := filelock.Check(StateLock(dir)); err != nil {
		errs = append(errs, fmt.Errorf("%w; serve would refuse to lock the state dir", err))
	}
	s := &stateFile{dir: dir}
	h, notes, err := s.check()
	c.Current, c.Notes = h, notes
	if err != nil {
		errs = append(errs, err)
	}
	// A save renames over the state file, which an immutable or
	// append-only flag refuses even in a writable dir; its mode does not
	// matter.
	if h != nil && writable == nil {
		if attr := undeletable(s.path()); attr != "" {
			errs = append(errs, fmt.Errorf("state file %s cannot be replaced (%s, operation not permitted): no rotation could be saved, and the plugin would keep its current DEK for ever; "+
				"clear the flag (lsattr %s; chattr -i -a)", s.path(), attr, s.path()))
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".state-*.tmp")); len(tmp) > 0 {
		c.Notes = append(c.Notes, fmt.Sprintf("%d temporary state file(s) of an interrupted save (%s); serve removes them at start", len(tmp), filepath.Base(tmp[0])))
	}
	if aside, _ := filepath.Glob(s.path() + ".unusable-*"); len(aside) > 0 {
		slices.Sort(aside)
		c.Notes = append(c.Notes, fmt.Sprintf("%d DEK(s) set aside because they could not be unlocked, newest %s: keep them until the data sealed under them is rewritten or given up", len(aside), aside[len(aside)-1]))
	}
	return c, errors.Join(errs...)
}

// check reads the state file as load does, changing nothing, and notes
// what load will fix.
func (s *stateFile) check() (*Header, []string, error) {
	var notes []string
	b, err := readNoFollow(s.path(), func(f *os.File, st fs.FileInfo) error {
		if st.Mode().Perm()&0o077 == 0 {
			return nil
		}
		// load makes it 0600, which only its owner or root can do.
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && os.Geteuid() != 0 {
			return fmt.Errorf("state file %s has mode %04o and is owned by uid %d: serve could not make it 0600 and would refuse it; chown it to the plugin's user, or chmod 600 it", s.path(), st.Mode().Perm(), sys.Uid)
		}
		notes = append(notes, fmt.Sprintf("state file %s has mode %04o: serve makes it 0600 at start", s.path(), st.Mode().Perm()))
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notes, nil
	}
	if err != nil {
		return nil, notes, err
	}
	h, _, err := parseState(s.path(), b)
	return h, notes, err
}

// parseState decodes a state file for load and [CheckStateDir] alike,
// returning the header parsed and encoded.
func parseState(path string, b []byte) (*Header, []byte, error) {
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, nil, fmt.Errorf("state file %s is corrupt (%w): %s", path, err, moveAside)
	}
	if doc.Version == 0 {
		return nil, nil, fmt.Errorf("state file %s holds no Trousseau state (no version field): %s", path, moveAside)
	}
	if doc.Version != stateVersion {
		return nil, nil, fmt.Errorf("state file %s has version %d, this build reads %d", path, doc.Version, stateVersion)
	}
	if len(doc.Header) == 0 {
		return nil, nil, fmt.Errorf("state file %s is corrupt: it holds no DEK header: %s", path, moveAside)
	}
	h, err := ParseHeader(doc.Header)
	if err != nil {
		return nil, nil, fmt.Errorf("state file %s holds a DEK header that cannot be read (%w); move the file aside and restart to make a new DEK "+
			"(nothing is lost by that: every object in etcd carries its own copy of the header)", path, err)
	}
	return h, doc.Header, nil
}
