//go:build cgo

package nccl

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/nccl/fakenccl"
)

// The test double (nccl/fakenccl) is compiled once per test binary, in
// three variants.
var fakes struct {
	once sync.Once
	dir  string
	err  error
}

// fakeVariant names a compiled variant of the double.
type fakeVariant string

const (
	fakeNew    fakeVariant = "new"    // 2.18.3: nonblocking init, ncclAvg, bf16, ncclGetLastError
	fakeOld    fakeVariant = "old"    // 2.8.4: blocking init only, no ncclAvg, no bf16
	fakeBroken fakeVariant = "broken" // 2.18.3 without ncclAllReduce
)

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	code := m.Run()
	if fakes.dir != "" {
		os.RemoveAll(fakes.dir)
	}
	os.Exit(code)
}

func buildFakes() (string, error) {
	dir, err := os.MkdirTemp("", "nccl-fake-")
	if err != nil {
		return "", err
	}
	ctx := context.Background()
	for v, o := range map[fakeVariant]fakenccl.Options{
		fakeNew:    {},
		fakeOld:    {Version: 2804, NoConfig: true},
		fakeBroken: {Broken: true},
	} {
		if err := fakenccl.Build(ctx, filepath.Join(dir, string(v)), o); err != nil {
			return dir, err
		}
	}
	return dir, nil
}

func fakePaths(v fakeVariant) (ncclPath, cudartPath string) {
	d := filepath.Join(fakes.dir, string(v))
	return filepath.Join(d, fakenccl.NCCLName), filepath.Join(d, fakenccl.CUDARTName)
}

// loadFake loads a fake NCCL variant and logs its calls to a fresh file.
func loadFake(t testing.TB, v fakeVariant) (*Library, *callLog) {
	t.Helper()
	fakes.once.Do(func() { fakes.dir, fakes.err = buildFakes() })
	if errors.Is(fakes.err, fakenccl.ErrNoCompiler) {
		t.Skip(fakes.err)
	}
	if fakes.err != nil {
		t.Fatal(fakes.err)
	}
	log := &callLog{path: filepath.Join(t.TempDir(), "calls.log")}
	t.Setenv("FAKE_NCCL_LOG", log.path)
	np, cp := fakePaths(v)
	lib, err := LoadFrom([]string{filepath.Join(fakes.dir, "libnccl-absent.so"), np}, []string{cp})
	if err != nil {
		t.Fatalf("LoadFrom fake %s: %v", v, err)
	}
	return lib, log
}

type callLog struct{ path string }

