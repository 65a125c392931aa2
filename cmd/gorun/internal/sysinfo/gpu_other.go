//go:build !cgo || !linux

package sysinfo

// probeGPUs without cgo: go-nvml needs it to dlopen NVML.
func probeGPUs() GPUs {
	return GPUs{Reason: "NVML unavailable: built without cgo (CGO_ENABLED=0)"}
}
