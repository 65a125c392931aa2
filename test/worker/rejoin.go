package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// rejoin closes its world and joins a new one rounds times with the
// package-level functions (Shutdown, Init), then rounds times as World
// values (Close, NewWorld); each world runs an allreduce. After each close
// it checks that the world left nothing behind: goroutines, sockets and
// shared-memory mappings come back to what the process had after the first
// world closed.
func rejoin(ctx context.Context, rounds int) error {
	var base *usage
	for i := 0; i < rounds; i++ {
		if err := collective.Init(ctx); err != nil {
			return fmt.Errorf("Init #%d: %w", i+1, err)
		}
		w := collective.Default()
		err := rejoinAllreduce(ctx, w, "Init", i)
		if serr := collective.Shutdown(ctx); err == nil && serr != nil {
			err = fmt.Errorf("Shutdown #%d: %w", i+1, serr)
		}
		if err != nil {
			return err
		}
		if base, err = settled(ctx, base); err != nil {
			return fmt.Errorf("after Shutdown #%d: %w", i+1, err)
		}
	}
	for i := 0; i < rounds; i++ {
		w, err := collective.NewWorld(ctx)
		if err != nil {
			return fmt.Errorf("NewWorld #%d: %w", i+1, err)
		}
		err = rejoinAllreduce(ctx, w, "NewWorld", i)
		if cerr := w.Close(ctx); err == nil && cerr != nil {
			err = fmt.Errorf("Close #%d: %w", i+1, cerr)
		}
		if err != nil {
			return err
		}
		if base, err = settled(ctx, base); err != nil {
			return fmt.Errorf("after Close #%d: %w", i+1, err)
		}
	}
	fmt.Printf("rank %d: rejoin ok: %d worlds, nothing left behind (%s)\n", envRank(), 2*rounds, base)
	return nil
}

func rejoinAllreduce(ctx context.Context, w *collective.World, how string, i int) error {
	// A large tensor too, so shared-memory links carry data.
	small := []float32{float32(w.Rank()), float32(i)}
	big := make([]float64, 1<<16)
	for k := range big {
		big[k] = float64(w.Rank() + k)
	}
	in := collective.InWorld(w)
	if err := collective.Allreduce(ctx, "small", small, collective.Sum, in); err != nil {
		return fmt.Errorf("%s #%d (epoch %d): %w", how, i+1, w.Epoch(), err)
	}
	if err := collective.Allreduce(ctx, "big", big, collective.Sum, in); err != nil {
		return fmt.Errorf("%s #%d (epoch %d): %w", how, i+1, w.Epoch(), err)
	}
	n := w.Size()
	if small[0] != float32(n*(n-1)/2) || small[1] != float32(n*i) {
		return fmt.Errorf("%s #%d: sum %v", how, i+1, small)
	}
	for k, v := range big {
		if v != float64(n*k+n*(n-1)/2) {
			return fmt.Errorf("%s #%d: big[%d] = %v", how, i+1, k, v)
		}
	}
	fmt.Printf("rank %d: %s #%d epoch %d: sum %v\n", w.Rank(), how, i+1, w.Epoch(), small)
	return nil
}

// usage is what a closed world must give back.
type usage struct {
	goroutines, sockets, shmMaps int
}

func (u *usage) String() string {
	return fmt.Sprintf("%d goroutines, %d sockets, %d shm mappings", u.goroutines, u.sockets, u.shmMaps)
}

func measure() (*usage, error) {
	u := &usage{goroutines: runtime.NumGoroutine()}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			u.sockets++
		}
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	u.shmMaps = strings.Count(string(maps), "/dev/shm/")
	return u, nil
}

// settled waits (bounded by ctx) until usage is no more than base; the
// first call records the base.
func settled(ctx context.Context, base *usage) (*usage, error) {
	for {
		u, err := measure()
		if err != nil {
			return nil, err
		}
		if u.shmMaps > 0 {
			if base == nil || ctx.Err() != nil {
				return nil, fmt.Errorf("%d shared-memory mappings left", u.shmMaps)
			}
		}
		if base == nil {
			return u, nil
		}
		if u.goroutines <= base.goroutines && u.sockets <= base.sockets && u.shmMaps == 0 {
			return base, nil
		}
		select {
		case <-ctx.Done():
			buf := make([]byte, 1<<16)
			return nil, fmt.Errorf("left behind: %s, after the first world %s\n%s", u, base, buf[:runtime.Stack(buf, true)])
		case <-time.After(10 * time.Millisecond):
		}
	}
}
