package rendezvous

import (
	"context"
	"sync"
	"testing"
	"time"
)

func lost(by, peer int) Status {
	return Status{Rank: by, State: StateFailed, Kind: FailurePeerLost, Suspect: peer, Message: "lost"}
}

func stalled(by, peer int) Status {
	return Status{Rank: by, State: StateFailed, Kind: FailurePeerStalled, Suspect: peer, Message: "stalled"}
}

func exited(rank int) Status {
	return Status{Rank: rank, State: StateFailed, Kind: FailureExited, Suspect: rank, Message: "exited"}
}

func own(rank int) Status {
	return Status{Rank: rank, State: StateFailed, Message: "own"}
}

func TestBlameVerdicts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const settle = time.Second
	type step struct {
		st Status
		at time.Duration // after t0
	}
	for _, tc := range []struct {
		name    string
		size    int
		steps   []step
		at      time.Duration // when decide is asked
		want    int           // culprit; -1 = not decided yet
		wantMsg string
	}{
		{"killed rank noticed by a peer", 3, []step{{lost(2, 1), 0}}, 0, 1, "lost"},
		{"launcher saw the death first", 3, []step{{exited(1), 0}, {lost(0, 1), 1}}, 1, 1, "exited"},
		{"peer saw it first, launcher's words win", 3, []step{{lost(0, 1), 0}, {exited(1), 1}}, 1, 1, "exited"},
		{"fail-stop of a survivor is a consequence", 4, []step{{lost(2, 1), 0}, {lost(3, 2), 1}}, 1, 1, "lost"},
		{"a rank failing on its own", 3, []step{{own(2), 0}, {lost(0, 2), 1}}, 1, 2, "own"},
		{"stall waits for the chain", 4, []step{{stalled(3, 2), 0}}, 10, -1, ""},
		{"stall chain resolves when every other rank reported", 4,
			[]step{{stalled(3, 2), 0}, {stalled(0, 3), 5}, {stalled(2, 1), 9}}, 9, 1, "stalled"},
		{"stall chain after the settle window", 4,
			[]step{{stalled(3, 2), 0}, {stalled(2, 1), 9}}, time.Duration(settle), 1, "stalled"},
		{"a healthy neighbour named first, not blamed when it passes on", 3,
			[]step{{stalled(0, 2), 0}, {stalled(2, 1), 3}}, 3, 1, "stalled"},
		{"settle window alone blames the stalled peer", 3, []step{{stalled(2, 1), 0}}, time.Duration(settle), 1, "stalled"},
		{"two ranks, the other reported", 2, []step{{stalled(0, 1), 0}}, 0, 1, "stalled"},
		{"lost report after a timeout report does not override it", 3,
			[]step{{stalled(2, 1), 0}, {lost(0, 2), 2}, {stalled(0, 1), 3}}, 3, 1, "stalled"},
		{"stalled rank resumed and lost the one that timed out", 3,
			[]step{{stalled(2, 1), 0}, {lost(1, 2), 2}}, time.Duration(settle), 1, "stalled"},
		{"a dead stalled rank is final", 4, []step{{stalled(2, 1), 0}, {exited(1), 2}}, 2, 1, "exited"},
		{"cycle of stalls blames the first suspect", 2,
			[]step{{stalled(0, 1), 0}, {stalled(1, 0), 1}}, 1, 1, "stalled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := blame{size: tc.size, settle: settle}
			for _, s := range tc.steps {
				b.add(s.st, t0.Add(s.at))
			}
			v, ok := b.decide(t0.Add(tc.at))
			if tc.want < 0 {
				if ok {
					t.Fatalf("decided %+v too early", v)
				}
				return
			}
			if !ok {
				t.Fatalf("not decided; want rank %d", tc.want)
			}
			if v.Rank != tc.want || v.Message != tc.wantMsg || v.State != StateFailed {
				t.Fatalf("verdict %+v, want rank %d (%q)", v, tc.want, tc.wantMsg)
			}
			b.add(lost(tc.want, (tc.want+1)%tc.size), t0.Add(tc.at+1))
			if again, _ := b.decide(t0.Add(tc.at + 2*time.Duration(settle))); again != v {
				t.Fatalf("verdict changed from %+v to %+v", v, again)
			}
		})
	}
}

// A stall report is answered once the stalled rank's peers have passed the
// blame on, with the stalled rank; the launcher sees the same verdict.
func TestStallReportsWaitForTheVerdict(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, addr := serve(t, ServerConfig{Size: 4, StallSettle: time.Minute})
	c, err := Dial(addr, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reports := []Status{stalled(3, 2), stalled(0, 3), stalled(2, 1)}
	got := make([]Status, len(reports))
	errs := make([]error, len(reports))
	var wg sync.WaitGroup
	for i, st := range reports {
		if i == len(reports)-1 {
			// the last report decides: the others must still be waiting
			if v, ok := s.FirstFailure(); ok {
				t.Fatalf("decided before every rank reported: %+v", v)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = c.ReportFailure(ctx, st)
		}()
		if i < len(reports)-1 {
			waitReports(ctx, t, s, i+1)
		}
	}
	wg.Wait()
	for i := range reports {
		if errs[i] != nil || got[i].Rank != 1 {
			t.Errorf("report %d: verdict %+v, %v; want rank 1", i, got[i], errs[i])
		}
	}
	if v, ok := s.FirstFailure(); !ok || v.Rank != 1 {
		t.Errorf("launcher's view: %+v, %v", v, ok)
	}
}

// waitReports waits until the server holds n statuses.
func waitReports(ctx context.Context, t *testing.T, s *Server, n int) {
	t.Helper()
	for len(s.Statuses()) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("server has %d statuses, want %d", len(s.Statuses()), n)
		case <-time.After(time.Millisecond):
		}
	}
}
