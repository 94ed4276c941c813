# syntax=docker/dockerfile:1
# Trousseau's image, for operators who build with Docker, Podman or
# BuildKit. `make image` builds the same image without a container runtime
# (deploy/image, see docs/packaging.md); deploy/image/dockerfile_test.go
# checks that the two agree on the user, the entrypoint, the binary's path,
# the go build command and the labels.
#
#   docker build \
#     --build-arg VERSION=$(cat VERSION) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
#     -t ghcr.io/trousseau-io/trousseau:$(cat VERSION) .

# Debian 12 (bookworm), as the final stage: the binary is built with cgo
# and must ask for no glibc newer than the one it runs with.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version comes from the VERSION file, through the build argument (a
# label cannot read a file); there is no default, so that no image is ever
# stamped with a stale one.
ARG VERSION
RUN test -n "${VERSION}" || { echo 'give --build-arg VERSION=$(cat VERSION)' >&2; exit 1; }
# --build-arg GOFIPS140=v1.0.0 builds with the frozen Go Cryptographic
# Module, as `make image-fips` does (docs/fips.md); tag that image -fips.
ARG GOFIPS140=off
RUN CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags "-s -w -buildid= -X main.version=${VERSION}" -o /out/trousseau ./cmd/trousseau

# glibc and the GCC runtime (the pkcs11 backend dlopens vendor modules),
# CA certificates, /etc/passwd with nonroot (65532), no shell. Pin it by
# digest for a reproducible build.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.source="https://github.com/trousseau-io/trousseau" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.title="trousseau" \
      org.opencontainers.image.description="Trousseau: a Kubernetes KMS v2 plugin with k-of-n threshold custody over several KMS backends"
COPY --from=build /out/trousseau /trousseau
USER 65532:65532
ENTRYPOINT ["/trousseau"]
