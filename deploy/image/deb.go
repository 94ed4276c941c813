package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
)

// debFile is one entry of a Debian package's data archive.
type debFile struct {
	path string // as in the archive, without the leading "./"
	typ  byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	mode int64
	link string
	data []byte
}

// Limits on what a package may hold: the pinned packages are a few MB; a
// corrupt or hostile file must not make the builder allocate without end.
const (
	maxDebMember = 64 << 20
	maxDebData   = 256 << 20
)

// arMember returns the member of an ar archive (the format of a .deb)
// whose name starts with prefix, and that member's name.
func arMember(archive []byte, prefix string) (string, []byte, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(archive, []byte(magic)) {
		return "", nil, errors.New("not an ar archive")
	}
	rest := archive[len(magic):]
	for len(rest) > 0 {
		if len(rest) < 60 {
			return "", nil, errors.New("ar: truncated member header")
		}
		hdr := rest[:60]
		if string(hdr[58:60]) != "`\n" {
			return "", nil, errors.New("ar: bad member header")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 || size > maxDebMember {
			return "", nil, fmt.Errorf("ar: member %q: bad size %q", name, strings.TrimSpace(string(hdr[48:58])))
		}
		rest = rest[60:]
		if int64(len(rest)) < size {
			return "", nil, fmt.Errorf("ar: member %q truncated", name)
		}
		if strings.HasPrefix(name, prefix) {
			return name, rest[:size], nil
		}
		rest = rest[size:]
		if size%2 == 1 && len(rest) > 0 { // members are 2-byte aligned
			rest = rest[1:]
		}
	}
	return "", nil, fmt.Errorf("ar: no member %s*", prefix)
}

// debData reads the files of a .deb's data archive (data.tar, .tar.gz or
// .tar.xz). Hard links become copies of their target, so that the layer
// never depends on the order of its entries.
func debData(deb []byte) ([]debFile, error) {
	if _, v, err := arMember(deb, "debian-binary"); err != nil || !strings.HasPrefix(string(v), "2.") {
		return nil, fmt.Errorf("not a Debian binary package (format 2.x): %v", err)
	}
	name, member, err := arMember(deb, "data.tar")
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch name {
	case "data.tar":
		r = bytes.NewReader(member)
	case "data.tar.gz":
		if r, err = gzip.NewReader(bytes.NewReader(member)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	case "data.tar.xz":
		if r, err = xz.NewReader(bytes.NewReader(member)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	default:
		return nil, fmt.Errorf("%s: compression not supported (want data.tar, .gz or .xz)", name)
	}
	return readDataTar(io.LimitReader(r, maxDebData+1), name)
}

func readDataTar(r io.Reader, name string) ([]debFile, error) {
	tr := tar.NewReader(r)
	var files []debFile
	regular := map[string]int{} // path -> index in files, for hard links
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if p == "" || p == "." {
			continue
		}
		f := debFile{path: p, mode: h.Mode & 0o7777}
		switch h.Typeflag {
		case tar.TypeDir:
			f.typ = tar.TypeDir
		case tar.TypeSymlink:
			f.typ, f.link = tar.TypeSymlink, h.Linkname
		case tar.TypeReg:
			if total += h.Size; total > maxDebData {
				return nil, fmt.Errorf("%s: more than %d bytes of files", name, maxDebData)
			}
			f.typ = tar.TypeReg
			if f.data, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", name, p, err)
			}
			regular[p] = len(files)
		case tar.TypeLink:
			target := strings.TrimPrefix(h.Linkname, "./")
			i, ok := regular[target]
			if !ok {
				return nil, fmt.Errorf("%s: hard link %s to %s, which comes later or is not a file", name, p, target)
			}
			f.typ, f.mode, f.data = tar.TypeReg, files[i].mode, files[i].data
		default:
			return nil, fmt.Errorf("%s: %s: entry type %q not supported", name, p, h.Typeflag)
		}
		files = append(files, f)
	}
}
