// Package safedir checks that a directory the plugin trusts (its socket's,
// its state's, a custodian plugin's socket's) cannot be written by someone
// who could then plant or replace files in it.
package safedir

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Check refuses dir, described as what ("socket directory"), when its
// group or others may write to it, and, with ours, when it is owned by
// another user than this process's or root. The error says what to do.
func Check(what, dir string, ours bool) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, dir)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s %s: cannot read its owner", what, dir)
	}
	euid := os.Geteuid()
	if ours && int(sys.Uid) != euid && sys.Uid != 0 {
		return fmt.Errorf("%s %s is owned by uid %d, not by this process (uid %d) or root: its owner could replace what is in it; chown %d %s, or use another directory",
			what, dir, sys.Uid, euid, euid, dir)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s (owner uid %d, mode %04o) is writable by group or others, who could replace what is in it; chmod go-w %s, or use another directory",
			what, dir, sys.Uid, UnixMode(st.Mode()), dir)
	}
	return nil
}

// UnixMode is m as chmod spells it (1777 for /tmp).
func UnixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
