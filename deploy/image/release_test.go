package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// TestRelease builds the release twice as `make release` does (go run
// ./image -release) and checks that both are the same bytes; then what an
// operator verifies: SHA256SUMS, both binaries, the index's platforms,
// each image's user and entrypoint, and the SBOMs' Go modules and Debian
// packages. That the binaries are the same from an
// empty Go build cache is hack/release-check.sh's to show.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin for amd64 and arm64 (Debian's cross compiler: hack/cross.sh) and runs cyclonedx-gomod: run without -short")
	}
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	version, err := repo.Version(root)
	if err != nil {
		t.Fatal(err)
	}
	args := func(out string) []string {
		return []string{"-release", "-out", out, "-cyclonedx", cyclonedxBinary(t, root), "-revision", "0123456789abcdef0123456789abcdef01234567", "-created", "1700000000"}
	}
	// As make release runs it, and without the race detector's cost on
	// the compression of two 50 MB layers.
	build := func() string {
		dist := filepath.Join(t.TempDir(), "dist")
		out, err := exec.Command("go", append([]string{"run", "."}, args(dist)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go run ./image %s: %v\n%s", strings.Join(args(dist), " "), err, out)
		}
		t.Logf("%s", out)
		return dist
	}
	dist, again := build(), build()

	t.Run("reproducible", func(t *testing.T) { sameTree(t, dist, again) })
	t.Run("files", func(t *testing.T) {
		var got []string
		entries, _ := os.ReadDir(dist)
		for _, e := range entries {
			got = append(got, e.Name())
		}
		want := []string{sumsName, layoutName, ociTarName(version)}
		for _, arch := range []string{"amd64", "arm64"} {
			want = append(want, binaryName(version, arch), binaryName(version, arch)+sbomSuffix, imageSBOMName(version, arch))
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("dist holds %q, want %q", got, want)
		}
	})
	t.Run("SHA256SUMS", func(t *testing.T) { checkSums(t, dist) })
	images := checkIndex(t, dist, version)
	for arch, img := range images {
		t.Run("linux/"+arch, func(t *testing.T) {
			bin := readFile(t, filepath.Join(dist, binaryName(version, arch)))
			checkBinary(t, bin, arch, version)
			if !bytes.Equal(flatten(t, img)["trousseau"].data, bin) {
				t.Errorf("the image's /trousseau is not %s", binaryName(version, arch))
			}
			checkSBOMs(t, root, dist, version, arch, img, bin)
		})
	}
	t.Run("tarball is the layout", func(t *testing.T) { checkOCITar(t, dist, version) })
}

// cyclonedxBinary is what hack/cyclonedx.sh builds: $TROUSSEAU_CYCLONEDX,
// or the cache. A missing one fails the test.
func cyclonedxBinary(t *testing.T, root string) string {
	bin := os.Getenv("TROUSSEAU_CYCLONEDX")
	if bin == "" {
		home, _ := os.UserHomeDir()
		ver := ""
		for _, l := range strings.Split(string(readFile(t, filepath.Join(root, "hack", "versions.env"))), "\n") {
			if v, ok := strings.CutPrefix(l, "CYCLONEDX_GOMOD_VERSION="); ok {
				ver = v
			}
		}
		bin = filepath.Join(home, ".cache", "trousseau", "cyclonedx-gomod", ver, "cyclonedx-gomod")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("cyclonedx-gomod is not built (%v): run hack/cyclonedx.sh first (hack/test.sh does), or set TROUSSEAU_CYCLONEDX", err)
	}
	return bin
}

func sameTree(t *testing.T, a, b string) {
	n := 0
	filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		if other, err := os.ReadFile(filepath.Join(b, rel)); err != nil || !bytes.Equal(other, readFile(t, p)) {
			t.Errorf("%s differs between two builds (%v)", rel, err)
		}
		n++
		return nil
	})
	t.Logf("%d files compared", n)
}

// checkSums verifies SHA256SUMS as `sha256sum -c` does, and with it when
// the machine has it.
func checkSums(t *testing.T, dist string) {
	sums := readFile(t, filepath.Join(dist, sumsName))
	sc := bufio.NewScanner(bytes.NewReader(sums))
	n := 0
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		got := sha256.Sum256(readFile(t, filepath.Join(dist, file)))
		if !ok || hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %q does not match", sc.Text())
		}
		n++
	}
	if entries, _ := os.ReadDir(dist); n != len(entries)-2 { // all but SHA256SUMS and the layout directory
		t.Errorf("SHA256SUMS lists %d files, dist holds %d", n, len(entries)-2)
	}
	if _, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command("sha256sum", "-c", sumsName)
		cmd.Dir = dist
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	}
}

func checkBinary(t *testing.T, bin []byte, arch, version string) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		t.Errorf("ELF %v %v %v, want %v ELFCLASS64 ET_EXEC", f.Machine, f.Class, f.Type, machine)
	}
	if libs, _ := f.ImportedLibraries(); !slices.Contains(libs, "libc.so.6") {
		t.Errorf("libraries %q: want a cgo binary on glibc", libs)
	}
	if arch != runtime.GOARCH {
		return
	}
	p := filepath.Join(t.TempDir(), "trousseau")
	os.WriteFile(p, bin, 0o755)
	out, err := exec.Command(p, "version").Output()
	if got, _, _ := strings.Cut(string(out), "\n"); err != nil || got != version {
		t.Errorf("trousseau version: %q %v, want %s", got, err, version)
	}
}

