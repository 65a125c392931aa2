//go:build cgo && linux

package sysinfo

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// mockNVML is go-nvml's mock with n GPUs; initErr makes nvmlInit fail.
func mockNVML(n int, initErr nvml.Return) *mock.Interface {
	devs := make([]nvml.Device, n)
	for i := range devs {
		devs[i] = &mock.Device{
			GetNameFunc:                  func() (string, nvml.Return) { return fmt.Sprintf("Mock GPU %d", i), nvml.SUCCESS },
			GetUUIDFunc:                  func() (string, nvml.Return) { return fmt.Sprintf("GPU-mock-%d", i), nvml.SUCCESS },
			GetMemoryInfoFunc:            func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 80 << 30}, nvml.SUCCESS },
			GetCudaComputeCapabilityFunc: func() (int, int, nvml.Return) { return 9, 0, nvml.SUCCESS },
			GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) {
				var p nvml.PciInfo
				for j, c := range []byte(fmt.Sprintf("00000000:%02X:00.0", 0x10+i)) {
					p.BusId[j] = int8(c)
				}
				return p, nvml.SUCCESS
			},
		}
	}
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return initErr },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "580.65.06", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return n, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= n {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

func TestProbeWithMockNVML(t *testing.T) {
	g := probeWith(mockNVML(4, nvml.SUCCESS))
	if !g.Available || g.DriverVersion != "580.65.06" || len(g.Devices) != 4 {
		t.Fatalf("probeWith(mock) = %+v", g)
	}
	want := GPU{Index: 3, Name: "Mock GPU 3", UUID: "GPU-mock-3", MemoryBytes: 80 << 30, ComputeCapability: "9.0", PCIBusID: "00000000:13:00.0"}
	if g.Devices[3] != want {
		t.Errorf("device 3 = %+v, want %+v", g.Devices[3], want)
	}
	g = probeWith(mockNVML(0, nvml.ERROR_DRIVER_NOT_LOADED))
	if g.Available || !strings.HasPrefix(g.Reason, "NVML unavailable: nvmlInit: ") {
		t.Errorf("no driver: %+v, want unavailable with nvmlInit's reason", g)
	}
}

// TestLocalRanksMapToGPUs checks the documented mapping (docs/gpu.md) on a
// host whose GPUs come from go-nvml's mock.
func TestLocalRanksMapToGPUs(t *testing.T) {
	four := probeWith(mockNVML(4, nvml.SUCCESS))
	none := probeWith(mockNVML(0, nvml.ERROR_DRIVER_NOT_LOADED))
	for _, tc := range []struct {
		name      string
		env       map[string]string
		gpus      GPUs
		localSize int
		want      [][]string // per local rank: the variables added
	}{
		{"default device mode", nil, four, 4, [][]string{
			{"GOROVOD_DEVICE=0"}, {"GOROVOD_DEVICE=1"}, {"GOROVOD_DEVICE=2"}, {"GOROVOD_DEVICE=3"}}},
		{"more ranks than GPUs share round-robin", nil, probeWith(mockNVML(2, nvml.SUCCESS)), 3, [][]string{
			{"GOROVOD_DEVICE=0"}, {"GOROVOD_DEVICE=1"}, {"GOROVOD_DEVICE=0"}}},
		{"visible mode hands out UUIDs", map[string]string{EnvGPUMode: "visible"}, four, 2, [][]string{
			{"CUDA_VISIBLE_DEVICES=GPU-mock-0", "GOROVOD_DEVICE=0"}, {"CUDA_VISIBLE_DEVICES=GPU-mock-1", "GOROVOD_DEVICE=0"}}},
		{"visible mode within gorun's CUDA_VISIBLE_DEVICES", map[string]string{EnvGPUMode: "visible", EnvVisible: "2,3"}, four, 2, [][]string{
			{"CUDA_VISIBLE_DEVICES=2", "GOROVOD_DEVICE=0"}, {"CUDA_VISIBLE_DEVICES=3", "GOROVOD_DEVICE=0"}}},
		{"device mode counts what CUDA_VISIBLE_DEVICES shows", map[string]string{EnvVisible: "1,3"}, four, 3, [][]string{
			{"GOROVOD_DEVICE=0"}, {"GOROVOD_DEVICE=1"}, {"GOROVOD_DEVICE=0"}}},
		{"explicit map", map[string]string{EnvGPUMap: "3,1"}, four, 2, [][]string{
			{"GOROVOD_DEVICE=3"}, {"GOROVOD_DEVICE=1"}}},
		{"mode none", map[string]string{EnvGPUMode: "none"}, four, 2, [][]string{nil, nil}},
		{"no driver: nothing set", nil, none, 2, [][]string{nil, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := PlanGPUs(func(k string) string { return tc.env[k] }, tc.gpus)
			if err != nil {
				t.Fatal(err)
			}
			for r := 0; r < tc.localSize; r++ {
				base := []string{"GOROVOD_LOCAL_RANK=x"}
				got := plan.Env(slices.Clone(base), r)[len(base):]
				if !slices.Equal(got, tc.want[r]) {
					t.Errorf("local rank %d: %q, want %q", r, got, tc.want[r])
				}
			}
		})
	}
}

func TestPlanGPUsRejects(t *testing.T) {
	four := probeWith(mockNVML(4, nvml.SUCCESS))
	for _, env := range []map[string]string{
		{EnvGPUMode: "all"},
		{EnvGPUMap: "0,GPU-x"}, // device mode wants ordinals
	} {
		if _, err := PlanGPUs(func(k string) string { return env[k] }, four); err == nil {
			t.Errorf("PlanGPUs(%v) accepted", env)
		}
	}
}
