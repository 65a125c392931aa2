// Package linktest is a conformance suite for transport.Link
// implementations (tcp, shm; usable by any other) and a goroutine-leak check.
package linktest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// Pair is two connected links: A's peer is RankB, B's peer is RankA.
type Pair struct {
	A, B         transport.Link
	RankA, RankB int
}

// NewPair makes a fresh connected pair; the suite closes both links.
type NewPair func(t *testing.T) Pair

// Run runs every conformance test on pairs from newPair. big is a size
// larger than whatever internal buffering the link has (for shm: the ring).
func Run(t *testing.T, newPair NewPair, big int) {
	t.Run("Integrity", func(t *testing.T) { testIntegrity(t, newPair, big) })
	t.Run("FullDuplex", func(t *testing.T) { testFullDuplex(t, newPair, big) })
	t.Run("CancelRecv", func(t *testing.T) { testCancelRecv(t, newPair) })
	t.Run("CancelSend", func(t *testing.T) { testCancelSend(t, newPair, big) })
	t.Run("DeadlineRecv", func(t *testing.T) { testDeadlineRecv(t, newPair) })
	t.Run("PeerClose", func(t *testing.T) { testPeerClose(t, newPair) })
	t.Run("LocalClose", func(t *testing.T) { testLocalClose(t, newPair) })
	t.Run("Buffered", func(t *testing.T) { testBuffered(t, newPair) })
	t.Run("RecvReduce", func(t *testing.T) { testRecvReduce(t, newPair, big) })
	t.Run("Duplex", func(t *testing.T) { testDuplex(t, newPair, big) })
}

func closePair(p Pair) {
	_ = p.A.Close()
	_ = p.B.Close()
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sendAll sends msgs one by one on a goroutine; the returned channel gives
// the first error (or nil) once done.
func sendAll(ctx context.Context, l transport.Link, msgs [][]byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := l.Send(ctx, m); err != nil {
				ch <- err
				return
			}
		}
		ch <- nil
	}()
	return ch
}

