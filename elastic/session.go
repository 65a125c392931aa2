package elastic

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

// EnvFault is a test hook: a comma list of "ID:POINT:STEP" makes worker ID
// kill itself (SIGKILL) at POINT when its committed step is STEP. Points:
// join (before joining a world), reset (after the reset callbacks), sync
// (before the sync), broadcast (inside the sync, after the source rank is
// agreed), vote (in Commit, before the vote). The end-to-end tests use it
// to kill a worker inside a commit or a recovery.
const EnvFault = "GOROVOD_ELASTIC_FAULT"

// ctlSession is the worker's side of the control channel: Join calls and
// a heartbeat goroutine (owned by the session, ended by close).
type ctlSession struct {
	id     string
	client *rendezvous.ControlClient
	hb     time.Duration

	mu      sync.Mutex
	latest  uint64
	epoch   uint64
	step    int64
	removed bool
	brokenC map[uint64]chan struct{}

	stop chan struct{}
	done chan struct{}
}

func runnerFromEnv(ctx context.Context, getenv func(string) string) (*runner, func(), error) {
	addr, id := getenv(EnvControlAddr), getenv(EnvWorkerID)
	if addr == "" || id == "" {
		return nil, nil, fmt.Errorf("%w: elastic.Run needs %s and %s: start the program with gorun --min-np/--host-discovery-script", ErrInvalid, EnvControlAddr, EnvWorkerID)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(getenv(env.Secret)))
	if err != nil || len(secret) == 0 {
		return nil, nil, fmt.Errorf("%w: %s is not a hex job secret", ErrInvalid, env.Secret)
	}
	hb := time.Second
	if v := getenv(EnvHeartbeat); v != "" {
		if hb, err = time.ParseDuration(v); err != nil || hb <= 0 {
			return nil, nil, fmt.Errorf("%w: %s=%q", ErrInvalid, EnvHeartbeat, v)
		}
	}
	limit := 0
	if v := getenv(EnvResetLimit); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return nil, nil, fmt.Errorf("%w: %s=%q", ErrInvalid, EnvResetLimit, v)
		}
	}
	start := 30 * time.Second
	if v := getenv(env.StartTimeout); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			start = d
		}
	}
	client, err := rendezvous.DialControl(addr, secret)
	if err != nil {
		return nil, nil, err
	}
	s := &ctlSession{id: id, client: client, hb: hb, brokenC: map[uint64]chan struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
	go s.heartbeats()
	host := getenv(env.Hostname)
	r := &runner{
		sess: s, resetLimit: limit, closeTimeout: 500 * time.Millisecond, joinTimeout: start + 5*time.Second,
		events: os.Stderr, fault: faultFromEnv(id, getenv(EnvFault)),
		newWorld: func(ctx context.Context, a Assignment) (*collective.World, error) {
			h := a.Host
			if host != "" {
				h = host
			}
			return collective.NewWorld(ctx, collective.WithMembership(collective.Membership{
				Rank: a.Rank, Size: a.Size, LocalRank: a.LocalRank, LocalSize: a.LocalSize,
				CrossRank: a.CrossRank, CrossSize: a.CrossSize, Epoch: a.Epoch,
				RendezvousAddr: a.RendezvousAddr, Secret: secret, Host: h,
			}))
		},
	}
	closeFn := func() {
		close(s.stop)
		<-s.done
		_ = client.Close()
	}
	return r, closeFn, nil
}

func faultFromEnv(id, spec string) func(point string, step int64) error {
	type fault struct {
		point string
		step  int64
	}
	var mine []fault
	for _, one := range strings.Split(spec, ",") {
		parts := strings.Split(strings.TrimSpace(one), ":")
		if len(parts) != 3 || parts[0] != id {
			continue
		}
		if n, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
			mine = append(mine, fault{parts[1], n})
		}
	}
	if len(mine) == 0 {
		return nil
	}
	return func(point string, step int64) error {
		for _, f := range mine {
			if point == f.point && step == f.step {
				fmt.Fprintf(os.Stderr, "elastic: fault hook: worker %s kills itself at %s, step %d\n", id, point, step)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		return nil
	}
}

func (s *ctlSession) join(ctx context.Context, after uint64, reason string) (joinReply, error) {
	out, err := s.client.Call(ctx, "Join", encode(joinRequest{ID: s.id, After: after, Reason: reason}))
	if err != nil {
		return joinReply{}, err
	}
	var rep joinReply
	return rep, decode(out, &rep)
}

func (s *ctlSession) told() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

func (s *ctlSession) broken(epoch uint64) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokenLocked(epoch)
}

func (s *ctlSession) brokenLocked(epoch uint64) chan struct{} {
	c, ok := s.brokenC[epoch]
	if !ok {
		c = make(chan struct{})
		s.brokenC[epoch] = c
		if s.removed {
			close(c)
		}
	}
	return c
}

func (s *ctlSession) progress(epoch uint64, step int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch, s.step = epoch, step
	for e := range s.brokenC {
		if e < epoch {
			delete(s.brokenC, e) // nobody waits on an epoch left behind
		}
	}
}

func (s *ctlSession) heartbeats() {
	defer close(s.done)
	t := time.NewTicker(s.hb)
	defer t.Stop()
	for {
		s.beat()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *ctlSession) beat() {
	s.mu.Lock()
	req := heartbeatRequest{ID: s.id, Epoch: s.epoch, Step: s.step}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.hb)
	defer cancel()
	go func() { // a close must not wait for a slow driver
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	out, err := s.client.Call(ctx, "Heartbeat", encode(req))
	if err != nil {
		return
	}
	var rep heartbeatReply
	if decode(out, &rep) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = max(s.latest, rep.Latest)
	if rep.Abort {
		c := s.brokenLocked(req.Epoch)
		select {
		case <-c:
		default:
			close(c)
		}
	}
	if rep.Removed && !s.removed {
		s.removed = true
		fmt.Fprintf(os.Stderr, "elastic: worker %s was removed from the job: %s\n", s.id, rep.Reason)
		for _, c := range s.brokenC {
			select {
			case <-c:
			default:
				close(c)
			}
		}
	}
}
