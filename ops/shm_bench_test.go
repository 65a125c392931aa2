//go:build linux

package ops

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/shm"
)

var shmEpoch atomic.Uint64

// shmWorld is a full mesh of shared-memory links (set up over loopback TCP
// connections, as the real mesh does).
func shmWorld(tb testing.TB, n int) []transport.Mesh {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	epoch := shmEpoch.Add(1)
	tag := fmt.Sprintf("opstest-%d", os.Getpid())
	ms := make([]*tcpMesh, n)
	for r := range n {
		ms[r] = &tcpMesh{rank: r, links: make([]transport.Link, n)}
	}
	ctx := testCtxTB(tb)
	for a := range n {
		for b := a + 1; b < n; b++ {
			ca, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				tb.Fatal(err)
			}
			cb, err := ln.Accept()
			if err != nil {
				tb.Fatal(err)
			}
			type res struct {
				l   *shm.Link
				err error
			}
			ch := make(chan res, 1)
			go func() {
				l, err := shm.Setup(ctx, cb, shm.Config{Rank: b, Peer: a, Epoch: epoch, JobTag: tag})
				ch <- res{l, err}
			}()
			la, err := shm.Setup(ctx, ca, shm.Config{Rank: a, Peer: b, Epoch: epoch, JobTag: tag})
			rb := <-ch
			if err != nil || rb.err != nil {
				tb.Skipf("shared memory setup: %v / %v", err, rb.err)
			}
			ms[a].links[b], ms[b].links[a] = la, rb.l
		}
	}
	out := make([]transport.Mesh, n)
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func testCtxTB(tb testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return ctx
}

// TestOverShm: allreduce over shared-memory links, whose RecvReduce hands
// slot-sized pieces that may split elements.
func TestOverShm(t *testing.T) {
	defer checkGoroutines(t)()
	const n = 3
	meshes := shmWorld(t, n)
	comms := make([]*Comm, n)
	for r := range n {
		c, err := NewComm(meshes[r], Config{SegmentBytes: 100000})
		if err != nil {
			t.Fatal(err)
		}
		comms[r] = c
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				for _, count := range []int{3, 5000, 1 << 20} {
					buf := make([]byte, 8*count)
					for i := range count {
						as[int64](buf)[i] = int64(r*i + 1)
					}
					if err := comms[r].Allreduce(ctx, buf, tensor.Int64, tensor.Sum, 1, 1); err != nil {
						return err
					}
					for i := range count {
						if want := int64(n*(n-1)/2*i + n); as[int64](buf)[i] != want {
							return fmt.Errorf("count %d element %d: %d want %d", count, i, as[int64](buf)[i], want)
						}
					}
				}
				return comms[r].Barrier(ctx)
			}()
		}()
	}
	wg.Wait()
	for r := range n {
		_ = comms[r].Close()
		_ = meshes[r].Close()
		if errs[r] != nil {
			t.Errorf("rank %d: %v", r, errs[r])
		}
	}
}

// BenchmarkAllreduceShm: float32 sum over shared memory (ranks are
// goroutines of one process here); MB/s is algbw.
func BenchmarkAllreduceShm(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, size := range []int{4 << 10, 1 << 20, 16 << 20, 64 << 20} {
			for _, cfg := range []Config{{SingleCopyOff: true}, {SingleCopyMaxBytes: 1 << 30}} {
				name := "slots"
				if !cfg.SingleCopyOff {
					name = "single-copy"
				}
				b.Run(fmt.Sprintf("n%d/%dKiB/%s", n, size>>10, name), func(b *testing.B) {
					meshes := shmWorld(b, n)
					comms := make([]*Comm, n)
					bufs := make([][]byte, n)
					for r := range n {
						comms[r], _ = NewComm(meshes[r], cfg)
						bufs[r] = make([]byte, size)
					}
					defer func() {
						for r := range n {
							_ = comms[r].Close()
							_ = meshes[r].Close()
						}
					}()
					runAllreduceBench(b, comms, bufs)
				})
			}
		}
	}
}

// TestManySmallSegmentsOverShm: an allgather whose segments are far smaller
// than a slot: each Send takes a whole slot, so all ranks sending their
// chunk inline before receiving filled every ring and deadlocked (fixed by
// trusting the link's buffer for one Send only).
func TestManySmallSegmentsOverShm(t *testing.T) {
	defer checkGoroutines(t)()
	const n, count = 3, 100003
	meshes := shmWorld(t, n)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := NewComm(meshes[r], Config{SegmentBytes: 4096, SingleCopyOff: true})
			if err != nil {
				errs[r] = err
				return
			}
			defer c.Close()
			send := bytes.Repeat([]byte{byte('a' + r)}, count)
			recv := make([]byte, n*count)
			if errs[r] = c.Allgatherv(ctx, send, recv, []int{count, count, count}); errs[r] != nil {
				return
			}
			for q := range n {
				if !bytes.Equal(recv[q*count:(q+1)*count], bytes.Repeat([]byte{byte('a' + q)}, count)) {
					errs[r] = fmt.Errorf("rank %d's part is wrong", q)
				}
			}
		}()
	}
	wg.Wait()
	for r := range n {
		_ = meshes[r].Close()
		if errs[r] != nil {
			t.Errorf("rank %d: %v", r, errs[r])
		}
	}
}
