package launch

import (
	"strconv"
	"strings"

	"github.com/gorovod/gorovod/internal/env"
)

// WithCPUBinding returns workerEnv with GOROVOD_CPU_LIST set to the
// worker's share of the host's allowed cpus (local rank i of n gets the
// i-th of n equal runs) when workerEnv asks for it (GOROVOD_BIND_TO=core,
// gorun --bind-to core, mpirun's binding): a bound worker keeps its caches
// and never lands on its peer's core, but on a shared or busy host the
// kernel's placement does better (measured on the 2-core VM: neither won
// at 64 KiB-16 MiB), so gorun leaves workers unbound by default, as
// horovodrun does. Unchanged when workerEnv sets the list already, the
// host's workers outnumber its cpus (binding would stack them) or the
// worker is alone on its host. allowed is the host's own (AllowedCPUs
// there), so a remote worker's share is computed on its host.
func WithCPUBinding(workerEnv []string, allowed []int) []string {
	localRank, localSize, bind := -1, 1, false
	for _, kv := range workerEnv {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case env.CPUList:
			return workerEnv
		case env.BindTo:
			bind = v == "core"
		case env.LocalRank:
			localRank = atoiOr(v, -1)
		case env.LocalSize:
			localSize = atoiOr(v, 1)
		}
	}
	if !bind || localSize <= 1 || localSize > len(allowed) || localRank < 0 || localRank >= localSize {
		return workerEnv
	}
	share := len(allowed) / localSize
	cpus := allowed[localRank*share : (localRank+1)*share]
	list := make([]string, len(cpus))
	for i, c := range cpus {
		list[i] = strconv.Itoa(c)
	}
	return append(workerEnv, env.CPUList+"="+strings.Join(list, ","))
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}
