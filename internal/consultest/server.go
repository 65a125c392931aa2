// Package consultest is a small Consul agent for tests: the subset of the
// HTTP API that Gorovod's Consul discovery and its tests use, with Consul's
// documented semantics. No Consul binary is built or installed here (the
// agent is not open source since 1.17); the real client,
// github.com/hashicorp/consul/api, talks to this server.
//
// Implemented:
//   - PUT /v1/agent/service/register (ID defaults to Name; one Check or
//     several Checks; a check's ID defaults to "service:ID", or
//     "service:ID:N" for the N-th of several; TTL checks start critical
//     unless Status says otherwise; re-registering an ID replaces it)
//   - PUT /v1/agent/service/deregister/ID
//   - PUT /v1/agent/check/pass|warn|fail/CHECKID?note=... and
//     PUT /v1/agent/check/update/CHECKID {"Status","Output"}: each resets
//     the TTL; the index moves only when status or output changed
//   - a TTL check not updated within its TTL turns critical ("TTL
//     expired"); critical for DeregisterCriticalServiceAfter deregisters
//     the service
//   - GET /v1/health/service/NAME[?passing][&tag=T][&index=N&wait=D]:
//     with passing, only instances whose every check passes (warning is
//     not passing); with index > 0 the request blocks until the index
//     moves past N or wait ends (default 5m, at most 10m); X-Consul-Index
//     carries the index, which is never 0
//
// SetIndex makes the index go backwards, as after an agent restart.
package consultest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Server is a fake Consul agent with one node.
type Server struct {
	http *httptest.Server

	mu       sync.Mutex
	closed   bool
	index    uint64
	changed  chan struct{} // closed and replaced at every index change
	services map[string]*api.AgentServiceRegistration
	checks   map[string]*check
}

type check struct {
	id, serviceID string
	status        string
	output        string
	ttl           time.Duration
	ttlTimer      *time.Timer
	deregAfter    time.Duration
	deregTimer    *time.Timer
}

// NodeName and NodeAddr describe the server's one node.
const (
	NodeName = "consultest"
	NodeAddr = "127.0.0.1"
)

// New starts a server on a loopback port. Close it when done.
func New() *Server {
	s := &Server{index: 1, changed: make(chan struct{}), services: map[string]*api.AgentServiceRegistration{}, checks: map[string]*check{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/service/register", s.register)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", s.deregister)
	mux.HandleFunc("PUT /v1/agent/check/{op}/{id}", s.updateCheck)
	mux.HandleFunc("GET /v1/health/service/{name}", s.health)
	s.http = httptest.NewServer(mux)
	return s
}

// Addr is the server's host:port, for api.Config.Address.
func (s *Server) Addr() string { return strings.TrimPrefix(s.http.URL, "http://") }

// Client returns an api client of this server.
func (s *Server) Client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme, cfg.Token = s.Addr(), "http", ""
	return api.NewClient(cfg)
}

// Close stops timers, wakes blocked queries and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for _, c := range s.checks {
		c.stopTimers()
	}
	s.bumpLocked()
	s.mu.Unlock()
	s.http.CloseClientConnections()
	s.http.Close()
}

// Index returns the current index.
func (s *Server) Index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

// SetIndex sets the index (e.g. lower, as after an agent restart) and
// wakes blocked queries.
func (s *Server) SetIndex(i uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = max(i, 1) - 1
	s.bumpLocked()
}

func (s *Server) bumpLocked() {
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
}

func (c *check) stopTimers() {
	if c.ttlTimer != nil {
		c.ttlTimer.Stop()
	}
	if c.deregTimer != nil {
		c.deregTimer.Stop()
	}
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, fmt.Sprintf(format, args...), code)
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var reg api.AgentServiceRegistration
	if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
		fail(w, http.StatusBadRequest, "Request decode failed: %v", err)
		return
	}
	if reg.Name == "" {
		fail(w, http.StatusBadRequest, "Missing service name")
		return
	}
	if reg.ID == "" {
		reg.ID = reg.Name
	}
	defs := append(api.AgentServiceChecks(nil), reg.Checks...)
	if reg.Check != nil {
		defs = append(api.AgentServiceChecks{reg.Check}, defs...)
	}
	var checks []*check
	for i, d := range defs {
		c, err := newCheck(reg.ID, i, len(defs), d)
		if err != nil {
			fail(w, http.StatusBadRequest, "Invalid check: %v", err)
			return
		}
		checks = append(checks, c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(reg.ID)
	s.services[reg.ID] = &reg
	for _, c := range checks {
		s.checks[c.id] = c
		s.armTTLLocked(c)
	}
	s.bumpLocked()
}

func newCheck(serviceID string, i, n int, d *api.AgentServiceCheck) (*check, error) {
	c := &check{id: d.CheckID, serviceID: serviceID, status: api.HealthCritical}
	if c.id == "" {
		c.id = "service:" + serviceID
		if n > 1 {
			c.id += ":" + strconv.Itoa(i+1)
		}
	}
	if d.Status != "" {
		c.status = d.Status
	}
	var err error
	if d.TTL != "" {
		if c.ttl, err = time.ParseDuration(d.TTL); err != nil || c.ttl <= 0 {
			return nil, fmt.Errorf("TTL %q", d.TTL)
		}
	}
	if d.DeregisterCriticalServiceAfter != "" {
		if c.deregAfter, err = time.ParseDuration(d.DeregisterCriticalServiceAfter); err != nil {
			return nil, fmt.Errorf("DeregisterCriticalServiceAfter %q", d.DeregisterCriticalServiceAfter)
		}
	}
	return c, nil
}

// armTTLLocked (re)starts c's TTL; when it runs out the check is critical.
func (s *Server) armTTLLocked(c *check) {
	if c.ttl <= 0 || s.closed {
		return
	}
	if c.ttlTimer != nil {
		c.ttlTimer.Stop()
	}
	c.ttlTimer = time.AfterFunc(c.ttl, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.checks[c.id] != c || s.closed {
			return
		}
		s.setStatusLocked(c, api.HealthCritical, "TTL expired")
	})
}

