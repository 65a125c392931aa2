package collective

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/collective/internal/worldhook"
	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/logging"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/tracked"
	"github.com/gorovod/gorovod/internal/worker"
)

// World is one membership of one job: this process's rank among a set of
// processes that run collectives together, the links to them and the
// background loop that negotiates and executes. NewWorld makes one; Close
// ends it. Several worlds may exist one after another in a process (a
// world closed, a new one joined with a new epoch) and side by side (tests,
// see package collectivetest). A World is safe for concurrent use.
//
// The generic collectives take a world as a call option:
//
//	collective.Allreduce(ctx, "grad/w1", grads, collective.Average, collective.InWorld(w))
//
// Without InWorld they run in the default world, the one Init made.
type World struct {
	e *engine

	closeOnce sync.Once
	closeErr  error
}

// Membership is an explicit place in a job, for programs that are not
// started by a launcher (tests, the elastic driver): this rank and the
// size, the rendezvous service every rank registers with, the job secret
// that authenticates them, and the membership epoch. Rank 0 does not serve
// the rendezvous: whoever hands out memberships does (see
// internal/rendezvous). LocalRank, LocalSize, CrossRank and CrossSize are
// informative: the rendezvous service computes them from the hosts.
type Membership struct {
	Rank, Size           int
	LocalRank, LocalSize int
	CrossRank, CrossSize int
	Epoch                uint64
	RendezvousAddr       string // host:port of the rendezvous service
	Secret               []byte // the job secret (at least 1 byte)
	Host                 string // this process's host; equal hosts share memory ("" = the hostname)
}

// Option configures NewWorld and Init.
type Option func(*initOptions)

type initOptions struct {
	cfg        *Config
	logger     *zap.Logger
	getenv     func(string) string
	membership *Membership
	mesh       transport.Mesh // collectivetest: a ready mesh instead of the launcher
	oracle     tracked.Oracle // with mesh: the job's failure oracle

	deviceBackend Backend
}

// WithConfig replaces the configuration read from the environment.
func WithConfig(c Config) Option { return func(o *initOptions) { o.cfg = &c } }

// WithLogger sets the logger (default: zap production logger at the level of
// GOROVOD_LOG_LEVEL, warn when unset, with rank and host on every line).
func WithLogger(l *zap.Logger) Option { return func(o *initOptions) { o.logger = l } }

// WithMembership places the world explicitly instead of reading the
// launcher's environment (see Membership).
func WithMembership(m Membership) Option {
	return func(o *initOptions) {
		m.Secret = append([]byte(nil), m.Secret...)
		o.membership = &m
	}
}

// withEnv replaces os.Getenv (tests).
func withEnv(getenv func(string) string) Option { return func(o *initOptions) { o.getenv = getenv } }

// withMesh builds the world on a ready mesh (the public test harness, via
// internal/worldhook): no rendezvous, no sockets.
func withMesh(m transport.Mesh, oracle tracked.Oracle) Option {
	return func(o *initOptions) { o.mesh, o.oracle = m, oracle }
}

// launchEpochs counts the worlds this process made from the launcher's
// environment: the n-th one joins epoch GOROVOD_EPOCH + n. Every rank of a
// job closes and joins in the same sequence, so they agree on the number.
var launchEpochs atomic.Uint64

