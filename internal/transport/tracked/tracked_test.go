package tracked

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// countingOracle is a MemOracle that counts reports.
type countingOracle struct {
	MemOracle
	reports atomic.Int32
}

func (o *countingOracle) Report(ctx context.Context, f Failure) (string, error) {
	o.reports.Add(1)
	return o.MemOracle.Report(ctx, f)
}

func TestTheFirstLossIsReportedOnceAndNamedByTheNextRank(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := inmem.MustWorld(3)
	defer w.Close()
	o := &countingOracle{}
	m0, m1 := New(w.Mesh(0), o), New(w.Mesh(1), o)
	w.Kill(2)
	// Rank 0 notices rank 2, twice; it reports once.
	for range 2 {
		if err := m0.Link(2).Recv(ctx, make([]byte, 1)); !errors.Is(err, transport.ErrPeerLost) {
			t.Fatalf("recv from a killed rank: %v", err)
		}
	}
	if n := o.reports.Load(); n != 1 {
		t.Fatalf("%d reports, want 1", n)
	}
	// Rank 0 fails stop; rank 1 notices rank 0 but names rank 2.
	_ = m0.Close()
	err := m1.Explain(m1.Link(0).Recv(ctx, make([]byte, 1)))
	if !errors.Is(err, transport.ErrPeerLost) || !strings.HasPrefix(err.Error(), "rank 2 on host0 was lost (first noticed by rank 0") {
		t.Fatalf("rank 1: %v, want the first failure (rank 2) named", err)
	}
	if f, ok := m0.FirstFailure(); !ok || !strings.HasPrefix(f, "rank 2 on host0 was lost") {
		t.Fatalf("rank 0's first failure: %q, %v", f, ok)
	}
}

func TestLinksKeepTheirCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name            string
		opts            []inmem.Option
		reducer, duplex bool
	}{
		{"plain", nil, false, false},
		{"reducer", []inmem.Option{inmem.WithRecvReducer()}, true, false},
		{"duplex", []inmem.Option{inmem.WithDuplex()}, false, true},
		{"both", []inmem.Option{inmem.WithDuplex(), inmem.WithRecvReducer()}, true, true},
	} {
		w := inmem.MustWorld(2, tc.opts...)
		l := New(w.Mesh(0), &MemOracle{}).Link(1)
		_, reducer := l.(transport.RecvReducer)
		_, duplex := l.(transport.Duplex)
		_, dr := l.(transport.DuplexReducer)
		_, fw := l.(transport.DuplexForwarder)
		if reducer != tc.reducer || duplex != tc.duplex || dr != (tc.reducer && tc.duplex) || fw != dr {
			t.Errorf("%s: reducer %v duplex %v duplex-reducer %v forwarder %v", tc.name, reducer, duplex, dr, fw)
		}
		if New(w.Mesh(0), nil).Link(0) != nil {
			t.Errorf("%s: a link to itself", tc.name)
		}
		_ = w.Close()
	}
}
