package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/gorovod/gorovod/internal/rendezvous/rendezvouspb"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// checkNoLeaks fails t if goroutines started during the test are still
// running after a bounded wait (gRPC closes some asynchronously).
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// serve starts a server on a loopback port and stops it at cleanup.
func serve(t *testing.T, cfg ServerConfig) (*Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	s := NewServer(cfg)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, lis.Addr().String()
}

type result struct {
	w   World
	err error
}

// registerAll registers the given ranks concurrently and returns results by rank.
func registerAll(ctx context.Context, addr string, key []byte, regs []Registration) []result {
	out := make([]result, len(regs))
	var wg sync.WaitGroup
	for i, reg := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].w, out[i].err = Register(ctx, addr, key, reg)
		}()
	}
	wg.Wait()
	return out
}

func TestRegisterWorld(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 5
	s, addr := serve(t, ServerConfig{Size: n, StartTimeout: time.Minute, Epoch: 7})
	hostOf := []string{"a", "a", "a", "b", "b"}
	var regs []Registration
	for r := range n {
		regs = append(regs, Registration{Epoch: 7, Rank: r, Host: hostOf[r], Addr: fmt.Sprintf("10.0.0.%d:%d", r, 1000+r), Pid: 100 + r})
	}
	res := registerAll(ctx, addr, secret, regs)
	for r, x := range res {
		if x.err != nil {
			t.Fatalf("rank %d: %v", r, x.err)
		}
		if x.w.Epoch != 7 || x.w.Size != n || len(x.w.Peers) != n {
			t.Fatalf("rank %d got world %+v", r, x.w)
		}
		for _, other := range res {
			if fmt.Sprint(other.w) != fmt.Sprint(x.w) {
				t.Fatalf("worlds differ:\n%+v\n%+v", x.w, other.w)
			}
		}
	}
	w := res[0].w
	want := []Peer{
		{0, "a", "10.0.0.0:1000", 0, 3, 0, 2, 100},
		{1, "a", "10.0.0.1:1001", 1, 3, 0, 2, 101},
		{2, "a", "10.0.0.2:1002", 2, 3, 0, 1, 102},
		{3, "b", "10.0.0.3:1003", 0, 2, 1, 2, 103},
		{4, "b", "10.0.0.4:1004", 1, 2, 1, 2, 104},
	}
	for r := range want {
		if w.Peers[r] != want[r] {
			t.Errorf("peer %d = %+v, want %+v", r, w.Peers[r], want[r])
		}
	}
	if got := fmt.Sprint(s.Registered()); got != "[0 1 2 3 4]" {
		t.Errorf("Registered() = %s", got)
	}
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gw, err := c.GetWorld(ctx, 7)
	if err != nil || fmt.Sprint(gw) != fmt.Sprint(w) {
		t.Fatalf("GetWorld = %+v, %v", gw, err)
	}
	if _, err := c.GetWorld(ctx, 8); !errors.Is(err, ErrEpoch) {
		t.Fatalf("GetWorld(8) error %v, want ErrEpoch", err)
	}
	// The world is complete: a second registration of a rank is refused.
	_, err = c.Register(ctx, regs[2])
	if !errors.Is(err, ErrDuplicateRank) || !strings.Contains(err.Error(), "rank 2 is already registered by pid 102") {
		t.Fatalf("duplicate after completion: %v", err)
	}
}

func TestStartTimeoutNamesMissingRanks(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 4, StartTimeout: 300 * time.Millisecond})
	res := registerAll(ctx, addr, secret, []Registration{
		{Rank: 0, Host: "h", Addr: "x:1"}, {Rank: 3, Host: "h", Addr: "x:4"},
	})
	for i, x := range res {
		if !errors.Is(x.err, ErrStartTimeout) {
			t.Fatalf("registration %d: error %v, want ErrStartTimeout", i, x.err)
		}
		if !strings.Contains(x.err.Error(), "ranks [1, 2] did not register within 300ms") ||
			!strings.Contains(x.err.Error(), "registered: [0, 3]") {
			t.Fatalf("registration %d: error %q does not name the missing ranks", i, x.err)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("registrations waited for the client context instead of the start timeout")
	}
	// A latecomer learns the same outcome at once.
	_, err := Register(ctx, addr, secret, Registration{Rank: 1, Host: "h", Addr: "x:2"})
	if !errors.Is(err, ErrStartTimeout) {
		t.Fatalf("late registration: %v", err)
	}
	if _, ok := s.World(); ok {
		t.Fatal("World() reports a complete world after a timeout")
	}
}

