package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// The parts of the builder, on made-up packages: no network, no go build.

func TestTreeTarballIsDeterministic(t *testing.T) {
	mtime := time.Unix(1700000000, 0)
	entries := []struct {
		path string
		n    node
	}{
		{"usr/lib/x/libfoo.so.1", node{typ: tar.TypeReg, mode: 0o644, data: []byte("foo")}},
		{"/etc/passwd", node{typ: tar.TypeReg, mode: 0o644, data: []byte("root:x:0:0::/:/sbin/nologin\n")}},
		{"./lib64/ld.so", node{typ: tar.TypeSymlink, mode: 0o777, link: "/usr/lib/x/libfoo.so.1"}},
		{"home/nonroot", node{typ: tar.TypeDir, mode: 0o700, uid: 65532, gid: 65532}},
		{"tmp", node{typ: tar.TypeDir, mode: 0o1777}},
	}
	build := func(order []int) []byte {
		tr := fsTree{}
		for _, i := range order {
			if err := tr.add(entries[i].path, entries[i].n); err != nil {
				t.Fatal(err)
			}
		}
		b, err := tr.tarball(mtime)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := build([]int{0, 1, 2, 3, 4}), build([]int{4, 3, 2, 1, 0})
	if !bytes.Equal(a, b) {
		t.Fatal("the same files added in another order give another tarball")
	}

	var names []string
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(mtime) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %v uname %q gname %q, want %v and no names", h.Name, h.ModTime, h.Uname, h.Gname, mtime)
		}
		switch h.Name {
		case "tmp/":
			if h.Mode != 0o1777 {
				t.Errorf("tmp: mode %o, want 1777", h.Mode)
			}
		case "home/nonroot/":
			if h.Uid != 65532 || h.Gid != 65532 || h.Mode != 0o700 {
				t.Errorf("home/nonroot: %d:%d %o", h.Uid, h.Gid, h.Mode)
			}
		case "usr/", "usr/lib/", "usr/lib/x/": // parents made for the file
			if h.Typeflag != tar.TypeDir || h.Mode != 0o755 || h.Uid != 0 {
				t.Errorf("%s: implicit parent %c %o uid %d", h.Name, h.Typeflag, h.Mode, h.Uid)
			}
		}
	}
	want := "etc/ etc/passwd home/ home/nonroot/ lib64/ lib64/ld.so tmp/ usr/ usr/lib/ usr/lib/x/ usr/lib/x/libfoo.so.1"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("entries:\n got %s\nwant %s", got, want)
	}
}

func TestTreeRefuses(t *testing.T) {
	tr := fsTree{}
	if err := tr.addFile("etc/passwd", 0o644, []byte("a"), "one"); err != nil {
		t.Fatal(err)
	}
	if err := tr.addFile("etc/passwd", 0o644, []byte("a"), "two"); err != nil {
		t.Errorf("the same file twice: %v", err)
	}
	if err := tr.addFile("etc/passwd", 0o644, []byte("b"), "three"); err == nil || !strings.Contains(err.Error(), "one and three") {
		t.Errorf("two different files at one path: %v", err)
	}
	if err := tr.addFile("../etc/shadow", 0o600, nil, "x"); err == nil {
		t.Error("a path out of the root was accepted")
	}
	if err := tr.addFile("etc/passwd/x", 0o644, nil, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.tarball(time.Unix(0, 0)); err == nil {
		t.Error("a file under a file was accepted")
	}
}

// makeDeb builds a .deb (ar: debian-binary, control, data) whose data
// archive holds files, compressed as comp ("xz", "gz", "zst").
func makeDeb(t *testing.T, comp string, files []tar.Header, contents map[string]string) []byte {
	t.Helper()
	var data bytes.Buffer
	tw := tar.NewWriter(&data)
	for _, h := range files {
		h := h
		c := contents[h.Name]
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(c))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, c)
	}
	tw.Close()
	var packed bytes.Buffer
	switch comp {
	case "xz":
		w, err := xz.NewWriter(&packed)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data.Bytes())
		w.Close()
	case "gz":
		w := gzip.NewWriter(&packed)
		w.Write(data.Bytes())
		w.Close()
	default:
		packed.Write(data.Bytes())
	}
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, b []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(b))
		ar.Write(b)
		if len(b)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.xz", []byte("not read"))
	member("data.tar."+comp, packed.Bytes())
	return ar.Bytes()
}

