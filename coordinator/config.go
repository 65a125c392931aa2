package coordinator

import (
	"fmt"
	"time"
)

// Config configures a Controller. Every rank must use the same values
// (except Rank and Observer): the cache and fusion decisions are made on
// every rank independently and must agree.
type Config struct {
	// Rank and Size place this process in the world (0 <= Rank < Size).
	Rank, Size int
	// CacheCapacity is the response cache size in entries; 0 disables the
	// cache (every request then takes the slow path through rank 0).
	CacheCapacity int
	// FusionThresholdBytes caps the bytes of one fused allreduce; 0
	// disables fusion.
	FusionThresholdBytes int64
	// StallWarning is how long a tensor may wait for other ranks before
	// rank 0 reports it (Stalls); 0 disables the stall inspector.
	StallWarning time.Duration
	// StallShutdown, when positive, fails a tensor on every rank with
	// ErrorTimeout once it has waited that long; must be >= StallWarning.
	StallShutdown time.Duration
	// MaxStallNamesPerRank bounds the names FormatStalls lists per missing
	// rank (0 means 6, as Horovod).
	MaxStallNamesPerRank int
	// Observer, if set, is told on rank 0 how negotiation progresses (for
	// the timeline). Called synchronously from Cycle.
	Observer Observer
}

// DefaultConfig returns Horovod's defaults for a rank of a world.
func DefaultConfig(rank, size int) Config {
	return Config{
		Rank: rank, Size: size,
		CacheCapacity:        1024,
		FusionThresholdBytes: 128 << 20,
		StallWarning:         60 * time.Second,
	}
}

// Validate says which field is wrong and why.
func (c *Config) Validate() error {
	switch {
	case c.Size < 1:
		return fmt.Errorf("%w: Config.Size is %d, must be >= 1", ErrInvalid, c.Size)
	case c.Rank < 0 || c.Rank >= c.Size:
		return fmt.Errorf("%w: Config.Rank is %d, must be in [0, %d)", ErrInvalid, c.Rank, c.Size)
	case c.CacheCapacity < 0:
		return fmt.Errorf("%w: Config.CacheCapacity is %d, must be >= 0 (0 disables the cache)", ErrInvalid, c.CacheCapacity)
	case c.CacheCapacity > 1<<20:
		return fmt.Errorf("%w: Config.CacheCapacity is %d, must be <= %d", ErrInvalid, c.CacheCapacity, 1<<20)
	case c.FusionThresholdBytes < 0:
		return fmt.Errorf("%w: Config.FusionThresholdBytes is %d, must be >= 0 (0 disables fusion)", ErrInvalid, c.FusionThresholdBytes)
	case c.StallWarning < 0:
		return fmt.Errorf("%w: Config.StallWarning is %v, must be >= 0 (0 disables the stall inspector)", ErrInvalid, c.StallWarning)
	case c.StallShutdown < 0:
		return fmt.Errorf("%w: Config.StallShutdown is %v, must be >= 0 (0 disables it)", ErrInvalid, c.StallShutdown)
	case c.StallShutdown > 0 && c.StallShutdown < c.StallWarning:
		return fmt.Errorf("%w: Config.StallShutdown (%v) is shorter than Config.StallWarning (%v)", ErrInvalid, c.StallShutdown, c.StallWarning)
	case c.MaxStallNamesPerRank < 0:
		return fmt.Errorf("%w: Config.MaxStallNamesPerRank is %d, must be >= 0", ErrInvalid, c.MaxStallNamesPerRank)
	}
	return nil
}

// Observer receives negotiation events on rank 0, with the cycle's clock.
// Tensors served from the response cache report start and end only (no
// per-rank readiness is known for them).
type Observer interface {
	// OnNegotiateStart: the first rank submitted name.
	OnNegotiateStart(now time.Time, name string, op OpType)
	// OnRankReady: rank submitted name.
	OnRankReady(now time.Time, name string, rank int)
	// OnNegotiateEnd: a response (or error) for name was decided.
	OnNegotiateEnd(now time.Time, name string)
}

// CycleObserver is an optional capability of an Observer: it is also told
// when each cycle starts (Horovod's CYCLE_START timeline markers).
type CycleObserver interface {
	OnCycleStart(now time.Time)
}
