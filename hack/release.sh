#!/bin/sh
# make release: builds the release into dist/ (or $DIST) with the image
# builder of deploy/image (docs/packaging.md): the linux/amd64 and
# linux/arm64 binaries, the image index as an OCI layout and a tarball, a
# CycloneDX SBOM per binary and per image, SHA256SUMS. Arguments go to the
# builder (--debian-mirror URL, --deb-dir DIR, ...).
#
# Every timestamp is SOURCE_DATE_EPOCH, by default the commit's time, so
# the same commit gives the same bytes (hack/release-check.sh checks it).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

CC_arm64=${CC_arm64:-$(hack/cross.sh)} # installs Debian's cross compiler when missing
cyclonedx=$(hack/cyclonedx.sh)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export CC_arm64 SOURCE_DATE_EPOCH

dist=${DIST:-$root/dist}
case "$dist" in /*) ;; *) dist=$root/$dist ;; esac
rm -rf "$dist"
cd deploy
exec go run ./image -release -version "${VERSION:-$(cat "$root/VERSION")}" -out "$dist" -cyclonedx "$cyclonedx" "$@"
