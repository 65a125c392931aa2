package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/launch"
)

// remoteGPUEnv maps a worker started on a remote host to one of that
// host's GPUs, as gorun does for its own host's workers (docs/gpu.md): the
// plan comes from the worker's environment (GOROVOD_GPU_MODE and
// GOROVOD_GPU_MAP travel with the job, CUDA_VISIBLE_DEVICES is the host's)
// and the GPUs NVML lists there.
func remoteGPUEnv(workerEnv []string) []string {
	return gpuEnvFor(workerEnv, sysinfo.LocalGPUs())
}

func gpuEnvFor(workerEnv []string, gpus sysinfo.GPUs) []string {
	get := func(key string) string {
		v := ""
		for _, kv := range workerEnv { // the last entry wins, as in exec
			if val, ok := strings.CutPrefix(kv, key+"="); ok {
				v = val
			}
		}
		return v
	}
	localRank, err := strconv.Atoi(get(env.LocalRank))
	if err != nil {
		return workerEnv
	}
	plan, err := sysinfo.PlanGPUs(get, gpus)
	if err != nil {
		return workerEnv // the launcher checked the same variables before starting the job
	}
	return plan.Env(workerEnv, localRank)
}

// describeGPUs fills the remote preflight's GPU and NCCL lines for this
// host, so the launcher's log lists each host's GPUs and NCCL version.
func describeGPUs(r *launch.ProbeResult) {
	r.GPUs, r.NCCL = summarizeGPUs(sysinfo.LocalGPUs(), probeNCCL())
}

func summarizeGPUs(g sysinfo.GPUs, n sysinfo.NCCL) (gpus, nccl string) {
	switch {
	case g.Available:
		names := make([]string, len(g.Devices))
		for i, d := range g.Devices {
			names[i] = fmt.Sprintf("%d %s", d.Index, d.Name)
		}
		gpus = fmt.Sprintf("%d (driver %s): %s", len(g.Devices), g.DriverVersion, strings.Join(names, ", "))
	default:
		gpus = "none: " + g.Reason
	}
	if n.Available {
		nccl = n.Version
	} else {
		nccl = "unavailable: " + n.Reason
	}
	return gpus, nccl
}
