#!/bin/sh
# make release-check: the same commit gives the same release, whatever the
# Go build cache holds. Builds the release twice, each with an empty Go
# build cache of its own, and compares every file: binaries, SBOMs, the
# image index's blobs, the tarball, SHA256SUMS.
#
# -short (hack/test.sh, a few minutes): the linux/amd64 binary alone,
# built with the usual Go build cache and with an empty one. deploy/image's
# TestRelease builds the whole release twice (usual cache) and compares.
set -eu
cd "$(dirname "$0")/.."

args="-platforms linux/amd64,linux/arm64"
first_cache=
if [ "${1:-}" = -short ]; then
	args="-platforms linux/amd64 -binaries-only"
	first_cache=$(go env GOCACHE)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for build in a b; do
	cache=$work/gocache-$build
	if [ "$build" = a ] && [ -n "$first_cache" ]; then cache=$first_cache; fi
	echo "== release ($args) into $work/$build, GOCACHE $cache" >&2
	# shellcheck disable=SC2086 # args are words
	DIST=$work/$build GOCACHE=$cache hack/release.sh $args >"$work/$build.log" 2>&1 ||
		{ cat "$work/$build.log" >&2; exit 1; }
	(cd "$work/$build" && sha256sum -c --quiet SHA256SUMS)
done

if [ -f "$work/a/oci/index.json" ]; then
	index() { tr -d ' \n' <"$1/oci/index.json" | sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p'; }
	echo "image index: $(index "$work/a") and $(index "$work/b")"
fi
if ! diff -r "$work/a" "$work/b" >&2; then
	echo "release-check: two builds of $(git rev-parse HEAD) differ (above)" >&2
	exit 1
fi
echo "release-check: two builds are the same bytes:"
cat "$work/a/SHA256SUMS"
