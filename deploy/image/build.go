package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// What the image runs as and how; the Dockerfile must say the same
// (dockerfile_test.go checks).
const (
	// imageUser is distroless's "nonroot", the uid and gid the manifests
	// run the pod as.
	imageUser = "65532:65532"
	caEnv     = "SSL_CERT_FILE=/" + caBundlePath
	pathEnv   = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// The OCI labels of the image (also set by the Dockerfile).
const (
	labelSource   = "org.opencontainers.image.source"
	labelVersion  = "org.opencontainers.image.version"
	labelRevision = "org.opencontainers.image.revision"
	labelCreated  = "org.opencontainers.image.created"
	labelTitle    = "org.opencontainers.image.title"
	labelDesc     = "org.opencontainers.image.description"
)

const description = "Trousseau: a Kubernetes KMS v2 plugin with k-of-n threshold custody over several KMS backends"

// buildOptions are the inputs of an image. The same inputs (with the same
// Go toolchain and C compiler) always give the same image digest.
type buildOptions struct {
	root     string    // the repository
	version  string    // stamped into the binary, the tag and the labels
	revision string    // the source revision label
	created  time.Time // every timestamp in the image
	arch     string
	cc       string // the C compiler for arch; "" for go's default
	fips     bool   // GOFIPS140=fipsModule, tag <version>-fips
	fetcher  *fetcher
}

// builtImage is an image with what it was made of, for the release's
// binaries and SBOMs.
type builtImage struct {
	v1.Image
	arch string
	bin  []byte       // /trousseau
	pkgs []debPackage // the base layer's packages
}

// fipsModule is the frozen Go Cryptographic Module of a -fips image: the
// one validated (CMVP) at the time of writing; docs/fips.md.
const fipsModule = "v1.0.0"

// tag is the image's tag: the version, with -fips for a FIPS build (the
// binary's own version stays the release's).
func (o buildOptions) tag() string {
	if o.fips {
		return o.version + "-fips"
	}
	return o.version
}

// buildImage compiles the plugin and assembles the image: a base layer
// (glibc, the GCC runtime, CA certificates, passwd/group for nonroot) and
// a layer with the binary alone, so that a new release changes one small
// layer.
func buildImage(ctx context.Context, o buildOptions) (builtImage, error) {
	base, glibc, pkgs, err := baseTree(ctx, o)
	if err != nil {
		return builtImage{}, err
	}
	bin, err := compile(ctx, o)
	if err != nil {
		return builtImage{}, err
	}
	if err := checkLinkage(bin, base, o.arch, glibc); err != nil {
		return builtImage{}, err
	}
	img, err := assemble(o, base, bin, pkgs)
	return builtImage{Image: img, arch: o.arch, bin: bin, pkgs: pkgs}, err
}

// assemble makes the image of a base tree and the binary.
func assemble(o buildOptions, base fsTree, bin []byte, pkgs []debPackage) (v1.Image, error) {
	adds, err := layers(o, base, bin, pkgs)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.created}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Variant, cf.Created = o.arch, "linux", archVariant[o.arch], created
	cf.Config = v1.Config{
		User:       imageUser,
		Entrypoint: []string{binaryPath},
		Env:        []string{pathEnv, caEnv},
		WorkingDir: "/",
		Labels:     imageLabels(o),
	}
	return mutate.ConfigFile(img, cf)
}

// layers are the base layer and the binary's, with their history.
func layers(o buildOptions, base fsTree, bin []byte, pkgs []debPackage) ([]mutate.Addendum, error) {
	app := fsTree{}
	if err := app.addFile(binaryPath, 0o755, bin, "go build"); err != nil {
		return nil, err
	}
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.String()
	}
	var adds []mutate.Addendum
	for _, l := range []struct {
		tree fsTree
		by   string
	}{
		{base, "base: " + strings.Join(names, ", ") + "; /etc/passwd, /etc/group (nonroot 65532)"},
		{app, fmt.Sprintf("%s: trousseau %s (%sgo %s)", binaryPath, o.version, fipsEnv(o.fips), strings.Join(goBuildArgs(o.version, binaryPath)[1:], " "))},
	} {
		layer, err := layerOf(l.tree, o.created)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: l.by, Comment: "trousseau deploy/image"}})
	}
	return adds, nil
}

