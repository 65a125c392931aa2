//go:build linux

package shm

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/tcp/linktest"
)

// blockAtOnce skips spinning, yielding and sleeping: every wait blocks on
// the futex, and only the peer's wake-up (never the timeout) can end it.
var blockAtOnce = WaitPolicy{Spins: 0, YieldFor: 1, SleepFor: 1, BlockTimeout: time.Hour}

// No wake-up is lost: thousands of round trips and a transfer through a
// full ring with both sides blocking on the futex at every wait. A lost
// wake-up would hang until the watchdog below fires.
func TestFutexWakeups(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	ca := Config{Rank: 0, Peer: 1, JobTag: testTag, Wait: blockAtOnce, Slots: 2, SlotBytes: 4096}
	cb := Config{Rank: 1, Peer: 0, JobTag: testTag, Wait: blockAtOnce, Slots: 2, SlotBytes: 4096}
	la, lb := setupPair(t, ca, cb)
	defer la.Close()
	defer lb.Close()
	ctx := context.Background()
	const rounds = 3000
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	peer := make(chan error, 1)
	go func() {
		buf := make([]byte, 8)
		for i := 0; i < rounds; i++ {
			if err := lb.Recv(ctx, buf); err != nil {
				peer <- err
				return
			}
			if err := lb.Send(ctx, buf); err != nil {
				peer <- err
				return
			}
		}
		peer <- lb.Send(ctx, big)
	}()
	done := make(chan error, 1)
	got := make([]byte, len(big))
	go func() {
		buf := make([]byte, 8)
		for i := 0; i < rounds; i++ {
			buf[0] = byte(i)
			if err := la.Send(ctx, buf); err != nil {
				done <- err
				return
			}
			if err := la.Recv(ctx, buf); err != nil || buf[0] != byte(i) {
				done <- errors.Join(err, errors.New("round trip corrupted"))
				return
			}
		}
		done <- la.Recv(ctx, got)
	}()
	watchdog := time.NewTimer(60 * time.Second)
	defer watchdog.Stop()
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case err := <-peer:
			if err != nil {
				t.Fatal(err)
			}
		case <-watchdog.C:
			t.Fatalf("a futex wake-up was lost: the transfer hangs (A sent %d slots, received %d; B sent %d, received %d)", la.txHead, la.rxTail, lb.txHead, lb.rxTail)
		}
	}
	if !bytes.Equal(got, big) {
		t.Fatal("data corrupted")
	}
}

// Close and peer death wake a side blocked on the futex.
func TestFutexBlockedWakesOnCloseAndLoss(t *testing.T) {
	defer linktest.CheckGoroutines(t)()
	for _, closeSelf := range []bool{true, false} {
		la, lb := setupPair(t, Config{Rank: 0, Peer: 1, JobTag: testTag, Wait: blockAtOnce}, Config{Rank: 1, Peer: 0, JobTag: testTag, Wait: blockAtOnce})
		done := make(chan error, 1)
		go func() { done <- la.Recv(context.Background(), make([]byte, 1)) }()
		want := transport.ErrPeerLost
		if closeSelf {
			want = transport.ErrClosed
			la.Close()
		} else {
			lb.Close()
		}
		if err := <-done; !errors.Is(err, want) {
			t.Errorf("blocked Recv (close self %v): %v, want %v", closeSelf, err, want)
		}
		la.Close()
		lb.Close()
	}
}
