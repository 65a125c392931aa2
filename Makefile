# Gorovod: make build | run | test | chaos | bench | lint | clean
GO       ?= go
BIN      := bin
NP       ?= 2
EPOCHS   ?= 4
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./collective/... ./coordinator/... ./fusion/... ./ops/... ./internal/... ./nccl/...

.PHONY: all build run examples test test-race test-e2e bench lint clean chaos

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/... ./examples/... ./test/allreducecheck ./test/worker

# The main job: data-parallel Fashion-MNIST training on this machine.
run: build
	@scripts/deps.sh run
	$(BIN)/gorun -np $(NP) $(BIN)/fashionmnist -epochs $(EPOCHS)

# Every example, built and run briefly with small settings (Fashion-MNIST
# when installed, else generated data); each must exit 0.
examples: build
	@scripts/deps.sh run
	$(BIN)/gorun -np $(NP) $(BIN)/quickstart
	$(BIN)/gorun -np $(NP) $(BIN)/fashionmnist -epochs 1 -limit 6000
	$(BIN)/gorun -np $(NP) $(BIN)/fashionmnist -epochs 1 -limit 6000 -compression fp16 -accumulate 2 -grad-stats
	$(BIN)/gorun -np $(NP) $(BIN)/fashioncnn -steps 200 -eval-every 100 -test-limit 1000 -compression bf16

test: build lint
	@scripts/deps.sh test
	$(GO) test -race -timeout 15m $(RACE_PKGS)
	# -count=1: these tests run the built binaries, which go test's cache does not track.
	$(GO) test -count=1 -timeout 15m ./cmd/... ./examples/... ./test/...

# Fault injection: CHAOS_RUNS random faults (kills, stops, garbage) against real
# jobs; fails on any hang, orphan, /dev/shm leftover or wrong blame. SEED=N
# replays a sequence. `make test` runs a short version (test/chaos default).
CHAOS_RUNS ?= 200
chaos: build
	$(GO) test -count=1 -timeout 60m -v -run TestChaos ./test/chaos -chaos.runs $(CHAOS_RUNS) $(if $(SEED),-chaos.seed $(SEED))

bench: build
	$(BIN)/gorun -np $(NP) $(BIN)/gorovod-bench allreduce -b 4K -e 64M -f 4 -d float32 -o sum -c 1

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
