//go:build linux

package ops

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/cma"
	"github.com/gorovod/gorovod/internal/transport/mesh"
)

// TestSingleCopyAcrossProcesses runs ranks as separate processes (this test
// binary re-executed), over a real mesh with shared-memory links: the probe
// and the single-copy collectives across address spaces. Where the kernel
// refuses (Yama, seccomp) the ranks must agree to fall back and still
// compute right.
func TestSingleCopyAcrossProcesses(t *testing.T) {
	if os.Getenv("GOROVOD_OPS_CHILD") != "" {
		t.Skip("child")
	}
	const n = 3
	var files []*os.File
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Skipf("no loopback: %v", err)
		}
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
		files = append(files, f)
		addrs = append(addrs, l.Addr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmds := make([]*exec.Cmd, n)
	outs := make([]*strings.Builder, n)
	for r := range n {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSingleCopyChild$", "-test.v")
		outs[r] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[r], outs[r]
		cmd.ExtraFiles = []*os.File{files[r]}
		cmd.Env = append(os.Environ(), "GOROVOD_OPS_CHILD="+strconv.Itoa(r), "GOROVOD_OPS_PEERS="+strings.Join(addrs, ","))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[r] = cmd
	}
	for _, f := range files {
		_ = f.Close()
	}
	for r, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("rank %d: %v\n%s", r, err, outs[r])
		}
	}
	ok, why := cma.Check()
	t.Logf("rank 0: %s", outs[0])
	for r := range n {
		if !strings.Contains(outs[r].String(), "shared ops=4") {
			t.Errorf("rank %d: output lacks \"shared ops=4\":\n%s", r, outs[r])
		}
		if want := fmt.Sprintf("permitted=%v", ok); ok && !strings.Contains(outs[r].String(), want) {
			t.Errorf("rank %d: output lacks %q (cma.Check: %s):\n%s", r, want, why, outs[r])
		}
	}
}

// TestSingleCopyChild is one rank of TestSingleCopyAcrossProcesses.
func TestSingleCopyChild(t *testing.T) {
	rs := os.Getenv("GOROVOD_OPS_CHILD")
	if rs == "" {
		t.Skip("run by TestSingleCopyAcrossProcesses")
	}
	rank, _ := strconv.Atoi(rs)
	addrs := strings.Split(os.Getenv("GOROVOD_OPS_PEERS"), ",")
	lis, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	peers := make([]mesh.Peer, len(addrs))
	for i, a := range addrs {
		peers[i] = mesh.Peer{Rank: i, Host: "localhost", Addr: a}
	}
	secret, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	m, err := mesh.Build(ctx, mesh.Config{Rank: rank, Peers: peers, Secret: secret, Epoch: 1, Listener: lis})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := NewComm(m, Config{Algorithm: SingleCopy, SmallBytes: 1, SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := len(addrs)
	for _, count := range []int{1, 1000, 100003} {
		allreduceRankSums(ctx, t, c, make([]byte, 8*count), rank, n)
		send := []byte(strings.Repeat(string(rune('a'+rank)), count))
		recv := make([]byte, n*count)
		if err := c.Allgatherv(ctx, send, recv, []int{count, count, count}); err != nil {
			t.Fatal(err)
		}
		for q := range n {
			if strings.Trim(string(recv[q*count:(q+1)*count]), string(rune('a'+q))) != "" {
				t.Fatalf("allgather count %d: rank %d's part is wrong", count, q)
			}
		}
	}
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.SingleCopy()
	fmt.Printf("rank %d: permitted=%v reason=%q status=%+v\n", rank, st.Permitted, st.Reason, st)
	_ = c.Close()
	sharedChild(ctx, t, m, rank, n)
}

// sharedChild runs allreduces and a broadcast of buffers from Alloc: the
// peers map each other's regions across processes.
func sharedChild(ctx context.Context, t *testing.T, m transport.Mesh, rank, n int) {
	c, err := NewComm(m, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, count := range []int{sharedMinBytes / 8, 1 << 20} {
		buf, err := Alloc(8 * count)
		if err != nil {
			t.Fatal(err)
		}
		allreduceRankSums(ctx, t, c, buf, rank, n)
		if rank == 1 {
			copy(buf, strings.Repeat("b", len(buf)))
		}
		if err := c.Broadcast(ctx, buf, 1); err != nil {
			t.Fatal(err)
		}
		if strings.Trim(string(buf), "b") != "" {
			t.Fatalf("shared broadcast of %d bytes: wrong bytes", len(buf))
		}
		if err := Free(buf); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("rank %d: shared ops=%d\n", rank, c.shr.ran)
}

// allreduceRankSums sums element i = rank*i+1 of buf (int64) over n ranks
// and checks the result.
func allreduceRankSums(ctx context.Context, t *testing.T, c *Comm, buf []byte, rank, n int) {
	t.Helper()
	count := len(buf) / 8
	for i := range count {
		as[int64](buf)[i] = int64(rank*i + 1)
	}
	if err := c.Allreduce(ctx, buf, tensor.Int64, tensor.Sum, 1, 1); err != nil {
		t.Fatal(err)
	}
	for i := range count {
		if want := int64(n*(n-1)/2*i + n); as[int64](buf)[i] != want {
			t.Fatalf("count %d element %d: %d want %d", count, i, as[int64](buf)[i], want)
		}
	}
}
