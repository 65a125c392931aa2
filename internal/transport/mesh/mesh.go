package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/handshake"
	"github.com/gorovod/gorovod/internal/transport/shm"
	"github.com/gorovod/gorovod/internal/transport/tcp"
)

// Peer is one rank of the world as rendezvous reports it.
type Peer struct {
	Rank int
	Host string // identifies the machine; equal Host means shared memory works
	Addr string // the peer's data-plane TCP listen address
}

// Config says who this rank is and whom to connect to.
type Config struct {
	Rank   int
	Peers  []Peer // indexed by rank; Peers[i].Rank == i
	Secret []byte // job secret for the handshake
	Epoch  uint64 // membership epoch; connections from other epochs are refused
	// Listener is already listening at Peers[Rank].Addr. Build accepts on it
	// until every lower rank has connected and does not close it.
	Listener     net.Listener
	DisableShm   bool // TCP between same-host peers too
	ShmSlotBytes int  // shared-memory slot size; 0 = shm default
	ShmSlots     int  // shared-memory slots per direction; 0 = shm default
	Logger       *zap.Logger

	// HandshakeTimeout bounds one handshake (a silent intruder cannot hold
	// the accept path longer); 0 = 10s.
	HandshakeTimeout time.Duration
}

func (c *Config) validate() error {
	n := len(c.Peers)
	if n == 0 {
		return fmt.Errorf("mesh: %w: no peers", errInvalid)
	}
	if c.Rank < 0 || c.Rank >= n {
		return fmt.Errorf("mesh: %w: rank %d out of range for %d peers", errInvalid, c.Rank, n)
	}
	for i, p := range c.Peers {
		if p.Rank != i {
			return fmt.Errorf("mesh: %w: Peers[%d] has rank %d", errInvalid, i, p.Rank)
		}
		if i != c.Rank && p.Addr == "" {
			return fmt.Errorf("mesh: %w: rank %d on %q has no address", errInvalid, i, p.Host)
		}
	}
	if len(c.Secret) == 0 {
		return fmt.Errorf("mesh: %w: empty job secret", errInvalid)
	}
	if c.Rank > 0 && c.Listener == nil {
		return fmt.Errorf("mesh: %w: rank %d needs a Listener (lower ranks dial it)", errInvalid, c.Rank)
	}
	if c.ShmSlots != 0 && (c.ShmSlots < shm.MinSlots || c.ShmSlots > shm.MaxSlots) {
		return fmt.Errorf("mesh: %w: ShmSlots %d, want 0 (default) or %d..%d", errInvalid, c.ShmSlots, shm.MinSlots, shm.MaxSlots)
	}
	if c.ShmSlotBytes != 0 && (c.ShmSlotBytes < shm.MinSlotBytes || c.ShmSlotBytes > shm.MaxSlotBytes || c.ShmSlotBytes%64 != 0) {
		return fmt.Errorf("mesh: %w: ShmSlotBytes %d, want 0 (default) or a multiple of 64 in %d..%d", errInvalid, c.ShmSlotBytes, shm.MinSlotBytes, shm.MaxSlotBytes)
	}
	return nil
}

var errInvalid = errors.New("invalid config")

// Mesh is a transport.Mesh of established links.
type Mesh struct {
	rank      int
	peers     []Peer
	links     []transport.Link
	closeOnce sync.Once
	closeErr  error
}

var _ transport.Mesh = (*Mesh)(nil)

// Rank is this process's rank.
func (m *Mesh) Rank() int { return m.rank }

// Size is the number of ranks in the world.
func (m *Mesh) Size() int { return len(m.peers) }

// Link returns the link to peer; nil for this rank or out of range.
func (m *Mesh) Link(peer int) transport.Link {
	if peer < 0 || peer >= len(m.links) {
		return nil
	}
	return m.links[peer]
}

// Host returns the host of peer as registered at rendezvous.
func (m *Mesh) Host(peer int) string {
	if peer < 0 || peer >= len(m.peers) {
		return ""
	}
	return m.peers[peer].Host
}