func TestNobodyRegisteredNeverFails(t *testing.T) {
	// The timeout counts from the first registration: a job that never
	// calls Init is not failed, and a worker that starts late still gets in.
	s := NewServer(ServerConfig{Size: 1, Secret: secret, StartTimeout: time.Nanosecond})
	defer s.Stop()
	s.expire(s.cur) // as if the timer had fired with nobody registered
	resp, err := s.Register(context.Background(), &pb.RegisterRequest{Rank: 0, Host: "h", Addr: "a:1"})
	if err != nil || resp.GetWorld().GetSize() != 1 {
		t.Fatalf("Register after an idle timeout: %v, %v", resp, err)
	}
}

func TestWrongSecret(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 2, StartTimeout: time.Minute})
	_, err := Register(ctx, addr, []byte("not the job secret"), Registration{Rank: 0, Host: "h", Addr: "x:1"})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "signature does not match the job secret") {
		t.Fatalf("wrong secret: %v, want ErrAuth", err)
	}
	if len(s.Registered()) != 0 {
		t.Fatalf("a refused registration was recorded: %v", s.Registered())
	}

	// A client that does not sign at all.
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pb.NewRendezvousClient(conn).GetWorld(ctx, &pb.GetWorldRequest{})
	if err = fromStatus(ctx, addr, err); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("unsigned request: %v, want ErrAuth", err)
	}
}

// foreignServer answers without knowing the job secret.
type foreignServer struct {
	pb.UnimplementedRendezvousServer
}

func (foreignServer) GetWorld(context.Context, *pb.GetWorldRequest) (*pb.GetWorldResponse, error) {
	return &pb.GetWorldResponse{World: &pb.World{Size: 1, Peers: []*pb.Peer{{Host: "evil", Addr: "6.6.6.6:1"}}}}, nil
}

func TestClientRefusesUnsignedAnswers(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterRendezvousServer(gs, foreignServer{})
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-served }()

	c, err := Dial(lis.Addr().String(), secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.GetWorld(ctx, 0)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "not signed with the job secret") {
		t.Fatalf("answer of a foreign server: %+v, %v; want ErrAuth", w, err)
	}
}

