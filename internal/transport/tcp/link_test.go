package tcp

import (
	"net"
	"testing"

	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			t.Error(err)
		}
		ch <- c
	}()
	a, err = net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	if b == nil {
		t.FailNow()
	}
	return a, b
}

func newPair(t *testing.T) linktest.Pair {
	a, b := tcpPair(t)
	return linktest.Pair{A: New(a, 2, "hostB"), B: New(b, 1, "hostA"), RankA: 1, RankB: 2}
}

func TestLink(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	linktest.Run(t, newPair, 1<<20)
}
