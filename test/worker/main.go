// Command worker is a test program for end-to-end tests of Gorovod: each
// -mode exercises one failure or control-plane behaviour under gorun and
// prints lines the tests look for.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/collective"
)

func main() {
	mode := flag.String("mode", "allreduce", "allreduce | noinit | mismatch | stall | die | steady")
	rankFlag := flag.Int("rank", 1, "the rank that misbehaves")
	size := flag.Int("n", 1<<20, "elements per allreduce (die mode)")
	steps := flag.Int("steps", 20, "steps (steady mode)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, *mode, *rankFlag, *size, *steps); err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		os.Exit(1)
	}
}

func envRank() int {
	var r int
	_, _ = fmt.Sscan(os.Getenv("GOROVOD_RANK"), &r)
	return r
}

func run(ctx context.Context, mode string, bad, n, steps int) error {
	if mode == "noinit" && envRank() == bad {
		fmt.Println("not calling Init")
		<-ctx.Done() // stays up without registering until gorun stops it
		return nil
	}
	if err := collective.Init(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer collective.Shutdown()
	rank := collective.Rank()
	switch mode {
	case "allreduce", "noinit":
		buf := []float32{float32(rank), 1}
		if err := collective.Allreduce(ctx, "x", buf, collective.Sum); err != nil {
			return err
		}
		fmt.Printf("rank %d: sum %v\n", rank, buf)
	case "mismatch":
		count := 1024
		if rank == bad {
			count = 1000
		}
		start := time.Now()
		err := collective.Allreduce(ctx, "grad/x", make([]float32, count), collective.Sum)
		if !errors.Is(err, collective.ErrMismatch) {
			return fmt.Errorf("want ErrMismatch, got %v", err)
		}
		fmt.Printf("rank %d: mismatch after %v: %v\n", rank, time.Since(start).Round(time.Millisecond), err)
		buf := []float32{1, 2, 3}
		if err := collective.Allreduce(ctx, "grad/y", buf, collective.Sum); err != nil {
			return fmt.Errorf("allreduce after mismatch: %w", err)
		}
		fmt.Printf("rank %d: next allreduce ok %v\n", rank, buf)
	case "stall":
		if rank == bad {
			// never submits grad/x; waits for the others' verdict
			err := collective.Allreduce(ctx, "grad/other", []float32{1}, collective.Sum)
			fmt.Printf("rank %d: stalled rank's own call: %v\n", rank, err)
			if err == nil {
				return errors.New("stalled rank's call succeeded")
			}
			return err
		}
		err := collective.Allreduce(ctx, "grad/x", []float32{1}, collective.Sum)
		fmt.Printf("rank %d: grad/x: %v\n", rank, err)
		if !errors.Is(err, collective.ErrTimeout) {
			return fmt.Errorf("want ErrTimeout, got %v", err)
		}
		return err
	case "die":
		// Survivors ignore SIGTERM so they can report the error gorun's
		// stop would otherwise cut short; gorun SIGKILLs after its grace.
		signal.Ignore(syscall.SIGTERM)
		buf := make([]float32, n)
		if rank == bad {
			go func() {
				time.Sleep(5 * time.Millisecond) // mid-transfer of the first op
				fmt.Println("dying now")
				os.Exit(7)
			}()
		}
		for i := 0; ; i++ {
			start := time.Now()
			err := collective.Allreduce(ctx, fmt.Sprintf("big/%d", i), buf, collective.Sum)
			if err != nil {
				fmt.Printf("rank %d: allreduce failed after %v: %v (peer lost: %v)\n", rank, time.Since(start).Round(time.Millisecond), err, errors.Is(err, collective.ErrPeerLost))
				return err
			}
		}
	case "steady":
		// 200 tensors of 4 KiB per step, the same every step.
		grads := make([][]float32, 200)
		for i := range grads {
			grads[i] = make([]float32, 1024)
		}
		var first collective.Stats
		for s := 0; s < steps; s++ {
			hs := make([]*collective.Handle, len(grads))
			for i, g := range grads {
				hs[i] = collective.AllreduceAsync(ctx, fmt.Sprintf("grad/%d", i), g, collective.Average)
			}
			for _, h := range hs {
				if err := h.Wait(ctx); err != nil {
					return err
				}
			}
			if s == 0 {
				first = collective.GetStats()
			}
		}
		last := collective.GetStats()
		fmt.Printf("rank %d: steady: requests after first step %d, backend ops per step %.2f\n", rank,
			last.RequestsToRoot-first.RequestsToRoot, float64(last.BackendOps-first.BackendOps)/float64(steps-1))
	default:
		return fmt.Errorf("unknown mode %q (want %s)", mode, strings.Join([]string{"allreduce", "noinit", "mismatch", "stall", "die", "steady"}, ", "))
	}
	return nil
}
