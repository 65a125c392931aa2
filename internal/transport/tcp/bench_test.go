package tcp

import (
	"fmt"
	"testing"

	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

// Figures are noisy: the machine is shared.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10, 1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			x, y := tcpPair(b)
			p := linktest.Pair{A: New(x, 1, ""), B: New(y, 0, "")}
			defer p.A.Close()
			defer p.B.Close()
			linktest.BenchmarkThroughput(b, p, size)
		})
	}
}

func BenchmarkPingPong(b *testing.B) {
	for _, size := range []int{8, 4 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			x, y := tcpPair(b)
			p := linktest.Pair{A: New(x, 1, ""), B: New(y, 0, "")}
			defer p.A.Close()
			defer p.B.Close()
			linktest.BenchmarkPingPong(b, p, size)
		})
	}
}
