package sysinfo

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Write prints the report for people (gorun --check).
func (r Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }

	p("Gorovod check on %s (%s/%s, %s)\n", r.Hostname, r.OS, r.Arch, r.GoVersion)
	p("CPU:\t%d cores, GOMAXPROCS %d\n", r.CPU.Cores, r.CPU.GOMAXPROCS)
	if len(r.CPU.Features) > 0 {
		fs := make([]string, len(r.CPU.Features))
		for i, f := range r.CPU.Features {
			fs[i] = f.Name + " " + yesNo(f.Present)
		}
		p("CPU features:\t%s\n", strings.Join(fs, ", "))
	}

	p("Transports:\n")
	for _, t := range r.Transports {
		p("  %s\t%s\t%s\n", t.Name, availability(t.Available), t.Detail)
	}

	if r.NCCL.Available {
		p("NCCL:\t%s from %s\n", r.NCCL.Version, orUnknown(r.NCCL.Path))
		rt := "unknown version"
		if r.NCCL.RuntimeVersion > 0 {
			rt = cudaVersion(r.NCCL.RuntimeVersion)
		}
		p("CUDA runtime:\t%s from %s, %d devices\n", rt, orUnknown(r.NCCL.CUDARTPath), r.NCCL.CUDADevices)
		if r.NCCL.Reason != "" {
			p("\t%s\n", r.NCCL.Reason)
		}
	} else if r.NCCL.Reason != "" {
		p("NCCL:\tunavailable: %s\n", trimReason(r.NCCL.Reason))
	}

	switch {
	case r.GPU.Available:
		p("GPUs:\t%d (driver %s)\n", len(r.GPU.Devices), orUnknown(r.GPU.DriverVersion))
		for _, g := range r.GPU.Devices {
			p("  %d\t%s\t%s, compute %s, %s\t%s\n", g.Index, g.Name, bytesHuman(g.MemoryBytes), orUnknown(g.ComputeCapability), g.PCIBusID, g.UUID)
		}
		if r.GPU.Reason != "" {
			p("\t%s\n", r.GPU.Reason)
		}
	case r.GPU.Reason != "":
		p("GPUs:\tnone: %s\n", r.GPU.Reason)
	}

	if r.Interfaces != nil {
		p("Network interfaces:\n")
		for _, i := range r.Interfaces {
			state := "down"
			if i.Up {
				state = "up"
			}
			if i.Loopback {
				state += " loopback"
			}
			addrs := strings.Join(i.Addrs, ", ")
			if addrs == "" {
				addrs = "(no addresses)"
			}
			p("  %s\t%s\tmtu %d\t%s\n", i.Name, state, i.MTU, addrs)
		}
	}
	if r.Incomplete != "" {
		p("Incomplete:\t%s\n", r.Incomplete)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func availability(b bool) string {
	if b {
		return "available"
	}
	return "unavailable"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// bytesHuman formats n with a binary unit: 1536 -> "1.5 KiB".
func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
