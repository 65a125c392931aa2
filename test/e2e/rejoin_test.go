package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A program that closes its world and joins a new one (the same ranks, a
// new epoch), three times with Shutdown/Init and three times with
// World.Close/NewWorld, allreduces right in every world and keeps no
// goroutines, sockets or shared memory of the worlds it closed.
func TestCloseAndJoinANewWorld(t *testing.T) {
	for _, shm := range []bool{true, false} {
		t.Run(fmt.Sprintf("shm=%v", shm), func(t *testing.T) {
			defer noShmLeftovers(t, shmFiles(t))
			args := []string{"-np", "3"}
			if !shm {
				args = append(args, "--disable-shm")
			}
			r := gorun(t, 2*time.Minute, append(args, "worker", "-mode", "rejoin", "-steps", "3")...)
			if r.code != 0 {
				t.Fatalf("gorun exited %d; output:\n%s", r.code, r.out)
			}
			for rank := 0; rank < 3; rank++ {
				for i := 1; i <= 3; i++ {
					for k, how := range []string{"Init", "NewWorld"} {
						epoch := (i - 1) + 3*k
						want := fmt.Sprintf("rank %d: %s #%d epoch %d: sum [3 %d]", rank, how, i, epoch, 3*(i-1))
						if !strings.Contains(r.out, want) {
							t.Errorf("output lacks %q:\n%s", want, r.out)
						}
					}
				}
				if want := fmt.Sprintf("rank %d: rejoin ok: 6 worlds, nothing left behind", rank); !strings.Contains(r.out, want) {
					t.Errorf("output lacks %q:\n%s", want, r.out)
				}
			}
		})
	}
}

// A rank that exits 0 before calling Init: the others' Init fails at once
// with ErrPeerLost naming it (not after the start timeout, not untyped).
func TestRankExitingBeforeInitFailsTheOthersWithPeerLost(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "3", "--start-timeout", "60s", "worker", "-mode", "exit0", "-rank", "1")
	if r.code == 0 {
		t.Fatalf("gorun exited 0; output:\n%s", r.out)
	}
	// The first rank to fail ends the job: gorun may stop the other
	// before it says why (when it had not registered yet), so at least one
	// of them reports, and every report is typed and names rank 1.
	reports := regexp.MustCompile(`rank [02]: init failed: .*`).FindAllString(r.out, -1)
	if len(reports) == 0 {
		t.Fatalf("no rank reported its Init error:\n%s", r.out)
	}
	ok := regexp.MustCompile(`rank 1 .*exited with code 0 before registering.*\(peer lost: true\)`)
	for _, rep := range reports {
		if !ok.MatchString(rep) {
			t.Errorf("Init did not fail with ErrPeerLost naming rank 1: %s", rep)
		}
	}
}
