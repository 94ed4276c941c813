#!/bin/sh
# Builds cyclonedx-gomod, which `make release` runs (app mode) to write the
# CycloneDX SBOM of each binary's Go modules, once per pinned version
# (hack/versions.env), and prints its path.
set -eu
. "$(dirname "$0")/lib.sh"

build() {
	go get "github.com/CycloneDX/cyclonedx-gomod@$CYCLONEDX_GOMOD_VERSION" &&
		go build -trimpath -o "$1" github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod
}
build_once cyclonedx-gomod "$CYCLONEDX_GOMOD_VERSION" build