// Close closes every link (which stops their goroutines and unmaps shared
// memory). Idempotent.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		var errs []error
		for _, l := range m.links {
			if l != nil {
				if err := l.Close(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// builder holds the state of one Build call.
type builder struct {
	cfg    Config
	log    *zap.Logger
	hs     handshake.Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	links   []transport.Link
	lastErr []error // per peer: the last transient error, for the final report
	missing int
	fatal   error
	done    chan struct{} // closed when missing reaches 0 or fatal is set
}

// Build connects this rank to every other rank: it dials every higher rank
// (retrying with backoff while the peer is not listening yet) and accepts
// every lower rank on cfg.Listener, authenticating each connection with the
// handshake. Same-host pairs get a shared-memory link unless DisableShm.
// It returns when all links are up, a handshake is refused (ErrAuth), or ctx
// ends; errors name the ranks and hosts that could not be reached. No
// goroutine started by Build outlives it, except those owned by the links.
func Build(ctx context.Context, cfg Config) (transport.Mesh, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := len(cfg.Peers)
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	b := &builder{
		cfg:     cfg,
		log:     log,
		hs:      handshake.Config{Secret: cfg.Secret, Epoch: cfg.Epoch, Rank: cfg.Rank, Logger: log},
		links:   make([]transport.Link, n),
		lastErr: make([]error, n),
		missing: n - 1,
		done:    make(chan struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(ctx)
	defer b.cancel()
	if b.missing == 0 {
		close(b.done)
	}
	for p := cfg.Rank + 1; p < n; p++ {
		b.wg.Add(1)
		go b.dial(p)
	}
	stopAccept := func() {}
	if cfg.Rank > 0 {
		stopAccept = b.startAccept()
	}

	var err error
	select {
	case <-b.done:
	case <-b.ctx.Done():
	}
	b.cancel()
	stopAccept()
	b.wg.Wait()

	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.fatal != nil:
		err = b.fatal
	case b.missing > 0:
		err = b.missingError(ctx.Err())
	}
	if err != nil {
		for _, l := range b.links {
			if l != nil {
				_ = l.Close()
			}
		}
		return nil, err
	}
	log.Debug("mesh built", zap.Int("size", n))
	logSingleCopy(log, cfg)
	return &Mesh{rank: cfg.Rank, peers: append([]Peer(nil), cfg.Peers...), links: b.links}, nil
}

func (b *builder) missingError(cause error) error {
	if cause == nil {
		cause = context.Canceled
	}
	var errs []error
	for p, l := range b.links {
		if p == b.cfg.Rank || l != nil {
			continue
		}
		op := "dial"
		if p < b.cfg.Rank {
			op = "accept"
		}
		e := fmt.Errorf("not connected (address %s): %w", b.cfg.Peers[p].Addr, cause)
		if b.lastErr[p] != nil {
			e = fmt.Errorf("not connected (address %s; last error: %v): %w", b.cfg.Peers[p].Addr, b.lastErr[p], cause)
		}
		errs = append(errs, &transport.PeerError{Rank: p, Host: b.cfg.Peers[p].Host, Op: op, Err: e})
	}
	return errors.Join(errs...)
}

// purpose is what the connection to peer is for.
func (b *builder) purpose(peer int) handshake.Purpose {
	if !b.cfg.DisableShm && shmAvailable && b.cfg.Peers[peer].Host == b.cfg.Peers[b.cfg.Rank].Host {
		return handshake.PurposeShm
	}
	return handshake.PurposeData
}

// setFatal ends the build with err unless it already ended.
func (b *builder) setFatal(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fatal == nil && b.missing > 0 {
		b.fatal = err
		close(b.done)
	}
}

func (b *builder) noteErr(peer int, err error) {
	b.mu.Lock()
	b.lastErr[peer] = err
	b.mu.Unlock()
}

// install records the link to peer; a later connection from the same peer
// replaces an earlier one (the dialer retried after a failure we did not see).
func (b *builder) install(peer int, l transport.Link) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fatal != nil || b.ctx.Err() != nil && b.missing > 0 {
		_ = l.Close()
		return
	}
	if old := b.links[peer]; old != nil {
		_ = old.Close()
		b.links[peer] = l
		return
	}
	b.links[peer] = l
	b.missing--
	if b.missing == 0 {
		close(b.done)
	}
}

// link turns an authenticated connection into a Link of the agreed kind.
func (b *builder) link(ctx context.Context, conn net.Conn, peer int, purpose handshake.Purpose) (transport.Link, error) {
	host := b.cfg.Peers[peer].Host
	if purpose == handshake.PurposeShm {
		return newShmLink(ctx, conn, b.cfg, b.log, peer)
	}
	return tcp.New(conn, peer, host), nil
}

// maxRefusals is how many refused dials in a row make a peer lost.
const maxRefusals = 4

func (b *builder) dial(peer int) {
	defer b.wg.Done()
	addr := b.cfg.Peers[peer].Addr
	host := b.cfg.Peers[peer].Host
	purpose := b.purpose(peer)
	var d net.Dialer
	backoff := 5 * time.Millisecond
	refused := 0
	for {
		conn, err := d.DialContext(b.ctx, "tcp", addr)
		if errors.Is(err, syscall.ECONNREFUSED) {
			// The peer registered this address after it began listening:
			// a refusal means its listener, and most likely its process,
			// is gone. A few tries cover a listener being replaced; then
			// fail rather than wait for the start timeout.
			if refused++; refused >= maxRefusals {
				b.setFatal(&transport.PeerError{Rank: peer, Host: host, Op: "dial",
					Err: fmt.Errorf("%w: %s refused the connection %d times (its listener is gone: the process ended or gave up)", transport.ErrPeerLost, addr, refused)})
				return
			}
		} else {
			refused = 0
		}
		if err == nil {
			hctx, cancel := context.WithTimeout(b.ctx, b.cfg.HandshakeTimeout)
			err = handshake.Client(hctx, conn, b.hs, peer, purpose)
			var l transport.Link
			if err == nil {
				l, err = b.link(hctx, conn, peer, purpose)
			}
			cancel()
			if err == nil {
				b.log.Debug("connected", zap.Int("peer", peer), zap.String("addr", addr), zap.Stringer("purpose", purpose))
				b.install(peer, l)
				return
			}
			_ = conn.Close()
			if errors.Is(err, transport.ErrAuth) {
				b.setFatal(withHost(err, peer, host, "dial"))
				return
			}
		}
		if b.ctx.Err() != nil {
			return
		}
		b.noteErr(peer, err)
		b.log.Debug("dial failed, retrying", zap.Int("peer", peer), zap.String("addr", addr), zap.Error(err), zap.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// withHost fills in the host of a PeerError (the handshake does not know it).
func withHost(err error, peer int, host, op string) error {
	var pe *transport.PeerError
	if errors.As(err, &pe) && pe.Rank == peer {
		if pe.Host == "" {
			pe.Host = host
		}
		return err
	}
	return &transport.PeerError{Rank: peer, Host: host, Op: op, Err: err}
}

// deadliner is what a net.Listener needs so that Build can stop accepting
// without closing it (the caller owns the listener).
type deadliner interface{ SetDeadline(time.Time) error }

// startAccept accepts connections until stopped; each one is handshaken on
// its own goroutine so a slow or foreign peer does not delay the others.
// Foreign or stale peers are refused (and logged) while waiting continues.
func (b *builder) startAccept() (stop func()) {
	lis := b.cfg.Listener
	expect := func(peer int) (handshake.Purpose, bool) {
		if peer < 0 || peer >= b.cfg.Rank {
			return 0, false // only lower ranks dial us
		}
		return b.purpose(peer), true
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			conn, err := lis.Accept()
			if err != nil {
				if b.ctx.Err() != nil {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				b.setFatal(fmt.Errorf("rank %d: accepting on %s: %w", b.cfg.Rank, lis.Addr(), err))
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				hctx, cancel := context.WithTimeout(b.ctx, b.cfg.HandshakeTimeout)
				defer cancel()
				peer, purpose, err := handshake.Server(hctx, conn, b.hs, expect)
				var l transport.Link
				if err == nil {
					l, err = b.link(hctx, conn, peer, purpose)
				}
				if err != nil {
					_ = conn.Close()
					if peer >= 0 && peer < b.cfg.Rank {
						b.noteErr(peer, err)
					}
					b.log.Debug("incoming connection failed", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
					return
				}
				b.log.Debug("accepted", zap.Int("peer", peer), zap.Stringer("purpose", purpose))
				b.install(peer, l)
			}()
		}
	}()
	return func() {
		// Wake the blocked Accept: a past deadline if the listener has
		// one, otherwise closing it is the only way.
		if d, ok := lis.(deadliner); ok {
			_ = d.SetDeadline(time.Unix(1, 0))
			defer func() { _ = d.SetDeadline(time.Time{}) }()
		} else {
			_ = lis.Close()
		}
		b.wg.Wait()
	}
}