func (l *callLog) lines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(l.path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// want checks that the log holds each line, in this order (other calls may
// sit between them).
func (l *callLog) want(t *testing.T, want ...string) {
	t.Helper()
	got := l.lines(t)
	i := 0
	for _, g := range got {
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("call log lacks %q (in order); got:\n%s", want[i], strings.Join(got, "\n"))
	}
}

func float32Bytes(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// world is a one-rank communicator on the fake with device buffers.
type world struct {
	lib    *Library
	dev    Device
	comm   *Comm
	stream Stream
}

func newWorld(t *testing.T, lib *Library, opts ...CommOption) *world {
	t.Helper()
	ctx := context.Background()
	id, err := lib.GetUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	c, err := lib.NewComm(ctx, 1, 0, id, 1, opts...)
	if err != nil {
		t.Fatalf("NewComm: %v", err)
	}
	w := &world{lib: lib, dev: lib.Device(1), comm: c}
	if w.stream, err = w.dev.NewStream(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := w.dev.DestroyStream(w.stream); err != nil {
			t.Errorf("DestroyStream: %v", err)
		}
	})
	return w
}

func (w *world) upload(t *testing.T, b []byte) DevicePtr {
	t.Helper()
	p, err := w.dev.Malloc(len(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.dev.Free(p) })
	if err := w.dev.CopyToDevice(p, b); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *world) download(t *testing.T, p DevicePtr, n int) []byte {
	t.Helper()
	if err := w.comm.Synchronize(context.Background(), w.stream); err != nil {
		t.Fatalf("Synchronize: %v", err)
	}
	b := make([]byte, n)
	if err := w.dev.CopyFromDevice(b, p); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFakeLoad(t *testing.T) {
	lib, _ := loadFake(t, fakeNew)
	if a, b, c := lib.Version(); a != 2 || b != 18 || c != 3 {
		t.Errorf("Version = %d.%d.%d, want 2.18.3", a, b, c)
	}
	np, cp := lib.Paths()
	if wn, wc := fakePaths(fakeNew); np != wn || cp != wc {
		t.Errorf("Paths = %q, %q", np, cp)
	}
	if v, err := lib.RuntimeVersion(); err != nil || v != 12040 {
		t.Errorf("RuntimeVersion = %d, %v", v, err)
	}
	if n, err := lib.DeviceCount(); err != nil || n != 2 {
		t.Errorf("DeviceCount = %d, %v", n, err)
	}
	id, err := lib.GetUniqueID()
	if err != nil || !bytes.HasPrefix(id[:], []byte("fake-unique-id\x00")) {
		t.Errorf("GetUniqueID = %q, %v", id[:16], err)
	}
}

func TestFakeMissingSymbol(t *testing.T) {
	fakesDir(t)
	bn, bc := fakePaths(fakeBroken)
	_, err := LoadFrom([]string{bn}, []string{bc})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "ncclAllReduce") {
		t.Errorf("LoadFrom broken fake: %v, want ErrUnavailable naming ncclAllReduce", err)
	}
	nn, _ := fakePaths(fakeNew)
	_, err = LoadFrom([]string{nn}, []string{"/nonexistent/libcudart.so.12"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "libcudart") || strings.Contains(err.Error(), "cannot load NCCL") {
		t.Errorf("LoadFrom without cudart: %v, want ErrUnavailable naming only libcudart", err)
	}
}

func fakesDir(t testing.TB) string {
	loadFake(t, fakeNew)
	return fakes.dir
}

func TestFakeCollectives(t *testing.T) {
	for _, v := range []fakeVariant{fakeNew, fakeOld} {
		t.Run(string(v), func(t *testing.T) {
			checkNoLeak(t)
			lib, log := loadFake(t, v)
			w := newWorld(t, lib)
			ctx := context.Background()
			in := float32Bytes(1, 2, 3, 4)
			send := w.upload(t, in)
			recv := w.upload(t, make([]byte, len(in)))

			if err := w.comm.Allreduce(ctx, send, recv, 4, tensor.Float32, tensor.Sum, w.stream); err != nil {
				t.Fatalf("Allreduce: %v", err)
			}
			if got := w.download(t, recv, len(in)); !bytes.Equal(got, in) {
				t.Errorf("Allreduce on one rank = %v, want %v", got, in)
			}
			if err := w.comm.Allreduce(ctx, send, recv, 4, tensor.Float32, tensor.Average, w.stream); err != nil {
				t.Fatalf("Allreduce avg: %v", err)
			}
			red, _ := w.comm.Reduction(tensor.Float32, tensor.Average)
			wantAvg := "allReduce count=4 dt=7 op=4"
			if v == fakeOld {
				wantAvg = "allReduce count=4 dt=7 op=0"
				if !red.Postscale {
					t.Error("Average on 2.8.4 should need a postscale")
				}
			}
			log.want(t, "initRank", fmt.Sprintf("allReduce count=4 dt=7 op=0 stream=%#x", uintptr(w.stream)), wantAvg)

			err := w.comm.Allreduce(ctx, send, recv, 2, tensor.BFloat16, tensor.Sum, w.stream)
			if v == fakeOld {
				if !errors.Is(err, ErrUnsupported) {
					t.Errorf("bf16 on 2.8.4: %v, want ErrUnsupported", err)
				}
			} else if err != nil {
				t.Errorf("bf16 on 2.18.3: %v", err)
			}
			if err := w.comm.Allreduce(ctx, send, recv, 1, tensor.Int32, tensor.BitOr, w.stream); !errors.Is(err, ErrUnsupported) {
				t.Errorf("BitOr: %v, want ErrUnsupported", err)
			}

			gathered := w.upload(t, make([]byte, len(in)))
			if err := w.comm.AllGather(ctx, send, gathered, 4, tensor.Float32, w.stream); err != nil {
				t.Fatalf("AllGather: %v", err)
			}
			if got := w.download(t, gathered, len(in)); !bytes.Equal(got, in) {
				t.Errorf("AllGather = %v", got)
			}
			if err := w.comm.Broadcast(ctx, send, recv, 2, tensor.Int64, 0, w.stream); err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
			if err := w.comm.Broadcast(ctx, send, recv, 2, tensor.Int64, 1, w.stream); !errors.Is(err, ErrInvalid) {
				t.Errorf("Broadcast root 1 of 1: %v, want ErrInvalid", err)
			}
			if err := w.comm.ReduceScatter(ctx, send, recv, 4, tensor.Float32, tensor.Max, w.stream); err != nil {
				t.Fatalf("ReduceScatter: %v", err)
			}
			a2a := w.upload(t, make([]byte, len(in)))
			if err := w.comm.Alltoall(ctx, send, a2a, 4, tensor.Float32, w.stream); err != nil {
				t.Fatalf("Alltoall: %v", err)
			}
			if got := w.download(t, a2a, len(in)); !bytes.Equal(got, in) {
				t.Errorf("Alltoall = %v", got)
			}
			if err := w.comm.AlltoallV(ctx, send, []int{1, 2}, []int{0, 1}, a2a, []int{1}, []int{0}, tensor.Float32, w.stream); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "one per rank") {
				t.Errorf("AlltoallV with 2 counts on 1 rank: %v", err)
			}
			log.want(t, "allGather count=4 dt=7", "broadcast count=2 dt=4 root=0", "reduceScatter count=4 dt=7 op=2",
				"groupStart", "send count=4 dt=7 peer=0", "recv count=4 dt=7 peer=0", "groupEnd")
			if w.comm.Err() != nil {
				t.Errorf("Err after good calls: %v", w.comm.Err())
			}
		})
	}
}

func TestFakeCallErrors(t *testing.T) {
	for _, v := range []fakeVariant{fakeNew, fakeOld} {
		t.Run(string(v), func(t *testing.T) {
			checkNoLeak(t)
			lib, log := loadFake(t, v)
			w := newWorld(t, lib)
			ctx := context.Background()
			buf := w.upload(t, make([]byte, 4*1000))

			// ncclInvalidArgument: reported with NCCL's text; the communicator survives.
			err := w.comm.Allreduce(ctx, buf, buf, 999, tensor.Float32, tensor.Sum, w.stream)
			var ce *CallError
			if !errors.As(err, &ce) || ce.Result != InvalidArgument || ce.Call != "ncclAllReduce" || ce.Text != "invalid argument" {
				t.Fatalf("Allreduce(999): %v, want CallError ncclInvalidArgument", err)
			}
			if v == fakeNew && ce.Detail != "fake last error on rank 0" {
				t.Errorf("Detail = %q, want ncclGetLastError's text", ce.Detail)
			}
			if w.comm.Err() != nil {
				t.Errorf("invalid argument aborted the communicator: %v", w.comm.Err())
			}
			// ncclRemoteError: the communicator is aborted and says so afterwards.
			err = w.comm.Allreduce(ctx, buf, buf, 666, tensor.Float32, tensor.Sum, w.stream)
			if !errors.As(err, &ce) || ce.Result != RemoteError || !strings.Contains(err.Error(), "remote error") {
				t.Fatalf("Allreduce(666): %v, want ncclRemoteError", err)
			}
			<-w.comm.Done()
			err = w.comm.Allreduce(ctx, buf, buf, 4, tensor.Float32, tensor.Sum, w.stream)
			if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "ncclRemoteError") {
				t.Errorf("after remote error: %v, want ErrAborted naming the cause", err)
			}
			log.want(t, "allReduce count=999", "allReduce count=666", "abort rank=0")
			if err := w.comm.Close(); err != nil {
				t.Errorf("Close after abort: %v", err)
			}
			if err := w.comm.Allreduce(ctx, buf, buf, 4, tensor.Float32, tensor.Sum, w.stream); !errors.Is(err, ErrClosed) {
				t.Errorf("after Close: %v, want ErrClosed", err)
			}
			for _, l := range log.lines(t) {
				if strings.HasPrefix(l, "destroy") {
					t.Errorf("aborted communicator was destroyed too: %q", l)
				}
			}
		})
	}
}

