#!/bin/sh
# Builds Prometheus's promtool, which the deploy module's tests run on the
# alert rules and dashboard queries of deploy/monitoring, once per pinned
# version (hack/versions.env), and prints its path. The tests fail, rather
# than skip, when it is missing.
#
# remove_all_sd leaves out the service-discovery plugins (cloud SDKs,
# client-go), which `promtool test rules` and `check rules` never use.
set -eu
. "$(dirname "$0")/lib.sh"

build() {
	go get "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" &&
		go build -trimpath -tags remove_all_sd -o "$1" github.com/prometheus/prometheus/cmd/promtool
}
build_once promtool "$PROMETHEUS_VERSION" build
