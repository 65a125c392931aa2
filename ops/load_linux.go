//go:build linux

package ops

import (
	"bytes"
	"math/bits"
	"os"
	"runtime"
	"strconv"
)

// hostLoad samples how many tasks of the host are runnable (the fourth
// field of /proc/loadavg, "runnable/total"), once every loadEvery ops: more
// than the host has cores means some wait for one. Two of the last three
// samples must say so (one is a blip: a kernel thread, a short process).
type hostLoad struct {
	f    *os.File
	n    int   // ops since the last sample
	last uint8 // the last three samples' verdicts, one bit each
	buf  [128]byte
}

// loadEvery is how many ops reuse a sample: reading it costs a few
// microseconds, a 4 KiB op about two.
const loadEvery = 128

func newHostLoad() *hostLoad {
	f, err := os.Open("/proc/loadavg")
	if err != nil {
		return &hostLoad{n: -1} // unknown: never oversubscribed
	}
	return &hostLoad{f: f, n: loadEvery}
}

// oversubscribed reports whether, at two of the last three samples, more
// tasks were runnable than the host has cores.
func (h *hostLoad) oversubscribed() bool {
	if h.f == nil || h.n < 0 {
		return false
	}
	if h.n++; h.n >= loadEvery {
		h.n = 0
		if k, _ := h.f.ReadAt(h.buf[:], 0); k > 0 {
			over := uint8(0)
			if runnable(h.buf[:k]) > runtime.NumCPU() {
				over = 1
			}
			h.last = (h.last<<1 | over) & 7
		}
	}
	return bits.OnesCount8(h.last) >= 2
}

// runnable parses the runnable count out of /proc/loadavg's text; 0 when
// it is not there.
func runnable(b []byte) int {
	f := bytes.Fields(b)
	if len(f) < 4 {
		return 0
	}
	r, _, _ := bytes.Cut(f[3], []byte("/"))
	n, err := strconv.Atoi(string(r))
	if err != nil {
		return 0
	}
	return n
}

// close releases the file; an op sampling meanwhile reads an error and
// keeps its last verdict (os.File allows the two at once).
func (h *hostLoad) close() {
	if h != nil && h.f != nil {
		_ = h.f.Close()
	}
}
