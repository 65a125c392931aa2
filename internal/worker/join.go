// Package worker is the bootstrap of a worker process below the public
// API: it reads the launcher's environment (Detect) or an explicit
// membership (FromMembership), registers with the rendezvous service
// (hosting it on rank 0 when no launcher does), opens the data-plane
// listener and builds the mesh to every peer (Join). What it returns is
// ready for the background loop: the topology, the mesh and the job's
// failure oracle. Errors wrap one of the kinds in internal/errkind.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/errkind"
	"github.com/gorovod/gorovod/internal/netif"
	"github.com/gorovod/gorovod/internal/rendezvous"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/mesh"
	"github.com/gorovod/gorovod/internal/transport/tracked"
)

// Topology is this process's place in a joined world.
type Topology struct {
	Rank, Size           int
	LocalRank, LocalSize int
	CrossRank, CrossSize int
	Host                 string
	Epoch                uint64
}

// Joined is a world this process has joined: its place, the mesh to every
// peer and the oracle that records the job's first failure (nil for a world
// of one). The caller owns Mesh and closes it; Release frees the rest.
type Joined struct {
	Topology Topology
	Mesh     transport.Mesh
	Oracle   tracked.Oracle
	release  []func() error
}

// Release closes the data-plane listener and the rendezvous connection
// (not the mesh). Idempotent.
func (j *Joined) Release() error {
	var errs []error
	for i := len(j.release) - 1; i >= 0; i-- {
		errs = append(errs, j.release[i]())
	}
	j.release = nil
	return errors.Join(errs...)
}

// joinSlack is how much longer than the start timeout the whole join may
// take: the mesh is built after the rendezvous completes.
const joinSlack = 5 * time.Second

