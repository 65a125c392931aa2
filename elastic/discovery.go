package elastic

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gorovod/gorovod/internal/hosts"
)

// Discovery finds the hosts a job may use. Next returns the current hosts:
// the first call at once, later calls when the set may have changed (after
// the discovery interval, or when a watch fires). An error is logged by the
// driver, which keeps the last good answer and calls again.
type Discovery interface {
	Next(ctx context.Context) ([]hosts.Host, error)
}

// Static is a fixed host list (-H): only failures change the job.
type Static struct {
	Hosts []hosts.Host
	sent  bool
}

// Next returns the hosts once, then blocks until ctx ends.
func (s *Static) Next(ctx context.Context) ([]hosts.Host, error) {
	if !s.sent {
		s.sent = true
		return slices.Clone(s.Hosts), nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// Script runs a program that prints "host" or "host:slots" lines, every
// Interval (the first time at once). A run is bounded by Timeout (default
// the interval, at least 5 s).
type Script struct {
	Path         string
	Interval     time.Duration
	Timeout      time.Duration
	DefaultSlots int
	ran          bool
}

// Next waits for the interval (not before the first run) and runs the script.
func (s *Script) Next(ctx context.Context) ([]hosts.Host, error) {
	if s.ran {
		t := time.NewTimer(s.Interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	s.ran = true
	timeout := max(s.Timeout, s.Interval, 5*time.Second)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, s.Path)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v: %s", ErrDiscovery, s.Path, err, strings.TrimSpace(stderr.String()))
	}
	return ParseHostLines(out.String(), s.DefaultSlots)
}

// Consul watches the passing instances of a service with blocking queries.
// An instance's host is its service address (or its node's address when
// empty); its slots come from the service metadata "slots" (default
// DefaultSlots). Instances on the same host add up.
type Consul struct {
	client       *api.Client
	service, tag string
	defaultSlots int
	wait         time.Duration

	index   uint64
	last    []hosts.Host
	sent    bool
	backoff time.Duration
}

// NewConsul returns a discovery of service through the agent at addr
// (host:port, or a URL; "" means CONSUL_HTTP_ADDR or 127.0.0.1:8500).
func NewConsul(addr, service, tag string, defaultSlots int) (*Consul, error) {
	cfg := api.DefaultConfig()
	if addr != "" {
		cfg.Address = addr
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: consul at %q: %v", ErrInvalid, addr, err)
	}
	if service == "" {
		return nil, fmt.Errorf("%w: no Consul service name (--consul-service)", ErrInvalid)
	}
	return &Consul{client: c, service: service, tag: tag, defaultSlots: max(defaultSlots, 1), wait: 30 * time.Second}, nil
}

// Next blocks until the passing set differs from the last answer (the first
// call answers at once). Errors come back after a backoff (100 ms doubling
// to 5 s), so a caller that loops does not spin.
func (c *Consul) Next(ctx context.Context) ([]hosts.Host, error) {
	for {
		q := (&api.QueryOptions{WaitIndex: c.index, WaitTime: c.wait}).WithContext(ctx)
		entries, meta, err := c.client.Health().Service(c.service, c.tag, true, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			c.backoff = min(max(2*c.backoff, 100*time.Millisecond), 5*time.Second)
			c.index = 0
			if werr := sleepCtx(ctx, c.backoff); werr != nil {
				return nil, werr
			}
			return nil, fmt.Errorf("%w: consul service %q: %v", ErrDiscovery, c.service, err)
		}
		c.backoff = 0
		switch {
		case meta.LastIndex < c.index:
			c.index = 0 // the index went backwards (agent restart): start over
		default:
			c.index = meta.LastIndex
		}
		found, err := consulHosts(entries, c.defaultSlots)
		if err != nil {
			return nil, err
		}
		if c.sent && slices.Equal(found, c.last) {
			continue // woken without a change of the passing set
		}
		c.sent, c.last = true, found
		return slices.Clone(found), nil
	}
}

func consulHosts(entries []*api.ServiceEntry, defaultSlots int) ([]hosts.Host, error) {
	slots := map[string]int{}
	var order []string
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		name := e.Service.Address
		if name == "" && e.Node != nil {
			name = e.Node.Address
		}
		if name == "" {
			continue
		}
		n := defaultSlots
		if v, ok := e.Service.Meta["slots"]; ok {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 || n > hosts.MaxSlots {
				return nil, fmt.Errorf("%w: consul instance %q: meta slots=%q is not a slot count", ErrDiscovery, e.Service.ID, v)
			}
		}
		if _, ok := slots[name]; !ok {
			order = append(order, name)
		}
		slots[name] += n
	}
	slices.Sort(order)
	out := make([]hosts.Host, len(order))
	for i, name := range order {
		out[i] = hosts.Host{Name: name, Slots: min(slots[name], hosts.MaxSlots)}
	}
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
