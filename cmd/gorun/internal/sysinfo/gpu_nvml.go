//go:build cgo && linux

package sysinfo

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/dl"
	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

const nvmlLibrary = "libnvidia-ml.so.1"

// probeGPUs lists GPUs through NVML, which go-nvml dlopens at run time.
func probeGPUs() GPUs { return probeGPUsFrom(nvmlLibrary) }

func probeGPUsFrom(path string) GPUs {
	// nvml.Init only says "library not found"; dlopen it first for the
	// loader's reason.
	lib := dl.New(path, dl.RTLD_LAZY|dl.RTLD_LOCAL)
	if err := lib.Open(); err != nil {
		return GPUs{Reason: "NVML unavailable: " + err.Error()}
	}
	defer lib.Close()

	n := nvml.New(nvml.WithLibraryPath(path))
	if r := n.Init(); r != nvml.SUCCESS {
		return GPUs{Reason: "NVML unavailable: nvmlInit: " + r.Error()}
	}
	defer n.Shutdown()
	g := GPUs{Available: true}
	if v, r := n.SystemGetDriverVersion(); r == nvml.SUCCESS {
		g.DriverVersion = v
	}
	count, r := n.DeviceGetCount()
	if r != nvml.SUCCESS {
		g.Reason = "nvmlDeviceGetCount: " + r.Error()
		return g
	}
	for i := 0; i < count; i++ {
		d, r := n.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			g.Devices = append(g.Devices, GPU{Index: i, Name: "error: " + r.Error()})
			continue
		}
		gpu := GPU{Index: i}
		gpu.Name, _ = d.GetName()
		gpu.UUID, _ = d.GetUUID()
		if m, r := d.GetMemoryInfo(); r == nvml.SUCCESS {
			gpu.MemoryBytes = m.Total
		}
		if major, minor, r := d.GetCudaComputeCapability(); r == nvml.SUCCESS {
			gpu.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
		}
		if pci, r := d.GetPciInfo(); r == nvml.SUCCESS {
			gpu.PCIBusID = cString(pci.BusId[:])
		}
		g.Devices = append(g.Devices, gpu)
	}
	return g
}

func cString[T ~int8 | ~uint8](b []T) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
