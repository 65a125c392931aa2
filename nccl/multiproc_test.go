//go:build cgo

package nccl

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/tensor/tensortest"
)

// Multi-process tests: the test binary runs itself np times as the ranks of
// one communicator over the test double, each rank a process of its own, as
// under gorun. A child reads its part from the environment (childEnv and
// the variables below), runs a scenario and exits 0 when it held.
const (
	childEnv     = "GOROVOD_NCCL_TEST_CHILD"
	childRank    = "GOROVOD_NCCL_TEST_RANK"
	childSize    = "GOROVOD_NCCL_TEST_SIZE"
	childID      = "GOROVOD_NCCL_TEST_ID"
	childLibDir  = "GOROVOD_NCCL_TEST_LIBDIR"
	childTimeout = 20 * time.Second // the progress deadline each rank waits under
)

type rankResult struct {
	rank int
	code int
	out  string
}

// runRanks runs scenario on np child processes and returns each one's exit
// code and output.
func runRanks(t *testing.T, v fakeVariant, np int, scenario string, env ...string) []rankResult {
	t.Helper()
	lib, _ := loadFake(t, v)
	id, err := lib.GetUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := make([]rankResult, np)
	var wg sync.WaitGroup
	for r := 0; r < np; r++ {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			childEnv+"="+scenario, childRank+"="+strconv.Itoa(r), childSize+"="+strconv.Itoa(np),
			childID+"="+hex.EncodeToString(id[:]), childLibDir+"="+filepath.Join(fakes.dir, string(v)),
			"FAKENCCL_CHUNK=4096", "FAKECUDA_DEVICES=4", "FAKE_NCCL_LOG=")
		cmd.Env = append(cmd.Env, env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { // Wait reaps at once: the double sees a dead rank as a zombie otherwise
			defer wg.Done()
			err := cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				code = -1
			}
			res[r] = rankResult{rank: r, code: code, out: out.String()}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("ranks did not finish: %v", ctx.Err())
	}
	return res
}

func requireAllOK(t *testing.T, res []rankResult) {
	t.Helper()
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("rank %d exited %d:\n%s", r.rank, r.code, r.out)
		}
	}
}

func TestMultiProcessCollectives(t *testing.T) {
	for _, np := range []int{2, 4} {
		for _, v := range []fakeVariant{fakeNew, fakeOld} {
			t.Run(fmt.Sprintf("np%d-%s", np, v), func(t *testing.T) {
				requireAllOK(t, runRanks(t, v, np, "matrix"))
			})
		}
	}
}

func TestMultiProcessFaults(t *testing.T) {
	for _, tc := range []struct {
		name, fault string
		np          int
		// want matches what every healthy rank's error must say.
		want string
	}{
		{"async-error", "error:1:3", 2, `rank 1 aborted|rank 1: injected|injected async error on rank 1`},
		{"async-error", "error:1:3", 4, `rank 1 aborted|rank 1: injected|injected async error on rank 1`},
		{"lost-rank", "exit:1:3", 2, `rank 1 \(pid \d+\) is gone|rank 1: process \d+ is gone`},
		{"lost-rank", "exit:2:2", 4, `rank 2 \(pid \d+\) is gone|rank 2: process \d+ is gone`},
		{"hang", "hang:1:3", 2, `rank [01] aborted|stream not done on rank [01]`},
		{"hang", "hang:3:2", 4, `rank [0-3] aborted|stream not done on rank [0-3]|first failure: rank [0-3]`},
	} {
		t.Run(fmt.Sprintf("%s-np%d", tc.name, tc.np), func(t *testing.T) {
			var kind string
			var faulty int
			fmt.Sscanf(strings.ReplaceAll(tc.fault, ":", " "), "%s %d", &kind, &faulty)
			res := runRanks(t, fakeNew, tc.np, "fault", "FAKENCCL_FAULT="+tc.fault, "GOROVOD_NCCL_TEST_WANT="+tc.want,
				"GOROVOD_NCCL_TEST_DEADLINE=3s")
			for _, r := range res {
				switch {
				case r.rank == faulty && kind == "exit":
					if r.code != 3 {
						t.Errorf("rank %d should have exited 3 at the fault, exited %d:\n%s", r.rank, r.code, r.out)
					}
				case r.code != 0:
					t.Errorf("rank %d exited %d:\n%s", r.rank, r.code, r.out)
				default:
					t.Logf("rank %d: %s", r.rank, strings.TrimSpace(r.out))
				}
			}
		})
	}
}

// ---- the child side ----

func runChild(scenario string) int {
	if err := child(scenario); err != nil {
		fmt.Fprintf(os.Stderr, "rank %s: %v\n", os.Getenv(childRank), err)
		return 1
	}
	return 0
}

