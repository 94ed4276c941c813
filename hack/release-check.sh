#!/bin/sh
# make release-check: the same commit gives the same release, whatever the
# Go build cache holds. Builds the release twice, each with an empty Go
# build cache of its own, and compares every file: binaries, SBOMs, the
# image index's blobs, the tarball, SHA256SUMS.
#
# -short (hack/test.sh, a few minutes): the linux/amd64 part only, built
# once with the usual cache and once with an empty one. deploy/image's
# TestRelease builds both platforms' index twice and checks what it holds.
set -eu
cd "$(dirname "$0")/.."

platforms=linux/amd64,linux/arm64
first_cache=
if [ "${1:-}" = -short ]; then
	platforms=linux/amd64
	first_cache=$(go env GOCACHE)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for build in a b; do
	cache=$work/gocache-$build
	if [ "$build" = a ] && [ -n "$first_cache" ]; then cache=$first_cache; fi
	echo "== release for $platforms into $work/$build (GOCACHE $cache)" >&2
	DIST=$work/$build GOCACHE=$cache hack/release.sh -platforms "$platforms" >"$work/$build.log" 2>&1 ||
		{ cat "$work/$build.log" >&2; exit 1; }
	(cd "$work/$build" && sha256sum -c --quiet SHA256SUMS)
done

index() { sed -n 's/.*"digest":"\([^"]*\)".*/\1/p' "$1/oci/index.json"; }
echo "image index: $(index "$work/a") and $(index "$work/b")"
if ! diff -r "$work/a" "$work/b" >&2; then
	echo "release-check: two builds of $(git rev-parse HEAD) differ (above)" >&2
	exit 1
fi
echo "release-check: two builds are the same bytes ($(find "$work/a" -type f | wc -l) files)"
