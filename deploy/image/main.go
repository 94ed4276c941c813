// Command image builds Trousseau's container image without a container
// runtime: it compiles the plugin (cgo, -trimpath, the version of the
// VERSION file), adds it to a base of pinned Debian 12 packages (glibc, the
// GCC runtime, CA certificates) and writes a reproducible OCI image, as an
// OCI layout directory and as a tarball for `docker load`.
//
//	cd deploy && go run ./image            (what `make image` runs)
//
// The same sources, packages.lock, toolchain and -created time always give
// the same image digest. docs/packaging.md has the load and push commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// run is the whole command, for main and for the tests.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	f, err := parseFlags(root, args)
	if err != nil {
		return err
	}
	o, err := f.buildOptions(root)
	if err != nil {
		return err
	}
	if f.release {
		return runRelease(ctx, o, f, stdout)
	}
	img, err := buildImage(ctx, o)
	if err != nil {
		return err
	}
	out, err := writeImage(img.Image, f.outDir, o.tag())
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `image %s (linux/%s)
  digest      %s
  OCI layout  %s
  tarball     %s
load it:  docker load -i %[5]s   (or podman load -i, ctr -n k8s.io images import)
push it:  crane push %[5]s %[1]s
`, repo.Image(o.tag()), o.arch, digest, out.layoutDir, out.tarPath)
	return nil
}

// flags are the command line.
type flags struct {
	outDir, version, revision, created, arch, mirror, debDir, cacheDir string
	fips, release, binariesOnly                                        bool
	platforms                                                          []string // architectures
	cyclonedx                                                          string
}

func parseFlags(root string, args []string) (flags, error) {
	var f flags
	home, _ := os.UserHomeDir()
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&f.outDir, "out", "", "output directory (default bin/image: oci/ (OCI layout) and trousseau-<version>.tar; with -release, dist)")
	fs.StringVar(&f.version, "version", "", "version to stamp and tag (default: the VERSION file)")
	fs.StringVar(&f.revision, "revision", "", "org.opencontainers.image.revision (default: git's HEAD, -dirty if the tree is)")
	fs.StringVar(&f.created, "created", "", "time of every timestamp in the image, Unix seconds (default: $SOURCE_DATE_EPOCH, else HEAD's commit time, else 0)")
	fs.StringVar(&f.arch, "arch", runtime.GOARCH, "architecture (packages.lock must pin its packages; cross-compiling uses $CC_<arch>, else Debian's <triplet>-gcc)")
	fs.StringVar(&f.mirror, "debian-mirror", "", "Debian mirror: a URL holding debian/ and debian-security/, or debian=URL,debian-security=URL (default: the build host's apt sources)")
	fs.StringVar(&f.debDir, "deb-dir", "", "directory to take the pinned .deb files from before the mirror (e.g. filled by apt-get download)")
	fs.BoolVar(&f.fips, "fips", false, "build with the frozen Go Cryptographic Module (GOFIPS140="+fipsModule+", FIPS 140-3 mode on by default) and tag <version>-fips")
	fs.StringVar(&f.cacheDir, "cache", filepath.Join(home, ".cache", "trousseau", "debian"), "cache of verified .deb files")
	fs.BoolVar(&f.release, "release", false, "write a release into an empty -out: a binary and an image per -platforms, the image index as an OCI layout and a tarball, CycloneDX SBOMs, SHA256SUMS")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "with -release: the platforms built")
	fs.BoolVar(&f.binariesOnly, "binaries-only", false, "with -release: the binaries and SHA256SUMS alone")
	fs.StringVar(&f.cyclonedx, "cyclonedx", "", "with -release: the cyclonedx-gomod binary that writes the SBOMs' Go modules (hack/cyclonedx.sh builds it)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(*platforms, ",") {
		arch, ok := strings.CutPrefix(p, "linux/")
		if _, known := multiarch[arch]; !ok || !known {
			return f, fmt.Errorf("-platforms: %q is not linux/amd64 or linux/arm64", p)
		}
		f.platforms = append(f.platforms, arch)
	}
	if _, ok := multiarch[f.arch]; !ok {
		return f, fmt.Errorf("-arch %s: not supported (amd64, arm64)", f.arch)
	}
	if f.release && (f.fips || (f.cyclonedx == "" && !f.binariesOnly)) {
		return f, errors.New("-release: needs -cyclonedx (hack/cyclonedx.sh prints it), and builds no -fips release")
	}
	if f.outDir == "" {
		f.outDir = filepath.Join(root, "bin", "image")
		if f.release {
			f.outDir = filepath.Join(root, "dist")
		}
	}
	return f, nil
}

// buildOptions are the inputs common to every platform (arch is -arch's).
func (f flags) buildOptions(root string) (buildOptions, error) {
	o := buildOptions{root: root, version: f.version, revision: f.revision, arch: f.arch, cc: crossCC(f.arch, os.Getenv), fips: f.fips}
	var err error
	if o.version == "" {
		if o.version, err = repo.Version(root); err != nil {
			return o, err
		}
	} else if err := repo.CheckVersion(o.version); err != nil {
		return o, err
	}
	if o.revision == "" {
		o.revision = gitRevision(root)
	}
	if o.created, err = createdTime(root, f.created); err != nil {
		return o, err
	}
	o.fetcher = &fetcher{cacheDir: f.cacheDir, debDir: f.debDir, client: &http.Client{Timeout: 5 * time.Minute}}
	if f.mirror != "" {
		o.fetcher.mirrors, err = parseMirrorFlag(f.mirror)
	} else {
		o.fetcher.mirrors, err = hostMirrors(aptDir)
	}
	return o, err
}

// gitRevision is HEAD's commit, "-dirty" when the tree has changes, or
// "unknown" outside a git checkout. Nothing is written to the repository
// (GIT_OPTIONAL_LOCKS=0 keeps status from refreshing the index).
func gitRevision(root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
		b, err := cmd.Output()
		return strings.TrimSpace(string(b)), err
	}
	head, err := git("rev-parse", "HEAD")
	if err != nil || head == "" {
		return "unknown"
	}
	if status, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && status != "" {
		head += "-dirty"
	}
	return head
}

// createdTime picks the one timestamp of the image: the flag, then
// SOURCE_DATE_EPOCH (the reproducible-builds convention), then the commit
// time of HEAD, then the Unix epoch. Never the clock.
func createdTime(root, flagValue string) (time.Time, error) {
	v := flagValue
	if v == "" {
		v = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if v == "" {
		cmd := exec.Command("git", "-C", root, "log", "-1", "--format=%ct")
		if b, err := cmd.Output(); err == nil {
			v = strings.TrimSpace(string(b))
		}
	}
	if v == "" {
		v = "0"
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("created time %q: want Unix seconds", v)
	}
	return time.Unix(secs, 0).UTC(), nil
}
