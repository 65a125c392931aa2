package control

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// FuzzRecvFrame feeds arbitrary bytes, as a peer could send them, to the
// control-message decoder: it must return a frame or an error, never panic
// or allocate past the limit.
func FuzzRecvFrame(f *testing.F) {
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c'})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{5, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		w := inmem.MustWorld(2, inmem.WithPipeBytes(1<<16))
		defer w.Close()
		ctx := context.Background()
		if len(data) > 1<<15 {
			data = data[:1<<15]
		}
		if err := w.Mesh(0).Link(1).Send(ctx, data); err != nil {
			t.Fatal(err)
		}
		_ = w.Mesh(0).Close() // the peer hangs up after its bytes
		p, err := RecvFrame(ctx, w.Mesh(1).Link(0), 0)
		if err != nil {
			if !errors.Is(err, transport.ErrMalformed) && !errors.Is(err, transport.ErrPeerLost) && !errors.Is(err, transport.ErrClosed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(data) < 8 || !bytes.Equal(p, data[8:8+len(p)]) {
			t.Fatalf("frame %q does not match input %q", p, data)
		}
	})
}

func TestFrameRoundTrip(t *testing.T) {
	w := inmem.MustWorld(2)
	defer w.Close()
	ctx := context.Background()
	for _, msg := range [][]byte{nil, {1}, bytes.Repeat([]byte("x"), 100000)} {
		errc := make(chan error, 1)
		go func() { errc <- SendFrame(ctx, w.Mesh(0).Link(1), msg) }()
		got, err := RecvFrame(ctx, w.Mesh(1).Link(0), 0)
		if err != nil || !bytes.Equal(got, msg) || <-errc != nil {
			t.Fatalf("round trip of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
}