// Join does the I/O of joining the world li describes: the rendezvous
// service (served here on rank 0 without a launcher), the listener, the
// registration, the mesh. ctx and li.StartTimeout bound it.
func Join(ctx context.Context, li Info, disableShm bool, log *zap.Logger) (*Joined, error) {
	if li.Source == "single" {
		return &Joined{Topology: Topology{Size: 1, LocalSize: 1, CrossSize: 1, Host: li.Host, Epoch: li.Epoch},
			Mesh: singleMesh{host: li.Host}}, nil
	}
	if li.SecretDerived && li.Rank == 0 { // one warning per job, not one per rank
		log.Warn("no job secret in the environment; derived one from the launcher's job id (set GOROVOD_SECRET or GOROVOD_SECRET_FILE)")
	}
	if len(li.CPUs) > 0 {
		if err := bindThreads(li.CPUs); err != nil { // the job still runs, unbound
			log.Warn("could not bind to the cpus gorun assigned", zap.Ints("cpus", li.CPUs), zap.Error(err))
		} else {
			log.Debug("bound to cpus", zap.Ints("cpus", li.CPUs))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, li.StartTimeout+joinSlack)
	defer cancel()
	if li.ServeRendezvous {
		if err := serveRendezvous(li, log); err != nil {
			return nil, err
		}
	}
	j := &Joined{}
	lis, err := listen(li, log)
	if err != nil {
		return nil, err
	}
	j.release = append(j.release, lis.Close)
	world, rdv, err := register(ctx, li, lis.Addr().String())
	if err != nil {
		_ = j.Release()
		return nil, err
	}
	j.release = append(j.release, rdv.Close)
	peers := make([]mesh.Peer, len(world.Peers))
	for i, p := range world.Peers {
		peers[i] = mesh.Peer{Rank: p.Rank, Host: p.Host, Addr: p.Addr}
	}
	m, err := mesh.Build(ctx, mesh.Config{
		Rank: li.Rank, Peers: peers, Secret: li.Secret, Epoch: world.Epoch,
		Listener: lis, DisableShm: disableShm, Logger: log,
	})
	if err != nil {
		err = fmt.Errorf("rank %d: connecting to peers: %w", li.Rank, err)
		err = blameLostPeer(ctx, RendezvousOracle{Client: rdv, Epoch: world.Epoch}, li, world, err)
		_ = j.Release()
		return nil, classify(err)
	}
	me := world.Peers[li.Rank]
	j.Topology = Topology{Rank: li.Rank, Size: len(world.Peers), LocalRank: me.LocalRank, LocalSize: me.LocalSize,
		CrossRank: me.CrossRank, CrossSize: me.CrossSize, Host: li.Host, Epoch: world.Epoch}
	j.Mesh = m
	j.Oracle = RendezvousOracle{Client: rdv, Epoch: world.Epoch}
	return j, nil
}

// listen opens the data-plane listener on the launcher's bind address, or
// one chosen from the interfaces and the route to the rendezvous host.
func listen(li Info, log *zap.Logger) (net.Listener, error) {
	bind := li.BindAddr
	if bind == "" {
		var err error
		if bind, err = netif.DataPlaneAddr(li.Ifaces, li.RendezvousAddr); err != nil {
			return nil, fmt.Errorf("%w: %w", errkind.Invalid, err)
		}
		log.Debug("data plane address chosen", zap.String("addr", bind), zap.String("interfaces", li.Ifaces))
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
	if err != nil {
		return nil, fmt.Errorf("%w: data plane cannot listen on %s: %w", errkind.Invalid, bind, err)
	}
	return lis, nil
}

// register announces this rank and waits for the world of li.Epoch.
func register(ctx context.Context, li Info, addr string) (rendezvous.World, *rendezvous.Client, error) {
	rdv, err := rendezvous.Dial(li.RendezvousAddr, li.Secret)
	if err != nil {
		return rendezvous.World{}, nil, classify(fmt.Errorf("rank %d: rendezvous at %s: %w", li.Rank, li.RendezvousAddr, err))
	}
	world, err := rdv.Register(ctx, rendezvous.Registration{
		Epoch: li.Epoch, Rank: li.Rank, Host: li.Host, LocalRank: li.LocalRank, Addr: addr, Pid: os.Getpid(),
	})
	if err != nil {
		_ = rdv.Close()
		return rendezvous.World{}, nil, classify(fmt.Errorf("rank %d: rendezvous at %s (epoch %d): %w", li.Rank, li.RendezvousAddr, li.Epoch, err))
	}
	return world, rdv, nil
}

// served holds the rendezvous services this process hosts (rank 0 without
// a launcher), by port. A service outlives the world that started it: the
// job's later epochs register with it, so it lives until the process exits.
var served struct {
	sync.Mutex
	byPort map[string]*rendezvous.Server
}

// serveRendezvous makes sure this process serves the rendezvous of li.
func serveRendezvous(li Info, log *zap.Logger) error {
	_, port, err := net.SplitHostPort(li.RendezvousAddr)
	if err != nil {
		return fmt.Errorf("%w: rendezvous address %q: %v", errkind.Invalid, li.RendezvousAddr, err)
	}
	served.Lock()
	defer served.Unlock()
	if served.byPort[port] != nil {
		return nil
	}
	lis, err := net.Listen("tcp", net.JoinHostPort("", port))
	if err != nil {
		return fmt.Errorf("%w: rank 0 cannot serve rendezvous on port %s: %w", errkind.Invalid, port, err)
	}
	srv := rendezvous.NewServer(rendezvous.ServerConfig{Size: li.Size, Secret: li.Secret, StartTimeout: li.StartTimeout, Epoch: li.Epoch, Logger: log})
	go func() { _ = srv.Serve(lis) }()
	if served.byPort == nil {
		served.byPort = make(map[string]*rendezvous.Server)
	}
	served.byPort[port] = srv
	return nil
}

// RendezvousOracle is the failure oracle of a launched job: the rendezvous
// service records the first failure of each epoch.
type RendezvousOracle struct {
	Client *rendezvous.Client
	Epoch  uint64
}

// Report implements tracked.Oracle.
func (o RendezvousOracle) Report(ctx context.Context, f tracked.Failure) (string, error) {
	first, err := o.Client.ReportFailure(ctx, failureStatus(f, o.Epoch))
	return first.Message, err
}

// blameLostPeer reports a peer lost while the mesh was being built to the
// job's failure oracle, as the data plane does during ops, and prefixes err
// with the job's first failure: a peer that died after registering is named
// first by every rank, not the rank that noticed it.
func blameLostPeer(ctx context.Context, o tracked.Oracle, li Info, world rendezvous.World, err error) error {
	var pe *transport.PeerError
	if !errors.Is(err, transport.ErrPeerLost) || !errors.As(err, &pe) || pe.Rank < 0 || pe.Rank >= len(world.Peers) {
		return err
	}
	f := tracked.Failure{Rank: li.Rank, Host: li.Host, Lost: pe.Rank, LostHost: world.Peers[pe.Rank].Host, Message: pe.Err.Error()}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracked.StallReportTimeout)
	defer cancel()
	first, rerr := o.Report(rctx, f)
	if rerr != nil || first == "" || strings.Contains(err.Error(), first) {
		return err
	}
	return fmt.Errorf("%s: %w", first, err)
}

// failureStatus is f as the failure oracle reads it: what f's rank blames.
func failureStatus(f tracked.Failure, epoch uint64) rendezvous.Status {
	kind := rendezvous.FailurePeerLost
	if f.Stalled {
		kind = rendezvous.FailurePeerStalled
	}
	return rendezvous.Status{Epoch: epoch, Rank: f.Rank, State: rendezvous.StateFailed, Message: f.String(), Kind: kind, Suspect: f.Lost}
}

// MemOracle is the rendezvous service's failure oracle without the service,
// shared by the ranks of an in-process job (tests, collectivetest).
type MemOracle struct{ o *rendezvous.Oracle }

// NewMemOracle returns the oracle of an in-process job of size ranks.
func NewMemOracle(size int) *MemOracle { return &MemOracle{rendezvous.NewOracle(size, 0)} }

// Report implements tracked.Oracle.
func (m *MemOracle) Report(ctx context.Context, f tracked.Failure) (string, error) {
	v, err := m.o.Report(ctx, failureStatus(f, 0))
	return v.Message, err
}

// singleMesh is the mesh of a world of one.
type singleMesh struct{ host string }

func (singleMesh) Rank() int               { return 0 }
func (singleMesh) Size() int               { return 1 }
func (singleMesh) Link(int) transport.Link { return nil }
func (m singleMesh) Host(int) string       { return m.host }
func (singleMesh) Close() error            { return nil }

// classify makes err match one of the caller's error kinds: a rank that
// left or a service that went away is a lost peer, a deadline a timeout,
// a refusal (bad secret, wrong epoch, duplicate rank) invalid.
func classify(err error) error {
	for _, k := range []error{errkind.PeerLost, errkind.Timeout, errkind.Invalid, errkind.Shutdown, errkind.Canceled} {
		if errors.Is(err, k) {
			return err
		}
	}
	kind := errkind.Invalid
	switch {
	case errors.Is(err, rendezvous.ErrStartTimeout), errors.Is(err, context.DeadlineExceeded):
		kind = errkind.Timeout
	case errors.Is(err, context.Canceled):
		kind = errkind.Canceled
	case errors.Is(err, rendezvous.ErrAborted), errors.Is(err, rendezvous.ErrUnavailable),
		errors.Is(err, transport.ErrClosed), errors.Is(err, transport.ErrMalformed):
		kind = errkind.PeerLost
	}
	return fmt.Errorf("%w: %w", kind, err)
}
