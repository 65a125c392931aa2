package sysinfo

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/cpu"

	"github.com/gorovod/gorovod/internal/transport/cma"
)

// Report is what Probe found. Fields are plain values so that callers can
// print it (Write), marshal it as JSON, or test parts of it.
type Report struct {
	Hostname   string      `json:"hostname"`
	OS         string      `json:"os"`
	Arch       string      `json:"arch"`
	GoVersion  string      `json:"go_version"`
	CPU        CPU         `json:"cpu"`
	Transports []Transport `json:"transports"`
	NCCL       NCCL        `json:"nccl"`
	GPU        GPUs        `json:"gpu"`
	Interfaces []Interface `json:"interfaces"`
	// Incomplete says why probing stopped early (the context ended); empty
	// when every probe ran.
	Incomplete string `json:"incomplete,omitempty"`
}

// CPU is the processor as the reduction kernels see it.
type CPU struct {
	Cores      int       `json:"cores"`      // runtime.NumCPU: usable logical CPUs
	GOMAXPROCS int       `json:"gomaxprocs"` //
	Features   []Feature `json:"features"`   // SIMD extensions relevant to the kernels, present or not
}

// Feature is one CPU extension.
type Feature struct {
	Name    string `json:"name"`
	Present bool   `json:"present"`
}

// Has reports whether the named feature was detected.
func (c CPU) Has(name string) bool {
	for _, f := range c.Features {
		if f.Name == name {
			return f.Present
		}
	}
	return false
}

// Transport is one data-plane transport and whether it works here.
type Transport struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Detail    string `json:"detail"` // what was checked, or why it fails
}

// NCCL is what loading the NCCL library found.
type NCCL struct {
	Available      bool   `json:"available"`
	Version        string `json:"version,omitempty"`
	Path           string `json:"path,omitempty"`
	CUDARTPath     string `json:"cudart_path,omitempty"`
	RuntimeVersion int    `json:"cuda_runtime_version,omitempty"` // e.g. 12040
	CUDADevices    int    `json:"cuda_devices,omitempty"`
	Reason         string `json:"reason,omitempty"` // why it is unavailable
}

// GPUs is what NVML reports.
type GPUs struct {
	Available     bool   `json:"available"` // NVML loaded and initialised
	DriverVersion string `json:"driver_version,omitempty"`
	Devices       []GPU  `json:"devices,omitempty"`
	Reason        string `json:"reason,omitempty"` // "NVML unavailable: ..." when not
}

// GPU is one device.
type GPU struct {
	Index             int    `json:"index"`
	Name              string `json:"name"`
	UUID              string `json:"uuid"`
	MemoryBytes       uint64 `json:"memory_bytes"`
	ComputeCapability string `json:"compute_capability"`
	PCIBusID          string `json:"pci_bus_id,omitempty"`
}

// Interface is a network interface with its addresses.
type Interface struct {
	Name     string   `json:"name"`
	Up       bool     `json:"up"`
	Loopback bool     `json:"loopback"`
	MTU      int      `json:"mtu"`
	Addrs    []string `json:"addrs"` // CIDR notation
}

// Probe inspects the machine: CPU, transports, NCCL, GPUs and network
// interfaces. It never fails; what cannot be found is reported with the
// reason. ctx is checked between probes. ncclProbe reports the NCCL library
// (the caller owns the GPU binding; nil: reported as not probed).
func Probe(ctx context.Context, ncclProbe func() NCCL) Report {
	if ncclProbe == nil {
		ncclProbe = func() NCCL { return NCCL{Reason: "nccl: not probed"} }
	}
	return probe(ctx, prober{shmDir: "/dev/shm", nccl: ncclProbe, gpus: probeGPUs})
}

// prober holds the parts of Probe that tests replace.
type prober struct {
	shmDir string
	nccl   func() NCCL
	gpus   func() GPUs
}

func probe(ctx context.Context, p prober) Report {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown (" + err.Error() + ")"
	}
	r := Report{
		Hostname:  host,
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		GoVersion: runtime.Version(),
		CPU:       probeCPU(),
	}
	steps := []struct {
		name string
		run  func()
	}{
		{"transports", func() { r.Transports = []Transport{probeTCP(), probeShm(p.shmDir), probeCMA(), probeShared()} }},
		{"nccl", func() { r.NCCL = p.nccl() }},
		{"gpus", func() { r.GPU = p.gpus() }},
		{"interfaces", func() { r.Interfaces = probeInterfaces() }},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			r.Incomplete = fmt.Sprintf("stopped before %s: %v", s.name, err)
			break
		}
		s.run()
	}
	return r
}

func probeCPU() CPU {
	c := CPU{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0)}
	switch runtime.GOARCH {
	case "amd64", "386":
		c.Features = []Feature{
			{"sse4.1", cpu.X86.HasSSE41},
			{"avx", cpu.X86.HasAVX},
			{"avx2", cpu.X86.HasAVX2},
			{"fma", cpu.X86.HasFMA},
			{"avx512f", cpu.X86.HasAVX512F},
			{"avx512bw", cpu.X86.HasAVX512BW},
			{"avx512vl", cpu.X86.HasAVX512VL},
			{"avx512bf16", cpu.X86.HasAVX512BF16},
		}
	case "arm64":
		c.Features = []Feature{
			{"asimd", cpu.ARM64.HasASIMD},
			{"asimdhp", cpu.ARM64.HasASIMDHP},
			{"fphp", cpu.ARM64.HasFPHP},
			{"sve", cpu.ARM64.HasSVE},
		}
	}
	return c
}

// probeCMA reports whether the single-copy path within a host
// (cross-memory attach, internal/transport/cma) can work for this user.
func probeCMA() Transport {
	ok, detail := cma.Check()
	return Transport{Name: "cma", Available: ok, Detail: "single copy within a host: " + detail}
}

func probeTCP() Transport {
	t := Transport{Name: "tcp"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Detail = "cannot listen on loopback: " + err.Error()
		return t
	}
	ln.Close()
	t.Available, t.Detail = true, "loopback listen ok"
	return t
}

func probeInterfaces() []Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return []Interface{{Name: "error: " + err.Error()}}
	}
	out := make([]Interface, 0, len(ifs))
	for _, i := range ifs {
		it := Interface{
			Name:     i.Name,
			Up:       i.Flags&net.FlagUp != 0,
			Loopback: i.Flags&net.FlagLoopback != 0,
			MTU:      i.MTU,
		}
		addrs, err := i.Addrs()
		if err != nil {
			it.Addrs = []string{"error: " + err.Error()}
		}
		for _, a := range addrs {
			it.Addrs = append(it.Addrs, a.String())
		}
		out = append(out, it)
	}
	return out
}

// cudaVersion formats cudaRuntimeGetVersion's 12040 as "12.4".
func cudaVersion(v int) string {
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}

// trimReason drops the package prefix errors carry, for display.
func trimReason(s string) string {
	return strings.TrimPrefix(s, "nccl: unavailable: ")
}
