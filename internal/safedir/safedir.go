// Package safedir checks that a directory the plugin trusts (its socket's,
// its state's, a custodian plugin's socket's) cannot be written by someone
// who could then plant or replace files in it, nor the directory itself be
// replaced by someone who can write a directory on the way to it.
//
// Two rules, for the two places a directory can be in:
//
//   - The directory itself (the one whose files are trusted: the socket's,
//     the state's) may not be writable by group or others at all, sticky
//     bit or not: in a shared directory like /tmp anyone may take a name
//     that is not there yet. With ours, it must be owned by this process's
//     user or root.
//   - Every directory on the way to it, that is every directory a name is
//     looked up in while the path is resolved as the kernel resolves it
//     (its ancestors, and where a symlink on the way points, and the
//     ancestors of that), must be owned by root, this process's user or
//     the owner of the directory itself (when ours is false: a custodian
//     plugin may run as a user of its own), and may not be writable by
//     group or others, except with the sticky bit (like /tmp) when the
//     entry looked up in it is owned by one of those users too: then no
//     one else may rename or remove it. Whoever can write such a directory
//     could otherwise swap the directory below it, or the symlink, for one
//     of theirs.
//
// Paths are resolved with symlinks followed, so a checked path that is a
// symlink, or goes through one, is judged where it leads, and also by the
// directories the symlinks are in.
package safedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Check refuses dir, described as what ("socket directory"), when its
// group or others may write to it, with ours when it is owned by another
// user than this process's or root, and when a directory on the way to it
// could be written by someone else (see the package comment). The error
// says what to do.
func Check(what, dir string, ours bool) error {
	w, err := walk(dir, false)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	st, err := os.Stat(w.resolved)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	resolved := ""
	if abs, _ := filepath.Abs(dir); w.resolved != abs {
		resolved = "which is " + w.resolved + " with symlinks resolved"
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s%s is not a directory", what, dir, paren(resolved))
	}
	uid, ok := owner(st)
	if !ok {
		return fmt.Errorf("%s %s%s: cannot read its owner", what, dir, paren(resolved))
	}
	euid := os.Geteuid()
	if ours && int(uid) != euid && uid != 0 {
		return fmt.Errorf("%s %s%s is owned by uid %d, not by this process (uid %d) or root: its owner could replace what is in it; chown %d %s, or use another directory",
			what, dir, paren(resolved), uid, euid, euid, w.resolved)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s%s is writable by group or others, who could replace what is in it; chmod go-w %s, or use another directory",
			what, dir, paren(resolved, modeOf(uid, st.Mode())), w.resolved)
	}
	t := newTrusted(ours, uid)
	for _, l := range w.lookups {
		if err := l.checkWay(t); err != nil {
			return fmt.Errorf("%s %s: %w", what, dir, err)
		}
	}
	return nil
}

// CheckCreatable refuses a directory that does not exist yet, and that
// this process would create (as the plugin does its socket and state
// dirs), when Check would refuse it once created because of a directory
// on the way: the nearest existing ancestor and every directory on the
// way to it are judged as directories on the way, the entry created in
// the ancestor being this process's.
func CheckCreatable(what, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	parent := filepath.Dir(abs)
	for {
		if _, err := os.Stat(parent); err == nil || parent == filepath.Dir(parent) {
			break
		}
		parent = filepath.Dir(parent)
	}
	w, err := walk(parent, false)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	t := newTrusted(true, 0)
	for _, l := range w.lookups {
		if err := l.checkWay(t); err != nil {
			return fmt.Errorf("%s %s: %w", what, dir, err)
		}
	}
	st, err := os.Stat(w.resolved)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// The entry made in it will be ours: a sticky shared directory is
	// fine, like /tmp.
	final := lookup{dir: w.resolved, dirInfo: st, name: filepath.Base(abs), entry: ownEntry{}}
	if err := final.checkWay(t); err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	return nil
}

// ownEntry stands for an entry this process is about to create.
type ownEntry struct{ fs.FileInfo }

