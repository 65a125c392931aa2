package scaling

import (
	"math"
	"time"
)

// Link is the cost of one hop: a message of b bytes takes Alpha + b/Beta.
type Link struct {
	Alpha time.Duration
	Beta  float64 // bytes per second
}

func (l Link) hop(bytes float64) float64 { return l.Alpha.Seconds() + bytes/l.Beta }

// Ring is the time of a ring allreduce of n bytes over ranks ranks:
// 2(ranks-1) steps, each moving n/ranks bytes over the slowest link.
func Ring(l Link, ranks int, n float64) float64 {
	if ranks < 2 {
		return 0
	}
	return 2 * float64(ranks-1) * l.hop(n/float64(ranks))
}

// RecursiveDoubling is log2(ranks) exchanges of the whole buffer (a
// non-power of two adds two hops).
func RecursiveDoubling(l Link, ranks int, n float64) float64 {
	if ranks < 2 {
		return 0
	}
	steps := math.Floor(math.Log2(float64(ranks)))
	if ranks&(ranks-1) != 0 {
		steps += 2
	}
	return steps * l.hop(n)
}

// Tree is a pipelined binary-tree reduce then broadcast (NCCL's double
// binary tree): 2 log2(ranks) hops of latency, and each rank's link carries
// about the buffer twice.
func Tree(l Link, ranks int, n float64) float64 {
	if ranks < 2 {
		return 0
	}
	return 2*math.Ceil(math.Log2(float64(ranks)))*l.Alpha.Seconds() + 2*n/l.Beta
}

// Hierarchical is reduce-scatter within each host of perHost ranks
// (intra), ring allreduce of each rank's 1/perHost share across the hosts
// (inter; the perHost rings share the host's network link, so together
// they move what one flat ring would), then allgather within the host.
func Hierarchical(intra, inter Link, ranks, perHost int, n float64) float64 {
	if perHost < 1 || ranks%perHost != 0 {
		return math.Inf(1)
	}
	hosts := ranks / perHost
	within := 0.0
	if perHost > 1 {
		within = 2 * float64(perHost-1) * intra.hop(n/float64(perHost))
	}
	across := 0.0
	if hosts > 1 {
		shared := Link{Alpha: inter.Alpha, Beta: inter.Beta / float64(perHost)}
		across = Ring(shared, hosts, n/float64(perHost))
	}
	return within + across
}

// Crossover is the smallest power-of-two size from 1 KiB up to 4 GiB at
// which the ring beats recursive doubling on ranks ranks, or 0 if it never
// does in that range.
func Crossover(l Link, ranks int) float64 {
	for n := 1024.0; n <= 1<<32; n *= 2 {
		if Ring(l, ranks, n) < RecursiveDoubling(l, ranks, n) {
			return n
		}
	}
	return 0
}
