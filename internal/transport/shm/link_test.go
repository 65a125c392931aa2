//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		ch <- c
	}()
	a, err = net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if b = <-ch; b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

// testTag is a job tag unique to this test process, so leftovers can be
// counted without seeing other jobs' files.
var testTag = fmt.Sprintf("test%d", os.Getpid())

// leftovers lists files in /dev/shm made with tag.
func leftovers(tag string) []string {
	ents, _ := os.ReadDir("/dev/shm")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "gorovod-"+tag+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// setupPair runs Setup on both ends of a loopback connection.
func setupPair(t testing.TB, ca, cb Config) (*Link, *Link) {
	t.Helper()
	a, b := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		l   *Link
		err error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := Setup(ctx, b, cb)
		ch <- res{l, err}
	}()
	la, err := Setup(ctx, a, ca)
	rb := <-ch
	if err != nil || rb.err != nil {
		a.Close()
		b.Close()
		t.Fatalf("setup: %v / %v", err, rb.err)
	}
	return la, rb.l
}

func smallPair(t *testing.T) linktest.Pair {
	// Small slots so that "larger than the ring" sizes are cheap.
	ca := Config{Rank: 1, Peer: 2, JobTag: testTag, Epoch: 3, Slots: 4, SlotBytes: 8 << 10, PeerHost: "h"}
	cb := Config{Rank: 2, Peer: 1, JobTag: testTag, Epoch: 3, Slots: 8, SlotBytes: 4 << 10, PeerHost: "h"}
	la, lb := setupPair(t, ca, cb)
	return linktest.Pair{A: la, B: lb, RankA: 1, RankB: 2}
}

func defaultPair(t *testing.T) linktest.Pair {
	la, lb := setupPair(t, Config{Rank: 0, Peer: 1, JobTag: testTag}, Config{Rank: 1, Peer: 0, JobTag: testTag})
	return linktest.Pair{A: la, B: lb, RankA: 0, RankB: 1}
}

func TestLinkSmallRing(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	linktest.Run(t, smallPair, 64<<10)
	if l := leftovers(testTag); len(l) > 0 {
		t.Fatalf("files left in /dev/shm: %v", l)
	}
}

func TestLinkDefaultRing(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	linktest.Run(t, defaultPair, DefaultSlots*DefaultSlotBytes)
	if l := leftovers(testTag); len(l) > 0 {
		t.Fatalf("files left in /dev/shm: %v", l)
	}
}

// The files are gone from /dev/shm as soon as Setup returns, while the
// link is still open.
func TestFilesUnlinkedAfterSetup(t *testing.T) {
	p := defaultPair(t)
	defer p.A.Close()
	defer p.B.Close()
	if l := leftovers(testTag); len(l) > 0 {
		t.Fatalf("files in /dev/shm after setup: %v", l)
	}
}

func TestSetupRefusesForeignName(t *testing.T) {
	// The two sides disagree on the job tag: each refuses the other's file.
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan error, 1)
	go func() {
		_, err := Setup(ctx, b, Config{Rank: 1, Peer: 0, JobTag: testTag + "x"})
		ch <- err
	}()
	_, err := Setup(ctx, a, Config{Rank: 0, Peer: 1, JobTag: testTag})
	errB := <-ch
	for _, e := range []error{err, errB} {
		if !errors.Is(e, transport.ErrMalformed) || !errors.Is(e, ErrUnavailable) {
			t.Errorf("setup with mismatched tags: %v, want ErrUnavailable and ErrMalformed", e)
		}
	}
	checkInStep(t, a, b)
	if l := append(leftovers(testTag), leftovers(testTag+"x")...); len(l) > 0 {
		t.Fatalf("files left in /dev/shm: %v", l)
	}
}

// checkInStep: after ErrUnavailable the connection still carries bytes in
// order, so the caller can fall back to TCP on it.
func checkInStep(t *testing.T, a, b net.Conn) {
	t.Helper()
	go func() { _, _ = a.Write([]byte("tcp")) }()
	got := make([]byte, 3)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "tcp" {
		t.Fatalf("connection after ErrUnavailable: read %q, %v", got, err)
	}
}

// One side cannot create its ring: both sides get ErrUnavailable.
func TestSetupUnavailable(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan error, 1)
	go func() {
		_, err := Setup(ctx, b, Config{Rank: 1, Peer: 0, JobTag: testTag, Dir: "/nonexistent-dir"})
		ch <- err
	}()
	_, err := Setup(ctx, a, Config{Rank: 0, Peer: 1, JobTag: testTag})
	errB := <-ch
	for _, e := range []error{err, errB} {
		if !errors.Is(e, ErrUnavailable) {
			t.Errorf("setup with a missing dir on one side: %v, want ErrUnavailable", e)
		}
	}
	if !strings.Contains(errB.Error(), "/nonexistent-dir") {
		t.Errorf("error %q does not name the directory", errB)
	}
	checkInStep(t, a, b)
	if l := leftovers(testTag); len(l) > 0 {
		t.Fatalf("files left in /dev/shm: %v", l)
	}
}

func TestSetupContext(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Setup(ctx, a, Config{Rank: 0, Peer: 1, JobTag: testTag})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("setup with canceled ctx: %v", err)
	}
	if l := leftovers(testTag); len(l) > 0 {
		t.Fatalf("files left in /dev/shm: %v", l)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{
		{Rank: 0, Peer: 0},
		{Rank: 0, Peer: 1, JobTag: "Bad/Tag"},
		{Rank: 0, Peer: 1, Slots: 1},
		{Rank: 0, Peer: 1, SlotBytes: 100},
		{Rank: 0, Peer: 1, SlotBytes: -1},
	} {
		if err := c.fill(); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

// A /dev/shm too small for the rings (Docker's default is 64 MB) makes
// setup fail cleanly with ErrUnavailable on both sides, not a SIGBUS later.
func TestSetupFullTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan error, 1)
	go func() {
		_, err := Setup(ctx, b, Config{Rank: 1, Peer: 0, JobTag: testTag, Dir: dir})
		ch <- err
	}()
	_, err := Setup(ctx, a, Config{Rank: 0, Peer: 1, JobTag: testTag, Dir: dir})
	errB := <-ch
	for _, e := range []error{err, errB} {
		if !errors.Is(e, ErrUnavailable) {
			t.Errorf("setup on a full tmpfs: %v, want ErrUnavailable", e)
		}
	}
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(errB, syscall.ENOSPC) {
		t.Errorf("neither side reports ENOSPC: %v / %v", err, errB)
	}
	checkInStep(t, a, b)
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Fatalf("files left in %s: %v", dir, ents)
	}
}
