package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/handshake"
	"github.com/gorovod/gorovod/internal/transport/shm"
	"github.com/gorovod/gorovod/internal/transport/tcp"
	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

// world starts n listeners; hosts[i] is the host of rank i.
func world(t *testing.T, hosts []string) ([]Peer, []net.Listener) {
	t.Helper()
	peers := make([]Peer, len(hosts))
	lis := make([]net.Listener, len(hosts))
	for i, h := range hosts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		lis[i] = l
		peers[i] = Peer{Rank: i, Host: h, Addr: l.Addr().String()}
	}
	return peers, lis
}

// buildAll runs Build for every rank concurrently.
func buildAll(ctx context.Context, peers []Peer, lis []net.Listener, mod func(*Config)) ([]transport.Mesh, []error) {
	return buildAllGated(ctx, peers, lis, mod, nil)
}

// buildAllGated is buildAll where rank r starts Build only after gate(r).
func buildAllGated(ctx context.Context, peers []Peer, lis []net.Listener, mod func(*Config), gate func(r int)) ([]transport.Mesh, []error) {
	n := len(peers)
	meshes := make([]transport.Mesh, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := Config{Rank: r, Peers: peers, Secret: testSecret, Epoch: 4, Listener: lis[r]}
			if mod != nil {
				mod(&cfg)
			}
			if gate != nil {
				gate(r)
			}
			meshes[r], errs[r] = Build(ctx, cfg)
		}()
	}
	wg.Wait()
	return meshes, errs
}

// exchange has every pair swap distinct data over its links.
func exchange(t *testing.T, meshes []transport.Mesh, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := len(meshes)
	payload := func(from, to int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(from*31 + to*7 + i)
		}
		return b
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n*n)
	for r := 0; r < n; r++ {
		for p := 0; p < n; p++ {
			if p == r {
				if meshes[r].Link(p) != nil {
					t.Errorf("rank %d: Link(self) is not nil", r)
				}
				continue
			}
			l := meshes[r].Link(p)
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := l.Send(ctx, payload(r, p)); err != nil {
					errs <- fmt.Errorf("rank %d send to %d: %w", r, p, err)
				}
			}()
			go func() {
				defer wg.Done()
				got := make([]byte, size)
				if err := l.Recv(ctx, got); err != nil {
					errs <- fmt.Errorf("rank %d recv from %d: %w", r, p, err)
					return
				}
				if !bytes.Equal(got, payload(p, r)) {
					errs <- fmt.Errorf("rank %d: data from %d corrupted", r, p)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func closeAll(t *testing.T, meshes []transport.Mesh) {
	for _, m := range meshes {
		if m != nil {
			if err := m.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		}
	}
}

// testSecret is unique to this test process, so its shared-memory files
// (named after the job tag derived from the secret) are told apart from
// those of other jobs on the machine.
var testSecret = []byte(fmt.Sprintf("job-secret-%d", os.Getpid()))

// shmFiles lists the files in /dev/shm of this test's jobs.
func shmFiles() []string {
	ents, err := os.ReadDir("/dev/shm")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "gorovod-"+jobTag(testSecret)+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestMesh(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hosts      []string
		disableShm bool
	}{
		{"tcp 4 hosts", []string{"a", "b", "c", "d"}, false},
		{"one host shm disabled", []string{"a", "a", "a", "a"}, true},
		{"one host", []string{"a", "a", "a", "a"}, false},
		{"two hosts", []string{"a", "a", "b", "b"}, false},
		{"three ranks", []string{"a", "b", "a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer linktest.CheckGoroutines(t)()
			peers, lis := world(t, tc.hosts)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			meshes, errs := buildAll(ctx, peers, lis, func(c *Config) { c.DisableShm = tc.disableShm })
			defer closeAll(t, meshes)
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			for r, m := range meshes {
				if m.Rank() != r || m.Size() != len(tc.hosts) || m.Host(r) != tc.hosts[r] {
					t.Fatalf("rank %d: mesh says rank %d size %d host %q", r, m.Rank(), m.Size(), m.Host(r))
				}
			}
			for r, m := range meshes {
				for p := range meshes {
					if p == r {
						continue
					}
					_, isShm := m.Link(p).(transport.RecvReducer) // only shm links reduce in place
					_, isTCP := m.Link(p).(*tcp.Link)
					wantShm := tc.hosts[p] == tc.hosts[r] && !tc.disableShm && shm.Available()
					if isShm != wantShm || isTCP == wantShm {
						t.Fatalf("rank %d: link to %d is %T (same host %v, shm disabled %v)", r, p, m.Link(p), tc.hosts[p] == tc.hosts[r], tc.disableShm)
					}
				}
			}
			exchange(t, meshes, 1)
			exchange(t, meshes, 3<<20+1)
			closeAll(t, meshes)
			if left := shmFiles(); len(left) > 0 {
				t.Fatalf("/dev/shm holds files of this job after Close: %v", left)
			}
		})
	}
}

// An intruder with the wrong secret (or epoch) is refused while the mesh
// still forms.
func TestMeshRefusesIntruder(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"a", "b", "c"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	intruders := []handshake.Config{
		{Secret: []byte("wrong"), Epoch: 4, Rank: 0},
		{Secret: testSecret, Epoch: 3, Rank: 0},
		{Secret: testSecret, Epoch: 4, Rank: 2}, // a higher rank never dials
	}
	// Rank 0 starts only once every intruder has been refused by rank 1,
	// which is then waiting for it: the mesh forms after the refusals.
	refused := make(chan struct{})
	go func() {
		defer close(refused)
		for _, ic := range intruders {
			conn, err := net.Dial("tcp", peers[1].Addr)
			if err != nil {
				t.Error(err)
				return
			}
			err = handshake.Client(ctx, conn, ic, 1, handshake.PurposeData)
			conn.Close()
			if !errors.Is(err, transport.ErrAuth) {
				t.Errorf("intruder %+v: %v, want ErrAuth", ic, err)
			}
		}
	}()
	meshes, errs := buildAllGated(ctx, peers, lis, nil, func(r int) {
		if r == 0 {
			<-refused
		}
	})
	defer closeAll(t, meshes)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	exchange(t, meshes, 1000)
}

// A silent connection (say a port scanner) does not stop the mesh forming.
func TestMeshSilentConnection(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"a", "b"})
	conn, err := net.Dial("tcp", peers[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	meshes, errs := buildAll(ctx, peers, lis, nil)
	defer closeAll(t, meshes)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// A rank with a different secret makes Build fail with ErrAuth on the
// dialing side at once, and on the accepting side when ctx ends, naming
// the rank and host.
func TestMeshWrongSecret(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"hostA", "hostB"})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, errs := buildAll(ctx, peers, lis, func(c *Config) {
		if c.Rank == 0 {
			c.Secret = []byte("other")
		}
	})
	if !errors.Is(errs[0], transport.ErrAuth) {
		t.Fatalf("rank 0: %v, want ErrAuth", errs[0])
	}
	var pe *transport.PeerError
	if !errors.As(errs[0], &pe) || pe.Rank != 1 || pe.Host != "hostB" {
		t.Fatalf("rank 0: %v does not name rank 1 on hostB", errs[0])
	}
	if !errors.Is(errs[1], context.DeadlineExceeded) || !errors.As(errs[1], &pe) || pe.Rank != 0 || pe.Host != "hostA" {
		t.Fatalf("rank 1: %v, want a deadline error naming rank 0 on hostA", errs[1])
	}
	if !strings.Contains(errs[1].Error(), "secret") {
		t.Errorf("rank 1: %v does not say the secret was wrong", errs[1])
	}
}

// A peer that never starts: Build gives up when ctx ends and names it.
func TestMeshUnreachable(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"a", "b", "c"})
	// Rank 0 never dials and rank 2 never answers (its listener is open,
	// nobody builds on it): the deadline error names both.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Build(ctx, Config{Rank: 1, Peers: peers, Secret: []byte("s"), Listener: lis[1]})
	var pe *transport.PeerError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &pe) {
		t.Fatalf("err %v, want a deadline PeerError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "rank 0") || !strings.Contains(msg, "rank 2") || !strings.Contains(msg, peers[2].Addr) {
		t.Fatalf("error %q does not name ranks 0 and 2 and rank 2's address", msg)
	}
}

