package collective

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/rendezvous"
	"github.com/gorovod/gorovod/internal/timeline"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/mesh"
	"github.com/gorovod/gorovod/ops"
)

// Config is every tuning knob of a worker (see internal/config for fields).
type Config = config.Config

// DefaultConfig returns the defaults; Init applies GOROVOD_* env on top.
func DefaultConfig() Config { return config.Default() }

// served holds the rendezvous services this process hosts (rank 0 without
// gorun), by port. A service outlives the world that started it: the job's
// later epochs register with it (see rendezvous.Server), so it lives until
// the process exits.
var served struct {
	sync.Mutex
	byPort map[string]*rendezvous.Server
}

// serveRendezvous makes sure this process serves the rendezvous of li.
func serveRendezvous(li launchInfo, log *zap.Logger) error {
	_, port, err := net.SplitHostPort(li.RendezvousAddr)
	if err != nil {
		return fmt.Errorf("%w: rendezvous address %q: %v", ErrInvalid, li.RendezvousAddr, err)
	}
	served.Lock()
	defer served.Unlock()
	if served.byPort[port] != nil {
		return nil
	}
	lis, err := net.Listen("tcp", net.JoinHostPort("", port))
	if err != nil {
		return fmt.Errorf("rank 0 cannot serve rendezvous on port %s: %w", port, err)
	}
	srv := rendezvous.NewServer(rendezvous.ServerConfig{Size: li.Size, Secret: li.Secret, StartTimeout: li.StartTimeout, Epoch: li.Epoch, Logger: log})
	go func() { _ = srv.Serve(lis) }()
	if served.byPort == nil {
		served.byPort = make(map[string]*rendezvous.Server)
	}
	served.byPort[port] = srv
	return nil
}

// start does the I/O of joining: rendezvous and mesh.
func start(ctx context.Context, cfg config.Config, log *zap.Logger, li launchInfo) (*engine, error) {
	if li.Source == "single" {
		topo := topology{rank: 0, size: 1, localRank: 0, localSize: 1, crossRank: 0, crossSize: 1, host: li.Host, epoch: li.Epoch}
		return newEngine(cfg, log, topo, singleMesh{host: li.Host}, nil)
	}
	if li.SecretDerived {
		log.Warn("no job secret in the environment; derived one from the launcher's job id (set GOROVOD_SECRET or GOROVOD_SECRET_FILE)")
	}
	var closers []func() error
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, li.StartTimeout+5*time.Second)
	defer cancel()
	if li.ServeRendezvous {
		if err := serveRendezvous(li, log); err != nil {
			return nil, err
		}
	}
	bind := li.BindAddr
	if bind == "" {
		var err error
		if bind, err = bindAddrFor(li.Ifaces, li.RendezvousAddr); err != nil {
			cleanup()
			return nil, err
		}
		log.Debug("data plane address chosen", zap.String("addr", bind), zap.String("interfaces", li.Ifaces))
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("data plane cannot listen on %s: %w", bind, err)
	}
	rdv, err := rendezvous.Dial(li.RendezvousAddr, li.Secret)
	if err != nil {
		_ = lis.Close()
		cleanup()
		return nil, fmt.Errorf("rank %d: rendezvous at %s: %w", li.Rank, li.RendezvousAddr, err)
	}
	closers = append(closers, rdv.Close)
	world, err := rdv.Register(ctx, rendezvous.Registration{
		Epoch: li.Epoch, Rank: li.Rank, Host: li.Host, LocalRank: li.LocalRank, Addr: lis.Addr().String(), Pid: os.Getpid(),
	})
	if err != nil {
		_ = lis.Close()
		cleanup()
		return nil, fmt.Errorf("rank %d: rendezvous at %s: %w", li.Rank, li.RendezvousAddr, err)
	}
	peers := make([]mesh.Peer, len(world.Peers))
	for i, p := range world.Peers {
		peers[i] = mesh.Peer{Rank: p.Rank, Host: p.Host, Addr: p.Addr}
	}
	m, err := mesh.Build(ctx, mesh.Config{
		Rank: li.Rank, Peers: peers, Secret: li.Secret, Epoch: world.Epoch,
		Listener: lis, DisableShm: cfg.DisableShm, Logger: log,
	})
	if err != nil {
		_ = lis.Close()
		cleanup()
		return nil, fmt.Errorf("rank %d: connecting to peers: %w", li.Rank, err)
	}
	me := world.Peers[li.Rank]
	topo := topology{rank: li.Rank, size: len(world.Peers), localRank: me.LocalRank, localSize: me.LocalSize,
		crossRank: me.CrossRank, crossSize: me.CrossSize, host: li.Host, epoch: world.Epoch}
	e, err := newEngine(cfg, log, topo, m, rendezvousOracle{client: rdv, epoch: world.Epoch})
	if err != nil {
		_ = m.Close()
		cleanup()
		return nil, err
	}
	e.closers = append(closers, lis.Close)
	return e, nil
}

