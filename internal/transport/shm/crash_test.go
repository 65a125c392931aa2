//go:build linux

package shm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

const crashEnvAddr, crashEnvTag = "GOROVOD_SHM_CRASH_ADDR", "GOROVOD_SHM_CRASH_TAG"

// TestCrashChild is the child side of TestPeerKilled: it sets up a link to
// the parent and sends until it is killed.
func TestCrashChild(t *testing.T) {
	addr := os.Getenv(crashEnvAddr)
	if addr == "" {
		t.Skip("child of TestPeerKilled only")
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Setup(context.Background(), conn, Config{Rank: 1, Peer: 0, JobTag: os.Getenv(crashEnvTag)})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		if err := l.Send(context.Background(), buf); err != nil {
			t.Fatal(err)
		}
	}
}

// A peer SIGKILLed in the middle of a transfer: the survivor's Recv and
// Send fail with ErrPeerLost naming it, and /dev/shm holds nothing.
func TestPeerKilled(t *testing.T) {
	if os.Getenv(crashEnvAddr) != "" {
		t.Skip("in the child")
	}
	tag := testTag + "crash"
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvAddr+"="+lis.Addr().String(), crashEnvTag+"="+tag)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Setup(ctx, conn, Config{Rank: 0, Peer: 1, PeerHost: "here", JobTag: tag})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	defer l.Close()
	got := make([]byte, 4<<20)
	if err := l.Recv(ctx, got); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if b != byte(i%(1<<20)) {
			t.Fatalf("byte %d is %d, want %d", i, b, byte(i))
		}
	}
	// The child is sending (or waiting for ring space) right now.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	_ = cmd.Wait()

	err = l.Recv(ctx, make([]byte, 64<<20))
	checkLost(t, "recv", err)
	err = l.Send(ctx, make([]byte, 64<<20))
	checkLost(t, "send", err)
	if left := leftovers(tag); len(left) > 0 {
		t.Fatalf("files left in /dev/shm after the peer was killed: %v", left)
	}
}

func checkLost(t *testing.T, op string, err error) {
	t.Helper()
	var pe *transport.PeerError
	if !errors.Is(err, transport.ErrPeerLost) || !errors.As(err, &pe) || pe.Rank != 1 || pe.Op != op {
		t.Fatalf("%s after the peer was killed: %v, want ErrPeerLost from %s with rank 1", op, err, op)
	}
}
