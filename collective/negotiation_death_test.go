package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/inmem"
	"github.com/gorovod/gorovod/internal/worker"
)

// dyingMesh is a rank's mesh that kills the rank (every link cut, as a
// crash) when, once armed, it starts sending a request frame to rank 0:
// the slow path's gather, after the cache-bit exchange of the cycle.
type dyingMesh struct {
	transport.Mesh
	w     *inmem.World
	armed atomic.Bool
}

func (m *dyingMesh) Link(peer int) transport.Link {
	l := m.Mesh.Link(peer)
	if peer != 0 || l == nil {
		return l
	}
	return &dyingLink{Link: l, m: m}
}

type dyingLink struct {
	transport.Link
	m *dyingMesh
}

func (l *dyingLink) Send(ctx context.Context, p []byte) error {
	// A frame header is 8 bytes holding the payload length; the bit
	// exchange's words are small status words or settings hashes.
	if len(p) == 8 {
		if n := binary.LittleEndian.Uint64(p); n > 64 && n < 1<<20 && l.m.armed.CompareAndSwap(true, false) {
			l.m.w.Kill(l.m.Rank())
		}
	}
	return l.Link.Send(ctx, p)
}

func TestRankLostDuringSlowPathNegotiationIsNamedByEverySurvivor(t *testing.T) {
	before := runtime.NumGoroutine()
	const n = 3
	mem := inmem.MustWorld(n)
	oracle := worker.NewMemOracle(n)
	dying := &dyingMesh{Mesh: mem.Mesh(2), w: mem}
	meshes := []transport.Mesh{mem.Mesh(0), mem.Mesh(1), dying}
	engines := make([]*engine, n)
	for r := range n {
		w, err := NewWorld(context.Background(), WithConfig(config.Default()), WithLogger(zap.NewNop()), withMesh(meshes[r], oracle))
		if err != nil {
			t.Fatal(err)
		}
		engines[r] = w.e
	}
	t.Cleanup(func() {
		(&world{engines: engines}).shutdown()
		_ = mem.Close()
		noLeaks(t, before)
	})
	dying.armed.Store(true)
	// A name no rank has negotiated: the cycle takes the slow path, and
	// rank 2 dies as it sends its requests to rank 0.
	const name = "a/tensor/with/a/name/long/enough/to/make/the/request/frame/long"
	ens := make([]*entry, n)
	for r, e := range engines {
		ens[r] = e.submit(context.Background(), allreduceReq(name, 4, tensor.Sum), make([]byte, 16), nil)
	}
	if err := wait(t, ens[2]); err == nil {
		t.Fatal("the killed rank's call succeeded")
	}
	for _, r := range []int{0, 1} {
		err := wait(t, ens[r])
		if !errors.Is(err, ErrPeerLost) || !strings.Contains(err.Error(), "rank 2 on host0 was lost") {
			t.Errorf("rank %d: %v, want ErrPeerLost naming rank 2 as lost", r, err)
		}
		if !strings.Contains(err.Error(), "negotiation") {
			t.Errorf("rank %d: %v: not lost during negotiation", r, err)
		}
	}
	if dying.armed.Load() {
		t.Fatal("rank 2 was never killed: the cycle did not take the slow path")
	}
}
