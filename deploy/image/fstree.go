package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// node is one file of a layer: a directory, a regular file or a symlink.
// Owner and mode are explicit, so that nothing of the machine that builds
// the image (umask, uid, mtime) reaches it.
type node struct {
	typ  byte  // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	mode int64 // permission bits, with setuid, setgid and sticky as tar has them
	uid  int
	gid  int
	link string // a symlink's target
	data []byte
	from string // where it came from, for conflict messages
}

// fsTree is a layer's files by path (relative, cleaned, no leading slash).
type fsTree map[string]node

// cleanPath turns an archive or image path ("./lib/x", "/etc/passwd") into
// the tree's key, refusing anything that would leave the root.
func cleanPath(p string) (string, error) {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return "", fmt.Errorf("path %q leaves the root", p)
		}
	}
	return strings.TrimPrefix(path.Clean("/"+p), "/"), nil
}

// add puts n at p. The same directory may come from several packages;
// anything else given twice must be identical, or the build would depend
// on the order packages are listed in.
func (t fsTree) add(p string, n node) error {
	key, err := cleanPath(p)
	if err != nil {
		return err
	}
	if key == "" {
		return nil // the root itself
	}
	if old, ok := t[key]; ok {
		same := old.typ == n.typ && old.mode == n.mode && old.uid == n.uid && old.gid == n.gid &&
			old.link == n.link && bytes.Equal(old.data, n.data)
		if !same && !(old.typ == tar.TypeDir && n.typ == tar.TypeDir) {
			return fmt.Errorf("/%s: given by both %s and %s, differently", key, old.from, n.from)
		}
		return nil
	}
	t[key] = n
	return nil
}

func (t fsTree) addFile(p string, mode int64, data []byte, from string) error {
	return t.add(p, node{typ: tar.TypeReg, mode: mode, data: data, from: from})
}

func (t fsTree) addDir(p string, mode int64, uid, gid int, from string) error {
	return t.add(p, node{typ: tar.TypeDir, mode: mode, uid: uid, gid: gid, from: from})
}

// tarball writes the tree as an uncompressed tar: entries sorted by path,
// every parent directory present before its children (root-owned 0755
// when no package gave it), every time set to mtime, no user or group
// names. The same tree always gives the same bytes.
func (t fsTree) tarball(mtime time.Time) ([]byte, error) {
	full := fsTree{}
	for p, n := range t {
		full[p] = n
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := t[dir]; !ok {
				full[dir] = node{typ: tar.TypeDir, mode: 0o755, from: "parent of /" + p}
			}
		}
	}
	for p := range full {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if full[dir].typ != tar.TypeDir {
				return nil, fmt.Errorf("/%s is inside /%s, which is not a directory", p, dir)
			}
		}
	}
	paths := make([]string, 0, len(full))
	for p := range full {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		n := full[p]
		h := &tar.Header{
			Typeflag: n.typ,
			Name:     p,
			Mode:     n.mode & 0o7777,
			Uid:      n.uid,
			Gid:      n.gid,
			ModTime:  mtime,
		}
		switch n.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeSymlink:
			h.Linkname = n.link
		case tar.TypeReg:
			h.Size = int64(len(n.data))
		default:
			return nil, fmt.Errorf("/%s: unsupported entry type %q", p, n.typ)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("/%s: %w", p, err)
		}
		if n.typ == tar.TypeReg {
			if _, err := tw.Write(n.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
