package safedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PrivateDir is a directory tree that files only one user may read are
// written into (the Secrets of recover --output). Names are looked up one
// at a time from an open directory, never through a symlink, and every
// directory met must be that user's and closed to group and others, so
// no one else can read what is written or swap what is on the way; a
// file is created exclusively, 0600, and only a file of that user with
// one link is ever replaced.
//
// Files become durable at [PrivateDir.Sync], not one by one: a crash
// before it may leave new files missing or empty, but a file that
// replaces an earlier run's is flushed before the rename, so a crash
// never empties a good one. Use a PrivateDir from one goroutine at a time.
type PrivateDir struct {
	path string
	fd   int
	uid  int
	dirs dirCache // open subdirectories, checked
	tmp  string   // this handle's prefix of temporary names
	seq  uint64
}

// OpenPrivate opens dir as a [PrivateDir] of the user uid (the caller's
// euid; tests pass another). dir itself must not be a symlink; its parent
// is resolved as usual. With create, a missing dir is made (0700) in its
// parent; without, a missing dir is an error that matches
// [fs.ErrNotExist].
func OpenPrivate(dir string, uid int, create bool) (*PrivateDir, error) {
	dir = filepath.Clean(dir)
	parent, err := unix.Open(filepath.Dir(dir), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: filepath.Dir(dir), Err: err}
	}
	defer unix.Close(parent)
	var r [8]byte
	rand.Read(r[:])
	p := &PrivateDir{path: dir, uid: uid, tmp: ".trousseau-" + hex.EncodeToString(r[:]) + "-"}
	p.fd, err = p.openDir(parent, filepath.Base(dir), dir, create)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Close closes the directory and the subdirectories kept open.
func (p *PrivateDir) Close() error {
	p.dirs.closeAll()
	return unix.Close(p.fd)
}

// Sync makes every file written so far durable, with their names: one
// flush of the file system the directory is on, instead of one per file.
func (p *PrivateDir) Sync() error {
	if err := syncFS(p.fd); err != nil {
		return &fs.PathError{Op: "sync", Path: p.path, Err: err}
	}
	return nil
}

// WriteFile writes data to rel, a slash-separated path inside the
// directory, making the directories on the way (0700). The file is
// written to a new file (O_EXCL, 0600 from its creation, or narrower by
// the umask) renamed over
// rel, so that a reader never sees part of it and a file already at rel
// is replaced only after it is judged: it must be a regular file of the
// user's with one link (an earlier run's), else WriteFile refuses and
// leaves it as it was.
func (p *PrivateDir) WriteFile(rel string, data []byte) error {
	names := strings.Split(rel, "/")
	for _, n := range names {
		if n == "" || n == "." || n == ".." || strings.IndexByte(n, 0) >= 0 {
			return fmt.Errorf("%s: %q is not a file name", filepath.Join(p.path, rel), n)
		}
	}
	dir, err := p.subdir(names[:len(names)-1])
	if err != nil {
		return err
	}
	return p.replace(dir, names[len(names)-1], filepath.Join(p.path, rel), data)
}