func (s *Server) setStatusLocked(c *check, status, output string) {
	if c.status == status && c.output == output {
		return
	}
	c.status, c.output = status, output
	s.bumpLocked()
	if c.deregTimer != nil {
		c.deregTimer.Stop()
		c.deregTimer = nil
	}
	if status == api.HealthCritical && c.deregAfter > 0 {
		c.deregTimer = time.AfterFunc(c.deregAfter, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.checks[c.id] == c && c.status == api.HealthCritical && !s.closed {
				s.removeLocked(c.serviceID)
				s.bumpLocked()
			}
		})
	}
}

// removeLocked drops a service and its checks; it reports whether it existed.
func (s *Server) removeLocked(id string) bool {
	_, ok := s.services[id]
	delete(s.services, id)
	for cid, c := range s.checks {
		if c.serviceID == id {
			c.stopTimers()
			delete(s.checks, cid)
		}
	}
	return ok
}

func (s *Server) deregister(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeLocked(r.PathValue("id")) {
		fail(w, http.StatusNotFound, "Unknown service ID %q. Ensure that the service ID is passed, not the service name.", r.PathValue("id"))
		return
	}
	s.bumpLocked()
}

func (s *Server) updateCheck(w http.ResponseWriter, r *http.Request) {
	var status, output string
	switch op := r.PathValue("op"); op {
	case "pass", "warn", "fail":
		status = map[string]string{"pass": api.HealthPassing, "warn": api.HealthWarning, "fail": api.HealthCritical}[op]
		output = r.URL.Query().Get("note")
	case "update":
		var u struct{ Status, Output string }
		if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
			fail(w, http.StatusBadRequest, "Request decode failed: %v", err)
			return
		}
		if u.Status != api.HealthPassing && u.Status != api.HealthWarning && u.Status != api.HealthCritical {
			fail(w, http.StatusBadRequest, "Invalid check status: %q", u.Status)
			return
		}
		status, output = u.Status, u.Output
	default:
		fail(w, http.StatusNotFound, "unknown check operation %q", op)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.checks[r.PathValue("id")]
	if c == nil {
		fail(w, http.StatusNotFound, "Unknown check ID %q", r.PathValue("id"))
		return
	}
	if c.ttl <= 0 {
		fail(w, http.StatusInternalServerError, "CheckID %q does not have associated TTL", c.id)
		return
	}
	s.armTTLLocked(c)
	s.setStatusLocked(c, status, output)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait := 5 * time.Minute
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fail(w, http.StatusBadRequest, "Invalid wait time %q", v)
			return
		}
		wait = min(d, 10*time.Minute)
	}
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "Invalid index %q", v)
			return
		}
		minIndex = n
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		idx, ch, closed := s.index, s.changed, s.closed
		if minIndex == 0 || idx > minIndex || closed {
			out := s.entriesLocked(r.PathValue("name"), q.Get("tag"), q.Has("passing"))
			s.mu.Unlock()
			w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			w.Header().Set("X-Consul-KnownLeader", "true")
			w.Header().Set("X-Consul-LastContact", "0")
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(out)
			return
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			minIndex = 0 // answer with the unchanged index
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) entriesLocked(name, tag string, passingOnly bool) []*api.ServiceEntry {
	out := []*api.ServiceEntry{}
	ids := make([]string, 0, len(s.services))
	for id := range s.services {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	node := &api.Node{ID: "00000000-0000-0000-0000-000000000001", Node: NodeName, Address: NodeAddr, Datacenter: "dc1"}
	for _, id := range ids {
		reg := s.services[id]
		if reg.Name != name || (tag != "" && !contains(reg.Tags, tag)) {
			continue
		}
		checks := api.HealthChecks{{Node: NodeName, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing}}
		for _, c := range s.checks {
			if c.serviceID == id {
				checks = append(checks, &api.HealthCheck{Node: NodeName, CheckID: c.id, Name: "Service '" + reg.Name + "' check",
					Status: c.status, Output: c.output, ServiceID: id, ServiceName: reg.Name})
			}
		}
		if passingOnly && checks.AggregatedStatus() != api.HealthPassing {
			continue
		}
		svc := &api.AgentService{ID: id, Service: reg.Name, Tags: reg.Tags, Port: reg.Port, Address: reg.Address, Meta: reg.Meta}
		out = append(out, &api.ServiceEntry{Node: node, Service: svc, Checks: checks})
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
