package main

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Bounds of -np without a host list (all workers on this machine).
const (
	workersPerCore = 64 // far past any useful oversubscription
	minWorkerLimit = 256
	// threadsPerWorker is what a Go worker process costs against
	// RLIMIT_NPROC, which counts threads: the runtime's Ms plus the
	// transports' blocking calls.
	threadsPerWorker = 16
)

// localWorkerLimit is the largest -np gorun starts on this machine alone,
// and why: a multiple of the cores, lowered to what the user's process
// limit (RLIMIT_NPROC) leaves room for.
func localWorkerLimit() (int, string) {
	limit := max(minWorkerLimit, workersPerCore*runtime.NumCPU())
	why := fmt.Sprintf("%d per core on %d cores", workersPerCore, runtime.NumCPU())
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		if byNproc := int(rl.Cur / threadsPerWorker); byNproc < limit {
			limit = max(1, byNproc)
			why = fmt.Sprintf("the process limit RLIMIT_NPROC (ulimit -u) is %d, and a worker needs about %d threads", rl.Cur, threadsPerWorker)
		}
	}
	return limit, why
}