func topo() topology {
	e, err := current()
	if err != nil {
		return topology{rank: -1, size: -1, localRank: -1, localSize: -1, crossRank: -1, crossSize: -1}
	}
	return e.topo
}

// Rank is this process's global rank, or -1 before Init.
func Rank() int { return topo().rank }

// Size is the number of processes in the job, or -1 before Init.
func Size() int { return topo().size }

// LocalRank is the rank among processes on this host, or -1 before Init.
func LocalRank() int { return topo().localRank }

// LocalSize is the number of processes on this host, or -1 before Init.
func LocalSize() int { return topo().localSize }

// CrossRank is the index of this host among the job's hosts, or -1 before Init.
func CrossRank() int { return topo().crossRank }

// CrossSize is the number of hosts, or -1 before Init.
func CrossSize() int { return topo().crossSize }

// Handle is the result of an asynchronous collective.
type Handle struct{ en *entry }

// Wait blocks until the collective finished or ctx is done. Returning early
// on ctx does not cancel the collective: its buffer may still be written
// until Done is closed.
func (h *Handle) Wait(ctx context.Context) error {
	select {
	case <-h.en.done:
		return h.en.err
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for %s %q: %w", ErrTimeout, h.en.req.Op, h.en.req.Name, ctx.Err())
	}
}

// Done is closed when the collective finished.
func (h *Handle) Done() <-chan struct{} { return h.en.done }

func failed(err error) *Handle {
	en := &entry{done: make(chan struct{})}
	en.finish(err)
	return &Handle{en: en}
}

func dtypeOf[T Element]() tensor.DType {
	var z T
	switch any(z).(type) {
	case float32:
		return tensor.Float32
	case float64:
		return tensor.Float64
	case int32:
		return tensor.Int32
	case int64:
		return tensor.Int64
	case int8:
		return tensor.Int8
	case uint8:
		return tensor.Uint8
	case Float16:
		return tensor.Float16
	case BFloat16:
		return tensor.BFloat16
	}
	return 0
}

func asBytes[T Element](buf []T) []byte {
	if len(buf) == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*int(unsafe.Sizeof(buf[0])))
}

func fromBytes[T Element](b []byte) []T {
	var z T
	n := len(b) / int(unsafe.Sizeof(z))
	if n == 0 {
		return []T{}
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

func validName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty tensor name", ErrInvalid)
	}
	return nil
}

func submit(req coordinator.Request, buf []byte, co callOptions) *Handle {
	return submitWith(req, buf, co, nil)
}

// submitWith validates what every call shares (initialized, a name, the
// process set) and queues the request; prep fills op-specific entry fields.
func submitWith(req coordinator.Request, buf []byte, co callOptions, prep func(*entry)) *Handle {
	e, err := co.engine()
	if err != nil {
		return failed(err)
	}
	if err := validName(req.Name); err != nil {
		return failed(err)
	}
	req.Device = coordinator.CPU
	if req.Prescale == 0 {
		req.Prescale, req.Postscale = co.prescale, co.postscale
	}
	if ps := co.set; ps != nil {
		if !ps.Included() {
			return failed(fmt.Errorf("%w: %s %q in process set %d, which rank %d is not a member of", ErrInvalid, req.Op, req.Name, ps.id, e.topo.rank))
		}
		req.ProcessSet = ps.id
	}
	return &Handle{en: e.submit(req, buf, prep)}
}

// engine is the world a call with these options runs in: InWorld's, else
// the process set's, else the default world.
func (co callOptions) engine() (*engine, error) {
	switch {
	case co.eng != nil:
		return co.eng, nil
	case co.world != nil && co.set != nil && co.set.e != co.world.e:
		return nil, fmt.Errorf("%w: process set %d belongs to another world than InWorld's", ErrInvalid, co.set.id)
	case co.world != nil:
		return co.world.e, nil
	case co.set != nil:
		return co.set.e, nil
	}
	return current()
}

// groupSize is the number of ranks a call with these options runs among
// (-1 when there is no world).
func (co callOptions) groupSize() int {
	if co.set != nil {
		return co.set.Size()
	}
	e, err := co.engine()
	if err != nil {
		return -1
	}
	return e.topo.size
}

// AllreduceAsync starts an in-place allreduce of buf across all ranks.
func AllreduceAsync[T Element](ctx context.Context, name string, buf []T, op ReduceOp, opts ...CallOption) *Handle {
	co := callOpts(opts)
	switch op {
	case Sum, Average, Min, Max, Product:
	default:
		return failed(fmt.Errorf("%w: allreduce %q: unsupported reduce op %v", ErrInvalid, name, op))
	}
	return submit(coordinator.Request{
		Name: name, Op: coordinator.OpAllreduce, DType: dtypeOf[T](), Shape: []int64{int64(len(buf))}, ReduceOp: op,
	}, asBytes(buf), co)
}

// Allreduce reduces buf elementwise across all ranks, in place: afterwards
// every rank holds the same result. name identifies the tensor across ranks.
func Allreduce[T Element](ctx context.Context, name string, buf []T, op ReduceOp, opts ...CallOption) error {
	return AllreduceAsync(ctx, name, buf, op, opts...).Wait(ctx)
}

