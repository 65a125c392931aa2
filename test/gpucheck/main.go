// Command gpucheck runs Gorovod's device-tensor collectives on NCCL under a
// launcher: `gorun -np 2 gpucheck`. With -mode check (the default) it runs
// the device matrix (every dtype NCCL has x every reduction x every
// collective, odd lengths, element by element), a step mixing host and
// device tensors, and 200 small device tensors that must fuse into at most
// 2 NCCL calls; it exits 1 on the first failure. With -mode fault it runs
// allreduces until one fails (a fault was injected, see docs/gpu.md) and
// exits 2 printing the error, 1 if none failed.
//
// Without GPUs it runs on the NCCL test double: `make fakenccl`, then
// LD_LIBRARY_PATH=bin/fakenccl FAKECUDA_DEVICES=4 gorun -np 2 gpucheck.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/ncclbackend"
	"github.com/gorovod/gorovod/collective/ncclbackend/devicecheck"
	"github.com/gorovod/gorovod/nccl"
)

func main() {
	mode := flag.String("mode", "check", "check or fault")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	os.Exit(run(ctx, *mode))
}

func run(ctx context.Context, mode string) int {
	lib, err := nccl.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucheck:", err)
		return 1
	}
	b := ncclbackend.New(lib, collective.LocalDevice(0), nccl.WithWatchdogInterval(10*time.Millisecond))
	defer b.Close()
	w, err := collective.NewWorld(ctx, collective.WithDeviceBackend(b))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucheck: init:", err)
		return 1
	}
	device := collective.LocalDevice(w.LocalRank())
	r := devicecheck.NewRig(w, lib, device)
	code := 0
	switch mode {
	case "check":
		code = check(ctx, w, b, r, device)
	case "fault":
		code = fault(ctx, w, r)
	default:
		fmt.Fprintf(os.Stderr, "gpucheck: unknown -mode %q\n", mode)
		code = 1
	}
	r.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := w.Close(cctx); err != nil && code == 0 {
		fmt.Fprintf(os.Stderr, "rank %d: close: %v\n", w.Rank(), err)
		code = 1
	}
	return code
}

func check(ctx context.Context, w *collective.World, b *ncclbackend.Backend, r *devicecheck.Rig, device int) int {
	checks, err := r.Matrix(ctx)
	if err == nil {
		err = r.Mixed(ctx)
	}
	var calls int64
	if err == nil {
		before := b.Calls()
		err = r.Fusion(ctx, 200)
		if calls = b.Calls() - before; err == nil && calls > 2 {
			err = fmt.Errorf("200 small device tensors took %d NCCL calls, want at most 2", calls)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: FAIL: %v\n", w.Rank(), err)
		return 1
	}
	fmt.Printf("rank %d of %d on GPU %d: %d device checks OK, mixed host+device OK, 200 small tensors in %d NCCL calls\n",
		w.Rank(), w.Size(), device, checks, calls)
	return 0
}

func fault(ctx context.Context, w *collective.World, r *devicecheck.Rig) int {
	// gorun stops the other workers (SIGTERM, SIGKILL after its kill grace
	// period) as soon as one fails. A survivor's waiting call ends on its
	// own within the progress deadline: keep running until it has, so that
	// every rank reports the error it got.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)
	start := time.Now()
	err := r.UntilFailure(ctx, 8)
	if err == nil {
		fmt.Fprintf(os.Stderr, "rank %d: no collective failed\n", w.Rank())
		return 1
	}
	kind := "other"
	switch {
	case errors.Is(err, collective.ErrPeerLost):
		kind = "ErrPeerLost"
	case errors.Is(err, collective.ErrTimeout):
		kind = "ErrTimeout"
	}
	fmt.Printf("rank %d: %s after %v: %v\n", w.Rank(), kind, time.Since(start).Round(time.Millisecond), err)
	return 2
}
