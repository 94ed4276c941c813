#!/bin/sh
# Builds the HashiCorp Vault server that the kmsclients/vault tests start,
# once per pinned version, into a cache outside the repository, and prints
# the binary's path. The tests look for it there (or at $TROUSSEAU_VAULT) and
# fail, rather than skip, when it is missing.
#
# Vault is built as a dependency of a throwaway module because its own
# go.mod carries replace directives that `go install pkg@version` refuses.
# v1.21.0 is the newest release known to build that way; later v1.21.x do
# not. The version must match vaultVersion in kmsclients/vault/server_test.go.
#
# The build takes more than ten minutes on two cores (close to an hour when
# the machine is busy).
set -eu

version=v1.21.0
dir="$HOME/.cache/trousseau/vault/$version"
bin="$dir/vault"

if [ ! -x "$bin" ]; then
	mkdir -p "$dir"
	# Build in a scratch directory and move the result into place, so an
	# interrupted build never leaves a partial binary at $bin.
	tmp=$(mktemp -d "$dir/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	trap 'exit 1' INT TERM
	echo "building vault $version into $dir" >&2
	cd "$tmp"
	go mod init scratch >/dev/null 2>&1
	# No workspace or inherited flags: the scratch module alone decides.
	export GOWORK=off GOFLAGS=-mod=mod
	go get "github.com/hashicorp/vault@$version"
	go build -o "$tmp/vault.bin" github.com/hashicorp/vault
	mv -f "$tmp/vault.bin" "$bin"
fi

echo "$bin"