func TestFakeCloseDestroys(t *testing.T) {
	checkNoLeak(t)
	lib, log := loadFake(t, fakeNew)
	id, _ := lib.GetUniqueID()
	c, err := lib.NewComm(context.Background(), 1, 0, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Abort(); err != nil {
		t.Errorf("Abort after Close: %v", err)
	}
	<-c.Done()
	log.want(t, "initRankConfig nranks=1 rank=0 blocking=0", "destroy rank=0")
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err after Close = %v", c.Err())
	}
}

func TestFakeWatchdogAborts(t *testing.T) {
	// Blocking communicators only: on a nonblocking one the completion poll
	// of the collective races the watchdog to see the error first.
	for _, tc := range []struct {
		v    fakeVariant
		opts []CommOption
	}{{fakeNew, []CommOption{WithBlockingInit()}}, {fakeOld, nil}} {
		t.Run(string(tc.v), func(t *testing.T) {
			checkNoLeak(t)
			lib, log := loadFake(t, tc.v)
			var id UniqueID
			id[0] = 'E' // the fake reports ncclRemoteError asynchronously after one collective
			ctx := context.Background()
			c, err := lib.NewComm(ctx, 1, 0, id, 0, append(tc.opts, WithWatchdogInterval(time.Millisecond))...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			d := lib.Device(0)
			buf, _ := d.Malloc(16)
			defer d.Free(buf)
			if err := c.Allreduce(ctx, buf, buf, 4, tensor.Float32, tensor.Sum, 0); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("watchdog did not abort after an async error")
			}
			if err := c.Err(); !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "watchdog") || !strings.Contains(err.Error(), "ncclRemoteError") {
				t.Errorf("Err = %v, want a watchdog abort naming ncclRemoteError", err)
			}
			if err := c.Broadcast(ctx, buf, buf, 4, tensor.Float32, 0, 0); !errors.Is(err, ErrAborted) {
				t.Errorf("Broadcast after watchdog abort: %v", err)
			}
			log.want(t, "allReduce", "abort rank=0")
		})
	}
}

func TestFakeInitDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    fakeVariant
		opts []CommOption
		call string
	}{
		{"nonblocking", fakeNew, nil, "initRankConfig nranks=2"},
		{"blocking-forced", fakeNew, []CommOption{WithBlockingInit()}, "initRank nranks=2"},
		{"blocking-old", fakeOld, nil, "initRank nranks=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			lib, log := loadFake(t, tc.v)
			id, _ := lib.GetUniqueID()
			// Rank 1 never comes: only the context ends the init.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			c, err := lib.NewComm(ctx, 2, 0, id, 0, tc.opts...)
			if err == nil {
				c.Close()
				t.Fatal("NewComm succeeded without the other rank")
			}
			if !errors.Is(err, ErrAborted) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "rank 0/2") {
				t.Errorf("NewComm: %v, want ErrAborted + DeadlineExceeded naming rank 0/2", err)
			}
			log.want(t, tc.call, "abort rank=0")
		})
	}
}

func TestFakeCanceledBeforeInit(t *testing.T) {
	lib, log := loadFake(t, fakeNew)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lib.NewComm(ctx, 1, 0, UniqueID{}, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("NewComm with canceled ctx: %v", err)
	}
	if l := log.lines(t); len(l) != 1 || l[0] != "" {
		t.Errorf("canceled NewComm called NCCL: %q", l)
	}
}

