package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func epochRegs(epoch uint64, n int) []Registration {
	var regs []Registration
	for r := range n {
		regs = append(regs, Registration{Epoch: epoch, Rank: r, Host: "h", Addr: fmt.Sprintf("127.0.0.1:%d", 2000+int(epoch)*10+r), Pid: 100 + r})
	}
	return regs
}

func TestSameRanksRegisterAgainForANewEpoch(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 3
	s, addr := serve(t, ServerConfig{Size: n, StartTimeout: time.Minute})
	for epoch := uint64(0); epoch < 3; epoch++ {
		for r, x := range registerAll(ctx, addr, secret, epochRegs(epoch, n)) {
			if x.err != nil {
				t.Fatalf("epoch %d rank %d: %v", epoch, r, x.err)
			}
			if x.w.Epoch != epoch || x.w.Peers[r].Addr != epochRegs(epoch, n)[r].Addr {
				t.Fatalf("epoch %d rank %d got world %+v", epoch, r, x.w)
			}
		}
		if s.Epoch() != epoch {
			t.Fatalf("server at epoch %d, want %d", s.Epoch(), epoch)
		}
	}
	// Within an epoch a rank still registers once; past epochs are over.
	_, err := Register(ctx, addr, secret, epochRegs(2, n)[1])
	if !errors.Is(err, ErrDuplicateRank) || !strings.Contains(err.Error(), "in epoch 2") {
		t.Errorf("second registration in epoch 2: %v", err)
	}
	_, err = Register(ctx, addr, secret, epochRegs(1, n)[1])
	if !errors.Is(err, ErrEpoch) {
		t.Errorf("registration for epoch 1 at epoch 2: %v", err)
	}
}

func TestANewEpochFailsAtOnceWhenARankHasExited(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 2, StartTimeout: time.Minute})
	for r, x := range registerAll(ctx, addr, secret, epochRegs(0, 2)) {
		if x.err != nil {
			t.Fatalf("rank %d: %v", r, x.err)
		}
	}
	s.WorkerExited(1, "exited with code 0")
	_, err := Register(ctx, addr, secret, epochRegs(1, 2)[0])
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "rank 1 exited with code 0 before registering for epoch 1") {
		t.Fatalf("epoch 1 after rank 1 exited: %v", err)
	}
}

func TestAnUnfinishedEpochFailsWhenALaterOneStarts(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, addr := serve(t, ServerConfig{Size: 2, StartTimeout: time.Minute})
	first := make(chan error, 1)
	go func() {
		_, err := Register(ctx, addr, secret, epochRegs(0, 2)[0])
		first <- err
	}()
	// Rank 1 moves to epoch 1 while rank 0 waits in epoch 0 (it may also
	// reach the server first: then epoch 0 is refused as over).
	later := make(chan error, 1)
	go func() {
		_, err := Register(ctx, addr, secret, epochRegs(1, 2)[1])
		later <- err
	}()
	if err := <-first; !errors.Is(err, ErrEpoch) {
		t.Errorf("epoch 0 registration: %v, want ErrEpoch", err)
	}
	// Rank 0 follows into epoch 1: the world completes.
	if _, err := Register(ctx, addr, secret, epochRegs(1, 2)[0]); err != nil {
		t.Fatal(err)
	}
	if err := <-later; err != nil {
		t.Fatal(err)
	}
}

func TestADriverBeginsAnEpochOfAnotherSize(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 2, StartTimeout: time.Minute})
	for r, x := range registerAll(ctx, addr, secret, epochRegs(0, 2)) {
		if x.err != nil {
			t.Fatalf("epoch 0 rank %d: %v", r, x.err)
		}
	}
	s.WorkerExited(1, "exited with code 0") // the driver replaces it
	if err := s.BeginEpoch(0, 3); !errors.Is(err, ErrEpoch) {
		t.Errorf("BeginEpoch of the current epoch: %v", err)
	}
	if err := s.BeginEpoch(1, 3); err != nil {
		t.Fatal(err)
	}
	if s.Size() != 3 || s.Epoch() != 1 {
		t.Fatalf("server at epoch %d of size %d", s.Epoch(), s.Size())
	}
	for r, x := range registerAll(ctx, addr, secret, epochRegs(1, 3)) {
		if x.err != nil || x.w.Size != 3 {
			t.Fatalf("epoch 1 rank %d: world %+v, %v", r, x.w, x.err)
		}
	}
	// The later epoch's ranks report statuses in its range.
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ReportStatus(ctx, Status{Epoch: 1, Rank: 2, State: StateOK}); err != nil {
		t.Errorf("status of rank 2 in epoch 1: %v", err)
	}
}
