#!/bin/sh
# Builds a real server of the end-to-end suite from the Go module proxy,
# once per pinned version (hack/versions.env), and prints its path:
#   hack/kube.sh kube-apiserver   (about 12 minutes on a 2-core machine)
#   hack/kube.sh etcd
set -eu
. "$(dirname "$0")/lib.sh"

# k8s.io/kubernetes points its staging modules at ./staging; point them at
# their published versions (v0.MINOR.PATCH for v1.MINOR.PATCH).
build_apiserver() {
	gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	staging="v0.${K8S_VERSION#v1.}"
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
		go mod edit -replace="$m=$m@$staging"
	done
	go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
	go build -trimpath -o "$1" k8s.io/kubernetes/cmd/kube-apiserver
}

build_etcd() {
	cat > main.go <<'GO'
// The etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
	go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
	go build -trimpath -o "$1" .
}

case "${1:-}" in
kube-apiserver) build_once kube-apiserver "$K8S_VERSION" build_apiserver ;;
etcd) build_once etcd "$ETCD_VERSION" build_etcd ;;
*)
	echo "usage: $0 kube-apiserver|etcd" >&2
	exit 2
	;;
esac