var libFiles = []tar.Header{
	{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
	{Name: "./lib/", Typeflag: tar.TypeDir, Mode: 0o755},
	{Name: "./lib/libx.so.1", Typeflag: tar.TypeReg, Mode: 0o644},
	{Name: "./lib/libx-again.so.1", Typeflag: tar.TypeLink, Linkname: "./lib/libx.so.1"},
	{Name: "./lib/libx.so", Typeflag: tar.TypeSymlink, Linkname: "libx.so.1"},
	{Name: "./usr/share/doc/libx/copyright", Typeflag: tar.TypeReg, Mode: 0o644},
	{Name: "./usr/share/doc/libx/changelog.gz", Typeflag: tar.TypeReg, Mode: 0o644},
	{Name: "./usr/share/man/man1/x.1.gz", Typeflag: tar.TypeReg, Mode: 0o644},
}

var libContents = map[string]string{"./lib/libx.so.1": "ELF...", "./usr/share/doc/libx/copyright": "GPL", "./usr/share/doc/libx/changelog.gz": "x", "./usr/share/man/man1/x.1.gz": "x"}

func TestDebPackages(t *testing.T) {
	for _, comp := range []string{"xz", "gz"} {
		t.Run(comp, func(t *testing.T) {
			deb := makeDeb(t, comp, libFiles, libContents)
			tr := fsTree{}
			if err := addPackage(tr, debPackage{name: "libx", version: "1", use: "files"}, deb); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for p, n := range tr {
				got[p] = fmt.Sprintf("%c %o %s%s", n.typ, n.mode, n.link, n.data)
			}
			want := map[string]string{
				"lib/libx.so.1":                "0 644 ELF...",
				"lib/libx-again.so.1":          "0 644 ELF...", // a hard link becomes a copy
				"lib/libx.so":                  "2 0 libx.so.1",
				"usr/share/doc/libx/copyright": "0 644 GPL", // docs: the copyright only
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("files:\n got %v\nwant %v", got, want)
			}
		})
	}
	t.Run("zstd refused", func(t *testing.T) {
		if _, err := debData(makeDeb(t, "zst", libFiles, libContents)); err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		deb := makeDeb(t, "xz", libFiles, libContents)
		if _, err := debData(deb[:len(deb)-40]); err == nil {
			t.Error("a truncated package was read")
		}
	})
	t.Run("not a deb", func(t *testing.T) {
		if _, err := debData([]byte("PK\x03\x04 a zip")); err == nil {
			t.Error("read")
		}
	})
}

func TestCABundle(t *testing.T) {
	cert, err := os.ReadFile(filepath.Join("testdata", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	files := []tar.Header{
		{Name: "./usr/share/ca-certificates/mozilla/B.crt", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "./usr/share/ca-certificates/mozilla/A.crt", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "./usr/sbin/update-ca-certificates", Typeflag: tar.TypeReg, Mode: 0o755},
		{Name: "./usr/share/doc/ca-certificates/copyright", Typeflag: tar.TypeReg, Mode: 0o644},
	}
	contents := map[string]string{
		"./usr/share/ca-certificates/mozilla/B.crt": string(cert),
		"./usr/share/ca-certificates/mozilla/A.crt": strings.TrimSuffix(string(cert), "\n"),
		"./usr/sbin/update-ca-certificates":         "#!/bin/sh",
		"./usr/share/doc/ca-certificates/copyright": "MPL",
	}
	tr := fsTree{}
	if err := addPackage(tr, debPackage{name: "ca-certificates", version: "1", use: "ca-bundle"}, makeDeb(t, "xz", files, contents)); err != nil {
		t.Fatal(err)
	}
	if len(tr) != 2 || tr["usr/share/doc/ca-certificates/copyright"].data == nil {
		t.Errorf("want the bundle and the copyright only, got %d files", len(tr))
	}
	if got, want := string(tr[caBundlePath].data), string(cert)+string(cert); got != want {
		t.Errorf("bundle:\n%s\nwant both certificates, each ending in a newline", got)
	}

	contents["./usr/share/ca-certificates/mozilla/A.crt"] = "garbage"
	if err := addPackage(fsTree{}, debPackage{name: "ca-certificates", use: "ca-bundle"}, makeDeb(t, "xz", files, contents)); err == nil {
		t.Error("a bundle with a broken certificate was made")
	}
}

func TestReadLock(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	lock := fmt.Sprintf(`# comment
libc6 2.36-9 amd64 files %[1]s debian/pool/main/g/glibc/libc6_2.36-9_amd64.deb
libc6 2.36-9 arm64 files %[1]s debian/pool/main/g/glibc/libc6_2.36-9_arm64.deb
ca-certificates 2025 all ca-bundle %[1]s debian-security/pool/updates/main/c/ca-certificates/ca-certificates_2025_all.deb
`, sum)
	pkgs, err := readLock(strings.NewReader(lock), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0].arch != "amd64" || pkgs[1].name != "ca-certificates" {
		t.Errorf("amd64 packages: %+v", pkgs)
	}
	for name, bad := range map[string]string{
		"fields":   "libc6 2.36 amd64 files " + sum,
		"use":      "libc6 2.36 amd64 all " + sum + " debian/pool/a.deb",
		"sha256":   "libc6 2.36 amd64 files ABC debian/pool/a.deb",
		"path":     "libc6 2.36 amd64 files " + sum + " ../../etc/passwd.deb",
		"no match": "libc6 2.36 s390x files " + sum + " debian/pool/a.deb",
	} {
		if _, err := readLock(strings.NewReader(bad), "amd64"); err == nil {
			t.Errorf("%s: %q accepted", name, bad)
		}
	}
	// The real lock parses, and pins glibc.
	f, err := os.Open("packages.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	real, err := readLock(f, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if real[0].name != "libc6" {
		t.Errorf("packages.lock: first package %s, want libc6", real[0].name)
	}
}

func TestFetcher(t *testing.T) {
	deb := makeDeb(t, "xz", libFiles, libContents)
	sum := sha256.Sum256(deb)
	p := debPackage{name: "libx", version: "1", arch: "amd64", use: "files", sha256: hex.EncodeToString(sum[:]), path: "debian/pool/main/l/libx/libx_1_amd64.deb"}
	var hits atomic.Int32
	body := deb
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+p.path { // the first mirror has nothing: the second is tried
			http.NotFound(w, r)
			return
		}
		hits.Add(1)
		w.Write(body)
	}))
	defer srv.Close()
	f := &fetcher{mirrors: mirrors{"debian": {srv.URL + "/nowhere", srv.URL + "/debian"}}, cacheDir: t.TempDir(), client: srv.Client()}
	ctx := context.Background()

	for i := 0; i < 2; i++ {
		got, err := f.fetch(ctx, p)
		if err != nil || !bytes.Equal(got, deb) {
			t.Fatalf("fetch %d: %v", i, err)
		}
	}
	if hits.Load() != 1 {
		t.Errorf("%d downloads, want 1 (then the cache)", hits.Load())
	}

	// A damaged cache entry is fetched again.
	os.WriteFile(filepath.Join(f.cacheDir, "libx_1_amd64.deb"), []byte("damaged"), 0o644)
	if _, err := f.fetch(ctx, p); err != nil || hits.Load() != 2 {
		t.Errorf("after damage: %v, %d downloads", err, hits.Load())
	}

	// A mirror serving other bytes is refused, and nothing is cached.
	body = append([]byte{}, deb...)
	body[len(body)-1] ^= 1
	f.cacheDir = t.TempDir()
	if _, err := f.fetch(ctx, p); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("tampered package: %v", err)
	}
	if entries, _ := os.ReadDir(f.cacheDir); len(entries) != 0 {
		t.Errorf("cache after a refused package: %v", entries)
	}

	// A package put in --deb-dir is used (and checked) before the mirror.
	f.debDir = t.TempDir()
	os.WriteFile(filepath.Join(f.debDir, "libx_1_amd64.deb"), deb, 0o644)
	before := hits.Load()
	if got, err := f.fetch(ctx, p); err != nil || !bytes.Equal(got, deb) || hits.Load() != before {
		t.Errorf("from --deb-dir: %v, %d downloads", err, hits.Load()-before)
	}
}