// CheckFile refuses file, described as what ("custodian socket"), when
// someone else could replace it: when the directory it is in is refused
// as Check refuses a directory, or a directory on the way to that one
// could be written by someone else. When file is a symlink (or a chain of
// them), the directory of each symlink in the chain is judged as the
// file's own directory too: its writer could point it elsewhere. The file
// itself need not exist (a socket whose server is down); its directory
// must.
func CheckFile(what, file string, ours bool) error {
	w, err := walk(file, true)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// The owner of the directory the file ends up in is trusted when
	// ours is false; it is the last lookup of a last name.
	var final *lookup
	for i := range w.lookups {
		if w.lookups[i].last {
			final = &w.lookups[i]
		}
	}
	if final == nil { // walk always ends with a last name
		return fmt.Errorf("%s %s: not a file path", what, file)
	}
	uid, ok := owner(final.dirInfo)
	if !ok {
		return fmt.Errorf("%s %s: cannot read the owner of %s", what, file, final.dir)
	}
	t := newTrusted(ours, uid)
	for _, l := range w.lookups {
		check := l.checkWay
		if l.last {
			check = l.checkHome
		}
		if err := check(t); err != nil {
			return fmt.Errorf("%s %s: %w", what, file, err)
		}
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

// trusted are the users who may write the directories on the way: root,
// this process's user, and (when the directory checked is not ours to
// own) the owner of that directory.
type trusted struct {
	euid  uint32
	owner uint32 // == euid when ours
	ours  bool
}

func newTrusted(ours bool, owner uint32) trusted {
	euid := uint32(os.Geteuid())
	if ours {
		owner = euid
	}
	return trusted{euid: euid, owner: owner, ours: ours}
}

func (t trusted) has(uid uint32) bool { return uid == 0 || uid == t.euid || uid == t.owner }

// who names the trusted users, for an error.
func (t trusted) who() string {
	if t.ours || t.owner == t.euid || t.owner == 0 {
		return fmt.Sprintf("root or uid %d (this process)", t.euid)
	}
	return fmt.Sprintf("root, uid %d (this process) or uid %d (the owner of the directory)", t.euid, t.owner)
}

// lookup is one name looked up in one directory while a path was
// resolved.
type lookup struct {
	dir     string      // a real directory: no symlink in it
	dirInfo fs.FileInfo // its Lstat
	name    string
	entry   fs.FileInfo // Lstat of dir/name; nil when it does not exist
	// last: name is the last one of the path, or of a symlink's target
	// that stood last: the file itself, or a symlink to it.
	last bool
	via  string // the symlink followed last before this lookup, or ""
}

func (l lookup) path() string { return filepath.Join(l.dir, l.name) }

// reached says how the directory was reached, when through a symlink.
func (l lookup) reached() string {
	if l.via == "" {
		return ""
	}
	return "reached through the symlink " + l.via
}

// paren is the non-empty parts in parentheses, after a space, or "".
func paren(parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return ""
	}
	return " (" + strings.Join(kept, "; ") + ")"
}

func modeOf(uid uint32, m fs.FileMode) string {
	return fmt.Sprintf("owner uid %d, mode %04o", uid, UnixMode(m))
}

// checkWay applies the rule of a directory on the way.
func (l lookup) checkWay(t trusted) error {
	uid, ok := owner(l.dirInfo)
	if !ok {
		return fmt.Errorf("cannot read the owner of %s", l.dir)
	}
	mode := l.dirInfo.Mode()
	if !t.has(uid) {
		return fmt.Errorf("%s, on the way to it%s, is owned by uid %d, not by %s: its owner could replace %s; chown root %s, or use another directory",
			l.dir, paren(l.reached()), uid, t.who(), l.path(), l.dir)
	}
	if mode.Perm()&0o022 == 0 {
		return nil
	}
	if mode&fs.ModeSticky == 0 {
		return fmt.Errorf("%s, on the way to it%s, is writable by group or others without the sticky bit: they could replace %s; chmod go-w %s (or chmod +t if it must stay shared), or use another directory",
			l.dir, paren(l.reached(), modeOf(uid, mode)), l.path(), l.dir)
	}
	// Sticky: only the entry's owner (or the directory's, or root) may
	// rename or remove it.
	if l.entry == nil {
		return fmt.Errorf("%s is missing from %s (mode %04o), where anyone may create it", l.name, l.dir, UnixMode(mode))
	}
	if eu, ok := owner(l.entry); !ok || !t.has(eu) {
		return fmt.Errorf("%s is owned by uid %d, not by %s, in the shared directory %s (mode %04o), so its owner could replace it; use another directory",
			l.path(), eu, t.who(), l.dir, UnixMode(mode))
	}
	return nil
}

// checkHome applies the rule of the directory that holds the file (or a
// symlink to it): like Check's of a directory.
func (l lookup) checkHome(t trusted) error {
	uid, ok := owner(l.dirInfo)
	if !ok {
		return fmt.Errorf("cannot read the owner of %s", l.dir)
	}
	what := "its directory"
	if l.entry != nil && l.entry.Mode()&fs.ModeSymlink != 0 {
		what = "the directory of the symlink " + l.path()
	}
	if !t.has(uid) {
		return fmt.Errorf("%s %s%s is owned by uid %d, not by %s: its owner could replace what is in it; chown %d %s, or use another directory",
			what, l.dir, paren(l.reached()), uid, t.who(), t.owner, l.dir)
	}
	if mode := l.dirInfo.Mode(); mode.Perm()&0o022 != 0 {
		return fmt.Errorf("%s %s%s is writable by group or others, who could replace what is in it; chmod go-w %s, or use another directory",
			what, l.dir, paren(l.reached(), modeOf(uid, mode)), l.dir)
	}
	return nil
}

// maxLinks bounds the symlinks followed, as the kernel does (40).
const maxLinks = 40

// walked is a path resolved as the kernel resolves it.
type walked struct {
	resolved string   // the path with every symlink resolved
	lookups  []lookup // every name looked up, in order
}

// walk resolves path component by component, following symlinks,
// recording every lookup. A missing last name is allowed with
// missingLast (and ends the walk there); any other missing name is an
// error.
func walk(path string, missingLast bool) (walked, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return walked{}, err
	}
	var w walked
	infos := map[string]fs.FileInfo{}
	dirInfo := func(dir string) (fs.FileInfo, error) {
		if fi, ok := infos[dir]; ok {
			return fi, nil
		}
		fi, err := os.Lstat(dir)
		if err != nil {
			return nil, err
		}
		infos[dir] = fi
		return fi, nil
	}
	cur := "/"
	rest := split(abs)
	links := 0
	via := ""
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		last := len(rest) == 0
		switch name {
		case ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		di, err := dirInfo(cur)
		if err != nil {
			return walked{}, err
		}
		if !di.IsDir() {
			return walked{}, &fs.PathError{Op: "lstat", Path: filepath.Join(cur, name), Err: syscall.ENOTDIR}
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) && last && missingLast {
			w.lookups = append(w.lookups, lookup{dir: cur, dirInfo: di, name: name, last: true, via: via})
			cur = next
			break
		}
		if err != nil {
			return walked{}, err
		}
		w.lookups = append(w.lookups, lookup{dir: cur, dirInfo: di, name: name, entry: fi, last: last, via: via})
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return walked{}, &fs.PathError{Op: "lstat", Path: path, Err: syscall.ELOOP}
		}
		target, err := os.Readlink(next)
		if err != nil {
			return walked{}, err
		}
		via = next
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(split(target), rest...)
	}
	w.resolved = cur
	return w, nil
}

// split is the names of path, empty ones left out.
func split(path string) []string {
	var names []string
	for _, n := range strings.Split(path, "/") {
		if n != "" {
			names = append(names, n)
		}
	}
	return names
}

// owner is the uid that owns fi's file.
func owner(fi fs.FileInfo) (uint32, bool) {
	if _, ok := fi.(ownEntry); ok {
		return uint32(os.Geteuid()), true
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Uid, true
}

// Kind names the type of a file for an error saying it should be a
// directory or a regular file: "directory", "symlink", "named pipe", ...
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	case m.IsRegular():
		return "regular file"
	}
	return "special file"
}