// A peer whose registered address refuses connections is gone (it listened
// before registering): Build fails at once naming it, not at the deadline.
func TestMeshRefusedPeerIsLost(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"a", "b", "c"})
	lis[2].Close() // rank 2's process ended
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Build(ctx, Config{Rank: 1, Peers: peers, Secret: []byte("s"), Listener: lis[1]})
	var pe *transport.PeerError
	if !errors.Is(err, transport.ErrPeerLost) || !errors.As(err, &pe) || pe.Rank != 2 || ctx.Err() != nil {
		t.Fatalf("err %v, want ErrPeerLost naming rank 2 before the deadline", err)
	}
	if !strings.Contains(err.Error(), peers[2].Addr) {
		t.Fatalf("error %q does not name rank 2's address", err)
	}
}

func TestConfigValidation(t *testing.T) {
	peers := []Peer{{0, "a", "x:1"}, {1, "a", "x:2"}}
	for _, cfg := range []Config{
		{Rank: 0, Peers: nil, Secret: []byte("s")},
		{Rank: 2, Peers: peers, Secret: []byte("s")},
		{Rank: 0, Peers: peers},
		{Rank: 1, Peers: peers, Secret: []byte("s")}, // no listener
		{Rank: 0, Peers: []Peer{{0, "a", "x:1"}, {0, "a", "x:2"}}, Secret: []byte("s")},
		{Rank: 0, Peers: peers, Secret: []byte("s"), ShmSlots: 1},
		{Rank: 0, Peers: peers, Secret: []byte("s"), ShmSlotBytes: 1000},
	} {
		if _, err := Build(context.Background(), cfg); err == nil {
			t.Errorf("Build(%+v) succeeded", cfg)
		}
	}
}

// Ranks that disagree on DisableShm are told so instead of hanging.
func TestMeshShmDisagreement(t *testing.T) {
	if !shm.Available() {
		t.Skip("no shared memory here")
	}
	defer linktest.CheckGoroutines(t)()
	peers, lis := world(t, []string{"a", "a"})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, errs := buildAll(ctx, peers, lis, func(c *Config) { c.DisableShm = c.Rank == 0 })
	if !errors.Is(errs[0], transport.ErrAuth) || !strings.Contains(errs[0].Error(), "purpose") {
		t.Fatalf("rank 0: %v, want ErrAuth about the purpose", errs[0])
	}
	if errs[1] == nil {
		t.Fatal("rank 1 built a mesh without rank 0")
	}
}

func TestBuildLocal(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	meshes, err := BuildLocal(ctx, 3, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(t, meshes)
	exchange(t, meshes, 70000)
	if _, err := BuildLocal(ctx, 2, []string{"a"}, Config{}); err == nil {
		t.Fatal("BuildLocal with 2 ranks and 1 host succeeded")
	}
}
