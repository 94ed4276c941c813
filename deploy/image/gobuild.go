package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// binaryPath is where the image holds the plugin: the path every manifest
// and the chart run (command: ["/trousseau", "serve", ...]).
const binaryPath = "/trousseau"

// goBuildArgs are the arguments of the image's `go build`, run at the
// repository's root with CGO_ENABLED=1. The Dockerfile's builder stage runs
// the same command (dockerfile_test.go checks it): -trimpath and no VCS
// stamp, so that the binary depends on the sources only, and the version
// stamped from VERSION.
func goBuildArgs(version, out string) []string {
	return []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid= -X main.version=" + version, "-o", out, "./cmd/trousseau"}
}

// fipsEnv is the environment setting of a FIPS build, "" otherwise.
func fipsEnv(fips bool) string {
	if fips {
		return "GOFIPS140=" + fipsModule + " "
	}
	return ""
}

// goEnv is the environment of the build of linux/arch with cgo (the
// pkcs11 backend needs it, and the image has glibc). The main module alone
// decides, with nothing of the caller's GOFLAGS (a -race or -cover would
// change the binary).
func goEnv(o buildOptions) []string {
	env := append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+o.arch, "GOWORK=off", "GOFLAGS=", "GOFIPS140=off")
	if o.cc != "" {
		env = append(env, "CC="+o.cc)
	}
	if o.fips {
		env = append(env, strings.TrimSpace(fipsEnv(o.fips)))
	}
	return env
}

// compile builds the plugin and returns the binary; fips builds it with
// the frozen Go Cryptographic Module.
func compile(ctx context.Context, o buildOptions) ([]byte, error) {
	dir, err := os.MkdirTemp("", "trousseau-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "trousseau")
	cmd := exec.CommandContext(ctx, "go", goBuildArgs(o.version, out)...)
	cmd.Dir = o.root
	cmd.Env = goEnv(o)
	if msg, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if o.cc != "" && strings.Contains(string(msg), o.cc) {
			hint = "\nthe cgo build for " + o.arch + " needs a cross C compiler: hack/cross.sh installs Debian's (or set CC_" + o.arch + ")"
		} else if strings.Contains(string(msg), "C compiler") {
			hint = "\nthe cgo build needs a C compiler and glibc's headers (Debian: apt-get install gcc libc6-dev)"
		}
		return nil, fmt.Errorf("GOARCH=%s go %s: %w\n%s%s", o.arch, strings.Join(goBuildArgs(o.version, out), " "), err, msg, hint)
	}
	return os.ReadFile(out)
}

// crossCC is the C compiler for arch: CC_<arch> if set (getenv), "" on a
// host of that architecture (go's default), else Debian's cross compiler
// (hack/cross.sh installs the one for arm64).
func crossCC(arch string, getenv func(string) string) string {
	if cc := getenv("CC_" + arch); cc != "" {
		return cc
	}
	if arch == runtime.GOARCH {
		return ""
	}
	return multiarch[arch] + "-gcc"
}

// multiarch is Debian's library directory name of each architecture.
var multiarch = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// archVariant is the platform variant of each architecture in the index
// and the config, as other builders write it.
var archVariant = map[string]string{"arm64": "v8"}

// checkLinkage makes sure the binary runs on the image's base: its
// program interpreter and every library it needs are in the tree, and it
// asks for no glibc symbol version newer than the glibc there (a binary
// linked on a newer host would fail at start with "GLIBC_2.xx not found").
func checkLinkage(bin []byte, base fsTree, arch, glibc string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("the binary is not ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return err
		}
		interp := strings.TrimRight(string(b), "\x00")
		if _, _, err := base.resolve(interp); err != nil {
			return fmt.Errorf("the binary's interpreter %s: %w", interp, err)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if !base.hasLibrary(lib, multiarch[arch]) {
			return fmt.Errorf("the binary needs %s, which the image does not have", lib)
		}
	}
	needs, err := f.DynamicVersionNeeds()
	if err != nil {
		return nil // no version section: nothing more to check
	}
	for _, n := range needs {
		for _, d := range n.Needs {
			v, ok := strings.CutPrefix(d.Dep, "GLIBC_")
			if ok && !versionAtMost(v, glibc) {
				return fmt.Errorf("the binary needs %s from %s, newer than the image's glibc %s: build on a host whose glibc is at most %s (Debian 12, or the Dockerfile)", d.Dep, n.Name, glibc, glibc)
			}
		}
	}
	return nil
}

// resolve follows symlinks inside the tree to the node a path names, and
// returns that node's path too.
func (t fsTree) resolve(p string) (string, node, error) {
	for hops := 0; hops < 16; hops++ {
		key, err := cleanPath(p)
		if err != nil {
			return "", node{}, err
		}
		n, ok := t[key]
		if !ok {
			return "", node{}, fmt.Errorf("/%s is not in the image", key)
		}
		if n.typ != tar.TypeSymlink {
			return key, n, nil
		}
		if strings.HasPrefix(n.link, "/") {
			p = n.link
		} else {
			p = path.Join(path.Dir("/"+key), n.link)
		}
	}
	return "", node{}, fmt.Errorf("%s: too many symlinks", p)
}

func (t fsTree) hasLibrary(name, triplet string) bool {
	for _, dir := range []string{"lib/" + triplet, "usr/lib/" + triplet, "lib", "usr/lib"} {
		if _, n, err := t.resolve(dir + "/" + name); err == nil && n.typ == tar.TypeReg {
			return true
		}
	}
	return false
}

// glibcVersion is the upstream version of a libc6 package version
// ("2.36-9+deb12u14" is glibc 2.36).
func glibcVersion(debVersion string) string {
	v, _, _ := strings.Cut(debVersion, "-")
	if _, after, ok := strings.Cut(v, ":"); ok { // an epoch
		v = after
	}
	return v
}

// versionAtMost compares dotted numeric versions: 2.34 <= 2.36.
func versionAtMost(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return true
}
