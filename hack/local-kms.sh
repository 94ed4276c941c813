#!/bin/sh
# Builds local-kms, the AWS KMS emulator the awskms integration tests run
# against, once per pinned version (hack/versions.env), and prints its
# path. The tests fail, rather than skip, when it is missing.
set -eu
. "$(dirname "$0")/lib.sh"

build() { GOBIN="$(dirname "$1")" go install "github.com/nsmithuk/local-kms@$LOCAL_KMS_VERSION" && mv "$(dirname "$1")/local-kms" "$1"; }
build_once local-kms "$LOCAL_KMS_VERSION" build
