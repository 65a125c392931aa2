// Package config holds Gorovod's tuning knobs: one typed struct with units in
// the field names, defaults, validation that names the field, and the one
// place that reads GOROVOD_* environment variables for them.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid marks a configuration value that cannot be used.
var ErrInvalid = errors.New("invalid configuration")

// Environment variables for the knobs (gorun turns its flags into these).
const (
	EnvFusionThreshold    = "GOROVOD_FUSION_THRESHOLD"       // bytes
	EnvCycleTime          = "GOROVOD_CYCLE_TIME"             // Go duration, or milliseconds as a bare number
	EnvCacheCapacity      = "GOROVOD_CACHE_CAPACITY"         // entries
	EnvStallCheckTime     = "GOROVOD_STALL_CHECK_TIME"       // duration, or seconds as a bare number
	EnvStallShutdownTime  = "GOROVOD_STALL_SHUTDOWN_TIME"    // duration, or seconds as a bare number
	EnvStallDisable       = "GOROVOD_STALL_CHECK_DISABLE"    // 1/true
	EnvTimeline           = "GOROVOD_TIMELINE"               // file name
	EnvTimelineMarkCycles = "GOROVOD_TIMELINE_MARK_CYCLES"   // 1/true: a CYCLE_START mark per negotiation cycle
	EnvDisableShm         = "GOROVOD_DISABLE_SHM"            // 1/true
	EnvSegmentBytes       = "GOROVOD_SEGMENT_BYTES"          // ring pipeline segment
	EnvMetricsAddr        = "GOROVOD_METRICS_ADDR"           // host:port for Prometheus text metrics
	EnvBatchWindow        = "GOROVOD_BATCH_WINDOW"           // duration the loop waits for more submissions
	EnvHierarchical       = "GOROVOD_HIERARCHICAL_ALLREDUCE" // 1/true
	EnvProgressTimeout    = "GOROVOD_PROGRESS_TIMEOUT"       // duration, or seconds as a bare number; 0 = none
	EnvAlgorithm          = "GOROVOD_ALLREDUCE_ALGORITHM"    // auto, ring, recursive-doubling, hierarchical, single-copy
	EnvSmallBytes         = "GOROVOD_SMALL_BYTES"            // latency-path bound in bytes
	EnvDisableSingleCopy  = "GOROVOD_DISABLE_SINGLE_COPY"    // 1/true
	EnvSingleCopyMax      = "GOROVOD_SINGLE_COPY_MAX_BYTES"  // bytes; 0 = from the machine's caches
	EnvDisableShared      = "GOROVOD_DISABLE_SHARED_BUFFERS" // 1/true
)

// Algorithms are the names AllreduceAlgorithm takes ("" is "auto").
var Algorithms = []string{"auto", "ring", "recursive-doubling", "hierarchical", "single-copy"}