func TestFakeAbortUnblocksInit(t *testing.T) {
	// A comm aborted by its user while a collective is pending reports the
	// abort, not the raw NCCL failure.
	checkNoLeak(t)
	lib, _ := loadFake(t, fakeNew)
	w := newWorld(t, lib)
	if err := w.comm.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.comm.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	err := w.comm.Allreduce(context.Background(), 0, 0, 1, tensor.Float32, tensor.Sum, w.stream)
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "Abort called") {
		t.Errorf("after Abort: %v", err)
	}
}

func TestFakeBadArguments(t *testing.T) {
	lib, _ := loadFake(t, fakeNew)
	ctx := context.Background()
	for _, tc := range []struct{ nranks, rank, dev int }{{0, 0, 0}, {2, 2, 0}, {2, -1, 0}, {1, 0, -1}} {
		if _, err := lib.NewComm(ctx, tc.nranks, tc.rank, UniqueID{}, tc.dev); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewComm(%d, %d, dev %d): %v, want ErrInvalid", tc.nranks, tc.rank, tc.dev, err)
		}
	}
	// Device 5 does not exist: cudaSetDevice's error comes back with its text.
	_, err := lib.NewComm(ctx, 1, 0, UniqueID{}, 5)
	var cerr *CUDAError
	if !errors.As(err, &cerr) || cerr.Call != "cudaSetDevice" || cerr.Code != 101 || !strings.Contains(err.Error(), "fake cuda error 101") {
		t.Errorf("NewComm on device 5: %v, want cudaSetDevice error 101", err)
	}
	if _, err := lib.Device(0).Malloc(-1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Malloc(-1): %v", err)
	}
	if err := lib.Device(0).DestroyStream(Stream(12345)); !errors.As(err, &cerr) || cerr.Code != 400 {
		t.Errorf("DestroyStream(bogus): %v", err)
	}
}

func TestFakeNonblockingAsyncError(t *testing.T) {
	// Without a watchdog, a nonblocking collective's completion poll is what
	// sees the asynchronous error: the call fails and the comm is aborted.
	checkNoLeak(t)
	lib, log := loadFake(t, fakeNew)
	var id UniqueID
	id[0] = 'E'
	ctx := context.Background()
	c, err := lib.NewComm(ctx, 1, 0, id, 0, WithWatchdogInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Allreduce(ctx, 0, 0, 0, tensor.Float32, tensor.Sum, 0); err != nil {
		t.Fatalf("first Allreduce: %v", err)
	}
	err = c.Allreduce(ctx, 0, 0, 0, tensor.Float32, tensor.Sum, 0)
	var ce *CallError
	if !errors.Is(err, ErrAborted) || !errors.As(err, &ce) || ce.Result != RemoteError {
		t.Fatalf("second Allreduce: %v, want ErrAborted wrapping ncclRemoteError", err)
	}
	<-c.Done()
	log.want(t, "initRankConfig", "allReduce", "allReduce", "abort rank=0")
}

// busyStream is a stream whose work never completes in the fake runtime.
const busyStream = Stream(0xB05)

func TestFakeSynchronizeDeadlineAborts(t *testing.T) {
	checkNoLeak(t)
	lib, log := loadFake(t, fakeNew)
	w := newWorld(t, lib)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := w.comm.Synchronize(ctx, busyStream)
	if !errors.Is(err, ErrAborted) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("Synchronize on a stuck stream: %v, want ErrAborted + DeadlineExceeded", err)
	}
	<-w.comm.Done()
	log.want(t, "abort rank=0")
	// The device-level wait only reports the context: it owns no communicator.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := w.dev.Synchronize(cctx, busyStream); !errors.Is(err, context.Canceled) {
		t.Errorf("Device.Synchronize: %v", err)
	}
	if err := w.dev.Synchronize(context.Background(), w.stream); err != nil {
		t.Errorf("Device.Synchronize on an idle stream: %v", err)
	}
}

