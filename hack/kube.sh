#!/bin/sh
# Builds the real servers of the end-to-end suite, kube-apiserver and etcd,
# once per pinned version, from the Go module proxy, into a cache outside the
# repository, and prints their paths (kube-apiserver first). A build takes
# about 12 minutes on a 2-core machine; later runs find the cache and return
# at once. The versions must match those in e2e/servers_test.go.
set -eu

k8s_version=${K8S_VERSION:-v1.37.2}
etcd_version=${ETCD_VERSION:-v3.6.16}
cache="$HOME/.cache/trousseau"
apiserver="$cache/kube-apiserver/$k8s_version/kube-apiserver"
etcd="$cache/etcd/$etcd_version/etcd"

# build_in DIR OUT PKG: build PKG of the scratch module in DIR to OUT, via a
# temporary name so an interrupted build never leaves a partial binary.
build_in() {
	(cd "$1" && GOFLAGS=-mod=mod go build -trimpath -o "$2.partial" "$3")
	mv -f "$2.partial" "$2"
}

if [ ! -x "$apiserver" ]; then
	echo "building kube-apiserver $k8s_version (about 12 minutes)" >&2
	mkdir -p "$(dirname "$apiserver")"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	(cd "$work" && go mod init scratch >/dev/null 2>&1)
	gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
	# k8s.io/kubernetes points its staging modules at ./staging; point them
	# at their published versions (v0.MINOR.PATCH for v1.MINOR.PATCH).
	staging="v0.${k8s_version#v1.}"
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
		(cd "$work" && go mod edit -replace="$m=$m@$staging")
	done
	(cd "$work" && go mod edit -require="k8s.io/kubernetes@$k8s_version")
	build_in "$work" "$apiserver" k8s.io/kubernetes/cmd/kube-apiserver
	rm -rf "$work"
	trap - EXIT
fi

if [ ! -x "$etcd" ]; then
	echo "building etcd $etcd_version" >&2
	mkdir -p "$(dirname "$etcd")"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	cat > "$work/main.go" <<'GO'
// The etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
	(cd "$work" && go mod init scratch >/dev/null 2>&1 && go mod edit -require="go.etcd.io/etcd/server/v3@$etcd_version")
	build_in "$work" "$etcd" .
	rm -rf "$work"
	trap - EXIT
fi

echo "$apiserver"
echo "$etcd"
