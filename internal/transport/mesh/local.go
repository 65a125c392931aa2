package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/gorovod/gorovod/internal/transport"
)

// BuildLocal builds a world of n ranks inside this process over loopback
// (for tests and benchmarks of code above the transport with real links).
// hosts[i] is the host of rank i (nil: all on one host, so shared memory
// unless tmpl.DisableShm). tmpl supplies the other settings; its Rank,
// Peers, Listener and (if empty) Secret are filled in. Closing the meshes
// is the caller's job.
func BuildLocal(ctx context.Context, n int, hosts []string, tmpl Config) ([]transport.Mesh, error) {
	if n < 1 || hosts != nil && len(hosts) != n {
		return nil, fmt.Errorf("mesh: %w: %d ranks with %d hosts", errInvalid, n, len(hosts))
	}
	if len(tmpl.Secret) == 0 {
		tmpl.Secret = make([]byte, 16)
		if _, err := rand.Read(tmpl.Secret); err != nil {
			return nil, err
		}
	}
	peers := make([]Peer, n)
	lis := make([]net.Listener, n)
	defer func() {
		for _, l := range lis {
			if l != nil {
				_ = l.Close()
			}
		}
	}()
	for i := range peers {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lis[i] = l
		host := "localhost"
		if hosts != nil {
			host = hosts[i]
		}
		peers[i] = Peer{Rank: i, Host: host, Addr: l.Addr().String()}
	}
	meshes := make([]transport.Mesh, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := tmpl
			cfg.Rank, cfg.Peers, cfg.Listener = r, peers, lis[r]
			meshes[r], errs[r] = Build(ctx, cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, m := range meshes {
			if m != nil {
				_ = m.Close()
			}
		}
		return nil, err
	}
	return meshes, nil
}