func child(scenario string) error {
	rank, _ := strconv.Atoi(os.Getenv(childRank))
	size, _ := strconv.Atoi(os.Getenv(childSize))
	raw, err := hex.DecodeString(os.Getenv(childID))
	if err != nil || len(raw) != len(UniqueID{}) {
		return fmt.Errorf("bad %s: %v", childID, err)
	}
	var id UniqueID
	copy(id[:], raw)
	dir := os.Getenv(childLibDir)
	lib, err := LoadFrom([]string{filepath.Join(dir, "libnccl.so.2")}, []string{filepath.Join(dir, "libcudart.so.12")})
	if err != nil {
		return err
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	c, err := lib.NewComm(ctx, size, rank, id, rank%4, WithWatchdogInterval(5*time.Millisecond))
	if err != nil {
		return err
	}
	r := &childRig{lib: lib, dev: lib.Device(rank % 4), comm: c, rank: rank, size: size}
	if r.stream, err = r.dev.NewStream(); err != nil {
		return err
	}
	switch scenario {
	case "matrix":
		err = r.matrix(ctx)
	case "fault":
		err = r.fault()
	case "executor":
		err = r.executor(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q", scenario)
	}
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return noLeak(before)
}

func noLeak(before int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for runtime.NumGoroutine() > before {
		if ctx.Err() != nil {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	return nil
}

type childRig struct {
	lib        *Library
	dev        Device
	comm       *Comm
	stream     Stream
	rank, size int
}

func (r *childRig) upload(b []byte) (DevicePtr, error) {
	p, err := r.dev.Malloc(len(b))
	if err != nil {
		return 0, err
	}
	return p, r.dev.CopyToDevice(p, b)
}

func (r *childRig) download(ctx context.Context, p DevicePtr, n int) ([]byte, error) {
	if err := r.comm.Synchronize(ctx, r.stream); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	return b, r.dev.CopyFromDevice(b, p)
}

// The matrix: every dtype NCCL has a tensor type for, every reduction it
// supports, every collective, odd lengths (1031 elements spans several of
// the double's 4 KiB exchange steps).
var (
	matrixDTypes = []tensor.DType{tensor.Int8, tensor.Uint8, tensor.Int32, tensor.Int64, tensor.Uint64,
		tensor.Float16, tensor.Float32, tensor.Float64, tensor.BFloat16}
	matrixOps    = []tensor.ReduceOp{tensor.Sum, tensor.Product, tensor.Min, tensor.Max, tensor.Average}
	matrixCounts = []int{1, 7, 1031}
)

func (r *childRig) matrix(ctx context.Context) error {
	v := r.lib.NCCLVersion()
	for _, dt := range matrixDTypes {
		if _, err := MapDType(dt, v); err != nil {
			continue // bfloat16 before 2.10
		}
		for _, n := range matrixCounts {
			for _, op := range matrixOps {
				if err := r.checkAllreduce(ctx, dt, op, n); err != nil {
					return err
				}
				if err := r.checkReduceScatter(ctx, dt, op, n); err != nil {
					return err
				}
			}
			for _, check := range []func(context.Context, tensor.DType, int) error{r.checkAllgather, r.checkBroadcast, r.checkAlltoallV} {
				if err := check(ctx, dt, n); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// compare checks got against want element by element and names the first
// difference.
func compare(what string, dt tensor.DType, got []byte, want []float64) error {
	w := tensortest.Encode(dt, want)
	if len(got) != len(w) {
		return fmt.Errorf("%s: %d bytes, want %d", what, len(got), len(w))
	}
	es := dt.Size()
	for i := range want {
		if !bytes.Equal(got[i*es:(i+1)*es], w[i*es:(i+1)*es]) {
			return fmt.Errorf("%s: element %d is %x, want %x (%v)", what, i, got[i*es:(i+1)*es], w[i*es:(i+1)*es], want[i])
		}
	}
	return nil
}

func (r *childRig) collective(ctx context.Context, send []byte, recvBytes int, run func(s, d DevicePtr) error) ([]byte, error) {
	s, err := r.upload(send)
	if err != nil {
		return nil, err
	}
	defer r.dev.Free(s)
	d, err := r.dev.Malloc(recvBytes)
	if err != nil {
		return nil, err
	}
	defer r.dev.Free(d)
	if err := run(s, d); err != nil {
		return nil, err
	}
	return r.download(ctx, d, recvBytes)
}

func (r *childRig) checkAllreduce(ctx context.Context, dt tensor.DType, op tensor.ReduceOp, n int) error {
	what := fmt.Sprintf("allreduce %v %v n=%d", dt, op, n)
	red, err := r.comm.Reduction(dt, op)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	got, err := r.collective(ctx, tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n)), n*dt.Size(), func(s, d DevicePtr) error {
		return r.comm.Allreduce(ctx, s, d, n, dt, op, r.stream)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	want := make([]float64, n)
	for i := range want {
		if red.Postscale { // Average as Sum on NCCL < 2.10: the caller divides
			want[i] = tensortest.Reduced(dt, tensor.Sum, r.size, i)
		} else {
			want[i] = tensortest.Reduced(dt, op, r.size, i)
		}
	}
	return compare(what, dt, got, want)
}

func (r *childRig) checkReduceScatter(ctx context.Context, dt tensor.DType, op tensor.ReduceOp, n int) error {
	what := fmt.Sprintf("reducescatter %v %v n=%d", dt, op, n)
	red, err := r.comm.Reduction(dt, op)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	got, err := r.collective(ctx, tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n*r.size)), n*dt.Size(), func(s, d DevicePtr) error {
		return r.comm.ReduceScatter(ctx, s, d, n, dt, op, r.stream)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	want := make([]float64, n)
	for i := range want {
		o := op
		if red.Postscale {
			o = tensor.Sum
		}
		want[i] = tensortest.Reduced(dt, o, r.size, r.rank*n+i)
	}
	return compare(what, dt, got, want)
}

func (r *childRig) checkAllgather(ctx context.Context, dt tensor.DType, n int) error {
	what := fmt.Sprintf("allgather %v n=%d", dt, n)
	got, err := r.collective(ctx, tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n)), r.size*n*dt.Size(), func(s, d DevicePtr) error {
		return r.comm.AllGather(ctx, s, d, n, dt, r.stream)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var want []float64
	for k := 0; k < r.size; k++ {
		want = append(want, tensortest.Values(dt, k, 0, n)...)
	}
	return compare(what, dt, got, want)
}

func (r *childRig) checkBroadcast(ctx context.Context, dt tensor.DType, n int) error {
	root := r.size - 1
	what := fmt.Sprintf("broadcast %v n=%d root=%d", dt, n, root)
	got, err := r.collective(ctx, tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n)), n*dt.Size(), func(s, d DevicePtr) error {
		return r.comm.Broadcast(ctx, s, d, n, dt, root, r.stream)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return compare(what, dt, got, tensortest.Values(dt, root, 0, n))
}

// checkAlltoallV sends k+rank+n%3 elements to rank k (uneven blocks), the
// shape of an allgather with uneven counts done as grouped send/recv.
func (r *childRig) checkAlltoallV(ctx context.Context, dt tensor.DType, n int) error {
	what := fmt.Sprintf("alltoallv %v n=%d", dt, n)
	count := func(from, to int) int { return to + from + n%3 }
	sc, sd, rc, rd := make([]int, r.size), make([]int, r.size), make([]int, r.size), make([]int, r.size)
	sTotal, rTotal := 0, 0
	for k := 0; k < r.size; k++ {
		sc[k], sd[k] = count(r.rank, k), sTotal
		rc[k], rd[k] = count(k, r.rank), rTotal
		sTotal += sc[k]
		rTotal += rc[k]
	}
	// Blocks differ by sender, receiver and position.
	block := func(from, to int) []float64 {
		vs := make([]float64, count(from, to))
		for j := range vs {
			vs[j] = float64((from*7+to*3+j)%5 + 1)
		}
		return vs
	}
	var send, want []float64
	for k := 0; k < r.size; k++ {
		send = append(send, block(r.rank, k)...)
		want = append(want, block(k, r.rank)...)
	}
	got, err := r.collective(ctx, tensortest.Encode(dt, send), rTotal*dt.Size(), func(s, d DevicePtr) error {
		return r.comm.AlltoallV(ctx, s, sc, sd, d, rc, rd, dt, r.stream)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return compare(what, dt, got, want)
}

// fault runs allreduces until one fails (the parent injected a fault) and
// checks that the failure is an abort that names the rank at fault.
func (r *childRig) fault() error {
	deadline, err := time.ParseDuration(os.Getenv("GOROVOD_NCCL_TEST_DEADLINE"))
	if err != nil {
		return err
	}
	want := os.Getenv("GOROVOD_NCCL_TEST_WANT")
	buf, err := r.upload(tensortest.Encode(tensor.Float32, tensortest.Values(tensor.Float32, r.rank, 0, 64)))
	if err != nil {
		return err
	}
	defer r.dev.Free(buf)
	for i := 1; i <= 6; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		err := r.comm.Allreduce(ctx, buf, buf, 64, tensor.Float32, tensor.Sum, r.stream)
		if err == nil {
			err = r.comm.Synchronize(ctx, r.stream)
		}
		cancel()
		if err == nil {
			continue
		}
		fmt.Printf("collective %d: %v\n", i, err)
		if !errors.Is(err, ErrAborted) {
			return fmt.Errorf("collective %d: %w, want ErrAborted", i, err)
		}
		if !regexp.MustCompile(want).MatchString(err.Error()) {
			return fmt.Errorf("collective %d: %q does not match %q", i, err, want)
		}
		return nil
	}
	return errors.New("no collective failed: the fault did not fire")
}
