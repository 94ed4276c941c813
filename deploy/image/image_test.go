package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// TestImage builds the image twice through `make image`'s own code path
// (run, as `go run ./image` does), checks that both builds are the same
// bytes, opens the result as an operator's tools would, and runs the
// binary it holds on the image's own glibc.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin and fetches the pinned Debian packages (cached in ~/.cache/trousseau/debian): run without -short")
	}
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	version, err := repo.Version(root)
	if err != nil {
		t.Fatal(err)
	}
	const revision = "0123456789abcdef0123456789abcdef01234567"
	created := time.Unix(1700000000, 0).UTC()
	build := func() outputs {
		out := t.TempDir()
		var log bytes.Buffer
		args := []string{"-out", out, "-revision", revision, "-created", "1700000000"}
		if err := run(context.Background(), args, &log); err != nil {
			t.Fatalf("image %s: %v", strings.Join(args, " "), err)
		}
		t.Logf("%s", log.String())
		return outputs{layoutDir: filepath.Join(out, "oci"), tarPath: filepath.Join(out, "trousseau-"+version+".tar")}
	}
	first, second := build(), build()

	t.Run("reproducible", func(t *testing.T) {
		for _, f := range []string{"index.json", "oci-layout"} {
			if a, b := readFile(t, filepath.Join(first.layoutDir, f)), readFile(t, filepath.Join(second.layoutDir, f)); !bytes.Equal(a, b) {
				t.Errorf("%s differs between two builds:\n%s\n%s", f, a, b)
			}
		}
		if a, b := sha256.Sum256(readFile(t, first.tarPath)), sha256.Sum256(readFile(t, second.tarPath)); a != b {
			t.Errorf("the tarballs of two builds differ")
		}
	})

	img := openLayout(t, first.layoutDir, version)
	digest, _ := img.Digest()
	t.Logf("image %s", digest)

	t.Run("manifest", func(t *testing.T) {
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("media types %s, %s: want OCI", m.MediaType, m.Config.MediaType)
		}
		if len(m.Layers) != 2 {
			t.Fatalf("%d layers, want 2 (base, binary)", len(m.Layers))
		}
		for _, l := range m.Layers {
			if l.MediaType != types.OCILayer {
				t.Errorf("layer media type %s", l.MediaType)
			}
		}
	})

	t.Run("config", func(t *testing.T) {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("user %q, want 65532:65532", c.User)
		}
		if strings.Join(c.Entrypoint, " ") != "/trousseau" || len(c.Cmd) != 0 {
			t.Errorf("entrypoint %q cmd %q, want [/trousseau] and no cmd", c.Entrypoint, c.Cmd)
		}
		if cf.OS != "linux" || cf.Architecture == "" || !cf.Created.Time.Equal(created) {
			t.Errorf("os %s arch %s created %v", cf.OS, cf.Architecture, cf.Created)
		}
		want := map[string]string{
			"org.opencontainers.image.source":   "https://github.com/trousseau-io/trousseau",
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.revision": revision,
			"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
		}
		for k, v := range want {
			if c.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
			}
		}
		for _, h := range cf.History {
			if !h.Created.Time.Equal(created) {
				t.Errorf("history %q created %v", h.CreatedBy, h.Created)
			}
		}
	})

	files := flatten(t, img)
	t.Run("files", func(t *testing.T) {
		bin := files["trousseau"]
		if bin.h == nil || bin.h.Typeflag != tar.TypeReg || bin.h.Mode != 0o755 || bin.h.Uid != 0 {
			t.Fatalf("/trousseau: %+v, want a root-owned 0755 file", bin.h)
		}
		if !lastLayerHolds(t, img, "trousseau") {
			t.Error("the binary is not in the last layer alone")
		}
		for p, f := range files {
			if !f.h.ModTime.Equal(created) {
				t.Errorf("/%s: mtime %v, want %v", p, f.h.ModTime, created)
			}
		}
		if !strings.Contains(string(files["etc/passwd"].data), "\nnonroot:x:65532:65532:") ||
			!strings.Contains(string(files["etc/group"].data), "\nnonroot:x:65532:") {
			t.Errorf("/etc/passwd or /etc/group lack nonroot 65532:\n%s%s", files["etc/passwd"].data, files["etc/group"].data)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(files[caBundlePath].data) || bytes.Count(files[caBundlePath].data, []byte("BEGIN CERTIFICATE")) < 100 {
			t.Errorf("/%s: not a bundle of the Mozilla roots", caBundlePath)
		}
		if tmp := files["tmp"].h; tmp == nil || tmp.Mode != 0o1777 {
			t.Errorf("/tmp: %+v, want mode 1777", tmp)
		}
		for _, p := range []string{"usr/share/doc/libc6/copyright", "etc/nsswitch.conf", "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libgcc_s.so.1", "usr/lib/x86_64-linux-gnu/libstdc++.so.6"} {
			if _, ok := files[p]; !ok && cfArch(t, img) == "amd64" {
				t.Errorf("/%s missing", p)
			}
		}
		for p := range files {
			if strings.HasPrefix(p, "bin/") || strings.HasPrefix(p, "usr/bin/") || strings.HasPrefix(p, "usr/share/man/") {
				t.Errorf("/%s: the image should have no shell, tools or man pages", p)
			}
		}
	})

	t.Run("binary", func(t *testing.T) {
		rootfs := extract(t, files)
		// The first line is the version; the second, the FIPS mode.
		got, fips, _ := strings.Cut(strings.TrimSpace(runIn(t, rootfs, files, "version")), "\n")
		if !strings.HasPrefix(fips, "FIPS 140-3 mode off, Go Cryptographic Module latest") {
			t.Errorf("trousseau version in the default image says %q", fips)
		}
		appVersion, _, err := repo.ChartAppVersion(root)
		if err != nil {
			t.Fatal(err)
		}
		if got != version || got != appVersion {
			t.Errorf("trousseau version in the image: %q; VERSION %q, the chart's appVersion %q", got, version, appVersion)
		}
		images, err := repo.ManifestImages(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range images {
			if _, tag, _ := strings.Cut(m.Image, ":"); tag != got {
				t.Errorf("%s: image %s, but the image's binary is %s", m.File, m.Image, got)
			}
		}
		if len(images) == 0 {
			t.Error("no image reference found in deploy/")
		}
	})

	t.Run("build info", func(t *testing.T) {
		bin := files["trousseau"].data
		bi, err := buildinfo.Read(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("/trousseau has no Go build info: %v", err)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if want := mainModule(t, root) + "/cmd/trousseau"; bi.Path != want {
			t.Errorf("built from %s, want %s", bi.Path, want)
		}
		if settings["-trimpath"] != "true" {
			t.Errorf("not built with -trimpath: %v", bi.Settings)
		}
		// With -trimpath, go build records no -ldflags (go.dev/issue/52372):
		// the version stamp is checked by running `trousseau version`
		// (the binary subtest above).
		if settings["CGO_ENABLED"] != "1" {
			t.Errorf("CGO_ENABLED=%q, want 1 (the pkcs11 backend needs cgo)", settings["CGO_ENABLED"])
		}
		for k, v := range settings {
			if strings.HasPrefix(k, "vcs") {
				t.Errorf("build setting %s=%s: the binary should depend on the sources only (-buildvcs=false)", k, v)
			}
		}
		// What -trimpath is for: no path of the machine that built it.
		if bytes.Contains(bin, []byte(root+string(filepath.Separator))) {
			t.Errorf("/trousseau holds the build's repository path %s", root)
		}
	})

	t.Run("tarball for docker load", func(t *testing.T) {
		tag, err := name.NewTag(repo.Image(version))
		if err != nil {
			t.Fatal(err)
		}
		loaded, err := tarball.ImageFromPath(first.tarPath, &tag)
		if err != nil {
			t.Fatalf("%s does not hold %s: %v", first.tarPath, tag, err)
		}
		a, _ := loaded.ConfigName()
		b, _ := img.ConfigName()
		if a != b {
			t.Errorf("the tarball's image %s is not the layout's %s", a, b)
		}
	})
}

// mainModule is the module path in the go.mod at root.
func mainModule(t *testing.T, root string) string {
	t.Helper()
	for _, l := range strings.Split(string(readFile(t, filepath.Join(root, "go.mod"))), "\n") {
		if m, ok := strings.CutPrefix(l, "module "); ok {
			return strings.TrimSpace(m)
		}
	}
	t.Fatalf("%s/go.mod has no module line", root)
	return ""
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openLayout opens the OCI layout as crane or skopeo would, and finds the
// one image, named for containerd and for skopeo.
func openLayout(t *testing.T, dir, version string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%d manifests in the layout, want 1", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Annotations["io.containerd.image.name"] != repo.Image(version) || d.Annotations["org.opencontainers.image.ref.name"] != version {
		t.Errorf("layout annotations %v", d.Annotations)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func cfArch(t *testing.T, img v1.Image) string {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.Architecture
}

type imageFile struct {
	h    *tar.Header
	data []byte
}

// flatten reads the image's filesystem (every layer applied).
func flatten(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.Trim(h.Name, "/")] = imageFile{h: h, data: data}
	}
}

func lastLayerHolds(t *testing.T, img v1.Image, path string) bool {
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return len(names) == 1 && names[0] == path
}

// extract writes the image's filesystem into a directory.
func extract(t *testing.T, files map[string]imageFile) string {
	t.Helper()
	root := t.TempDir()
	os.Chmod(root, 0o755) // the image's "/" when it is chrooted into
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	// Parents first: "a" < "a/b".
	sort.Strings(paths)
	for _, p := range paths {
		f := files[p]
		dst := filepath.Join(root, filepath.FromSlash(p))
		var err error
		switch f.h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(f.h.Linkname, dst)
		case tar.TypeReg:
			err = os.WriteFile(dst, f.data, os.FileMode(f.h.Mode).Perm())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// runIn runs the image's /trousseau with args on the image's own glibc: as
// root, chrooted into the image as 65532:65532 (what a container runtime
// does, minus namespaces); otherwise through the image's dynamic loader
// and libraries.
func runIn(t *testing.T, rootfs string, files map[string]imageFile, args ...string) string {
	t.Helper()
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("/trousseau", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
		cmd.Dir = "/"
		cmd.Env = []string{pathEnv, caEnv}
		t.Log("running /trousseau chrooted into the image as 65532:65532")
	} else {
		f, err := elf.NewFile(bytes.NewReader(files["trousseau"].data))
		if err != nil {
			t.Fatal(err)
		}
		interp := ""
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				p.ReadAt(b, 0)
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
		loader := resolveIn(t, files, interp)
		triplet := multiarch[runtimeArch(f)]
		libs := filepath.Join(rootfs, "lib", triplet) + ":" + filepath.Join(rootfs, "usr", "lib", triplet)
		cmd = exec.Command(filepath.Join(rootfs, loader), append([]string{"--library-path", libs, filepath.Join(rootfs, "trousseau")}, args...)...)
		t.Logf("running /trousseau through the image's loader /%s", loader)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("trousseau %s in the image: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func resolveIn(t *testing.T, files map[string]imageFile, p string) string {
	t.Helper()
	tree := fsTree{}
	for k, f := range files {
		tree[k] = node{typ: f.h.Typeflag, link: f.h.Linkname}
	}
	key, _, err := tree.resolve(p)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func runtimeArch(f *elf.File) string {
	if f.Machine == elf.EM_AARCH64 {
		return "arm64"
	}
	return "amd64"
}
