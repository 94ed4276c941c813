package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// A CycloneDX document, read and written as JSON objects: the builder
// adds to what cyclonedx-gomod writes and passes the rest through.
type object = map[string]any

// goModulesSBOM runs cyclonedx-gomod's app mode on the plugin's main
// package with the build's own environment (GOARCH, cgo, no GOFLAGS), so
// that it lists the modules that binary is built from, and the standard
// library. No serial number and no timestamp: the same commit gives the
// same document.
func goModulesSBOM(ctx context.Context, o buildOptions, cyclonedx string) (object, error) {
	args := []string{"app", "-json", "-noserial", "-notimestamp", "-licenses", "-std", "-main", "cmd/trousseau", "-output", "-", o.root}
	cmd := exec.CommandContext(ctx, cyclonedx, args...)
	cmd.Dir = o.root
	cmd.Env = goEnv(o)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", cyclonedx, strings.Join(args, " "), err, stderr.Bytes())
	}
	return decodeJSON(out)
}

func decodeJSON(b []byte) (object, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var doc object
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("CycloneDX document: %w", err)
	}
	return doc, nil
}

// binarySBOM is the Go modules' SBOM with the binary's SHA-256 on its
// main component, so that it names the released file.
func binarySBOM(gomod object, bin []byte) (object, error) {
	doc, err := deepCopy(gomod)
	if err != nil {
		return nil, err
	}
	app, err := mainComponent(doc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(bin)
	app["hashes"] = []any{object{"alg": "SHA-256", "content": hex.EncodeToString(sum[:])}}
	return doc, nil
}

// imageSBOM is one document for an image: the image (a container
// component, named by its digest) depending on the binary's component and
// the Debian packages of its base; the Go modules and their dependency
// graph as the binary's SBOM has them.
func imageSBOM(binSBOM object, img builtImage, digest v1.Hash, version string) (object, error) {
	doc, err := deepCopy(binSBOM)
	if err != nil {
		return nil, err
	}
	app, err := mainComponent(doc)
	if err != nil {
		return nil, err
	}
	image := imageComponent(img.arch, digest, version)
	meta := doc["metadata"].(object)
	meta["component"] = image
	components, _ := doc["components"].([]any)
	components = append([]any{app}, components...)
	dependsOn := []any{app["bom-ref"]}
	for _, p := range img.pkgs {
		c := debComponent(p)
		components = append(components, c)
		dependsOn = append(dependsOn, c["bom-ref"])
	}
	doc["components"] = components
	deps, _ := doc["dependencies"].([]any)
	doc["dependencies"] = append([]any{object{"ref": image["bom-ref"], "dependsOn": dependsOn}}, deps...)
	return doc, nil
}

func imageComponent(arch string, digest v1.Hash, version string) object {
	purl := fmt.Sprintf("pkg:oci/trousseau@%s%%3A%s?arch=%s&repository_url=%s&tag=%s",
		digest.Algorithm, digest.Hex, arch, repo.ImageRepository, version)
	return object{
		"bom-ref": purl,
		"type":    "container",
		"name":    repo.ImageRepository,
		"version": version,
		"purl":    purl,
		"hashes":  []any{object{"alg": "SHA-256", "content": digest.Hex}},
		"properties": []any{
			object{"name": "trousseau:image:platform", "value": "linux/" + arch},
			object{"name": "trousseau:image:binary", "value": binaryPath},
		},
	}
}

// debComponent is a pinned package, with the SHA-256 of its .deb.
func debComponent(p debPackage) object {
	purl := fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s&distro=debian-12", p.name, purlVersion(p.version), p.arch)
	return object{
		"bom-ref": purl,
		"type":    "library",
		"name":    p.name,
		"version": p.version,
		"purl":    purl,
		"hashes":  []any{object{"alg": "SHA-256", "content": p.sha256}},
		"properties": []any{
			object{"name": "trousseau:deb:path", "value": p.path},
			object{"name": "trousseau:deb:use", "value": p.use},
		},
	}
}

// purlVersion escapes what a Debian version may hold that a purl version
// may not ("+" and an epoch's ":").
func purlVersion(v string) string {
	return strings.NewReplacer("+", "%2B", ":", "%3A").Replace(v)
}

func mainComponent(doc object) (object, error) {
	meta, _ := doc["metadata"].(object)
	app, _ := meta["component"].(object)
	if app == nil || app["bom-ref"] == nil {
		return nil, fmt.Errorf("CycloneDX document without metadata.component: not cyclonedx-gomod's app mode?")
	}
	return app, nil
}

func deepCopy(doc object) (object, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return decodeJSON(b)
}

// writeJSON writes a document as indented JSON (object keys sorted, so
// the bytes depend on the content only; purls keep their "&").
func writeJSON(path string, doc object) error {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false)
	if err := e.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
