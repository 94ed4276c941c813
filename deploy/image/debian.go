package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// debPackage is one line of packages.lock.
type debPackage struct {
	name, version, arch, use, sha256, path string
}

func (p debPackage) String() string { return p.name + " " + p.version }

var (
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	debPathRE = regexp.MustCompile(`^[a-z-]+/pool/[A-Za-z0-9+.~_/-]+\.deb$`)
)

// readLock parses packages.lock and returns the packages for arch (those of
// that architecture and those for all).
func readLock(r io.Reader, arch string) ([]debPackage, error) {
	var pkgs []debPackage
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 {
			return nil, fmt.Errorf("packages.lock:%d: want 6 fields (name version arch use sha256 path), got %d", n, len(f))
		}
		p := debPackage{name: f[0], version: f[1], arch: f[2], use: f[3], sha256: f[4], path: f[5]}
		switch {
		case p.use != "files" && p.use != "ca-bundle":
			return nil, fmt.Errorf("packages.lock:%d: use %q is not files or ca-bundle", n, p.use)
		case !sha256RE.MatchString(p.sha256):
			return nil, fmt.Errorf("packages.lock:%d: sha256 %q is not 64 lowercase hex digits", n, p.sha256)
		case !debPathRE.MatchString(p.path) || strings.Contains(p.path, ".."):
			return nil, fmt.Errorf("packages.lock:%d: path %q is not <archive>/pool/.../<file>.deb", n, p.path)
		}
		if p.arch == arch || p.arch == "all" {
			pkgs = append(pkgs, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("packages.lock has no package for %s", arch)
	}
	return pkgs, nil
}

// fetcher gets pinned .deb files: from the cache, from a directory the
// operator filled (apt-get download), or from the mirror; always checked
// against the pinned SHA-256 before use.
type fetcher struct {
	mirrors  mirrors
	cacheDir string // ~/.cache/trousseau/debian
	debDir   string // optional
	client   *http.Client
}

func (f *fetcher) fetch(ctx context.Context, p debPackage) ([]byte, error) {
	file := path.Base(p.path)
	cached := filepath.Join(f.cacheDir, file)
	if b, err := os.ReadFile(cached); err == nil {
		if checkSHA256(b, p.sha256) == nil {
			return b, nil
		}
		os.Remove(cached) // damaged: fetch it again
	}
	if f.debDir != "" {
		if b, err := os.ReadFile(filepath.Join(f.debDir, file)); err == nil {
			if err := checkSHA256(b, p.sha256); err != nil {
				return nil, fmt.Errorf("%s in %s: %w", file, f.debDir, err)
			}
			return b, f.store(cached, b)
		}
	}
	urls, err := f.mirrors.urls(p.path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w, or put %s in --deb-dir", p, err, file)
	}
	var b []byte
	for _, url := range urls {
		if b, err = f.download(ctx, url); err == nil {
			if err := checkSHA256(b, p.sha256); err != nil {
				return nil, fmt.Errorf("%s from %s: %w", p, url, err)
			}
			return b, f.store(cached, b)
		}
	}
	return nil, fmt.Errorf("%s: %w (if the mirror no longer has this version, pin a newer one in packages.lock, or put the file in --deb-dir)", p, err)
}

func (f *fetcher) download(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDebMember+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(b) > maxDebMember {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", url, maxDebMember)
	}
	return b, nil
}

// store writes a verified package into the cache, whole or not at all.
func (f *fetcher) store(dst string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func checkSHA256(b []byte, want string) error {
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("SHA-256 %s, pinned %s", got, want)
	}
	return nil
}

// addPackage puts what the image needs of a package into t.
func addPackage(t fsTree, p debPackage, deb []byte) error {
	files, err := debData(deb)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	from := "package " + p.String()
	if p.use == "ca-bundle" {
		return addCABundle(t, p, files)
	}
	for _, f := range files {
		if f.typ == tar.TypeDir || !keepFile(f.path) {
			continue // parents come with the files; empty directories are not needed
		}
		n := node{typ: f.typ, mode: f.mode, link: f.link, data: f.data, from: from}
		if err := t.add(f.path, n); err != nil {
			return err
		}
	}
	return nil
}

// keepFile keeps a package's libraries and configuration, and of
// /usr/share only the copyright files (docs, man pages, lintian overrides,
// debugger scripts are of no use in the image).
func keepFile(p string) bool {
	if !strings.HasPrefix(p, "usr/share/") {
		return true
	}
	return strings.HasPrefix(p, "usr/share/doc/") && path.Base(p) == "copyright" && strings.Count(p, "/") == 4
}

// caBundlePath is where Go's crypto/x509 (and OpenSSL) look first on a
// Debian system.
const caBundlePath = "etc/ssl/certs/ca-certificates.crt"

// addCABundle makes the bundle update-ca-certificates would: every
// certificate the package ships, in path order, one PEM file.
func addCABundle(t fsTree, p debPackage, files []debFile) error {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var bundle bytes.Buffer
	count := 0
	for _, f := range files {
		switch {
		case f.typ == tar.TypeReg && strings.HasPrefix(f.path, "usr/share/ca-certificates/") && strings.HasSuffix(f.path, ".crt"):
			if err := checkPEMCertificate(f.data); err != nil {
				return fmt.Errorf("%s: %s: %w", p, f.path, err)
			}
			bundle.Write(f.data)
			if !bytes.HasSuffix(f.data, []byte("\n")) {
				bundle.WriteByte('\n')
			}
			count++
		case f.typ == tar.TypeReg && keepFile(f.path) && strings.HasPrefix(f.path, "usr/share/doc/"):
			if err := t.add(f.path, node{typ: tar.TypeReg, mode: f.mode, data: f.data, from: "package " + p.String()}); err != nil {
				return err
			}
		}
	}
	if count == 0 {
		return fmt.Errorf("%s: no certificates under /usr/share/ca-certificates", p)
	}
	return t.addFile(caBundlePath, 0o644, bundle.Bytes(), fmt.Sprintf("package %s (%d certificates)", p, count))
}

func checkPEMCertificate(b []byte) error {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return errors.New("not a PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("more than one PEM block")
	}
	_, err := x509.ParseCertificate(block.Bytes)
	return err
}
