package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves a registry at /metrics over HTTP. It owns one accept
// goroutine (plus net/http's per-connection ones), all ended by Close.
type Server struct {
	addr string
	srv  *http.Server
	done chan struct{} // closed when the accept goroutine returns

	once     sync.Once
	closeErr error
	serveErr error // set by the accept goroutine before done closes
}

// Serve listens on addr (host:port; port 0 picks one) and serves reg at
// /metrics until Close. ctx bounds only the listen. It refuses a registry
// with registration errors (Registry.Err), so those surface at start.
func Serve(ctx context.Context, addr string, reg *Registry) (*Server, error) {
	if reg == nil {
		return nil, fmt.Errorf("%w: metrics server on %q: nil registry", ErrInvalid, addr)
	}
	if err := reg.Err(); err != nil {
		return nil, fmt.Errorf("metrics server on %q: %w", addr, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: listen on %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", reg.Handler())
	s := &Server{
		addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second, // a stuck client must not pin a goroutine
			IdleTimeout:       time.Minute,
			ErrorLog:          log.New(io.Discard, "", 0),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = fmt.Errorf("metrics server on %s: %w", s.addr, err)
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on (with the chosen port).
func (s *Server) Addr() string { return s.addr }

// URL returns the scrape URL.
func (s *Server) URL() string { return "http://" + s.addr + "/metrics" }

// Close stops the server, closes its connections and waits for its accept
// goroutine. Idempotent; it returns the first error the server had.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		err := s.srv.Close()
		<-s.done
		switch {
		case s.serveErr != nil:
			s.closeErr = s.serveErr
		case err != nil:
			s.closeErr = fmt.Errorf("metrics server on %s: close: %w", s.addr, err)
		}
	})
	return s.closeErr
}
