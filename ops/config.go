package ops

import (
	"fmt"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Algorithm selects how Allreduce moves data.
type Algorithm uint8

const (
	// Auto picks by message size: RecursiveDoubling below SmallBytes, Ring
	// (or Hierarchical when Config.Hierarchical is set and ranks span hosts)
	// from SmallBytes up.
	Auto Algorithm = iota
	// Ring is reduce-scatter then allgather around a ring of all ranks, in
	// pipelined segments: bandwidth-optimal, 2(n-1) latency steps.
	Ring
	// RecursiveDoubling exchanges whole buffers with partners at distance
	// 1, 2, 4, ... (non-powers of two fold the extra ranks in first): log2(n)
	// latency steps, for small messages.
	RecursiveDoubling
	// Hierarchical reduce-scatters within each host, allreduces across hosts
	// among ranks with the same local index, then allgathers within the
	// host. It needs the same number of ranks on every host; otherwise Ring
	// is used.
	Hierarchical
	// SingleCopy: every rank reduces its chunk reading the peers' buffers
	// directly (cross-memory attach, one copy), then reads the other
	// reduced chunks straight into its buffer. All ranks must be on one
	// host and the probe must succeed; otherwise Ring is used.
	SingleCopy
)

func (a Algorithm) String() string {
	switch a {
	case Auto:
		return "auto"
	case Ring:
		return "ring"
	case RecursiveDoubling:
		return "recursive-doubling"
	case Hierarchical:
		return "hierarchical"
	case SingleCopy:
		return "single-copy"
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// Limits and defaults of Config.
const (
	DefaultSegmentBytes = 256 << 10
	MaxSegmentBytes     = 1 << 20
	DefaultSmallBytes   = 64 << 10
)

// Config tunes a Comm. The zero value means defaults. Every rank must use
// the same Config: the segment size decides how bytes are cut on the wire
// and the algorithm choice must agree everywhere.
type Config struct {
	// SegmentBytes is the pipeline unit of the ring and chain algorithms
	// (rounded down to whole elements): a received segment is reduced and
	// forwarded while the next one arrives. An allreduce of two ranks over
	// shared memory cuts each segment in two halves, one per rank, and runs
	// all its passes segment by segment (measured best at 256 KiB from
	// 1 to 256 MiB on the machines tried). 0 = DefaultSegmentBytes; at most
	// MaxSegmentBytes.
	SegmentBytes int
	// SmallBytes: with Algorithm Auto, allreduces of fewer bytes use
	// recursive doubling and broadcasts a binomial tree (latency-optimised);
	// larger ones the pipelined ring / chain. 0 = DefaultSmallBytes.
	SmallBytes int
	// Algorithm forces an allreduce algorithm; Auto chooses by size.
	Algorithm Algorithm
	// Hierarchical lets Auto use the Hierarchical algorithm for large
	// allreduces when ranks span several hosts (mesh.Host).
	Hierarchical bool
	// SingleCopyOff keeps Auto from reading peers' buffers directly
	// (cross-memory attach) when all ranks share a host.
	SingleCopyOff bool
	// SingleCopyMaxBytes: with Algorithm Auto and all ranks on one host,
	// allreduce, allgather, reduce-scatter and broadcast from SmallBytes up
	// to this many bytes read the peers' buffers directly (one copy); larger
	// ones go through the links' pipelined slots. 0 = calibrate at first
	// use: the ranks time allreduces of 1, 4, 16 and 32 MiB (at most
	// DefaultSingleCopyMaxBytes(), from the machine's caches) both ways,
	// and every rank uses the single copy in the band of sizes where rank 0
	// found it at least 10% faster (SingleCopyStatus.MinBytes..MaxBytes,
	// never below the smallest size timed; none when it never was).
	SingleCopyMaxBytes int
	// SharedBuffersOff keeps ops of buffers from Alloc from running on the
	// peers' buffers directly (shared.go) when all ranks share a host.
	SharedBuffersOff bool
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{SegmentBytes: DefaultSegmentBytes, SmallBytes: DefaultSmallBytes}
}

// withDefaults validates c and fills zero fields.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.SegmentBytes == 0:
		c.SegmentBytes = DefaultSegmentBytes
	case c.SegmentBytes < 0 || c.SegmentBytes > MaxSegmentBytes:
		return c, fmt.Errorf("%w: Config.SegmentBytes %d: want 1..%d (0 for the default %d)", tensor.ErrInvalid, c.SegmentBytes, MaxSegmentBytes, DefaultSegmentBytes)
	}
	switch {
	case c.SmallBytes == 0:
		c.SmallBytes = DefaultSmallBytes
	case c.SmallBytes < 0:
		return c, fmt.Errorf("%w: Config.SmallBytes %d: must not be negative (0 for the default %d)", tensor.ErrInvalid, c.SmallBytes, DefaultSmallBytes)
	}
	if c.Algorithm > SingleCopy {
		return c, fmt.Errorf("%w: Config.Algorithm %d: want Auto, Ring, RecursiveDoubling, Hierarchical or SingleCopy", tensor.ErrInvalid, uint8(c.Algorithm))
	}
	if c.SingleCopyMaxBytes < 0 {
		return c, fmt.Errorf("%w: Config.SingleCopyMaxBytes %d: must not be negative (0 calibrates; SingleCopyOff turns it off)", tensor.ErrInvalid, c.SingleCopyMaxBytes)
	}
	return c, nil
}

// ParseAlgorithm maps a configuration name ("auto", "ring",
// "recursive-doubling", "hierarchical", "single-copy"; "" is auto) to an
// Algorithm.
func ParseAlgorithm(name string) (Algorithm, error) {
	if name == "" {
		return Auto, nil
	}
	for a := Auto; a <= SingleCopy; a++ {
		if a.String() == name {
			return a, nil
		}
	}
	return Auto, fmt.Errorf("%w: allreduce algorithm %q: want auto, ring, recursive-doubling, hierarchical or single-copy", tensor.ErrInvalid, name)
}
