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
