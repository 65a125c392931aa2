package rendezvous

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// BenchmarkRegister measures one whole rendezvous: a fresh server and n
// clients that dial, sign, register and receive the world.
func BenchmarkRegister(b *testing.B) {
	for _, n := range []int{2, 16, 64} {
		b.Run(fmt.Sprintf("ranks=%d", n), func(b *testing.B) {
			ctx := context.Background()
			regs := make([]Registration, n)
			for r := range regs {
				regs[r] = Registration{Rank: r, Host: fmt.Sprintf("h%d", r/8), Addr: fmt.Sprintf("10.0.0.1:%d", 2000+r)}
			}
			for range b.N {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				s := NewServer(ServerConfig{Size: n, Secret: secret, StartTimeout: time.Minute})
				done := make(chan struct{})
				go func() { defer close(done); _ = s.Serve(lis) }()
				for r, x := range registerAll(ctx, lis.Addr().String(), secret, regs) {
					if x.err != nil {
						b.Fatalf("rank %d: %v", r, x.err)
					}
				}
				s.Stop()
				<-done
			}
		})
	}
}
