package scaling

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// The per-hop figures the model is built on, measured with gorovod-bench
// on the 2-core EPYC VM of docs/performance.md (2026-12-01): one np=2
// exchange of 4 KiB (latency) and the np=2 ring's busbw at 64 MiB
// (bandwidth of one link), over shared memory and over TCP.
var (
	shmLink = Link{Alpha: 1700 * time.Nanosecond, Beta: 6.7e9}
	tcpLink = Link{Alpha: 18300 * time.Nanosecond, Beta: 1.9e9}
)

func TestModelShape(t *testing.T) {
	for _, n := range []int{8, 64, 1024, 4096} {
		if Ring(tcpLink, n, 256<<20) >= RecursiveDoubling(tcpLink, n, 256<<20) {
			t.Errorf("%d ranks, 256 MiB: the ring should beat recursive doubling", n)
		}
		if RecursiveDoubling(tcpLink, n, 4096) >= Ring(tcpLink, n, 4096) {
			t.Errorf("%d ranks, 4 KiB: recursive doubling should beat the ring", n)
		}
		if n > 8 && Hierarchical(shmLink, tcpLink, n, 8, 4096) >= Ring(tcpLink, n, 4096) {
			t.Errorf("%d ranks, 4 KiB: hierarchical should beat the flat ring (fewer network hops)", n)
		}
	}
	if a, b := Crossover(tcpLink, 64), Crossover(tcpLink, 1024); a == 0 || b < a {
		t.Errorf("crossover ring/recursive doubling: %v at 64 ranks, %v at 1024; want growing", a, b)
	}
}

// TestModelTable prints docs/scaling.md's model tables (GOROVOD_SCALING=1).
func TestModelTable(t *testing.T) {
	if os.Getenv("GOROVOD_SCALING") == "" {
		t.Skip("set GOROVOD_SCALING=1 to print the table")
	}
	us := func(s float64) string {
		switch {
		case s >= 1:
			return fmt.Sprintf("%.2f s", s)
		case s >= 1e-3:
			return fmt.Sprintf("%.2f ms", s*1e3)
		}
		return fmt.Sprintf("%.0f us", s*1e6)
	}
	for _, size := range []float64{4 << 10, 1 << 20, 64 << 20, 256 << 20} {
		t.Logf("| %s | ranks | ring | recursive doubling | tree | hierarchical (8 per host) |", human(size))
		for _, n := range []int{8, 64, 256, 1024, 4096} {
			t.Logf("| | %d | %s | %s | %s | %s |", n, us(Ring(tcpLink, n, size)), us(RecursiveDoubling(tcpLink, n, size)),
				us(Tree(tcpLink, n, size)), us(Hierarchical(shmLink, tcpLink, n, 8, size)))
		}
	}
	for _, n := range []int{2, 8, 64, 256, 1024, 4096} {
		t.Logf("crossover %d ranks: tcp %s shm %s", n, human(Crossover(tcpLink, n)), human(Crossover(shmLink, n)))
	}
}

func human(b float64) string {
	switch {
	case b == 0:
		return "never"
	case b >= 1<<30:
		return fmt.Sprintf("%.0f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", b/(1<<10))
}