// Config is every knob of a worker. The zero value is not valid; start from
// Default().
type Config struct {
	// FusionThresholdBytes caps the size of one fused buffer; 0 disables fusion.
	FusionThresholdBytes int64
	// CycleTime is the longest the background loop sleeps between negotiation
	// cycles when no work arrives (work arriving wakes it at once).
	CycleTime time.Duration
	// BatchWindow is how long the queue must stay unchanged before the loop
	// negotiates a burst (lets its tensors fuse): it waits only when woken
	// with more than one call queued or after calls arrived while the
	// previous cycle ran; a lone call on an idle loop is negotiated at once
	// (what arrives during its cycle forms the next). 0: never wait.
	BatchWindow time.Duration
	// CacheCapacity is the response cache size in entries; 0 disables it.
	CacheCapacity int
	// StallCheckDisabled turns the stall inspector off.
	StallCheckDisabled bool
	// StallWarningTime is how long a tensor may wait for other ranks before
	// rank 0 logs which ranks are missing.
	StallWarningTime time.Duration
	// StallShutdownTime, when positive, fails stalled tensors on every rank
	// with ErrTimeout after this long.
	StallShutdownTime time.Duration
	// TimelineFile, when set, is where rank 0 writes a Chrome-trace timeline.
	TimelineFile string
	// TimelineMarkCycles writes a CYCLE_START mark per negotiation cycle
	// into the timeline (horovodrun's --timeline-mark-cycles).
	TimelineMarkCycles bool
	// DisableShm forces TCP between peers on the same host.
	DisableShm bool
	// SegmentBytes is the pipeline segment of ring algorithms; 0 chooses by
	// transport: 256 KiB when every peer is reached over shared memory,
	// 1 MiB when some are over TCP (measured best on each).
	SegmentBytes int
	// HierarchicalAllreduce uses the intra-host/inter-host algorithm when
	// ranks span several hosts.
	HierarchicalAllreduce bool
	// MetricsAddr, when set, serves Prometheus text metrics at /metrics.
	MetricsAddr string
	// ProgressTimeout bounds one negotiation cycle or one data-plane
	// operation: past it the job fails with ErrTimeout naming the rank it
	// was waiting for (a peer that is alive but stuck). 0 disables it.
	ProgressTimeout time.Duration
	// AllreduceAlgorithm forces one allreduce algorithm for every size (one
	// of Algorithms); "" or "auto" chooses by size: recursive doubling below
	// SmallBytes, single copy up to SingleCopyMaxBytes when every rank is on
	// one host, the pipelined ring (or hierarchical) above.
	AllreduceAlgorithm string
	// SmallBytes: allreduces and broadcasts below this many bytes take the
	// latency path (recursive doubling, binomial tree); 0 = 64 KiB.
	SmallBytes int
	// DisableSingleCopy keeps ranks on one host from reading each other's
	// buffers directly (cross-memory attach); they use shared-memory slots.
	// False by default: allgathers and mid-size broadcasts use it whenever
	// the kernel allows, allreduces and reduce-scatters in the size band
	// where rank 0's calibration found it faster (AllreduceAlgorithm
	// "single-copy" forces it).
	DisableSingleCopy bool
	// SingleCopyMaxBytes is the largest op that goes by single copy; 0 =
	// half the last-level cache, clamped to 2..32 MiB.
	SingleCopyMaxBytes int
	// DisableSharedBuffers keeps collectives of tensors from
	// collective.Alloc (and the fusion buffer, which then comes from the
	// heap) from running on the peers' buffers directly.
	DisableSharedBuffers bool
}

// Default returns the defaults Horovod users expect.
func Default() Config {
	return Config{
		FusionThresholdBytes: 128 << 20,
		CycleTime:            time.Millisecond,
		BatchWindow:          20 * time.Microsecond,
		CacheCapacity:        1024,
		StallWarningTime:     60 * time.Second,
		ProgressTimeout:      5 * time.Minute,
		// DisableSingleCopy false: allgathers and mid-size broadcasts gain
		// from it on every machine measured; allreduces use it only where
		// the first-use calibration found it faster (docs/performance.md).
	}
}

// Validate reports the first unusable field by name.
func (c Config) Validate() error {
	switch {
	case c.FusionThresholdBytes < 0:
		return fmt.Errorf("%w: FusionThresholdBytes is %d, must be >= 0", ErrInvalid, c.FusionThresholdBytes)
	case c.CycleTime <= 0:
		return fmt.Errorf("%w: CycleTime is %v, must be > 0", ErrInvalid, c.CycleTime)
	case c.BatchWindow < 0 || c.BatchWindow > c.CycleTime:
		return fmt.Errorf("%w: BatchWindow is %v, must be between 0 and CycleTime (%v)", ErrInvalid, c.BatchWindow, c.CycleTime)
	case c.CacheCapacity < 0:
		return fmt.Errorf("%w: CacheCapacity is %d, must be >= 0", ErrInvalid, c.CacheCapacity)
	case !c.StallCheckDisabled && c.StallWarningTime <= 0:
		return fmt.Errorf("%w: StallWarningTime is %v, must be > 0 (or disable the stall check)", ErrInvalid, c.StallWarningTime)
	case c.StallShutdownTime < 0:
		return fmt.Errorf("%w: StallShutdownTime is %v, must be >= 0", ErrInvalid, c.StallShutdownTime)
	case c.StallShutdownTime > 0 && c.StallShutdownTime < c.StallWarningTime:
		return fmt.Errorf("%w: StallShutdownTime (%v) is shorter than StallWarningTime (%v)", ErrInvalid, c.StallShutdownTime, c.StallWarningTime)
	case c.SegmentBytes != 0 && (c.SegmentBytes < 4<<10 || c.SegmentBytes > 1<<20):
		return fmt.Errorf("%w: SegmentBytes is %d, must be 0 (auto) or between 4 KiB and 1 MiB", ErrInvalid, c.SegmentBytes)
	case c.ProgressTimeout < 0:
		return fmt.Errorf("%w: ProgressTimeout is %v, must be >= 0", ErrInvalid, c.ProgressTimeout)
	case c.AllreduceAlgorithm != "" && !slices.Contains(Algorithms, c.AllreduceAlgorithm):
		return fmt.Errorf("%w: AllreduceAlgorithm is %q, must be one of %s", ErrInvalid, c.AllreduceAlgorithm, strings.Join(Algorithms, ", "))
	case c.SmallBytes < 0:
		return fmt.Errorf("%w: SmallBytes is %d, must be >= 0 (0 for the default)", ErrInvalid, c.SmallBytes)
	case c.SingleCopyMaxBytes < 0:
		return fmt.Errorf("%w: SingleCopyMaxBytes is %d, must be >= 0 (0 for the machine's default; DisableSingleCopy turns it off)", ErrInvalid, c.SingleCopyMaxBytes)
	}
	return nil
}

