// Package tracked decorates a transport.Mesh so that the first lost peer
// any of its links sees is reported, once, to the job's failure oracle, at
// the moment of detection and before the error reaches the caller (whose
// fail-stop then makes other ranks notice this rank). Reporting at the
// point of detection is what makes the oracle's first report the true
// origin: every rank can then name the rank that failed first, not the
// neighbour whose fail-stop it noticed.
//
// Every user of a worker's links (the algorithms, the negotiation
// exchange, process-set views) goes through one tracked mesh.
package tracked

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// Failure is one rank's report that it lost a peer, or waited on one past
// the progress timeout.
type Failure struct {
	Rank     int    // the rank that noticed
	Host     string // its host
	Lost     int    // the peer it lost or waited on
	LostHost string
	Stalled  bool // the peer stopped answering rather than went away
	Message  string
}

// String names the peer first: every rank's error starts with the rank the
// job's failure started at.
func (f Failure) String() string {
	if f.Stalled {
		return fmt.Sprintf("rank %d on %s stalled (rank %d on %s waited on it past the progress timeout: %s)", f.Lost, f.LostHost, f.Rank, f.Host, f.Message)
	}
	return fmt.Sprintf("rank %d on %s was lost (first noticed by rank %d on %s: %s)", f.Lost, f.LostHost, f.Rank, f.Host, f.Message)
}

// Oracle records the first data-plane failure of a job. The launcher's
// rendezvous service is the oracle in real jobs; in-process jobs share a
// MemOracle.
type Oracle interface {
	// Report records f and returns the description of the job's first
	// failure (f's own when it is the first).
	Report(ctx context.Context, f Failure) (first string, err error)
}

// MemOracle is an in-process oracle shared by the ranks of one job.
type MemOracle struct {
	mu    sync.Mutex
	first string
}

// Report implements Oracle.
func (o *MemOracle) Report(_ context.Context, f Failure) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first == "" {
		o.first = f.String()
	}
	return o.first, nil
}

// reportTimeout bounds the report to the oracle: a failure must not wait
// long on the service that records it. A stall report waits longer
// (StallReportTimeout): the oracle may hold it for its settle window while
// the stalled rank's other peers report.
const reportTimeout = 2 * time.Second

// StallReportTimeout bounds a stall report (see reportTimeout); it covers
// twice the rendezvous oracle's default settle window of 1 s.
const StallReportTimeout = reportTimeout + 2*time.Second

// Mesh is a transport.Mesh whose links report the first lost peer.
type Mesh struct {
	transport.Mesh
	oracle Oracle
	links  []transport.Link // by peer, built once

	once  sync.Once
	done  chan struct{}
	first string
}

// New wraps m; a nil oracle means lost peers are not reported (a world of
// one, or tests that do not care), and errors pass through unchanged.
func New(m transport.Mesh, oracle Oracle) *Mesh {
	t := &Mesh{Mesh: m, oracle: oracle, done: make(chan struct{}), links: make([]transport.Link, m.Size())}
	for peer := range t.links {
		if l := m.Link(peer); l != nil {
			t.links[peer] = wrap(l, t, peer)
		}
	}
	return t
}

// Link returns the tracked link to peer (nil for this rank or out of range).
func (t *Mesh) Link(peer int) transport.Link {
	if peer < 0 || peer >= len(t.links) {
		return nil
	}
	return t.links[peer]
}

// observe reports err if it is the first lost or stalled peer this rank
// sees. Link calls of the loop run under its progress deadline, so a link
// whose ctx ran out was waiting on a peer that made no progress; the
// report goes out before this rank closes its links, so the oracle knows
// the peers it then fails are consequences.
func (t *Mesh) observe(peer int, err error) error {
	if err == nil || t.oracle == nil {
		return err
	}
	stalled := errors.Is(err, context.DeadlineExceeded)
	if !stalled && !errors.Is(err, transport.ErrPeerLost) {
		return err
	}
	t.once.Do(func() {
		defer close(t.done)
		wait := reportTimeout
		if stalled {
			wait = StallReportTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		f := Failure{Rank: t.Rank(), Host: t.Host(t.Rank()), Lost: peer, LostHost: t.Host(peer), Stalled: stalled, Message: err.Error()}
		first, rerr := t.oracle.Report(ctx, f)
		if rerr != nil || first == "" {
			first = f.String()
		}
		t.first = first
	})
	return err
}

// FirstFailure returns the job's first failure once this rank reported one.
func (t *Mesh) FirstFailure() (string, bool) {
	select {
	case <-t.done:
		return t.first, true
	default:
		return "", false
	}
}

// Explain prefixes a lost-peer error with the job's first failure, when this
// rank has reported one; other errors pass through.
func (t *Mesh) Explain(err error) error {
	if !errors.Is(err, transport.ErrPeerLost) {
		return err
	}
	return t.ExplainAlways(err)
}

// ExplainAlways prefixes any error with the job's first failure, when this
// rank has reported one and err does not already name it (a timeout that
// followed a stall elsewhere, for example).
func (t *Mesh) ExplainAlways(err error) error {
	if err == nil {
		return nil
	}
	if f, ok := t.FirstFailure(); ok && !strings.Contains(err.Error(), f) {
		return fmt.Errorf("%s: %w", f, err)
	}
	return err
}
