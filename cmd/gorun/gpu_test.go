package main

import (
	"slices"
	"testing"

	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
)

func TestRemoteGPUEnv(t *testing.T) {
	twoGPUs := sysinfo.GPUs{Available: true, Devices: []sysinfo.GPU{{Index: 0, UUID: "GPU-a"}, {Index: 1, UUID: "GPU-b"}}}
	for _, tc := range []struct {
		name string
		env  []string
		gpus sysinfo.GPUs
		want []string
	}{
		{"device mode", []string{"GOROVOD_LOCAL_RANK=1"}, twoGPUs, []string{"GOROVOD_DEVICE=1"}},
		{"visible mode", []string{"GOROVOD_LOCAL_RANK=1", "GOROVOD_GPU_MODE=visible"}, twoGPUs,
			[]string{"CUDA_VISIBLE_DEVICES=GPU-b", "GOROVOD_DEVICE=0"}},
		{"explicit map, no NVML", []string{"GOROVOD_LOCAL_RANK=0", "GOROVOD_GPU_MAP=3,2"}, sysinfo.GPUs{}, []string{"GOROVOD_DEVICE=3"}},
		{"no GPUs", []string{"GOROVOD_LOCAL_RANK=0"}, sysinfo.GPUs{}, nil},
		{"no local rank", nil, twoGPUs, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := gpuEnvFor(slices.Clone(tc.env), tc.gpus)[len(tc.env):]
			if !slices.Equal(got, tc.want) {
				t.Errorf("added %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSummarizeGPUs(t *testing.T) {
	gpus, nccl := summarizeGPUs(
		sysinfo.GPUs{Available: true, DriverVersion: "550.54.15", Devices: []sysinfo.GPU{{Index: 0, Name: "H100"}, {Index: 1, Name: "H100"}}},
		sysinfo.NCCL{Available: true, Version: "2.21.5"})
	if gpus != "2 (driver 550.54.15): 0 H100, 1 H100" || nccl != "2.21.5" {
		t.Errorf("summary = %q, %q", gpus, nccl)
	}
	gpus, nccl = summarizeGPUs(sysinfo.GPUs{Reason: "NVML unavailable: no driver"}, sysinfo.NCCL{Reason: "libnccl.so.2: not found"})
	if gpus != "none: NVML unavailable: no driver" || nccl != "unavailable: libnccl.so.2: not found" {
		t.Errorf("summary without GPUs = %q, %q", gpus, nccl)
	}
}