// NewWorld joins this process to a job and returns its world. Without
// WithMembership it reads its place from the launcher's environment (gorun,
// mpirun, srun, torchrun-style RANK/WORLD_SIZE; none means a world of
// one); the first such world joins the launcher's epoch and each later one
// the next epoch, so a program can close its world and join a new one with
// the same ranks. It registers with the rendezvous service, connects to
// every peer and starts the background loop; ctx bounds the whole start-up.
func NewWorld(ctx context.Context, opts ...Option) (*World, error) {
	o := initOptions{getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	var e *engine
	if o.mesh != nil {
		e, err = meshEngine(cfg, o)
	} else {
		e, err = launchEngine(ctx, cfg, o)
	}
	if err != nil {
		return nil, typed(err, false)
	}
	e.device = o.deviceBackend
	if err := e.serveMetrics(ctx); err != nil {
		e.close()
		return nil, typed(err, false)
	}
	go e.run()
	e.log.Debug("world started", zap.Int("size", e.topo.Size), zap.Uint64("epoch", e.topo.Epoch),
		zap.Int("local_rank", e.topo.LocalRank), zap.Int("local_size", e.topo.LocalSize))
	return &World{e: e}, nil
}

func (o *initOptions) config() (Config, error) {
	cfg := config.Default()
	if o.cfg != nil {
		cfg = *o.cfg
		if err := cfg.Validate(); err != nil {
			return cfg, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return cfg, nil
	}
	if o.mesh != nil {
		return cfg, nil // the test harness is hermetic: defaults unless WithConfig
	}
	cfg, err := cfg.FromEnv(o.getenv)
	if err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return cfg, nil
}

func (o *initOptions) log(rank int, host string) (*zap.Logger, error) {
	log := o.logger
	if log == nil {
		var err error
		if log, err = logging.New(o.getenv(env.LogLevel)); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, env.LogLevel, err)
		}
	}
	return log.With(zap.Int("rank", rank), zap.String("host", host)), nil
}

// launchEngine places the world from the launcher's environment or the
// explicit membership and joins it (package worker).
func launchEngine(ctx context.Context, cfg Config, o initOptions) (*engine, error) {
	var li worker.Info
	var err error
	if m := o.membership; m != nil {
		li, err = worker.FromMembership(worker.Membership{Rank: m.Rank, Size: m.Size, LocalRank: m.LocalRank,
			Epoch: m.Epoch, RendezvousAddr: m.RendezvousAddr, Secret: m.Secret, Host: m.Host}, o.getenv)
	} else {
		li, err = worker.Detect(o.getenv)
		li.Epoch += launchEpochs.Add(1) - 1
	}
	if err != nil {
		return nil, err
	}
	log, err := o.log(li.Rank, li.Host)
	if err != nil {
		return nil, err
	}
	log.Debug("joining", zap.String("launcher", li.Source), zap.Uint64("epoch", li.Epoch))
	j, err := worker.Join(ctx, li, cfg.DisableShm, log)
	if err != nil {
		return nil, err
	}
	e, err := newEngine(cfg, log, j.Topology, j.Mesh, j.Oracle)
	if err != nil {
		_ = j.Mesh.Close()
		_ = j.Release()
		return nil, err
	}
	e.closers = append(e.closers, j.Release)
	return e, nil
}

// meshEngine builds a world on a ready mesh (collectivetest).
func meshEngine(cfg Config, o initOptions) (*engine, error) {
	m := o.mesh
	names := make([]string, m.Size())
	for r := range names {
		names[r] = m.Host(r)
	}
	slot := hosts.Layout(names)[m.Rank()]
	topo := topology{Rank: m.Rank(), Size: m.Size(), LocalRank: slot.LocalRank, LocalSize: slot.LocalSize,
		CrossRank: slot.CrossRank, CrossSize: slot.CrossSize, Host: m.Host(m.Rank())}
	log, err := o.log(topo.Rank, topo.Host)
	if err != nil {
		return nil, err
	}
	if o.logger == nil {
		log = zap.NewNop() // hermetic unless the test asks for logs
	}
	return newEngine(cfg, log, topo, m, o.oracle)
}

// Rank is this process's rank in the world.
func (w *World) Rank() int { return w.e.topo.Rank }

// Size is the number of processes in the world.
func (w *World) Size() int { return w.e.topo.Size }

// LocalRank is the rank among the world's processes on this host.
func (w *World) LocalRank() int { return w.e.topo.LocalRank }

// LocalSize is the number of the world's processes on this host.
func (w *World) LocalSize() int { return w.e.topo.LocalSize }

