# Trousseau's build. The README's two commands work without make; these
# targets are shortcuts for developers.
GO        ?= go
# The release version: the VERSION file is its one source (the binary, the
# image's tag and labels, the chart, the manifests; deploy/version_test.go).
VERSION   ?= $(shell cat VERSION)
DEV_DIR   ?= /tmp/trousseau-dev
FUZZTIME  ?= 30s
LDFLAGS   := -X main.version=$(VERSION)

# The frozen Go Cryptographic Module of the FIPS build (docs/fips.md).
GOFIPS140 ?= v1.0.0

.PHONY: build build-fips run test bench bench-fips bench-scale fuzz lint clean image image-fips release release-check soak

build:
	$(GO) build -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o bin/trousseau ./cmd/trousseau

# The same binary on the frozen FIPS 140-3 module: FIPS mode is on by
# default; run it with GODEBUG=fips140=only to refuse anything else.
build-fips:
	GOFIPS140=$(GOFIPS140) $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/trousseau-fips ./cmd/trousseau

# The container image, reproducibly and without a container runtime: an OCI
# layout and a tarball for docker/podman load in bin/image (docs/packaging.md).
image:
	cd deploy && $(GO) run ./image -version $(VERSION) -out $(CURDIR)/bin/image

# The FIPS image, tagged <version>-fips (docs/fips.md).
image-fips:
	cd deploy && $(GO) run ./image -fips -version $(VERSION) -out $(CURDIR)/bin/image-fips

# A release in dist/ (docs/packaging.md): the linux/amd64 and linux/arm64
# binaries (cgo; Debian's arm64 cross compiler, installed when missing),
# the multi-arch image index as an OCI layout and a tarball, CycloneDX SBOMs
# and SHA256SUMS, reproducibly (SOURCE_DATE_EPOCH: the commit's time).
# RELEASE_FLAGS reaches the image builder (e.g. --debian-mirror=URL).
release:
	VERSION=$(VERSION) ./hack/release.sh $(RELEASE_FLAGS)

# Builds the release twice, with separate Go build caches, and compares
# every file and digest (hack/release-check.sh; CI runs its -short form).
release-check:
	VERSION=$(VERSION) ./hack/release-check.sh

# The plugin on the embedded default: three local key files, 2 of 3.
run:
	$(GO) run ./cmd/trousseau serve --dev --socket $(DEV_DIR)/kms.sock --state-dir $(DEV_DIR)

# Every test, with the real servers they need (built once and cached).
test:
	./hack/test.sh

# Benchmarks report ratios against a baseline timed in the same loop.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./envelope/ ./grpcserver/ ./split/
	$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/recovery/

# Warm Decrypt through the socket: the FIPS build under fips140=only
# against the default build, interleaved in one run (docs/fips.md).
bench-fips:
	$(GO) test -run '^$$' -bench '^BenchmarkDecryptWarmFIPSVsDefault$$' -benchtime 5000x -count 5 ./grpcserver/

# Recovery at scale (not in CI): the binary over snapshots of 100k and
# 1M Secrets, built once in ~/.cache/trousseau/recovery-snapshots;
# objects/s and peak RssAnon against a plain read (docs/development.md).
# SCALE_SIZES=100000 for the smaller one only.
bench-scale:
	$(GO) test -tags scalebench -run '^$$' -bench BenchmarkScale -benchtime 1x -timeout 3h ./internal/recovery/

# The chaos soak (docs/reliability.md): two nodes over one etcd, three
# real custodians, load and the faults of SOAK_SEED's plan for
# SOAK_DURATION; report.json, the fault log and the summary in SOAK_OUT.
# SOAK_SEED replays a run's fault schedule (default: a new seed, printed).
SOAK_DURATION ?= 10m
SOAK_SEED     ?=
SOAK_OUT      ?=
SOAK_TIMEOUT  ?= 6h
soak:
	TROUSSEAU_VAULT=$$(hack/vault.sh) TROUSSEAU_LOCAL_KMS=$$(hack/local-kms.sh) \
	TROUSSEAU_KUBE_APISERVER=$$(hack/kube.sh kube-apiserver) TROUSSEAU_ETCD=$$(hack/kube.sh etcd) \
	SOAK_DURATION=$(SOAK_DURATION) SOAK_SEED=$(SOAK_SEED) SOAK_OUT=$(SOAK_OUT) \
	$(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout $(SOAK_TIMEOUT) ./e2e/

# Each fuzz target for FUZZTIME (go test runs one -fuzz target at a time).
# Those of a backend's package must be listed: config's
# TestEveryKindIsComplete fails for one left out.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzDecrypt$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCombined$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzForgedHeader$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzOfficerDecrypt$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSigningKey$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzOpenTransferred$$' -fuzztime $(FUZZTIME) ./envelope/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./split/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./split/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzUnframe$$' -fuzztime $(FUZZTIME) ./kmsclients/
	$(GO) test -run '^$$' -fuzz '^FuzzOwns$$' -fuzztime $(FUZZTIME) ./kmsclients/awskms/
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./kmsclients/azurekv/
	$(GO) test -run '^$$' -fuzz '^FuzzVersionOf$$' -fuzztime $(FUZZTIME) ./kmsclients/azurekv/
	$(GO) test -run '^$$' -fuzz '^FuzzUnframe$$' -fuzztime $(FUZZTIME) ./kmsclients/kmsplugin/
	$(GO) test -run '^$$' -fuzz '^FuzzIdentity$$' -fuzztime $(FUZZTIME) ./kmsclients/kmsplugin/
	$(GO) test -run '^$$' -fuzz '^FuzzReveal$$' -fuzztime $(FUZZTIME) ./kmsclients/kmsplugin/
	$(GO) test -run '^$$' -fuzz '^FuzzParseVersionName$$' -fuzztime $(FUZZTIME) ./kmsclients/gcpkms/
	$(GO) test -run '^$$' -fuzz '^FuzzUnwrap$$' -fuzztime $(FUZZTIME) ./kmsclients/local/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeKey$$' -fuzztime $(FUZZTIME) ./kmsclients/local/
	$(GO) test -run '^$$' -fuzz '^FuzzUnframe$$' -fuzztime $(FUZZTIME) ./kmsclients/pkcs11/
	$(GO) test -run '^$$' -fuzz '^FuzzOpenKWP$$' -fuzztime $(FUZZTIME) ./kmsclients/pkcs11/
	$(GO) test -run '^$$' -fuzz '^FuzzParseIdentity$$' -fuzztime $(FUZZTIME) ./kmsclients/pkcs11/
	$(GO) test -run '^$$' -fuzz '^FuzzUnframe$$' -fuzztime $(FUZZTIME) ./kmsclients/vault/
	$(GO) test -run '^$$' -fuzz '^FuzzParseIdentity$$' -fuzztime $(FUZZTIME) ./kmsclients/vault/
	$(GO) test -run '^$$' -fuzz '^FuzzParseValue$$' -fuzztime $(FUZZTIME) ./internal/recovery/
	$(GO) test -run '^$$' -fuzz '^FuzzDecryptValue$$' -fuzztime $(FUZZTIME) ./internal/recovery/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendYAML$$' -fuzztime $(FUZZTIME) ./internal/recovery/
	$(GO) test -run '^$$' -fuzz '^FuzzEscape$$' -fuzztime $(FUZZTIME) ./internal/safetext/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...

clean:
	rm -rf bin dist
