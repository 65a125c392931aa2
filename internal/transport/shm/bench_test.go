//go:build linux

package shm

import (
	"fmt"
	"testing"

	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

func benchPair(b *testing.B) linktest.Pair {
	la, lb := setupPair(b, Config{Rank: 0, Peer: 1, JobTag: testTag}, Config{Rank: 1, Peer: 0, JobTag: testTag})
	return linktest.Pair{A: la, B: lb}
}

// Figures are noisy: the machine is shared.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10, 1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			p := benchPair(b)
			defer p.A.Close()
			defer p.B.Close()
			linktest.BenchmarkThroughput(b, p, size)
		})
	}
}

func BenchmarkPingPong(b *testing.B) {
	for _, size := range []int{8, 4 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			p := benchPair(b)
			defer p.A.Close()
			defer p.B.Close()
			linktest.BenchmarkPingPong(b, p, size)
		})
	}
}

// BenchmarkRecvReduce: one-way transfer where the receiver adds the bytes
// into its buffer in place (no copy out of the ring).
func BenchmarkRecvReduce(b *testing.B) {
	const size = 1 << 20
	p := benchPair(b)
	defer p.A.Close()
	defer p.B.Close()
	rr := p.B.(*Link)
	src, dst := make([]byte, size), make([]byte, size)
	done := make(chan error, 1)
	b.SetBytes(size)
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			if err := p.A.Send(b.Context(), src); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < b.N; i++ {
		if err := rr.RecvReduce(b.Context(), dst, func(d, s []byte) {
			for j := range d {
				d[j] += s[j]
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
