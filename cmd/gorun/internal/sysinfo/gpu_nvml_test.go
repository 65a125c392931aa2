//go:build cgo && linux

package sysinfo

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestProbeGPUsFakeNVML(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build the fake NVML")
	}
	lib := filepath.Join(t.TempDir(), "libnvidia-ml-fake.so")
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-o", lib, "testdata/fake_nvml.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	g := probeGPUsFrom(lib)
	if !g.Available || g.Reason != "" || g.DriverVersion != "550.54.15" || len(g.Devices) != 2 {
		t.Fatalf("probeGPUsFrom(fake) = %+v", g)
	}
	want := []GPU{
		{Index: 0, Name: "Fake GPU 0", UUID: "GPU-fake-0", MemoryBytes: 16 << 30, ComputeCapability: "8.0", PCIBusID: "00000000:07:00.0"},
		{Index: 1, Name: "Fake GPU 1", UUID: "GPU-fake-1", MemoryBytes: 32 << 30, ComputeCapability: "8.1", PCIBusID: "00000000:08:00.0"},
	}
	for i, w := range want {
		if g.Devices[i] != w {
			t.Errorf("device %d = %+v, want %+v", i, g.Devices[i], w)
		}
	}
}

func TestProbeGPUsMissingNVML(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	g := probeGPUsFrom(missing)
	if g.Available || !strings.HasPrefix(g.Reason, "NVML unavailable: ") || !strings.Contains(g.Reason, missing) {
		t.Errorf("probeGPUsFrom(missing) = %+v, want \"NVML unavailable: <reason naming the file>\"", g)
	}
}
