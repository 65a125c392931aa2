package ops

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/tcp"
)

// tcpMesh is a full mesh of loopback TCP links, for benchmarks and a
// transport conformance check of the algorithms over real sockets.
type tcpMesh struct {
	rank  int
	links []transport.Link
}

func (m *tcpMesh) Rank() int                 { return m.rank }
func (m *tcpMesh) Size() int                 { return len(m.links) }
func (m *tcpMesh) Link(p int) transport.Link { return m.links[p] }
func (m *tcpMesh) Host(int) string           { return "localhost" }
func (m *tcpMesh) Close() error {
	for _, l := range m.links {
		if l != nil {
			_ = l.Close()
		}
	}
	return nil
}

func tcpWorld(tb testing.TB, n int) []transport.Mesh {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	ms := make([]*tcpMesh, n)
	for r := range n {
		ms[r] = &tcpMesh{rank: r, links: make([]transport.Link, n)}
	}
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
			ms[a].links[b] = tcp.New(ca, b, "localhost")
			ms[b].links[a] = tcp.New(cb, a, "localhost")
		}
	}
	out := make([]transport.Mesh, n)
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// TestOverTCP runs a few collectives over real sockets (large segments
// that do not fit the socket buffers exercise the concurrent send path; two
// ranks run the ring on the duplex engine).
func TestOverTCP(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) { testOverTCP(t, n) })
	}
}

func testOverTCP(t *testing.T, n int) {
	defer checkGoroutines(t)()
	meshes := tcpWorld(t, n)
	comms := make([]*Comm, n)
	for r := range n {
		c, err := NewComm(meshes[r], Config{SegmentBytes: MaxSegmentBytes})
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
				for _, count := range []int{1, 1000, 3 << 20} {
					buf := make([]byte, 4*count)
					for i := range count {
						as[int32](buf)[i] = int32(r*i + 1)
					}
					if err := comms[r].Allreduce(ctx, buf, tensor.Int32, tensor.Sum, 1, 1); err != nil {
						return err
					}
					for i := range count {
						if want := int32(n*(n-1)/2*i + n); as[int32](buf)[i] != want {
							return fmt.Errorf("count %d element %d: %d want %d", count, i, as[int32](buf)[i], want)
						}
					}
				}
				b := make([]byte, 8<<20)
				if r == n-1 {
					b[len(b)-1] = 9
				}
				if err := comms[r].Broadcast(ctx, b, n-1); err != nil {
					return err
				}
				if b[len(b)-1] != 9 {
					return fmt.Errorf("broadcast: wrong byte")
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

// BenchmarkAllreduceTCP: float32 sum over loopback TCP; MB/s is algbw
// (busbw = algbw x 2(n-1)/n).
func BenchmarkAllreduceTCP(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, size := range []int{4 << 10, 1 << 20, 16 << 20, 64 << 20} {
			b.Run(fmt.Sprintf("n%d/%dKiB", n, size>>10), func(b *testing.B) {
				meshes := tcpWorld(b, n)
				comms := make([]*Comm, n)
				bufs := make([][]byte, n)
				for r := range n {
					comms[r], _ = NewComm(meshes[r], Config{})
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