// BroadcastAsync starts a broadcast of root's buf to every rank's buf.
func BroadcastAsync[T Element](ctx context.Context, name string, buf []T, root int, opts ...CallOption) *Handle {
	co := callOpts(opts)
	if s := co.groupSize(); root < 0 || (s > 0 && root >= s) {
		return failed(fmt.Errorf("%w: broadcast %q: root %d out of range [0,%d)", ErrInvalid, name, root, s))
	}
	if co.set != nil && !slices.Contains(co.set.ranks, root) {
		return failed(fmt.Errorf("%w: broadcast %q: root %d is not a member of process set %d %v", ErrInvalid, name, root, co.set.id, co.set.ranks))
	}
	return submit(coordinator.Request{
		Name: name, Op: coordinator.OpBroadcast, DType: dtypeOf[T](), Shape: []int64{int64(len(buf))}, Root: root,
	}, asBytes(buf), co)
}

// Broadcast copies root's buf into every rank's buf (same length everywhere).
func Broadcast[T Element](ctx context.Context, name string, buf []T, root int, opts ...CallOption) error {
	return BroadcastAsync(ctx, name, buf, root, opts...).Wait(ctx)
}

// BarrierAsync starts a barrier; its handle is done once every rank (of
// the process set, with InProcessSet) has called Barrier or BarrierAsync.
func BarrierAsync(ctx context.Context, opts ...CallOption) *Handle {
	co := callOpts(opts)
	e, err := co.engine()
	if err != nil {
		return failed(err)
	}
	e.mu.Lock()
	e.barriers++
	name := "barrier/" + strconv.FormatUint(e.barriers, 10)
	e.mu.Unlock()
	return submit(coordinator.Request{Name: name, Op: coordinator.OpBarrier, DType: tensor.Uint8}, nil, co)
}

// Barrier returns once every rank (of the process set, with InProcessSet)
// has called it.
func Barrier(ctx context.Context, opts ...CallOption) error {
	return BarrierAsync(ctx, opts...).Wait(ctx)
}

// CallOption adjusts one collective call.
type CallOption func(*callOptions)

type callOptions struct {
	prescale, postscale float64
	set                 *ProcessSet
	world               *World
	eng                 *engine // set inside the package; wins over world and set
}

// inEngine runs a call in e's world (calls the package makes itself).
func inEngine(e *engine) CallOption { return func(o *callOptions) { o.eng = e } }

// WithPrescale multiplies the local input by f before reducing.
func WithPrescale(f float64) CallOption { return func(o *callOptions) { o.prescale = f } }

// WithPostscale multiplies the reduced result by f.
func WithPostscale(f float64) CallOption { return func(o *callOptions) { o.postscale = f } }

func callOpts(opts []CallOption) callOptions {
	co := callOptions{prescale: 1, postscale: 1}
	for _, o := range opts {
		o(&co)
	}
	return co
}

// singleMesh is the mesh of a world of one.
type singleMesh struct{ host string }

func (singleMesh) Rank() int               { return 0 }
func (singleMesh) Size() int               { return 1 }
func (singleMesh) Link(int) transport.Link { return nil }
func (m singleMesh) Host(int) string       { return m.host }
func (singleMesh) Close() error            { return nil }

// RunExclusive runs fn on every rank with direct access to the data plane,
// bypassing negotiation: it is negotiated once (like a barrier named name),
// then fn runs on the background loop at the same point on every rank, so
// fn must issue the same sequence of ops on every rank. For benchmarks and
// tools; an error fn returns fails this call on this rank.
func RunExclusive(ctx context.Context, name string, fn func(ctx context.Context, c *ops.Comm) error, opts ...CallOption) error {
	co := callOpts(opts)
	co.set = nil // the whole world's communicator
	return submitWith(coordinator.Request{Name: "exclusive/" + name, Op: coordinator.OpBarrier, DType: tensor.Uint8}, nil,
		co, func(en *entry) { en.exclusive = fn }).Wait(ctx)
}

// ActiveConfig returns the configuration the running worker uses (the
// defaults before Init).
func ActiveConfig() Config {
	e, err := current()
	if err != nil {
		return DefaultConfig()
	}
	return e.cfg
}

// StartTimeline starts recording a Chrome-trace timeline of negotiation and
// execution to path (open it in Perfetto or chrome://tracing). Only rank 0
// records, as Horovod does; on other ranks it does nothing. A timeline
// already recording is closed first.
func StartTimeline(path string) error {
	e, err := current()
	if err != nil {
		return err
	}
	if e.topo.rank != 0 {
		return nil
	}
	if err := e.tl.Start(path, timeline.Options{}); err != nil {
		return fmt.Errorf("%w: timeline: %w", ErrInvalid, err)
	}
	return nil
}

// StopTimeline closes the timeline being recorded, leaving a valid JSON file.
func StopTimeline() error {
	e, err := current()
	if err != nil {
		return err
	}
	return e.tl.Stop()
}
