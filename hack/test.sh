#!/usr/bin/env bash
# The project's test command (the README's second command, and what CI runs):
# builds or finds every real server the tests need, checks formatting and vet,
# then runs every test with the race detector. Nothing is skipped: a server
# that cannot be built or started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

echo "== test servers (built once, cached in \$HOME/.cache/trousseau)"
TROUSSEAU_LOCAL_KMS=$(hack/local-kms.sh)
TROUSSEAU_VAULT=$(hack/vault.sh)
TROUSSEAU_KUBE_APISERVER=$(hack/kube.sh kube-apiserver)
TROUSSEAU_ETCD=$(hack/kube.sh etcd)
TROUSSEAU_SOFTHSM_MODULE=$(hack/softhsm.sh) # installs SoftHSM2 and OpenSC when missing
export TROUSSEAU_LOCAL_KMS TROUSSEAU_VAULT TROUSSEAU_KUBE_APISERVER TROUSSEAU_ETCD TROUSSEAU_SOFTHSM_MODULE
TROUSSEAU_PROMTOOL=$(hack/promtool.sh) # the alert rules' tests (deploy/monitoring)
export TROUSSEAU_PROMTOOL
# The release's SBOMs and arm64 cgo build (deploy/image's TestRelease).
TROUSSEAU_CYCLONEDX=$(hack/cyclonedx.sh)
CC_arm64=$(hack/cross.sh) # installs Debian's cross compiler when missing
export TROUSSEAU_CYCLONEDX CC_arm64

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-clean:" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== actionlint: the release workflow, which cannot run here (.github/workflows)"
actionlint=$(hack/actionlint.sh)
"$actionlint"

echo "== deploy module (image builder, Helm chart): gofmt, go vet, go test -race"
unformatted=$(gofmt -l deploy)
if [ -n "$unformatted" ]; then
	echo "not gofmt-clean:" >&2
	echo "$unformatted" >&2
	exit 1
fi
(cd deploy && go vet ./... && go test -race -count=1 -timeout 20m ./...)

echo "== reproducible release: the amd64 build with an empty Go build cache (hack/release-check.sh -short)"
hack/release-check.sh -short

echo "== go test -race"
go test -race -count=1 -timeout 40m "$@" ./...

echo "== FIPS 140-3: the frozen Go Cryptographic Module under GODEBUG=fips140=only (docs/fips.md)"
# Everything the plugin encrypts itself, the backends with a real server,
# and recovery (drill runs; recover refuses, and its tests check that). The
# e2e runs the FIPS build behind a real kube-apiserver, which is not the
# plugin's to put in that mode: only the plugin gets GODEBUG=fips140=only.
# pkcs11's TestConfigCheck builds a third binary, without cgo: left to the pass above.
GOFIPS140=v1.0.0 GODEBUG=fips140=only go test -count=1 -timeout 20m -skip '^TestConfigCheck$' \
	./envelope/ ./split/ ./kmsclients/local/ ./kmsclients/awskms/ ./kmsclients/vault/ ./kmsclients/pkcs11/ \
	./grpcserver/ ./internal/recovery/...
# config check refuses the officers' branch in that mode (the rest of the
# config tests do not depend on it).
GOFIPS140=v1.0.0 GODEBUG=fips140=only go test -count=1 -run '^TestRecoveryBlockFollowsFIPSMode$' ./internal/config/
GOFIPS140=v1.0.0 go test -count=1 -timeout 10m -run '^TestFIPSOnlyPlugin$' ./e2e/

echo "== chaos soak, short: a fixed seed for 150 s (docs/reliability.md; make soak runs longer ones)"
go vet -tags soak ./e2e/
SOAK_DURATION=150s SOAK_SEED=20261207 SOAK_OUT="$(mktemp -d)" \
	go test -tags soak -race -count=1 -timeout 20m -run '^TestSoak$' ./e2e/
