package main

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
)

// The image's SBOM is one document: the image by digest, depending on the
// binary (with its hash) and on each pinned Debian package, then the Go
// modules and their graph as cyclonedx-gomod wrote them.
func TestImageSBOM(t *testing.T) {
	gomod, err := decodeJSON([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.6","version":1,
		"metadata":{"component":{"bom-ref":"pkg:golang/github.com/trousseau-io/trousseau@v0.1.0?type=module#cmd/trousseau","type":"application","name":"github.com/trousseau-io/trousseau","version":"v0.1.0"}},
		"components":[{"bom-ref":"pkg:golang/k8s.io/kms@v0.37.2?type=module","type":"library","name":"k8s.io/kms","version":"v0.37.2"}],
		"dependencies":[{"ref":"pkg:golang/github.com/trousseau-io/trousseau@v0.1.0?type=module#cmd/trousseau","dependsOn":["pkg:golang/k8s.io/kms@v0.37.2?type=module"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	bin := []byte("an ELF")
	binDoc, err := binarySBOM(gomod, bin)
	if err != nil {
		t.Fatal(err)
	}
	img := builtImage{Image: empty.Image, arch: "arm64", bin: bin, pkgs: []debPackage{
		{name: "libc6", version: "2.36-9+deb12u14", arch: "arm64", use: "files", sha256: strings.Repeat("ab", 32), path: "debian/pool/main/g/glibc/libc6_2.36-9+deb12u14_arm64.deb"},
		{name: "ca-certificates", version: "20250419~deb12u2", arch: "all", use: "ca-bundle", sha256: strings.Repeat("cd", 32), path: "debian-security/pool/updates/main/c/ca-certificates/ca-certificates_20250419~deb12u2_all.deb"},
	}}
	digest, _ := img.Digest()
	doc, err := imageSBOM(binDoc, img, digest, "v0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.cdx.json")
	if err := writeJSON(path, doc); err != nil {
		t.Fatal(err)
	}
	text := string(readFile(t, path))
	doc = readSBOM(t, path)

	image := doc["metadata"].(object)["component"].(object)
	wantPURL := "pkg:oci/trousseau@sha256%3A" + digest.Hex + "?arch=arm64&repository_url=ghcr.io/trousseau-io/trousseau&tag=v0.1.0"
	if image["type"] != "container" || image["purl"] != wantPURL || hashOf(t, image) != digest.Hex {
		t.Errorf("image component %v, want a container with purl %s", image, wantPURL)
	}
	versions := componentVersions(doc)
	if versions["github.com/trousseau-io/trousseau"] != "v0.1.0" || versions["k8s.io/kms"] != "v0.37.2" || versions["libc6"] != "2.36-9+deb12u14" || versions["ca-certificates"] != "20250419~deb12u2" {
		t.Errorf("components %v", versions)
	}
	app := doc["components"].([]any)[0].(object)
	if sum := sha256.Sum256(bin); hashOf(t, app) != hex.EncodeToString(sum[:]) {
		t.Errorf("the binary's component lost its hash: %v", app)
	}
	deps := doc["dependencies"].([]any)
	first := deps[0].(object)
	if first["ref"] != wantPURL || len(first["dependsOn"].([]any)) != 3 || len(deps) != 2 {
		t.Errorf("dependencies %v: want the image's first, on the binary and both packages, then the binary's", deps)
	}
	for _, want := range []string{"pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=arm64&distro=debian-12", "pkg:deb/debian/ca-certificates@20250419~deb12u2?arch=all&distro=debian-12"} {
		if !strings.Contains(text, `"`+want+`"`) {
			t.Errorf("no purl %s in\n%s", want, text)
		}
	}
	// The binary's SBOM is left as cyclonedx-gomod wrote it, plus the hash.
	if _, ok := gomod["metadata"].(object)["component"].(object)["hashes"]; ok {
		t.Error("binarySBOM changed its input")
	}
}