func TestDuplicateRankWhileWaiting(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 2, StartTimeout: time.Minute})
	first := make(chan error, 1)
	go func() {
		_, err := Register(ctx, addr, secret, Registration{Rank: 1, Host: "h1", Addr: "x:1", Pid: 11})
		first <- err
	}()
	// Wait until the first registration is recorded (bounded).
	for len(s.Registered()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("first registration never arrived")
		case <-time.After(5 * time.Millisecond):
		}
	}
	_, err := Register(ctx, addr, secret, Registration{Rank: 1, Host: "h2", Addr: "x:2", Pid: 22})
	if !errors.Is(err, ErrDuplicateRank) || !strings.Contains(err.Error(), "rank 1 is already registered by pid 11 on h1 (now pid 22 on h2)") {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := Register(ctx, addr, secret, Registration{Rank: 0, Host: "h1", Addr: "x:0"}); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

func TestBadRequests(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, addr := serve(t, ServerConfig{Size: 2, Epoch: 3})
	for _, tc := range []struct {
		reg  Registration
		kind error
		msg  string
	}{
		{Registration{Epoch: 2, Rank: 0, Host: "h"}, ErrEpoch, "rank 0 registered for epoch 2, the server is at epoch 3"},
		{Registration{Epoch: 3, Rank: 2, Host: "h"}, ErrInvalid, "rank 2 is out of range for a world of size 2"},
		{Registration{Epoch: 3, Rank: -1, Host: "h"}, ErrInvalid, "rank -1 is out of range"},
		{Registration{Epoch: 3, Rank: 0}, ErrInvalid, "rank 0 registered without a host name"},
	} {
		_, err := Register(ctx, addr, secret, tc.reg)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: error %v, want %v containing %q", tc.reg, err, tc.kind, tc.msg)
		}
	}
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetWorld(ctx, 3); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "ranks [0, 1] have not registered") {
		t.Errorf("GetWorld before completion: %v", err)
	}
	if err := c.ReportStatus(ctx, Status{Rank: 5, State: StateOK}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReportStatus rank 5: %v", err)
	}
	if _, err := Dial(addr, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Dial without secret: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []ServerConfig{{Size: 0, Secret: secret}, {Size: 1}, {Size: 1, Secret: secret, StartTimeout: -1}} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := NewServer(cfg).Serve(lis); !errors.Is(err, ErrInvalid) {
			t.Errorf("Serve with %+v: %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestWithdrawWhenCallerLeaves(t *testing.T) {
	s := NewServer(ServerConfig{Size: 2, Secret: secret, StartTimeout: time.Minute})
	defer s.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Register(ctx, &pb.RegisterRequest{Rank: 0, Host: "h", Addr: "a:1"})
		errc <- err
	}()
	for len(s.Registered()) == 0 {
		runtime.Gosched()
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled Register returned no error")
	}
	if r := s.Registered(); len(r) != 0 {
		t.Fatalf("rank still registered after its caller left: %v", r)
	}
	// The rank may register again.
	done := make(chan error, 1)
	go func() {
		_, err := s.Register(context.Background(), &pb.RegisterRequest{Rank: 0, Host: "h", Addr: "a:2"})
		done <- err
	}()
	if _, err := s.Register(context.Background(), &pb.RegisterRequest{Rank: 1, Host: "h", Addr: "b:1"}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWorkerExitedAborts(t *testing.T) {
	s := NewServer(ServerConfig{Size: 3, Secret: secret, StartTimeout: time.Minute})
	defer s.Stop()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Register(context.Background(), &pb.RegisterRequest{Rank: 0, Host: "h", Addr: "a:1"})
		errc <- fromStatus(context.Background(), "test", err)
	}()
	for len(s.Registered()) == 0 {
		runtime.Gosched()
	}
	s.WorkerExited(0, "exited with code 0") // registered: ignored
	s.WorkerExited(2, "(pid 9, host h) exited with code 0")
	err := <-errc
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "rank 2 (pid 9, host h) exited with code 0 before registering") {
		t.Fatalf("got %v, want ErrAborted naming rank 2", err)
	}
	// The rank that left is where the job's failure started, not the
	// ranks that then fail their Init.
	if v, ok := s.FirstFailure(); !ok || v.Rank != 2 || !strings.Contains(v.Message, "before joining the job") {
		t.Fatalf("first failure %+v, %v; want rank 2", v, ok)
	}
	// Left before anyone registered: no failure until a rank is refused.
	s2 := NewServer(ServerConfig{Size: 2, Secret: secret, StartTimeout: time.Minute})
	defer s2.Stop()
	s2.WorkerExited(1, "(pid 9, host h) exited with code 0")
	if v, ok := s2.FirstFailure(); ok {
		t.Fatalf("a failure %+v before any rank joined", v)
	}
	_, err = s2.Register(context.Background(), &pb.RegisterRequest{Rank: 0, Host: "h", Addr: "a:1"})
	if err = fromStatus(context.Background(), "test", err); !errors.Is(err, ErrAborted) {
		t.Fatalf("late registration: %v, want ErrAborted", err)
	}
	if v, ok := s2.FirstFailure(); !ok || v.Rank != 1 {
		t.Fatalf("first failure %+v, %v; want rank 1", v, ok)
	}
}

func TestStopUnblocksWaiters(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ServerConfig{Size: 2, Secret: secret})
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	errc := make(chan error, 1)
	go func() {
		_, err := Register(ctx, lis.Addr().String(), secret, Registration{Rank: 0, Host: "h", Addr: "a:1"})
		errc <- err
	}()
	for len(s.Registered()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("registration never arrived")
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.Stop()
	if err := <-errc; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("waiting Register after Stop: %v, want ErrUnavailable", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Stop: %v", err)
	}
}

func TestClientWaitsForServerUntilContextEnds(t *testing.T) {
	checkNoLeaks(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nobody listens there
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = Register(ctx, addr, secret, Registration{Rank: 0, Host: "h", Addr: "a:1"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want the context's deadline naming %s", err, addr)
	}
}

func TestReportStatus(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan Status, 1)
	s, addr := serve(t, ServerConfig{Size: 2, OnStatus: func(st Status) { got <- st }})
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := Status{Rank: 1, State: StateFailed, Message: "allreduce grad/w: peer lost"}
	if err := c.ReportStatus(ctx, want); err != nil {
		t.Fatal(err)
	}
	if st := <-got; st != want {
		t.Fatalf("OnStatus got %+v, want %+v", st, want)
	}
	if sts := s.Statuses(); len(sts) != 1 || sts[0] != want {
		t.Fatalf("Statuses() = %+v", sts)
	}
	if err := c.ReportStatus(ctx, Status{Rank: 0}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "state 0") {
		t.Fatalf("status without state: %v", err)
	}
}

func TestNonceReplay(t *testing.T) {
	var c nonceCache
	c.window = time.Minute
	now := time.Now()
	if !c.add("n1", now) || c.add("n1", now) {
		t.Fatal("nonce cache accepted a replay or refused a fresh nonce")
	}
	for i := range 2000 {
		c.add(fmt.Sprint(i), now.Add(-time.Hour))
	}
	c.add("fresh", now)
	if len(c.seen) > 1100 {
		t.Fatalf("nonce cache keeps %d stale entries", len(c.seen))
	}
}

func TestRankList(t *testing.T) {
	var many []int
	for i := range 40 {
		many = append(many, i)
	}
	for _, tc := range []struct {
		in   []int
		want string
	}{{nil, "[]"}, {[]int{2}, "[2]"}, {[]int{1, 5}, "[1, 5]"},
		{many, "[0, 1, 2, 3, 4, 5, 6, 7, ... 24 more ..., 32, 33, 34, 35, 36, 37, 38, 39]"}} {
		if got := rankList(tc.in); got != tc.want {
			t.Errorf("rankList(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReportFailureReturnsTheFirstFailure(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, addr := serve(t, ServerConfig{Size: 3})
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ReportStatus(ctx, Status{Rank: 0, State: StateOK}); err != nil {
		t.Fatal(err)
	}
	first, err := c.ReportFailure(ctx, Status{Rank: 2, Message: "lost rank 1"})
	if err != nil || first.Rank != 2 || first.Message != "lost rank 1" || first.State != StateFailed {
		t.Fatalf("first report: %+v, %v", first, err)
	}
	second, err := c.ReportFailure(ctx, Status{Rank: 0, Message: "lost rank 2"})
	if err != nil || second != first {
		t.Fatalf("second report got %+v, %v; want the first failure %+v", second, err, first)
	}
	// A failure the launcher recorded first is what later reporters learn.
	s2, addr2 := serve(t, ServerConfig{Size: 3})
	s2.RecordFailure(1, "rank 1 (pid 7, host h) was killed by signal SIGKILL")
	c2, err := Dial(addr2, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if f, err := c2.ReportFailure(ctx, Status{Rank: 0, Message: "lost rank 2"}); err != nil || f.Rank != 1 || !strings.Contains(f.Message, "SIGKILL") {
		t.Fatalf("after RecordFailure: %+v, %v", f, err)
	}
	other, err := c.ReportFailure(ctx, Status{Epoch: 1, Rank: 0, Message: "epoch 1"})
	if err != nil || other.Message != "epoch 1" {
		t.Fatalf("a failure of another epoch: %+v, %v", other, err)
	}
}
