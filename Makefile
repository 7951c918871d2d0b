# Shoal: the two commands that must always work are `make demo` and `make test`.
GO      ?= go
BIN     := bin/shoal
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The race detector needs cgo; these tags keep anacrolix/torrent's optional C
# parts (SQLite piece completion, libutp) out of every build: Shoal uses
# neither, and compiling SQLite doubles a fresh build.
export GOFLAGS += -tags=nosqlite,disable_libutp

# Packages whose concurrency the race detector must see. The end-to-end
# packages (whole clusters moving tens of MiB) run without it: under -race
# they are 10x slower and their concurrency is the same code tested here.
RACE_PKGS := ./config/... ./proto/... ./internal/inflight/... ./internal/store/... ./internal/p2p/... ./internal/httpx/... ./internal/tlsconf/... \
             ./internal/hashring/... ./internal/upstream/... ./internal/turn/... ./internal/fsutil/... ./internal/fetch/... \
             ./tracker/... ./origin/... ./agent/... ./buildindex/...
E2E_PKGS  := ./testbed/cluster/... ./testbed/demo/... ./testbed/bench/... ./testbed/localregistry/... ./cmd/... ./testbed/clienttest/... \
             ./testbed/sim/... ./testbed/chart/... ./testbed/netlab/...

.PHONY: all build demo test lint bench bench-scale clean images compose-test compose-up compose-down

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

demo: build
	./$(BIN) demo

lint:
	$(GO) vet ./...
	@# A package whose tests neither list names would never run.
	@covered=$$($(GO) list $(RACE_PKGS) $(E2E_PKGS)); \
	for p in $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); do \
		echo "$$covered" | grep -qx "$$p" || { echo "$$p has tests that make test does not run: add it to RACE_PKGS or E2E_PKGS in the Makefile"; exit 1; }; \
	done
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: lint
	$(GO) test -race -timeout 15m $(RACE_PKGS)
	SHOAL_TEST_P2P_ENGINE=library $(GO) test -race -timeout 15m ./internal/p2p/
	$(GO) test -timeout 15m $(E2E_PKGS)

# The standard set (about 6 minutes on 2 cores on the engine, 15 on the library): bench/results.json and
# bench/results.svg, shown by docs/benchmarks.md.
bench: build
	./$(BIN) bench standard --out bench

# The scale set (issue 14; about 45 minutes on 2 cores on the engine): 64-256 agents on 16 MiB and
# 64 MiB blobs, cold and warm, U = R and U = 10 R; uneven links, late joiners, churn the same four ways:
# bench/scale/scale.json and bench/scale/scale.svg.
bench-scale: build
	./$(BIN) bench scale --out bench/scale

clean:
	rm -rf bin

# Container images, FROM scratch from static binaries: shoal:dev and the
# compose swarm's upstream registry, shoal-registry:dev (docker/build-images.sh).
images: build
	docker/build-images.sh

# The compose swarm (examples/compose): registry, tracker, 2 origins, a
# build-index and 3 agents; pulls a sample image through every agent,
# verifies every layer and prints where the bytes came from, then tears down.
compose-test: images
	examples/compose/run.sh

# The same swarm, left running for other clients (compose-down stops it).
compose-up: images
	examples/compose/run.sh --keep

compose-down:
	examples/compose/run.sh --down