func imageLabels(o buildOptions) map[string]string {
	return map[string]string{
		labelSource:   repo.SourceURL,
		labelVersion:  o.version,
		labelRevision: o.revision,
		labelCreated:  o.created.UTC().Format(time.RFC3339),
		labelTitle:    "trousseau",
		labelDesc:     description,
	}
}

// baseTree is the base layer's files: the pinned Debian packages and the
// few files of a distroless-style root. It returns the glibc version and
// the packages.
func baseTree(ctx context.Context, o buildOptions) (fsTree, string, []debPackage, error) {
	lock, err := os.ReadFile(filepath.Join(o.root, "deploy", "image", "packages.lock"))
	if err != nil {
		return nil, "", nil, err
	}
	pkgs, err := readLock(bytes.NewReader(lock), o.arch)
	if err != nil {
		return nil, "", nil, err
	}
	t := fsTree{}
	if err := addRootFiles(t); err != nil {
		return nil, "", nil, err
	}
	var glibc string
	for _, p := range pkgs {
		deb, err := o.fetcher.fetch(ctx, p)
		if err != nil {
			return nil, "", nil, err
		}
		if err := addPackage(t, p, deb); err != nil {
			return nil, "", nil, err
		}
		if p.name == "libc6" {
			glibc = glibcVersion(p.version)
		}
	}
	if glibc == "" {
		return nil, "", nil, fmt.Errorf("packages.lock has no libc6 for %s: the cgo binary needs glibc", o.arch)
	}
	return t, glibc, pkgs, nil
}

// addRootFiles adds what a distroless root has beside packages: the users
// (the plugin runs as nonroot, 65532), name-service config, /tmp.
func addRootFiles(t fsTree) error {
	const from = "image root"
	files := []struct {
		path string
		data string
	}{
		{"etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{"etc/group", "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
		// glibc reads it for user and host lookups (a vendor's module
		// may resolve names through libc rather than Go).
		{"etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"},
	}
	for _, f := range files {
		if err := t.addFile(f.path, 0o644, []byte(f.data), from); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		path     string
		mode     int64
		uid, gid int
	}{
		{"root", 0o700, 0, 0},
		{"home/nonroot", 0o700, 65532, 65532},
		{"tmp", 0o1777, 0, 0},
	} {
		if err := t.addDir(d.path, d.mode, d.uid, d.gid, from); err != nil {
			return err
		}
	}
	return nil
}

// layerOf makes a gzip-compressed OCI layer of the tree (compression is
// deterministic for a given Go release).
func layerOf(t fsTree, mtime time.Time) (v1.Layer, error) {
	b, err := t.tarball(mtime)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// outputs are the files `make image` writes.
type outputs struct {
	layoutDir string // OCI image layout (crane, skopeo, oras, regctl)
	tarPath   string // docker-archive tarball (docker/podman load, ctr import, crane push)
}

func writeImage(img v1.Image, outDir, version string) (outputs, error) {
	out := outputs{
		layoutDir: filepath.Join(outDir, "oci"),
		tarPath:   filepath.Join(outDir, "trousseau-"+version+".tar"),
	}
	ref, err := name.NewTag(repo.Image(version), name.StrictValidation)
	if err != nil {
		return out, err
	}
	// A layout appends to its index: start from an empty one, so that the
	// directory holds this image only.
	if err := os.RemoveAll(out.layoutDir); err != nil {
		return out, err
	}
	lp, err := layout.Write(out.layoutDir, empty.Index)
	if err != nil {
		return out, err
	}
	err = lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,      // skopeo oci:DIR:TAG, podman
		"io.containerd.image.name":          ref.String(), // ctr import, docker load of OCI
	}))
	if err != nil {
		return out, err
	}
	if err := tarball.WriteToFile(out.tarPath, ref, img); err != nil {
		return out, err
	}
	return out, nil
}
