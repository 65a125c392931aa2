package elastic

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gorovod/gorovod/internal/consultest"
	"github.com/gorovod/gorovod/internal/hosts"
)

func TestScriptDiscovery(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "hosts")
	script := filepath.Join(dir, "discover.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat "+list+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &Script{Path: script, Interval: time.Millisecond, DefaultSlots: 2}
	for _, step := range []struct {
		content string
		want    []hosts.Host
	}{
		{"a\n", []hosts.Host{{Name: "a", Slots: 2}}},
		{"a:1\nb:3\n", []hosts.Host{{Name: "a", Slots: 1}, {Name: "b", Slots: 3}}},
	} {
		if err := os.WriteFile(list, []byte(step.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := d.Next(ctx)
		if err != nil || !reflect.DeepEqual(got, step.want) {
			t.Fatalf("Next = %v, %v; want %v", got, err, step.want)
		}
	}
	if err := os.WriteFile(list, []byte("a:zero\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(ctx); err == nil {
		t.Fatal("a bad line was accepted")
	}
	bad := &Script{Path: filepath.Join(dir, "missing"), Interval: time.Millisecond}
	if _, err := bad.Next(ctx); err == nil {
		t.Fatal("a missing script did not fail")
	}
}

func TestStaticDiscovery(t *testing.T) {
	s := &Static{Hosts: []hosts.Host{{Name: "a", Slots: 2}}}
	ctx, cancel := context.WithCancel(context.Background())
	if got, err := s.Next(ctx); err != nil || len(got) != 1 {
		t.Fatalf("first Next = %v, %v", got, err)
	}
	cancel()
	if _, err := s.Next(ctx); err == nil {
		t.Fatal("second Next returned without the context ending")
	}
}

// consulInstance registers a service instance on host with a TTL check.
func consulInstance(t *testing.T, c *api.Client, id, host string, slots string, ttl string) {
	t.Helper()
	reg := &api.AgentServiceRegistration{ID: id, Name: "train", Address: host, Port: 1,
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: ttl, Status: api.HealthPassing, DeregisterCriticalServiceAfter: "1m"}}
	if slots != "" {
		reg.Meta = map[string]string{"slots": slots}
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
}

func names(hs []hosts.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.String())
	}
	return out
}

func TestConsulDiscovery(t *testing.T) {
	srv := consultest.New()
	defer srv.Close()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := NewConsul(srv.Addr(), "train", "", 2)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want ...string) {
		t.Helper()
		got, err := d.Next(ctx)
		if err != nil || !reflect.DeepEqual(names(got), want) {
			t.Fatalf("Next = %v, %v; want %v", names(got), err, want)
		}
	}
	consulInstance(t, c, "i1", "h1", "4", "1h")
	consulInstance(t, c, "i2", "h2", "", "1h")
	expect("h1:4", "h2:2")
	consulInstance(t, c, "i3", "h3", "1", "1h")
	expect("h1:4", "h2:2", "h3:1")
	if err := c.Agent().ServiceDeregister("i2"); err != nil {
		t.Fatal(err)
	}
	expect("h1:4", "h3:1")
	// warning is not passing
	if err := c.Agent().UpdateTTL("ttl-i3", "slow", api.HealthWarning); err != nil {
		t.Fatal(err)
	}
	expect("h1:4")
	if err := c.Agent().UpdateTTL("ttl-i3", "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	expect("h1:4", "h3:1")
	// the index goes backwards (agent restart): the watch starts over and
	// still sees the next change (after the blocking wait, shortened here)
	d.wait = 200 * time.Millisecond
	srv.SetIndex(1)
	consulInstance(t, c, "i4", "h4", "1", "1h")
	expect("h1:4", "h3:1", "h4:1")
}

func TestConsulTTLExpiry(t *testing.T) {
	srv := consultest.New()
	defer srv.Close()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := NewConsul(srv.Addr(), "train", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	consulInstance(t, c, "keep", "h1", "1", "1h")
	const ttl = time.Second
	consulInstance(t, c, "lapse", "h2", "1", ttl.String())
	if got, err := d.Next(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Next = %v, %v", names(got), err)
	}
	if err := c.Agent().UpdateTTL("ttl-lapse", "alive", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	// not renewed: gone within TTL + 1 s of the last renewal
	wctx, wcancel := context.WithTimeout(ctx, ttl+time.Second)
	defer wcancel()
	for {
		got, err := d.Next(wctx)
		if err != nil {
			t.Fatalf("host with a lapsed TTL still listed after TTL+1s: %v", err)
		}
		if reflect.DeepEqual(names(got), []string{"h1:1"}) {
			break
		}
	}
	entries, _, err := c.Health().Service("train", "", false, nil)
	if err != nil || len(entries) != 2 {
		t.Fatalf("all instances (passing or not): %d, %v", len(entries), err)
	}
	for _, e := range entries {
		if e.Service.ID == "lapse" && e.Checks.AggregatedStatus() != api.HealthCritical {
			t.Fatalf("lapsed instance is %s, want critical", e.Checks.AggregatedStatus())
		}
	}
}

func TestConsulErrorBacksOff(t *testing.T) {
	srv := consultest.New()
	addr := srv.Addr()
	srv.Close()
	d, err := NewConsul(addr, "train", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.Next(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Next against a closed agent = %v (ctx %v)", err, ctx.Err())
	}
	if d.backoff != 100*time.Millisecond {
		t.Fatalf("backoff after one error = %v", d.backoff)
	}
}
