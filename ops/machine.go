package ops

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Bounds of the machine-derived single-copy limit.
const (
	minSingleCopyMax     = 2 << 20
	maxSingleCopyMax     = 32 << 20
	unknownSingleCopyMax = 8 << 20
)

// DefaultSingleCopyMaxBytes is the largest message Auto moves by single copy
// on this machine: half the last-level cache (clamped to 2..32 MiB; 8 MiB
// when the cache size is unknown). Reading the peer's buffer wins while both
// ranks' buffers stay in the shared cache; past that the kernel's page
// pinning and the cold reads cost more than the second copy through
// cache-resident slots (the measurements are in docs/performance.md).
// Ranks on one host read the same value; the single-copy probe still
// agrees on the smallest across ranks.
func DefaultSingleCopyMaxBytes() int { return defaultSingleCopyMax() }

var defaultSingleCopyMax = sync.OnceValue(func() int {
	return singleCopyMaxFor(lastLevelCache("/sys/devices/system/cpu/cpu0/cache"))
})

func singleCopyMaxFor(llc int) int {
	if llc <= 0 {
		return unknownSingleCopyMax
	}
	return min(max(llc/2, minSingleCopyMax), maxSingleCopyMax)
}

// lastLevelCache reads the size in bytes of the highest-level cache of one
// CPU from sysfs (dir/index*/level and size, e.g. "32768K"); 0 if unknown.
func lastLevelCache(dir string) int {
	idx, _ := filepath.Glob(filepath.Join(dir, "index*"))
	level, size := 0, 0
	for _, d := range idx {
		lb, err1 := os.ReadFile(filepath.Join(d, "level"))
		sb, err2 := os.ReadFile(filepath.Join(d, "size"))
		if err1 != nil || err2 != nil {
			continue
		}
		l, err := strconv.Atoi(strings.TrimSpace(string(lb)))
		if err != nil || l < level {
			continue
		}
		if n := parseCacheSize(strings.TrimSpace(string(sb))); n > 0 {
			level, size = l, n
		}
	}
	return size
}

func parseCacheSize(s string) int {
	mult := 1
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0
	}
	return n * mult
}
