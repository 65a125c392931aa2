//go:build linux

package ops

import (
	"syscall"
	"time"
)

// osYield gives the core to another runnable thread of any process
// (runtime.Gosched only yields to goroutines of this one): what keeps ranks
// that outnumber cores from starving the peer they wait for.
func osYield() { _, _, _ = syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

// osNap sleeps the thread for d (not rounded up to the Go timer's
// granularity), giving the core away meanwhile.
func osNap(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