// CrossRank is the index of this host among the hosts that have this
// local rank.
func (w *World) CrossRank() int { return w.e.topo.CrossRank }

// CrossSize is the number of hosts that have this local rank.
func (w *World) CrossSize() int { return w.e.topo.CrossSize }

// Epoch is the membership epoch the world was joined in.
func (w *World) Epoch() uint64 { return w.e.topo.Epoch }

// Host is this process's host name as the job knows it.
func (w *World) Host() string { return w.e.topo.Host }

// Config returns the configuration the world runs with.
func (w *World) Config() Config { return w.e.cfg }

// Close stops the world's background loop on every rank (any rank's Close
// ends the world's collectives; calls still pending fail with ErrShutdown)
// and releases its sockets, shared memory and goroutines. ctx bounds the
// wait for the other ranks to agree; when it ends first, this rank closes
// its links anyway. Close is idempotent: later calls return the first
// call's result.
func (w *World) Close(ctx context.Context) error {
	w.closeOnce.Do(func() { w.closeErr = w.e.shutdown(ctx) })
	return w.closeErr
}

// closed reports whether Close was called.
func (w *World) closed() bool {
	w.e.mu.Lock()
	defer w.e.mu.Unlock()
	return w.e.stopping
}

// Barrier returns once every rank of the world (of the process set, with
// InProcessSet) has called it.
func (w *World) Barrier(ctx context.Context, opts ...CallOption) error {
	return Barrier(ctx, w.in(opts)...)
}

// Join is collective.Join in this world.
func (w *World) Join(ctx context.Context) (lastRank int, err error) {
	return JoinAsync(ctx, InWorld(w)).Wait(ctx)
}

// NewProcessSet is collective.NewProcessSet in this world.
func (w *World) NewProcessSet(ctx context.Context, ranks []int) (*ProcessSet, error) {
	return NewProcessSet(ctx, ranks, InWorld(w))
}

// Stats returns the world's counters.
func (w *World) Stats() Stats { return w.e.stats() }

func (w *World) in(opts []CallOption) []CallOption {
	return append(append([]CallOption(nil), opts...), InWorld(w))
}

// InWorld runs a collective in w instead of the default world. A nil w
// means the default world.
func InWorld(w *World) CallOption { return func(o *callOptions) { o.world = w } }

var (
	globalMu sync.Mutex
	global   *World
)

// Default returns the world Init made, nil before Init and after Shutdown.
func Default() *World {
	globalMu.Lock()
	defer globalMu.Unlock()
	return global
}

func current() (*engine, error) {
	w := Default()
	if w == nil {
		return nil, ErrNotInitialized
	}
	return w.e, nil
}

// Init joins this process to the job (NewWorld) and makes that world the
// default one, which the package-level functions use. After Shutdown, Init
// joins the job again in the next epoch (every rank must do the same).
func Init(ctx context.Context, opts ...Option) error {
	globalMu.Lock()
	defer globalMu.Unlock()
	if global != nil && !global.closed() {
		return fmt.Errorf("%w: Init called twice without Shutdown", ErrInvalid)
	}
	w, err := NewWorld(ctx, opts...)
	if err != nil {
		return err
	}
	global = w
	return nil
}

// Shutdown closes the default world (see World.Close); Init may then join
// a new one.
func Shutdown(ctx context.Context) error {
	globalMu.Lock()
	w := global
	global = nil
	globalMu.Unlock()
	if w == nil {
		return nil
	}
	return w.Close(ctx)
}

// Initialized reports whether Init has succeeded and Shutdown not been called.
func Initialized() bool {
	w := Default()
	return w != nil && !w.closed()
}

func init() {
	worldhook.NewOracle = func(size int) any { return worker.NewMemOracle(size) }
	worldhook.WithMesh = func(m transport.Mesh, oracle any) any {
		o, _ := oracle.(tracked.Oracle)
		return withMesh(m, o)
	}
}
