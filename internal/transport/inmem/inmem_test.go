package inmem

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"plain", nil},
		{"recvreducer", []Option{WithRecvReducer(), WithPipeBytes(1000)}},
		{"duplex", []Option{WithDuplex(), WithPipeBytes(1000)}},
		{"duplexreducer", []Option{WithDuplex(), WithRecvReducer(), WithPipeBytes(1000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer linktest.CheckGoroutines(t)()
			linktest.Run(t, func(t *testing.T) linktest.Pair {
				w := MustWorld(3, tc.opts...)
				return linktest.Pair{A: w.Mesh(0).Link(2), B: w.Mesh(2).Link(0), RankA: 0, RankB: 2}
			}, 4096)
		})
	}
}

func TestHosts(t *testing.T) {
	w := MustWorld(4, WithRanksPerHost(2))
	want := []string{"host0", "host0", "host1", "host1"}
	for i, h := range want {
		if got := w.Mesh(3).Host(i); got != h {
			t.Errorf("Host(%d) = %q, want %q", i, got, h)
		}
	}
	if w.Mesh(1).Link(1) != nil {
		t.Error("Link to self is not nil")
	}
	if _, err := NewWorld(3, WithHosts("a", "b")); err == nil {
		t.Error("WithHosts with 2 names for 3 ranks accepted")
	}
	w2 := MustWorld(2, WithHosts("x", "y"))
	if w2.Mesh(0).Host(1) != "y" {
		t.Errorf("Host(1) = %q", w2.Mesh(0).Host(1))
	}
}

func wantLost(t *testing.T, err error, rank int) {
	t.Helper()
	var pe *transport.PeerError
	if !errors.Is(err, transport.ErrPeerLost) || !errors.As(err, &pe) || pe.Rank != rank {
		t.Fatalf("error %v: want ErrPeerLost naming rank %d", err, rank)
	}
}

func TestCutBothSides(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	w := MustWorld(2)
	defer w.Close()
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- w.Mesh(0).Link(1).Recv(ctx, make([]byte, 4)) }()
	go func() { errs <- w.Mesh(1).Link(0).Send(ctx, make([]byte, 1<<20)) }()
	// The 1 MiB send cannot complete into a 64 KiB pipe: once the 4 bytes
	// arrived it is still sending (or blocked) when the cut comes.
	e1 := <-errs
	if e1 != nil {
		t.Fatalf("Recv before cut: %v", e1)
	}
	w.Cut(0, 1)
	wantLost(t, <-errs, 0)
	wantLost(t, w.Mesh(0).Link(1).Recv(ctx, make([]byte, 1)), 1)
}

func TestKillAfter(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	w := MustWorld(3)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.KillAfter(1, 1000)
	// Rank 1 may send 1000 bytes in total; they arrive, then the link dies.
	if err := w.Mesh(1).Link(0).Send(ctx, make([]byte, 600)); err != nil {
		t.Fatal(err)
	}
	err := w.Mesh(1).Link(2).Send(ctx, make([]byte, 600))
	if !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("send past the kill budget: %v, want ErrClosed", err)
	}
	wantLost(t, w.Mesh(0).Link(1).Recv(ctx, make([]byte, 1)), 1)
	wantLost(t, w.Mesh(2).Link(1).Send(ctx, []byte{1}), 1)
	// Links that do not touch rank 1 still work.
	if err := w.Mesh(0).Link(2).Send(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if err := w.Mesh(2).Link(0).Recv(ctx, got); err != nil || string(got) != "ok" {
		t.Fatalf("unaffected link: %q %v", got, err)
	}
}

func TestCutAfterExact(t *testing.T) {
	w := MustWorld(2)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.CutAfter(0, 1, 10)
	if err := w.Mesh(0).Link(1).Send(ctx, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	wantLost(t, w.Mesh(0).Link(1).Send(ctx, make([]byte, 6)), 1)
	wantLost(t, w.Mesh(1).Link(0).Recv(ctx, make([]byte, 1)), 0)
}

func TestDelayHonoursCtx(t *testing.T) {
	w := MustWorld(2)
	defer w.Close()
	w.Delay(0, 1, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := w.Mesh(0).Link(1).Send(ctx, []byte{1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delayed send past deadline: %v", err)
	}
}

func TestWrapAround(t *testing.T) {
	w := MustWorld(2, WithPipeBytes(7))
	defer w.Close()
	ctx := context.Background()
	src := make([]byte, 1000)
	for i := range src {
		src[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() { done <- w.Mesh(0).Link(1).Send(ctx, src) }()
	got := make([]byte, len(src))
	for off := 0; off < len(got); off += 13 {
		if err := w.Mesh(1).Link(0).Recv(ctx, got[off:min(off+13, len(got))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatal("bytes differ after wrap-around")
	}
}
