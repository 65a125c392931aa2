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

func TestSetSendBuffer(t *testing.T) {
	a, b := tcpPair(t)
	la, lb := New(a, 2, "hostB"), New(b, 1, "hostA")
	defer la.Close()
	defer lb.Close()
	if !la.LocalPeer() {
		t.Fatal("LocalPeer: a loopback peer reported remote")
	}
	prev, err := la.SetSendBuffer(64 << 10)
	if err != nil || prev != SocketBufferBytes {
		t.Fatalf("SetSendBuffer: prev %d, err %v; want %d, nil", prev, err, SocketBufferBytes)
	}
	if got := sendBufferBytes(a.(*net.TCPConn)); got != 64<<10 {
		t.Fatalf("send buffer %d after SetSendBuffer(64 KiB), want %d", got, 64<<10)
	}
	if prev, err = la.SetSendBuffer(prev); err != nil || prev != 64<<10 {
		t.Fatalf("put back: prev %d, err %v", prev, err)
	}
	if got := sendBufferBytes(a.(*net.TCPConn)); got != SocketBufferBytes {
		t.Fatalf("send buffer %d after putting back, want %d", got, SocketBufferBytes)
	}
	la.Close()
	if _, err := la.SetSendBuffer(1 << 20); err == nil {
		t.Fatal("SetSendBuffer on a closed link: no error")
	}
}

func TestSameHost(t *testing.T) {
	addr := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
	for _, c := range []struct {
		local, remote string
		want          bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"10.0.0.1", "10.0.0.1", true},
		{"10.0.0.1", "10.0.0.2", false},
		{"::1", "::1", true},
	} {
		if got := sameHost(addr(c.local), addr(c.remote)); got != c.want {
			t.Errorf("sameHost(%s, %s) = %v, want %v", c.local, c.remote, got, c.want)
		}
	}
}
