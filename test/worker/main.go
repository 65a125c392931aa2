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
	mode := flag.String("mode", "allreduce", "allreduce | noinit | exit0 | mismatch | stall | die | kill | negkill | steady | features | chaos | rejoin")
	rankFlag := flag.Int("rank", 1, "the rank that misbehaves")
	size := flag.Int("n", 1<<20, "elements per allreduce (die mode)")
	steps := flag.Int("steps", 20, "steps (steady and chaos modes), rounds (rejoin mode)")
	large := flag.Int("large", 1<<18, "elements of the large allreduce (chaos mode)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if *mode == "chaos" {
		if err := chaosJob(ctx, *steps, *large); err != nil {
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, *mode, *rankFlag, *size, *steps); err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
		os.Exit(1)
	}
}

// envRank is the rank the launcher gave (gorun's or a torchrun-style one).
func envRank() int {
	var r int
	v := os.Getenv("GOROVOD_RANK")
	if v == "" {
		v = os.Getenv("RANK")
	}
	_, _ = fmt.Sscan(v, &r)
	return r
}

func run(ctx context.Context, mode string, bad, n, steps int) error {
	if mode == "rejoin" {
		return rejoin(ctx, steps)
	}
	if mode == "exit0" {
		return exitBeforeInit(ctx, bad)
	}
	if mode == "noinit" && envRank() == bad {
		fmt.Println("not calling Init")
		<-ctx.Done() // stays up without registering until gorun stops it
		return nil
	}
	if err := collective.Init(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer collective.Shutdown(ctx)
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
	case "die", "kill":
		// Survivors ignore SIGTERM so they can report the error gorun's
		// stop would otherwise cut short; gorun SIGKILLs after its grace.
		signal.Ignore(syscall.SIGTERM)
		buf := make([]float32, n)
		if rank == bad {
			go func() {
				time.Sleep(5 * time.Millisecond) // mid-transfer of the first op
				fmt.Println("dying now")
				if mode == "kill" {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
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
	case "negkill":
		// Every call has a new name, so each goes through the slow path
		// (requests gathered to rank 0, responses broadcast) where a tiny
		// tensor spends most of its time; the bad rank is killed meanwhile.
		signal.Ignore(syscall.SIGTERM)
		if rank == bad {
			go func() {
				time.Sleep(20 * time.Millisecond)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}()
		}
		for i := 0; ; i++ {
			if err := collective.Allreduce(ctx, fmt.Sprintf("neg/%d", i), []float32{1}, collective.Sum); err != nil {
				fmt.Printf("rank %d: call %d failed: %v (peer lost: %v)\n", rank, i, err, errors.Is(err, collective.ErrPeerLost))
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
	case "features":
		return features(ctx, rank)
	default:
		return fmt.Errorf("unknown mode %q (want %s)", mode, strings.Join([]string{"allreduce", "noinit", "mismatch", "stall", "die", "kill", "negkill", "steady", "features", "chaos", "rejoin", "exit0"}, ", "))
	}
	return nil
}

// features exercises process sets, join, grouped allreduce and object
// collectives; it needs 3 ranks.
func features(ctx context.Context, rank int) error {
	if collective.Size() != 3 {
		return fmt.Errorf("features mode needs 3 ranks, got %d", collective.Size())
	}
	// process set {0, 2}
	ps, err := collective.NewProcessSet(ctx, []int{2, 0})
	if err != nil {
		return fmt.Errorf("new process set: %w", err)
	}
	if ps.Included() {
		buf := []int32{int32(rank), 1}
		if err := collective.Allreduce(ctx, "ps/sum", buf, collective.Sum, collective.InProcessSet(ps)); err != nil {
			return fmt.Errorf("allreduce in process set: %w", err)
		}
		if buf[0] != 2 || buf[1] != 2 {
			return fmt.Errorf("allreduce in process set {0,2}: got %v, want [2 2]", buf)
		}
		b := []float64{float64(rank)}
		if err := collective.Broadcast(ctx, "ps/bcast", b, 2, collective.InProcessSet(ps)); err != nil {
			return fmt.Errorf("broadcast in process set: %w", err)
		}
		if b[0] != 2 {
			return fmt.Errorf("broadcast from rank 2 in process set: got %v", b[0])
		}
	} else if err := collective.Allreduce(ctx, "ps/sum", []int32{1}, collective.Sum, collective.InProcessSet(ps)); !errors.Is(err, collective.ErrInvalid) {
		return fmt.Errorf("non-member call: %v, want ErrInvalid", err)
	}
	fmt.Printf("rank %d: process set ok (member %v)\n", rank, ps.Included())

	// grouped allreduce
	g := [][]float32{{1, 2}, {float32(rank)}, {}, {5, 5, 5}}
	if err := collective.GroupedAllreduce(ctx, "grads", g, collective.Sum); err != nil {
		return fmt.Errorf("grouped allreduce: %w", err)
	}
	if g[0][0] != 3 || g[0][1] != 6 || g[1][0] != 3 || g[3][2] != 15 {
		return fmt.Errorf("grouped allreduce: got %v", g)
	}
	fmt.Printf("rank %d: grouped allreduce ok\n", rank)

	// objects
	type cfg struct {
		LR   float64
		Name string
	}
	c := cfg{LR: float64(rank), Name: fmt.Sprintf("from %d", rank)}
	if err := collective.BroadcastObject(ctx, "cfg", &c, 1); err != nil {
		return fmt.Errorf("broadcast object: %w", err)
	}
	if c.LR != 1 || c.Name != "from 1" {
		return fmt.Errorf("broadcast object from 1: got %+v", c)
	}
	all, err := collective.AllgatherObject(ctx, "names", strings.Repeat("x", rank))
	if err != nil {
		return fmt.Errorf("allgather object: %w", err)
	}
	if len(all) != 3 || all[0] != "" || all[2] != "xx" {
		return fmt.Errorf("allgather object: got %q", all)
	}
	fmt.Printf("rank %d: objects ok\n", rank)

	// join: rank r has r+1 batches; a joined rank contributes zeros
	for step := 0; step <= rank; step++ {
		buf := []float32{1}
		if err := collective.Allreduce(ctx, fmt.Sprintf("join/step%d", step), buf, collective.Sum); err != nil {
			return fmt.Errorf("allreduce before join: %w", err)
		}
		if want := float32(3 - step); buf[0] != want {
			return fmt.Errorf("step %d: sum with joined ranks %v, want %v", step, buf[0], want)
		}
	}
	last, err := collective.Join(ctx)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if last != 2 {
		return fmt.Errorf("join: last rank %d, want 2", last)
	}
	fmt.Printf("rank %d: join ok (last %d)\n", rank, last)
	return nil
}

// exitBeforeInit: rank bad exits 0 without calling Init; the others' Init
// must fail with one of the typed errors, saying which.
func exitBeforeInit(ctx context.Context, bad int) error {
	if envRank() == bad {
		fmt.Println("exiting before Init")
		return nil
	}
	err := collective.Init(ctx)
	if err == nil {
		_ = collective.Shutdown(ctx)
		return errors.New("Init succeeded without the rank that exited")
	}
	fmt.Printf("rank %d: init failed: %v (peer lost: %v)\n", envRank(), err, errors.Is(err, collective.ErrPeerLost))
	return err
}