func TestFakeConcurrentCallsAndAbort(t *testing.T) {
	// Collectives from several goroutines, the watchdog and an Abort in the
	// middle: every call either succeeds or reports the abort (run with -race).
	checkNoLeak(t)
	lib, _ := loadFake(t, fakeNew)
	w := newWorld(t, lib, WithWatchdogInterval(time.Millisecond))
	buf := w.upload(t, make([]byte, 64))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4*50)
	started := make(chan struct{}, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			for i := 0; i < 50; i++ {
				if err := w.comm.Allreduce(ctx, buf, buf, 16, tensor.Float32, tensor.Sum, w.stream); err != nil {
					errs <- err
				}
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-started
	}
	if err := w.comm.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrAborted) {
			t.Errorf("concurrent Allreduce: %v, want nil or ErrAborted", err)
		}
	}
	if err := w.comm.Allreduce(ctx, buf, buf, 16, tensor.Float32, tensor.Sum, w.stream); !errors.Is(err, ErrAborted) {
		t.Errorf("after Abort: %v", err)
	}
}

// BenchmarkFakeAllreduce measures the binding's own cost per collective
// (locks, cgo crossing, cudaSetDevice, enqueue) against the fake library,
// where the "collective" is a 4-byte copy.
func BenchmarkFakeAllreduce(b *testing.B) {
	for _, v := range []fakeVariant{fakeOld, fakeNew} {
		b.Run(string(v), func(b *testing.B) {
			lib, _ := loadFake(b, v)
			b.Setenv("FAKE_NCCL_LOG", "") // keep file appends out of the measurement
			id, _ := lib.GetUniqueID()
			c, err := lib.NewComm(context.Background(), 1, 0, id, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			d := lib.Device(0)
			p, _ := d.Malloc(4)
			defer d.Free(p)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Allreduce(ctx, p, p, 1, tensor.Float32, tensor.Sum, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestFakeBlockedCollectiveHonoursContext(t *testing.T) {
	// On a blocking communicator a collective can wait inside NCCL for a
	// lost peer; its context ending aborts the communicator, which releases it.
	for _, tc := range []struct {
		v    fakeVariant
		opts []CommOption
	}{{fakeOld, nil}, {fakeNew, []CommOption{WithBlockingInit()}}} {
		t.Run(string(tc.v), func(t *testing.T) {
			checkNoLeak(t)
			lib, log := loadFake(t, tc.v)
			w := newWorld(t, lib, tc.opts...)
			buf := w.upload(t, make([]byte, 4*777))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			err := w.comm.Allreduce(ctx, buf, buf, 777, tensor.Float32, tensor.Sum, w.stream)
			if !errors.Is(err, ErrAborted) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ncclAllReduce did not return") {
				t.Fatalf("stuck Allreduce: %v, want ErrAborted + DeadlineExceeded", err)
			}
			<-w.comm.Done()
			log.want(t, "allReduce count=777", "abort rank=0")
		})
	}
}

func TestFakeNewCommBroadcast(t *testing.T) {
	checkNoLeak(t)
	lib, log := loadFake(t, fakeNew)
	ctx := context.Background()
	var sent []byte
	c, err := lib.NewCommBroadcast(ctx, 1, 0, 0, func(_ context.Context, b []byte) error {
		sent = append([]byte(nil), b...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(sent) != 129 || sent[0] != 1 || !bytes.HasPrefix(sent[1:], []byte("fake-unique-id")) {
		t.Errorf("rank 0 broadcast %q, want status 1 and the id", sent)
	}
	log.want(t, "getUniqueId", "initRankConfig nranks=1 rank=0")

	// A non-root rank hears that rank 0 failed instead of waiting in init.
	_, err = lib.NewCommBroadcast(ctx, 2, 1, 0, func(_ context.Context, b []byte) error { return nil })
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "rank 0 could not create") {
		t.Errorf("rank 1 after rank 0 failed: %v", err)
	}
	boom := errors.New("mesh down")
	if _, err = lib.NewCommBroadcast(ctx, 2, 1, 0, func(context.Context, []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("broadcast failure: %v", err)
	}
	var nilLib *Library
	if _, err := nilLib.NewCommBroadcast(ctx, 1, 0, 0, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("nil library: %v", err)
	}
}

// checkNoLeak fails t if goroutines started during the test are still
// running once it is over (retrying briefly: exiting goroutines need a
// moment to be descheduled).
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			runtime.Gosched()
			time.Sleep(5 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines leaked: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}
