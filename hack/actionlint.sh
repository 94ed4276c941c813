#!/bin/sh
# Builds actionlint, which hack/test.sh runs on .github/workflows (the
# release pipeline cannot run here, so it is linted instead), once per
# pinned version, and prints its path. actionlint also runs shellcheck on
# the workflows' scripts when shellcheck is on PATH.
set -eu
. "$(dirname "$0")/lib.sh"

ACTIONLINT_VERSION=v1.7.12

build() {
	go get "github.com/rhysd/actionlint@$ACTIONLINT_VERSION" &&
		go build -trimpath -o "$1" github.com/rhysd/actionlint/cmd/actionlint
}
build_once actionlint "$ACTIONLINT_VERSION" build