// checkIndex opens the layout as crane or skopeo would: one index, named,
// with an image per platform, each running trousseau as 65532.
func checkIndex(t *testing.T, dist, version string) map[string]v1.Image {
	outer, err := layout.ImageIndexFromPath(filepath.Join(dist, layoutName))
	if err != nil {
		t.Fatal(err)
	}
	om, err := outer.IndexManifest()
	if err != nil || len(om.Manifests) != 1 || om.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("the layout's index.json: %+v %v, want one image index", om, err)
	}
	if a := om.Manifests[0].Annotations; a["org.opencontainers.image.ref.name"] != version || a["io.containerd.image.name"] != repo.Image(version) {
		t.Errorf("index annotations %v", a)
	}
	idx, err := outer.ImageIndex(om.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/trousseau"}) || cf.Architecture != d.Platform.Architecture || cf.OS != "linux" || c.Labels[labelVersion] != version {
			t.Errorf("%s: user %q entrypoint %q arch %s/%s version %s", d.Platform, c.User, c.Entrypoint, cf.OS, cf.Architecture, c.Labels[labelVersion])
		}
		images[d.Platform.Architecture] = img
	}
	if want := []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(platforms, want) {
		t.Errorf("index platforms %q, want %q", platforms, want)
	}
	return images
}

// checkSBOMs: the Go modules of go.mod at their versions in both SBOMs,
// the binary's hash, and in the image's, the image digest and the pinned
// Debian packages.
func checkSBOMs(t *testing.T, root, dist, version, arch string, img v1.Image, bin []byte) {
	binDoc := readSBOM(t, filepath.Join(dist, binaryName(version, arch)+sbomSuffix))
	imgDoc := readSBOM(t, filepath.Join(dist, imageSBOMName(version, arch)))
	gomod := string(readFile(t, filepath.Join(root, "go.mod")))
	for _, mod := range []string{"google.golang.org/grpc", "k8s.io/kms"} {
		want := requiredVersion(t, gomod, mod)
		for name, doc := range map[string]object{"binary": binDoc, "image": imgDoc} {
			if got := componentVersions(doc)[mod]; got != want {
				t.Errorf("%s SBOM: %s %q, go.mod requires %s", name, mod, got, want)
			}
		}
	}
	sum := sha256.Sum256(bin)
	if h := hashOf(t, binDoc["metadata"].(object)["component"]); h != hex.EncodeToString(sum[:]) {
		t.Errorf("binary SBOM: main component SHA-256 %s, the binary's %x", h, sum)
	}
	digest, _ := img.Digest()
	if h := hashOf(t, imgDoc["metadata"].(object)["component"]); h != digest.Hex {
		t.Errorf("image SBOM: image SHA-256 %s, the image's digest %s", h, digest)
	}
	pkgs, err := readLock(bytes.NewReader(readFile(t, "packages.lock")), arch)
	if err != nil {
		t.Fatal(err)
	}
	versions := componentVersions(imgDoc)
	for _, p := range pkgs {
		if versions[p.name] != p.version {
			t.Errorf("image SBOM: %s %q, packages.lock pins %s", p.name, versions[p.name], p.version)
		}
	}
}

func readSBOM(t *testing.T, path string) object {
	doc, err := decodeJSON(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if doc["bomFormat"] != "CycloneDX" || doc["serialNumber"] != nil || doc["metadata"].(object)["timestamp"] != nil {
		t.Errorf("%s: bomFormat %v, serialNumber %v, timestamp %v: want CycloneDX and no serial number or time", path, doc["bomFormat"], doc["serialNumber"], doc["metadata"].(object)["timestamp"])
	}
	return doc
}

func componentVersions(doc object) map[string]string {
	out := map[string]string{}
	comps, _ := doc["components"].([]any)
	for _, c := range comps {
		c := c.(object)
		out[c["name"].(string)], _ = c["version"].(string)
	}
	return out
}

func hashOf(t *testing.T, c any) string {
	hashes, _ := c.(object)["hashes"].([]any)
	for _, h := range hashes {
		if h.(object)["alg"] == "SHA-256" {
			return h.(object)["content"].(string)
		}
	}
	t.Errorf("component %v has no SHA-256", c.(object)["name"])
	return ""
}

// requiredVersion is mod's version in a go.mod's require lines.
func requiredVersion(t *testing.T, gomod, mod string) string {
	for _, l := range strings.Split(gomod, "\n") {
		l, _, _ = strings.Cut(l, "//")
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "require "))
		if len(f) == 2 && f[0] == mod {
			return f[1]
		}
	}
	t.Fatalf("go.mod does not require %s", mod)
	return ""
}

// checkOCITar: the tarball holds the layout's files, byte for byte.
func checkOCITar(t *testing.T, dist, version string) {
	tr := tar.NewReader(bytes.NewReader(readFile(t, filepath.Join(dist, ociTarName(version)))))
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, _ := io.ReadAll(tr)
		if !bytes.Equal(b, readFile(t, filepath.Join(dist, layoutName, h.Name))) {
			t.Errorf("%s in the tarball is not the layout's", h.Name)
		}
		n++
	}
	if n < 7 { // oci-layout, index.json, the image index, 2 x (manifest, config) and layers
		t.Errorf("the tarball holds %d files", n)
	}
}