// subdir returns an open handle of the directory names leads to, made
// and checked on the way the first time, kept in p.dirs after.
func (p *PrivateDir) subdir(names []string) (int, error) {
	if len(names) == 0 {
		return p.fd, nil
	}
	rel := strings.Join(names, "/")
	if fd, ok := p.dirs.get(rel); ok {
		return fd, nil
	}
	dir, at := p.fd, p.path
	for _, n := range names {
		at = filepath.Join(at, n)
		next, err := p.openDir(dir, n, at, true)
		if dir != p.fd {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = next
	}
	p.dirs.put(rel, dir)
	return dir, nil
}

// openDir opens name in the directory parent (at is its path, for
// errors), not following a symlink, and checks it.
func (p *PrivateDir) openDir(parent int, name, at string, create bool) (int, error) {
	if create {
		if err := unix.Mkdirat(parent, name, 0o700); err != nil && err != unix.EEXIST {
			return -1, fmt.Errorf("%s: cannot create it: %w", at, err)
		}
	}
	fd, err := unix.Openat(parent, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, p.openError(parent, name, at, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: at, Err: err}
	}
	if err := p.checkOwner(at, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if perm := uint32(st.Mode) & 0o777; perm&0o077 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("%s has mode %04o: others could read the files written in it; chmod 0700 it, or use another directory", at, perm)
	}
	return fd, nil
}

// openError says why name could not be opened as a directory.
func (p *PrivateDir) openError(parent int, name, at string, err error) error {
	var st unix.Stat_t
	switch {
	case err == unix.ENOENT:
		return &fs.PathError{Op: "open", Path: at, Err: fs.ErrNotExist}
	case unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil:
	case uint32(st.Mode)&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%s is a symlink: files are written only where no symlink leads; remove it, or use another directory", at)
	case uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s is a %s, not a directory; remove it, or use another directory", at, Kind(fileMode(uint32(st.Mode))))
	}
	return fmt.Errorf("%s: %w", at, err)
}

// checkOwner refuses a file or directory of another user, who could read
// or replace what is written in it.
func (p *PrivateDir) checkOwner(at string, st *unix.Stat_t) error {
	if int(st.Uid) != p.uid {
		return fmt.Errorf("%s is owned by uid %d, not by us (uid %d): remove it, or use another directory", at, st.Uid, p.uid)
	}
	return nil
}

// replace writes data to a new file in dir and renames it to name.
func (p *PrivateDir) replace(dir int, name, at string, data []byte) error {
	tmp, fd, err := p.createTemp(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Dir(at), err)
	}
	err = writeAll(fd, data)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.moveInto(dir, tmp, name, at)
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
		if errors.As(err, new(refusal)) {
			return err
		}
		return fmt.Errorf("%s: %w", at, err)
	}
	return nil
}

// moveInto renames tmp to name, in one step where nothing is there;
// else over an earlier run's file, once it is judged replaceable and tmp
// is flushed.
func (p *PrivateDir) moveInto(dir int, tmp, name, at string) error {
	err := renameNoReplace(dir, tmp, name)
	if err != unix.EEXIST && err != unix.ENOSYS && err != unix.EINVAL {
		return err
	}
	exists, err := p.checkReplaceable(dir, name, at)
	if err != nil {
		return refusal{err}
	}
	if exists {
		if err := syncFile(dir, tmp); err != nil {
			return err
		}
	}
	return unix.Renameat(dir, tmp, dir, name)
}

// refusal is an error of checkReplaceable: it names the file already.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

func syncFile(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Fsync(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// checkReplaceable refuses a file at name that is not a regular file of
// the user's with exactly one link, and says whether there is one.
func (p *PrivateDir) checkReplaceable(dir int, name, at string) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == unix.ENOENT:
		return false, nil
	case err != nil:
		return false, &fs.PathError{Op: "stat", Path: at, Err: err}
	case uint32(st.Mode)&unix.S_IFMT != unix.S_IFREG:
		return false, fmt.Errorf("%s is a %s, not a file written by an earlier run; remove it, or use another directory", at, Kind(fileMode(uint32(st.Mode))))
	}
	if err := p.checkOwner(at, &st); err != nil {
		return false, err
	}
	if st.Nlink != 1 {
		return false, fmt.Errorf("%s has %d links: another name leads to the same file, and whoever made it could read what is written; remove it, or use another directory", at, st.Nlink)
	}
	return true, nil
}

// createFlags and createMode make a new file that no one else could have
// made or linked, readable by no one else from its creation (the umask
// may only narrow 0600).
const (
	createFlags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	createMode  = 0o600
)

// createTemp creates a new file in dir. O_EXCL, not the name, makes it
// new: the random prefix only keeps two runs from meeting.
func (p *PrivateDir) createTemp(dir int) (string, int, error) {
	for {
		p.seq++
		name := p.tmp + strconv.FormatUint(p.seq, 10) + ".tmp"
		fd, err := unix.Openat(dir, name, createFlags, createMode)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", -1, err
		}
		return name, fd, nil
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// fileMode turns a stat mode's type bits into an fs.FileMode for [Kind].
func fileMode(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFBLK, unix.S_IFCHR:
		return fs.ModeDevice
	case unix.S_IFREG:
		return 0
	}
	return fs.ModeIrregular
}
