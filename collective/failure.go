package collective

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/rendezvous"
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

// failureOracle records the first data-plane failure of the job, so that
// every rank can name the rank that failed first rather than the neighbour
// whose fail-stop it noticed. The launcher's rendezvous service is the
// oracle in real jobs (its decisions are rendezvous.Oracle's); tests use memOracle.
type failureOracle interface {
	// Report records f and returns the description of the job's first
	// failure (f's own when it is the first).
	Report(ctx context.Context, f Failure) (first string, err error)
}

// memOracle is an in-process oracle (tests): the rendezvous service's
// decisions without the service.
type memOracle struct{ o *rendezvous.Oracle }

func newMemOracle(size int) memOracle { return memOracle{rendezvous.NewOracle(size, 0)} }

func (m memOracle) Report(ctx context.Context, f Failure) (string, error) {
	v, err := m.o.Report(ctx, f.status(0))
	return v.Message, err
}

// rendezvousOracle asks the launcher's rendezvous service.
type rendezvousOracle struct {
	client *rendezvous.Client
	epoch  uint64
}

func (o rendezvousOracle) Report(ctx context.Context, f Failure) (string, error) {
	first, err := o.client.ReportFailure(ctx, f.status(o.epoch))
	return first.Message, err
}

// status is f as the oracle reads it: what f's rank blames.
func (f Failure) status(epoch uint64) rendezvous.Status {
	kind := rendezvous.FailurePeerLost
	if f.Stalled {
		kind = rendezvous.FailurePeerStalled
	}
	return rendezvous.Status{Epoch: epoch, Rank: f.Rank, State: rendezvous.StateFailed, Message: f.String(), Kind: kind, Suspect: f.Lost}
}

// failureTracker wraps a mesh so that the first lost-peer error, or progress
// deadline, any link sees is reported to the oracle before the error
// reaches the algorithms (whose fail-stop then makes other ranks notice this
// rank). Reporting at the point of detection, before this rank closes its
// links, is what lets the oracle tell the origin from the consequences: a
// rank that timed out waiting on a stalled peer is on record as waiting on
// it before its neighbours see it go.
type failureTracker struct {
	transport.Mesh
	oracle failureOracle
	once   sync.Once
	done   chan struct{}
	first  string
}

func newFailureTracker(m transport.Mesh, oracle failureOracle) *failureTracker {
	return &failureTracker{Mesh: m, oracle: oracle, done: make(chan struct{})}
}

func (t *failureTracker) Link(peer int) transport.Link {
	l := t.Mesh.Link(peer)
	if l == nil {
		return nil
	}
	tl := trackedLink{Link: l, t: t, peer: peer}
	rr, reducer := l.(transport.RecvReducer)
	d, duplex := l.(transport.Duplex)
	dr, duplexReducer := l.(transport.DuplexReducer)
	switch {
	case reducer && duplexReducer:
		return &trackedDuplexReducerLink{trackedDuplexLink{trackedLink: tl, d: d}, rr, dr}
	case reducer:
		return &trackedReducerLink{trackedLink: tl, rr: rr}
	case duplex:
		return &trackedDuplexLink{trackedLink: tl, d: d}
	}
	return &tl
}

// observe reports err if it is the first lost or stalled peer this rank
// sees. Link calls of the loop run under its progress deadline, so a link
// whose ctx ran out was waiting on a peer that made no progress.
func (t *failureTracker) observe(peer int, err error) error {
	if err == nil || t.oracle == nil {
		return err
	}
	stalled := errors.Is(err, context.DeadlineExceeded)
	if !stalled && !errors.Is(err, transport.ErrPeerLost) {
		return err
	}
	t.once.Do(func() {
		defer close(t.done)
		// The oracle may hold a stall report for its settle window (1 s
		// by default) while the stalled rank's other peers report.
		wait := 2 * time.Second
		if stalled {
			wait += 2 * rendezvous.DefaultStallSettle
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

// firstFailure returns the job's first failure once this rank reported one.
func (t *failureTracker) firstFailure() (string, bool) {
	select {
	case <-t.done:
		return t.first, true
	default:
		return "", false
	}
}

type trackedLink struct {
	transport.Link
	t    *failureTracker
	peer int
}

func (l *trackedLink) Send(ctx context.Context, p []byte) error {
	return l.t.observe(l.peer, l.Link.Send(ctx, p))
}

func (l *trackedLink) Recv(ctx context.Context, p []byte) error {
	return l.t.observe(l.peer, l.Link.Recv(ctx, p))
}

func (l *trackedLink) BufferedBytes() int {
	if b, ok := l.Link.(transport.Buffered); ok {
		return b.BufferedBytes()
	}
	return 0
}

type trackedReducerLink struct {
	trackedLink
	rr transport.RecvReducer
}

func (l *trackedReducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.t.observe(l.peer, l.rr.RecvReduce(ctx, dst, fn))
}

type trackedDuplexLink struct {
	trackedLink
	d transport.Duplex
}

func (l *trackedDuplexLink) TrySend(p []byte) (int, error) {
	n, err := l.d.TrySend(p)
	return n, l.t.observe(l.peer, err)
}

func (l *trackedDuplexLink) TryRecv(p []byte) (int, error) {
	n, err := l.d.TryRecv(p)
	return n, l.t.observe(l.peer, err)
}

func (l *trackedDuplexLink) Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error {
	return l.t.observe(l.peer, l.d.Await(ctx, recvBytes, send, timeout))
}

type trackedDuplexReducerLink struct {
	trackedDuplexLink
	rr transport.RecvReducer
	dr transport.DuplexReducer
}

func (l *trackedDuplexReducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.t.observe(l.peer, l.rr.RecvReduce(ctx, dst, fn))
}

func (l *trackedDuplexReducerLink) TryRecvReduce(dst []byte, fn func(dst, src []byte)) (int, error) {
	n, err := l.dr.TryRecvReduce(dst, fn)
	return n, l.t.observe(l.peer, err)
}
