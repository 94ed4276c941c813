#!/bin/sh
# Builds the HashiCorp Vault server that the kmsclients/vault tests start,
# once per pinned version (hack/versions.env), and prints its path. The
# tests fail, rather than skip, when it is missing.
#
# Vault is built as a dependency of a throwaway module because its own
# go.mod carries replace directives that `go install pkg@version` refuses.
# The build takes more than ten minutes on two cores (close to an hour when
# the machine is busy).
set -eu
. "$(dirname "$0")/lib.sh"

build() { go get "github.com/hashicorp/vault@$VAULT_VERSION" && go build -o "$1" github.com/hashicorp/vault; }
build_once vault "$VAULT_VERSION" build
