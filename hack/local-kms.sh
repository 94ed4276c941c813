#!/bin/sh
# Builds local-kms, the AWS KMS emulator the awskms integration tests run
# against, once per pinned version into a cache outside the repository, and
# prints the binary's path. The tests look for it there (or at
# $TROUSSEAU_LOCAL_KMS) and fail, rather than skip, when it is missing.
#
# The version must match localKMSVersion in
# kmsclients/awskms/localkms_test.go.
set -eu

version=v0.0.0-20260228092603-2a5e92d09ab6
dir="$HOME/.cache/trousseau/local-kms/$version"
bin="$dir/local-kms"

if [ ! -x "$bin" ]; then
	mkdir -p "$dir"
	# Build into a scratch directory and move the result into place, so
	# that an interrupted build never leaves a partial binary at $bin.
	tmp=$(mktemp -d "$dir/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	trap 'exit 1' INT TERM
	echo "building local-kms $version into $dir" >&2
	GOBIN="$tmp" go install "github.com/nsmithuk/local-kms@$version"
	mv -f "$tmp/local-kms" "$bin"
fi

echo "$bin"
