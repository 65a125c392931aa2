# Gorovod: make build | run | test | bench | lint | clean
GO       ?= go
BIN      := bin
NP       ?= 2
EPOCHS   ?= 4
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./collective/... ./coordinator/... ./fusion/... ./ops/... ./internal/... ./nccl/... ./elastic/...

.PHONY: all build run test test-race test-e2e bench lint clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/... ./examples/... ./test/allreducecheck ./test/worker

# The main job: data-parallel Fashion-MNIST training on this machine.
run: build
	@scripts/deps.sh run
	$(BIN)/gorun -np $(NP) $(BIN)/fashionmnist -epochs $(EPOCHS)

test: build lint
	@scripts/deps.sh test
	$(GO) test -race -timeout 15m $(RACE_PKGS)
	# -count=1: these tests run the built binaries, which go test's cache does not track.
	$(GO) test -count=1 -timeout 15m ./cmd/... ./examples/... ./test/...

bench: build
	$(BIN)/gorun -np $(NP) $(BIN)/gorovod-bench allreduce -b 4K -e 64M -f 4 -d float32 -o sum -c 1

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