// FromEnv applies the GOROVOD_* variables found through getenv (os.Getenv
// when nil) on top of c. Errors name the variable and its value.
func (c Config) FromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var err error
	set := func(name string, apply func(string) error) {
		v := strings.TrimSpace(getenv(name))
		if v == "" || err != nil {
			return
		}
		if e := apply(v); e != nil {
			err = fmt.Errorf("%w: %s=%q: %v", ErrInvalid, name, v, e)
		}
	}
	set(EnvFusionThreshold, func(v string) error { return parseInt64(v, &c.FusionThresholdBytes) })
	set(EnvCycleTime, func(v string) error { return parseDuration(v, time.Millisecond, &c.CycleTime) })
	set(EnvBatchWindow, func(v string) error { return parseDuration(v, time.Microsecond, &c.BatchWindow) })
	set(EnvCacheCapacity, func(v string) error { return parseInt(v, &c.CacheCapacity) })
	set(EnvStallCheckTime, func(v string) error { return parseDuration(v, time.Second, &c.StallWarningTime) })
	set(EnvStallShutdownTime, func(v string) error { return parseDuration(v, time.Second, &c.StallShutdownTime) })
	set(EnvStallDisable, func(v string) error { return parseBool(v, &c.StallCheckDisabled) })
	set(EnvTimeline, func(v string) error { c.TimelineFile = v; return nil })
	set(EnvTimelineMarkCycles, func(v string) error { return parseBool(v, &c.TimelineMarkCycles) })
	set(EnvDisableShm, func(v string) error { return parseBool(v, &c.DisableShm) })
	set(EnvSegmentBytes, func(v string) error { return parseInt(v, &c.SegmentBytes) })
	set(EnvMetricsAddr, func(v string) error { c.MetricsAddr = v; return nil })
	set(EnvHierarchical, func(v string) error { return parseBool(v, &c.HierarchicalAllreduce) })
	set(EnvProgressTimeout, func(v string) error { return parseDuration(v, time.Second, &c.ProgressTimeout) })
	set(EnvAlgorithm, func(v string) error { c.AllreduceAlgorithm = strings.ToLower(v); return nil })
	set(EnvSmallBytes, func(v string) error { return parseInt(v, &c.SmallBytes) })
	set(EnvDisableSingleCopy, func(v string) error { return parseBool(v, &c.DisableSingleCopy) })
	set(EnvSingleCopyMax, func(v string) error { return parseInt(v, &c.SingleCopyMaxBytes) })
	set(EnvDisableShared, func(v string) error { return parseBool(v, &c.DisableSharedBuffers) })
	if err != nil {
		return c, err
	}
	if c.BatchWindow > c.CycleTime {
		c.BatchWindow = c.CycleTime
	}
	return c, c.Validate()
}

func parseInt64(v string, dst *int64) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return errors.New("not an integer")
	}
	*dst = n
	return nil
}

func parseInt(v string, dst *int) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not an integer")
	}
	*dst = n
	return nil
}

// parseDuration accepts a Go duration ("1.5ms") or a bare number in unit.
func parseDuration(v string, unit time.Duration, dst *time.Duration) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*dst = time.Duration(f * float64(unit))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("not a duration (want e.g. 500ms, 2s, or a number)")
	}
	*dst = d
	return nil
}

func parseBool(v string, dst *bool) error {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		*dst = true
	case "0", "false", "no", "off":
		*dst = false
	default:
		return errors.New("not a boolean (want 1/0, true/false)")
	}
	return nil
}