func testIntegrity(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 7, 4095, 4096, 65537, big + 13, 3, 0, 1 << 20}
	for i := 0; i < 10; i++ {
		sizes = append(sizes, r.IntN(200000))
	}
	var msgs [][]byte
	total := 0
	for _, n := range sizes {
		msgs = append(msgs, randBytes(r, n))
		total += n
	}
	want := bytes.Join(msgs, nil)
	for dir, l := range []Pair{p, {A: p.B, B: p.A}} {
		done := sendAll(ctx, l.A, msgs)
		// Receive in pieces unrelated to the message boundaries: a Link
		// is a byte stream.
		got := make([]byte, total)
		for off := 0; off < total; {
			n := min(total-off, r.IntN(big/2+2))
			if err := l.B.Recv(ctx, got[off:off+n]); err != nil {
				t.Fatalf("direction %d: recv at %d: %v", dir, off, err)
			}
			off += n
		}
		if err := <-done; err != nil {
			t.Fatalf("direction %d: send: %v", dir, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("direction %d: received bytes differ from sent ones (first at %d)", dir, firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func testFullDuplex(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(3, 4))
	n := max(8<<20, 3*big)
	ab, ba := randBytes(r, n), randBytes(r, n+5)
	gotB, gotA := make([]byte, len(ab)), make([]byte, len(ba))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, f := range []func() error{
		func() error { return p.A.Send(ctx, ab) },
		func() error { return p.B.Send(ctx, ba) },
		func() error { return p.B.Recv(ctx, gotB) },
		func() error { return p.A.Recv(ctx, gotA) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !bytes.Equal(gotB, ab) || !bytes.Equal(gotA, ba) {
		t.Fatal("full-duplex transfer corrupted data")
	}
}

func testCancelRecv(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.B.Recv(ctx, make([]byte, 10)) }()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after cancel: %v, want context.Canceled", err)
	}
	checkPeerError(t, err, p.RankA)
}

func testDeadlineRecv(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := p.B.Recv(ctx, make([]byte, 10))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv past deadline: %v, want context.DeadlineExceeded", err)
	}
}

func testCancelSend(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithCancel(context.Background())
	n := 64 << 20 // more than any buffering: blocks without a receiver
	if b, ok := p.A.(transport.Buffered); ok {
		n = max(n, 4*b.BufferedBytes())
	}
	n = max(n, 4*big)
	done := make(chan error, 1)
	go func() { done <- p.A.Send(ctx, make([]byte, n)) }()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Send after cancel: %v, want context.Canceled", err)
	}
	checkPeerError(t, err, p.RankB)
}

func testPeerClose(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Bytes sent before the close still arrive; then the loss shows.
	if err := p.A.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := p.A.Close(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if err := p.B.Recv(ctx, got); err != nil || string(got) != "bye" {
		t.Fatalf("Recv of bytes sent before close: %q, %v", got, err)
	}
	err := p.B.Recv(ctx, got)
	if !errors.Is(err, transport.ErrPeerLost) {
		t.Fatalf("Recv from closed peer: %v, want ErrPeerLost", err)
	}
	checkPeerError(t, err, p.RankA)
	// A sender notices too, at the latest once its buffering is full.
	big := make([]byte, 64<<20)
	err = p.B.Send(ctx, big)
	if !errors.Is(err, transport.ErrPeerLost) {
		t.Fatalf("Send to closed peer: %v, want ErrPeerLost", err)
	}
}

func testLocalClose(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	done := make(chan error, 1)
	go func() { done <- p.B.Recv(context.Background(), make([]byte, 10)) }()
	if err := p.B.Close(); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Recv on closed link: %v, want ErrClosed", err)
	}
	if err := p.B.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testBuffered(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	b, ok := p.A.(transport.Buffered)
	if !ok {
		t.Skip("link is not transport.Buffered")
	}
	n := b.BufferedBytes()
	if n <= 0 {
		t.Fatalf("BufferedBytes() = %d", n)
	}
	// Nobody receives: the send must still complete. The timeout turns a
	// wrong figure into a failure instead of a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.A.Send(ctx, make([]byte, n)); err != nil {
		t.Fatalf("Send of BufferedBytes()=%d without a receiver: %v", n, err)
	}
	if err := p.B.Recv(ctx, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

func testRecvReduce(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	rr, ok := p.B.(transport.RecvReducer)
	if !ok {
		t.Skip("link is not transport.RecvReducer")
	}
	checkReducingRecv(t, p, []int{0, 1, 333, big + 77}, rr.RecvReduce)
}

// checkReducingRecv sends messages of the given sizes from p.A and has
// recv add each into a random dst on p.B, checking the sums and that fn
// saw every byte once, in pieces of matching lengths.
func checkReducingRecv(t *testing.T, p Pair, sizes []int, recv func(ctx context.Context, dst []byte, fn func(d, s []byte)) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range sizes {
		src := randBytes(r, n)
		dst := randBytes(r, n)
		want := make([]byte, n)
		for i := range want {
			want[i] = dst[i] + src[i]
		}
		done := sendAll(ctx, p.A, [][]byte{src})
		covered := 0
		err := recv(ctx, dst, func(d, s []byte) {
			if len(d) != len(s) {
				t.Errorf("fn got dst of %d bytes and src of %d", len(d), len(s))
			}
			for i := range d {
				d[i] += s[i]
			}
			covered += len(d)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if covered != n || !bytes.Equal(dst, want) {
			t.Fatalf("reducing receive of %d bytes: covered %d, equal %v", n, covered, bytes.Equal(dst, want))
		}
	}
}

// pumpBoth drives l from one goroutine: sends out while receiving into in.
func pumpBoth(ctx context.Context, l transport.Duplex, out, in []byte) error {
	for len(out) > 0 || len(in) > 0 {
		moved := false
		if len(out) > 0 {
			n, err := l.TrySend(out)
			if err != nil {
				return err
			}
			out, moved = out[n:], n > 0
		}
		if len(in) > 0 {
			n, err := l.TryRecv(in)
			if err != nil {
				return err
			}
			in, moved = in[n:], moved || n > 0
		}
		if !moved {
			if err := l.Await(ctx, len(in), len(out) > 0, time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

func testDuplex(t *testing.T, newPair NewPair, big int) {
	probe := newPair(t)
	_, ok := probe.A.(transport.Duplex)
	closePair(probe)
	if !ok {
		t.Skip("link is not transport.Duplex")
	}
	t.Run("BothWaysOneGoroutineEach", func(t *testing.T) { testDuplexBothWaysOneGoroutineEach(t, newPair, big) })
	t.Run("AwaitHonoursContext", func(t *testing.T) { testDuplexAwaitHonoursContext(t, newPair) })
	t.Run("NothingToMove", func(t *testing.T) { testDuplexNothingToMove(t, newPair) })
	t.Run("PeerClose", func(t *testing.T) { testDuplexPeerClose(t, newPair) })
	t.Run("TryRecvReduce", func(t *testing.T) { testDuplexTryRecvReduce(t, newPair, big) })
	t.Run("TryRecvReduceSend", func(t *testing.T) { testDuplexTryRecvReduceSend(t, newPair, big) })
	t.Run("LocalClose", func(t *testing.T) { testDuplexLocalClose(t, newPair) })
}

// testDuplexBothWaysOneGoroutineEach sends a large buffer each way at once,
// each end pumped by one goroutine, then checks a small message still gets
// through after a large Await.
func testDuplexBothWaysOneGoroutineEach(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(7, 8))
	n := max(8<<20, 3*big)
	ab, ba := randBytes(r, n), randBytes(r, n+3)
	gotA, gotB := make([]byte, len(ba)), make([]byte, len(ab))
	errs := make(chan error, 2)
	go func() { errs <- pumpBoth(ctx, p.A.(transport.Duplex), ab, gotA) }()
	go func() { errs <- pumpBoth(ctx, p.B.(transport.Duplex), ba, gotB) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotA, ba) || !bytes.Equal(gotB, ab) {
		t.Fatal("bytes received differ from those sent")
	}
	// A blocking Recv after waiting for a large read still sees a
	// small message (no readiness threshold left behind).
	if err := p.B.(transport.Duplex).Await(ctx, 1<<20, false, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.A.Send(ctx, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if err := p.B.Recv(ctx, got); err != nil || string(got) != "ok" {
		t.Fatalf("Recv after Await: %q, %v", got, err)
	}
}

// testDuplexAwaitHonoursContext checks that Await returns the context's
// error, naming the peer, once the context ends.
func testDuplexAwaitHonoursContext(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	d := p.B.(transport.Duplex)
	var err error
	for err == nil {
		err = d.Await(ctx, 10, false, time.Hour)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Await past deadline: %v, want DeadlineExceeded", err)
	}
	checkPeerError(t, err, p.RankA)
}

// testDuplexNothingToMove checks that TryRecv on an idle link moves nothing
// and fails nothing.
func testDuplexNothingToMove(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	n, err := p.B.(transport.Duplex).TryRecv(make([]byte, 10))
	if n != 0 || err != nil {
		t.Fatalf("TryRecv on an idle link: %d, %v; want 0, nil", n, err)
	}
}

// testDuplexPeerClose checks that bytes sent before the peer closed arrive,
// and that later TryRecv and TrySend report ErrPeerLost.
func testDuplexPeerClose(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.A.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = p.A.Close()
	d := p.B.(transport.Duplex)
	got := make([]byte, 3)
	if err := pumpBoth(ctx, d, nil, got); err != nil || string(got) != "bye" {
		t.Fatalf("bytes sent before close: %q, %v", got, err)
	}
	err := pumpBoth(ctx, d, nil, got)
	if !errors.Is(err, transport.ErrPeerLost) {
		t.Fatalf("TryRecv from a closed peer: %v, want ErrPeerLost", err)
	}
	checkPeerError(t, err, p.RankA)
	err = pumpBoth(ctx, d, make([]byte, 64<<20), nil)
	if !errors.Is(err, transport.ErrPeerLost) {
		t.Fatalf("TrySend to a closed peer: %v, want ErrPeerLost", err)
	}
}

// testDuplexTryRecvReduce checks TryRecvReduce, driven by Await, at several sizes.
func testDuplexTryRecvReduce(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	rr, ok := p.B.(transport.DuplexReducer)
	if !ok {
		t.Skip("link is not transport.DuplexReducer")
	}
	checkReducingRecv(t, p, []int{1, 333, 3*big + 11}, func(ctx context.Context, dst []byte, fn func(d, s []byte)) error {
		for off := 0; off < len(dst); {
			k, err := rr.TryRecvReduce(dst[off:], fn)
			if err != nil {
				return err
			}
			if k == 0 {
				if err := rr.Await(ctx, len(dst)-off, false, time.Second); err != nil {
					return err
				}
			}
			off += k
		}
		return nil
	})
}

// testDuplexTryRecvReduceSend has p.B reduce what p.A sends and send the
// result back, in one pass where TryRecvReduceSend takes it and else
// reduced then sent, as a ring step does; p.A must get the sums in order.
func testDuplexTryRecvReduceSend(t *testing.T, newPair NewPair, big int) {
	p := newPair(t)
	defer closePair(p)
	fw, ok := p.B.(transport.DuplexForwarder)
	if !ok {
		t.Skip("link is not transport.DuplexForwarder")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{4, 333, 3*big + 12} {
		src, dst := randBytes(r, n), randBytes(r, n)
		want := make([]byte, n)
		for i := range want {
			want[i] = dst[i] + src[i]
		}
		done := sendAll(ctx, p.A, [][]byte{src})
		back := make([]byte, n)
		got := make(chan error, 1)
		go func() { got <- p.A.Recv(ctx, back) }()
		fused, err := forwardAll(ctx, fw, dst)
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(<-done, <-got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst, want) || !bytes.Equal(back, want) {
			t.Fatalf("%d bytes: reduced in place equal %v, sent back equal %v", n, bytes.Equal(dst, want), bytes.Equal(back, want))
		}
		if fused == 0 {
			t.Errorf("%d bytes: nothing went in one pass", n)
		}
	}
}

// forwardAll receives len(dst) bytes on fw, adds them into dst and sends
// dst back in order: fused while nothing reduced waits to be sent, else
// reduced and sent after (once the first step went fused). It returns the
// bytes fused.
func forwardAll(ctx context.Context, fw transport.DuplexForwarder, dst []byte) (int, error) {
	add := func(d, s []byte) {
		for i := range d {
			d[i] += s[i]
		}
	}
	fused, off, sent := 0, 0, 0
	for sent < len(dst) {
		moved := false
		if sent < off {
			k, err := fw.TrySend(dst[sent:off])
			if err != nil {
				return fused, err
			}
			sent, moved = sent+k, k > 0
		}
		if off < len(dst) && sent == off {
			k, err := fw.TryRecvReduceSend(dst[off:], 4, func(d, s, o []byte) { add(d, s); copy(o, d) })
			if err != nil {
				return fused, err
			}
			off, sent, fused, moved = off+k, sent+k, fused+k, moved || k > 0
		}
		// Until the first fused step, wait for it (the send side starts
		// empty, so it comes as soon as the first bytes arrive): taking the
		// first bytes unfused while the sender is slow to start, as under
		// load, would leave nothing fused to check.
		if off < len(dst) && !moved && fused > 0 {
			k, err := fw.TryRecvReduce(dst[off:], add)
			if err != nil {
				return fused, err
			}
			off, moved = off+k, k > 0
		}
		if !moved {
			if err := fw.Await(ctx, len(dst)-off, sent < off, time.Second); err != nil {
				return fused, err
			}
		}
	}
	return fused, nil
}

// testDuplexLocalClose checks that TrySend and TryRecv on a closed link
// report ErrClosed.
func testDuplexLocalClose(t *testing.T, newPair NewPair) {
	p := newPair(t)
	defer closePair(p)
	_ = p.B.Close()
	d := p.B.(transport.Duplex)
	if _, err := d.TrySend([]byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("TrySend on a closed link: %v, want ErrClosed", err)
	}
	if _, err := d.TryRecv(make([]byte, 1)); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("TryRecv on a closed link: %v, want ErrClosed", err)
	}
}

func checkPeerError(t *testing.T, err error, rank int) {
	t.Helper()
	var pe *transport.PeerError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *transport.PeerError", err)
	}
	if pe.Rank != rank {
		t.Fatalf("error %v names rank %d, want %d", err, pe.Rank, rank)
	}
}

// CheckGoroutines records the goroutine count; the returned func fails t
// if more goroutines are running when it is called (after a bounded wait
// for goroutines that are already on their way out).
func CheckGoroutines(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		n := 0
		for i := 0; i < 200; i++ {
			if n = runtime.NumGoroutine(); n <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines running, %d before:\n%s", n, before, buf)
	}
}

// BenchmarkThroughput measures one-way throughput: A sends b.N messages of
// size bytes, B receives them.
func BenchmarkThroughput(b *testing.B, p Pair, size int) {
	ctx := context.Background()
	src, dst := make([]byte, size), make([]byte, size)
	done := make(chan error, 1)
	b.SetBytes(int64(size))
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			if err := p.A.Send(ctx, src); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < b.N; i++ {
		if err := p.B.Recv(ctx, dst); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPingPong measures round trips of size bytes; the reported time
// per op is one round trip (two one-way latencies).
func BenchmarkPingPong(b *testing.B, p Pair, size int) {
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, size)
		for i := 0; i < b.N; i++ {
			if err := p.B.Recv(ctx, buf); err != nil {
				done <- err
				return
			}
			if err := p.B.Send(ctx, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.A.Send(ctx, buf); err != nil {
			b.Fatal(err)
		}
		if err := p.A.Recv(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
