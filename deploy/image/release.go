package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// The names of a release's files (docs/packaging.md lists them).
func binaryName(version, arch string) string { return "trousseau_" + version + "_linux_" + arch }
func imageSBOMName(version, arch string) string {
	return "trousseau_" + version + "_image_linux_" + arch + ".cdx.json"
}
func ociTarName(version string) string { return "trousseau_" + version + "_oci.tar" }

const (
	sbomSuffix = ".cdx.json"
	sumsName   = "SHA256SUMS"
	layoutName = "oci"
)

// runRelease builds each platform's image (and so its binary), then
// writes the release: the binaries and their SBOMs, the image index as an
// OCI layout and its tarball, each image's SBOM, and SHA256SUMS. With
// -binaries-only, the binaries and SHA256SUMS alone (release-check.sh).
func runRelease(ctx context.Context, o buildOptions, f flags, stdout io.Writer) error {
	if entries, err := os.ReadDir(f.outDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("-out %s is not empty: remove it first (make release does), so that SHA256SUMS lists this release only", f.outDir)
	}
	if err := os.MkdirAll(f.outDir, 0o755); err != nil {
		return err
	}
	if f.binariesOnly {
		return writeBinaries(ctx, o, f, stdout)
	}
	var images []builtImage
	for _, arch := range f.platforms {
		o.arch, o.cc = arch, crossCC(arch, os.Getenv)
		img, err := buildImage(ctx, o)
		if err != nil {
			return fmt.Errorf("linux/%s: %w", arch, err)
		}
		images = append(images, img)
	}
	idx, err := writeDist(ctx, o, f, images)
	if err != nil {
		return err
	}
	return printRelease(stdout, idx, images, f.outDir, o.version)
}

// writeDist writes the release of the images into f.outDir.
func writeDist(ctx context.Context, o buildOptions, f flags, images []builtImage) (v1.ImageIndex, error) {
	for _, img := range images {
		o.arch, o.cc = img.arch, crossCC(img.arch, os.Getenv)
		if err := writeRelease(ctx, o, f, img); err != nil {
			return nil, fmt.Errorf("linux/%s: %w", img.arch, err)
		}
	}
	idx, err := imageIndex(images)
	if err != nil {
		return nil, err
	}
	if err := writeIndex(idx, f.outDir, o.version, o.created); err != nil {
		return nil, err
	}
	return idx, writeSums(f.outDir)
}

func writeBinaries(ctx context.Context, o buildOptions, f flags, stdout io.Writer) error {
	for _, arch := range f.platforms {
		o.arch, o.cc = arch, crossCC(arch, os.Getenv)
		bin, err := compile(ctx, o)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(f.outDir, binaryName(o.version, arch)), bin, 0o755); err != nil {
			return err
		}
	}
	if err := writeSums(f.outDir); err != nil {
		return err
	}
	sums, err := os.ReadFile(filepath.Join(f.outDir, sumsName))
	fmt.Fprintf(stdout, "%s", sums)
	return err
}

// writeRelease writes one platform's binary, its SBOM and its image's.
func writeRelease(ctx context.Context, o buildOptions, f flags, img builtImage) error {
	bin := filepath.Join(f.outDir, binaryName(o.version, img.arch))
	if err := os.WriteFile(bin, img.bin, 0o755); err != nil {
		return err
	}
	gomod, err := goModulesSBOM(ctx, o, f.cyclonedx)
	if err != nil {
		return err
	}
	binSBOM, err := binarySBOM(gomod, img.bin)
	if err != nil {
		return err
	}
	if err := writeJSON(bin+sbomSuffix, binSBOM); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	imgSBOM, err := imageSBOM(binSBOM, img, digest, o.version)
	if err != nil {
		return err
	}
	return writeJSON(filepath.Join(f.outDir, imageSBOMName(o.version, img.arch)), imgSBOM)
}

// imageIndex is the multi-platform OCI image index of the images.
func imageIndex(images []builtImage) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, img := range images {
		adds = append(adds, mutate.IndexAddendum{Add: img.Image, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: img.arch, Variant: archVariant[img.arch]},
		}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// writeIndex writes the index as an OCI layout (a nested index named for
// skopeo and containerd, as docker buildx writes one) and the same layout
// as a tarball (skopeo's oci-archive:, podman load, ctr import).
func writeIndex(idx v1.ImageIndex, outDir, version string, mtime time.Time) error {
	ref, err := name.NewTag(repo.Image(version), name.StrictValidation)
	if err != nil {
		return err
	}
	dir := filepath.Join(outDir, layoutName)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	err = lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
		"io.containerd.image.name":          ref.String(),
	}))
	if err != nil {
		return err
	}
	b, err := tarDir(dir, mtime)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(outDir, ociTarName(version)), b, 0o644)
}

// tarDir is a directory as a tar: paths in order, root-owned, one mtime.
func tarDir(dir string, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		h := &tar.Header{Name: rel, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg}
		var data []byte
		if d.IsDir() {
			h.Name, h.Mode, h.Typeflag = rel+"/", 0o755, tar.TypeDir
		} else if data, err = os.ReadFile(p); err != nil {
			return err
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = tw.Close()
	return buf.Bytes(), err
}

// writeSums writes SHA256SUMS (`sha256sum -c`'s format) over the files of
// dir: the release's assets. The layout directory is the tarball's
// content, and its files are named by their digests.
func writeSums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var sums strings.Builder
	for _, e := range entries { // ReadDir sorts by name
		if !e.Type().IsRegular() || e.Name() == sumsName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), e.Name())
	}
	return os.WriteFile(filepath.Join(dir, sumsName), []byte(sums.String()), 0o644)
}

func printRelease(w io.Writer, idx v1.ImageIndex, images []builtImage, outDir, version string) error {
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "release %s in %s\n  image index %s@%s\n", version, outDir, repo.Image(version), digest)
	for _, img := range images {
		d, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "    linux/%-6s %s\n", img.arch, d)
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	fmt.Fprintf(w, "  files: %s\nverify:  cd %s && sha256sum -c %s\n", strings.Join(names, " "), outDir, sumsName)
	return nil
}
