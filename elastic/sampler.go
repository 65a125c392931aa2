package elastic

import (
	"math/rand/v2"
)

// Sampler deals the samples of each data epoch over the ranks of the
// current world. Its position (data epoch, samples processed in it by all
// ranks together) is an Item of the State, so after a reset the samples
// not yet processed are re-dealt over the new world's size: none is
// skipped, none used twice in a data epoch.
type Sampler struct {
	n    int
	seed uint64
	pos  samplerPos

	rank, size int
	permEpoch  int
	perm       []int
}

type samplerPos struct {
	Epoch, Done int
}

// NewSampler returns a sampler of n samples, shuffled per data epoch from
// seed (every rank uses the same seed), for a world of one until SetWorld.
func NewSampler(n int, seed uint64) *Sampler {
	return &Sampler{n: n, seed: seed, size: 1, permEpoch: -1}
}

// Item is the sampler's position, to put in the State.
func (s *Sampler) Item() Item { return Value("elastic/sampler", &s.pos) }

// SetWorld sets this rank's place (call it from an OnReset function and
// before the first batch).
func (s *Sampler) SetWorld(rank, size int) { s.rank, s.size = rank, max(size, 1) }

// Epoch is the current data epoch (from 0).
func (s *Sampler) Epoch() int { return s.pos.Epoch }

// Processed is the number of samples processed in the current data epoch
// by all ranks together.
func (s *Sampler) Processed() int { return s.pos.Done }

// Batch returns this rank's sample indices of the next global batch of
// perRank samples per rank; shorter (maybe empty) at the end of a data
// epoch.
func (s *Sampler) Batch(perRank int) []int {
	if s.permEpoch != s.pos.Epoch {
		s.perm = rand.New(rand.NewPCG(s.seed, uint64(s.pos.Epoch))).Perm(s.n)
		s.permEpoch = s.pos.Epoch
	}
	lo := min(s.pos.Done+s.rank*perRank, s.n)
	hi := min(lo+perRank, s.n)
	return s.perm[lo:hi]
}

// Advance records that the global batch of perRank samples per rank was
// processed; at the end of the data the next data epoch starts.
func (s *Sampler) Advance(perRank int) {
	s.pos.Done += perRank * s.size
	if s.pos.Done >= s.n {
		s.pos.Epoch++
		s.pos.Done = 0
	}
}