func TestVersions(t *testing.T) {
	if got := glibcVersion("2.36-9+deb12u14"); got != "2.36" {
		t.Errorf("glibcVersion: %s", got)
	}
	if got := glibcVersion("1:2.41-1"); got != "2.41" {
		t.Errorf("glibcVersion with an epoch: %s", got)
	}
	for _, c := range []struct {
		a, b string
		want bool
	}{{"2.34", "2.36", true}, {"2.36", "2.36", true}, {"2.38", "2.36", false}, {"2.3.4", "2.36", true}, {"2.2.5", "2.36", true}, {"3.0", "2.36", false}} {
		if got := versionAtMost(c.a, c.b); got != c.want {
			t.Errorf("versionAtMost(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

func TestCreatedTime(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1600000000")
	if got, err := createdTime(t.TempDir(), "1700000000"); err != nil || got.Unix() != 1700000000 {
		t.Errorf("flag: %v %v", got, err)
	}
	if got, err := createdTime(t.TempDir(), ""); err != nil || got.Unix() != 1600000000 {
		t.Errorf("SOURCE_DATE_EPOCH: %v %v", got, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if got, err := createdTime(t.TempDir(), ""); err != nil || got.Unix() != 0 {
		t.Errorf("outside git: %v %v, want the epoch", got, err)
	}
	if _, err := createdTime(t.TempDir(), "yesterday"); err == nil {
		t.Error("a non-number was accepted")
	}
}
