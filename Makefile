# Gorovod: make build | run | test | chaos | bench | lint | clean
GO       ?= go
BIN      := bin
NP       ?= 2
EPOCHS   ?= 4
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# go-nvml's cgo preamble calls NVML functions its nvml.h marks deprecated;
# gcc's warnings about them are noise in every build of gorun.
CGO_CFLAGS ?= -O2 -g
export CGO_CFLAGS += -Wno-deprecated-declarations
# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./collective/... ./coordinator/... ./fusion/... ./ops/... ./internal/... ./nccl/... ./elastic/...

.PHONY: all build run examples test test-race test-e2e bench lint clean chaos elastic-recovery

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/... ./examples/... ./test/allreducecheck ./test/worker ./test/gpucheck

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
	$(BIN)/gorun --min-np $(NP) -H localhost:$(NP) $(BIN)/elastic -steps 200

test: build lint
	@scripts/deps.sh test
	$(MAKE) cuadapter
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

# Elastic measurements (examples/elastic/recovery.sh; docs/elastic.md): np 4 -> 3
# after kill -9 of a worker (RUNS times), a host added to discovery joining,
# and Commit's share of the example's step.
RUNS ?= 10
elastic-recovery: build
	GORUN=$(BIN)/gorun EXAMPLE=$(BIN)/elastic RUNS=$(RUNS) sh examples/elastic/recovery.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

# The NCCL + CUDA runtime test double (nccl/fakenccl): LD_LIBRARY_PATH=$(BIN)/fakenccl
# makes nccl.Load use it. See docs/gpu.md.
.PHONY: fakenccl
fakenccl:
	$(GO) run ./nccl/fakenccl/mkfake -o $(BIN)/fakenccl

# gorgonia.org/cu adapters (nested module nccl/cuadapter): built and vetted
# with -tags cuda against cuda.h and the libcuda stub from Debian non-free
# nvidia-cuda-dev, fetched once into CUDA_STUB (no GPU needed). Skipped, with
# the reason, when that archive cannot be reached.
CUDA_STUB ?= $(HOME)/.cache/gorovod/cuda-stub
.PHONY: cuadapter
cuadapter:
	@st=0; scripts/cuda-stub.sh $(CUDA_STUB) || st=$$?; \
	if [ $$st -eq 3 ]; then echo "cuadapter: SKIPPED: no cuda.h/libcuda stub (Debian non-free unreachable)"; exit 0; fi; \
	[ $$st -eq 0 ] || exit $$st; \
	cd nccl/cuadapter && GOFLAGS=-mod=mod CGO_CFLAGS="-I$(CUDA_STUB)/include" CGO_LDFLAGS="-L$(CUDA_STUB)/lib" $(GO) build -tags cuda ./... && \
	GOFLAGS=-mod=mod CGO_CFLAGS="-I$(CUDA_STUB)/include" CGO_LDFLAGS="-L$(CUDA_STUB)/lib" $(GO) vet -tags cuda ./...
