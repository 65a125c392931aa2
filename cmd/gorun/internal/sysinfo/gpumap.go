package sysinfo

import (
	"fmt"
	"strconv"
	"strings"
)

// Environment variables of the GPU mapping. gorun reads the first three
// from its own environment and sets GOROVOD_DEVICE (and, in visible mode,
// CUDA_VISIBLE_DEVICES) for each worker.
const (
	// EnvGPUMode selects how local ranks map to GPUs: "device" (default),
	// "visible" or "none".
	EnvGPUMode = "GOROVOD_GPU_MODE"
	// EnvGPUMap is an explicit comma-separated list, one entry per local
	// rank: a CUDA ordinal in device mode, a CUDA_VISIBLE_DEVICES entry
	// (index or UUID) in visible mode.
	EnvGPUMap = "GOROVOD_GPU_MAP"
	// EnvVisible is CUDA's own list of the GPUs a process may see.
	EnvVisible = "CUDA_VISIBLE_DEVICES"
	// EnvDevice is the CUDA ordinal a worker runs its device tensors on.
	EnvDevice = "GOROVOD_DEVICE"
)

// GPUMode is how gorun maps local ranks to GPUs.
type GPUMode string

const (
	// GPUModeDevice leaves CUDA_VISIBLE_DEVICES alone and tells local rank
	// r to use CUDA ordinal r mod (number of GPUs) through GOROVOD_DEVICE.
	GPUModeDevice GPUMode = "device"
	// GPUModeVisible gives local rank r one GPU through its own
	// CUDA_VISIBLE_DEVICES (entry r mod n of gorun's CUDA_VISIBLE_DEVICES,
	// else the r mod n-th GPU NVML lists, by UUID) and GOROVOD_DEVICE=0.
	GPUModeVisible GPUMode = "visible"
	// GPUModeNone sets nothing.
	GPUModeNone GPUMode = "none"
)

// GPUPlan says which GPU each local rank of one host uses.
type GPUPlan struct {
	Mode GPUMode
	// IDs are the GPUs to hand out in order: CUDA ordinals ("0", "1", ...)
	// in device mode, CUDA_VISIBLE_DEVICES entries in visible mode.
	IDs []string
}

// PlanGPUs makes the plan for this host from gorun's environment and the
// GPUs NVML found. With no GPU (no driver, CPU-only host) the plan is
// GPUModeNone and workers' environments are left as they are.
func PlanGPUs(getenv func(string) string, gpus GPUs) (GPUPlan, error) {
	mode := GPUMode(strings.TrimSpace(getenv(EnvGPUMode)))
	switch mode {
	case "":
		mode = GPUModeDevice
	case GPUModeDevice, GPUModeVisible, GPUModeNone:
	default:
		return GPUPlan{}, fmt.Errorf("%s=%q: want device, visible or none", EnvGPUMode, mode)
	}
	if mode == GPUModeNone {
		return GPUPlan{Mode: GPUModeNone}, nil
	}
	if explicit := splitList(getenv(EnvGPUMap)); len(explicit) > 0 {
		if mode == GPUModeDevice {
			for _, id := range explicit {
				if n, err := strconv.Atoi(id); err != nil || n < 0 {
					return GPUPlan{}, fmt.Errorf("%s entry %q: in device mode each entry is a CUDA ordinal", EnvGPUMap, id)
				}
			}
		}
		return GPUPlan{Mode: mode, IDs: explicit}, nil
	}
	visible := splitList(getenv(EnvVisible))
	var ids []string
	switch {
	case len(visible) > 0 && mode == GPUModeVisible:
		ids = visible
	case len(visible) > 0: // device mode: ordinals within what CUDA will show
		for i := range visible {
			ids = append(ids, strconv.Itoa(i))
		}
	case mode == GPUModeVisible:
		for _, d := range gpus.Devices {
			id := d.UUID // NVML's order is not CUDA's: a UUID names the same GPU for both
			if id == "" {
				id = strconv.Itoa(d.Index)
			}
			ids = append(ids, id)
		}
	default:
		for i := range gpus.Devices {
			ids = append(ids, strconv.Itoa(i))
		}
	}
	if len(ids) == 0 {
		return GPUPlan{Mode: GPUModeNone}, nil
	}
	return GPUPlan{Mode: mode, IDs: ids}, nil
}

// Env returns workerEnv with local rank's GPU set. Local ranks beyond the
// number of GPUs share them round-robin.
func (p GPUPlan) Env(workerEnv []string, localRank int) []string {
	if p.Mode == GPUModeNone || len(p.IDs) == 0 || localRank < 0 {
		return workerEnv
	}
	id := p.IDs[localRank%len(p.IDs)]
	if p.Mode == GPUModeVisible {
		return append(workerEnv, EnvVisible+"="+id, EnvDevice+"=0")
	}
	return append(workerEnv, EnvDevice+"="+id)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// LocalGPUs lists this host's GPUs through NVML (Available false, with the
// reason, without a driver or without cgo).
func LocalGPUs() GPUs { return probeGPUs() }
