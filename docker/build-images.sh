#!/usr/bin/env bash
# Builds the container images of Shoal from static binaries, FROM scratch:
#   shoal:$TAG           bin/shoal (make build, CGO_ENABLED=0)
#   shoal-registry:$TAG  the CNCF distribution registry, the compose upstream
# Each `docker build` gets a temporary context holding only what its
# Dockerfile copies, so the repository is never sent to the daemon.
# Usage: docker/build-images.sh [--shoal-only]   (TAG=dev, REGISTRY_VERSION=v3.1.2)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-dev}
REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
DOCKER=${DOCKER:-docker}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

[ -x bin/shoal ] || { echo "build-images: bin/shoal missing (run make build)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

stage() { mkdir -p "$1/empty"; } # a fresh context dir with an empty dir to COPY

# --- shoal:$TAG
s="$ctx/shoal"; stage "$s"
cp docker/Dockerfile bin/shoal "$s/"
if [ -r "$CA_BUNDLE" ]; then
	cp "$CA_BUNDLE" "$s/ca-certificates.crt"
else
	echo "build-images: no CA bundle at $CA_BUNDLE; origins will not reach HTTPS upstreams" >&2
	: >"$s/ca-certificates.crt"
fi
"$DOCKER" build -q -t "shoal:$TAG" "$s"
echo "built shoal:$TAG"
[ "${1:-}" = "--shoal-only" ] && exit 0

# --- shoal-registry:$TAG
reg=bin/tools/registry-$REGISTRY_VERSION
if [ ! -x "$reg" ]; then
	echo "build-images: building the distribution registry $REGISTRY_VERSION (static)..." >&2
	mkdir -p bin/tools
	gobin=$(mktemp -d)
	# GOFLAGS is cleared: the repository's -mod/-tags flags mean nothing to
	# another module.
	(cd "$gobin" && CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS= go install -trimpath -ldflags='-s -w' \
		"github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION")
	mv "$gobin/registry" "$reg"
	rm -rf "$gobin"
fi
r="$ctx/registry"; stage "$r"
cp docker/registry.Dockerfile "$r/Dockerfile"
cp docker/registry-config.yml "$r/"
cp "$reg" "$r/registry"
"$DOCKER" build -q -t "shoal-registry:$TAG" "$r"
echo "built shoal-registry:$TAG"
