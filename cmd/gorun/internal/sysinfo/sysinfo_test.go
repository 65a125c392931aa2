package sysinfo

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestProbeThisMachine(t *testing.T) {
	r := Probe(context.Background(), nil)
	if r.Incomplete != "" {
		t.Errorf("Incomplete = %q", r.Incomplete)
	}
	if r.CPU.Cores != runtime.NumCPU() || r.CPU.Cores < 1 {
		t.Errorf("Cores = %d, runtime says %d", r.CPU.Cores, runtime.NumCPU())
	}
	if runtime.GOARCH == "amd64" && len(r.CPU.Features) == 0 {
		t.Error("no CPU features listed on amd64")
	}
	if len(r.Transports) != 4 || r.Transports[0].Name != "tcp" || !r.Transports[0].Available {
		t.Errorf("Transports = %+v, want tcp available first", r.Transports)
	}
	if c := r.Transports[2]; c.Name != "cma" || !strings.HasPrefix(c.Detail, "single copy within a host: ") {
		t.Errorf("Transports[2] = %+v, want the cma check with its detail", c)
	}
	if s, m := r.Transports[3], r.Transports[1]; s.Name != "shared" || s.Available != m.Available || !strings.HasPrefix(s.Detail, "shared buffers (collective.Alloc): ") {
		t.Errorf("Transports[3] = %+v, want the shared-buffer check, available as shm (%v)", s, m.Available)
	}
	var loopback bool
	for _, i := range r.Interfaces {
		for _, a := range i.Addrs {
			loopback = loopback || i.Loopback && strings.HasPrefix(a, "127.")
		}
	}
	if !loopback {
		t.Errorf("no loopback interface with a 127.x address in %+v", r.Interfaces)
	}
	if !r.NCCL.Available && !strings.Contains(r.NCCL.Reason, "nccl") {
		t.Errorf("NCCL unavailable without a reason naming it: %q", r.NCCL.Reason)
	}
	if !r.GPU.Available && !strings.HasPrefix(r.GPU.Reason, "NVML unavailable: ") {
		t.Errorf("GPU reason = %q, want \"NVML unavailable: <reason>\"", r.GPU.Reason)
	}
	var out bytes.Buffer
	if err := r.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Transports:", "tcp", "shm", "NCCL:", "GPUs:", "Network interfaces:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Write output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestProbeShm(t *testing.T) {
	dir := t.TempDir()
	tr := probeShm(dir)
	if runtime.GOOS != "linux" {
		t.Skip("shm probe is Linux-only")
	}
	if !tr.Available || !strings.Contains(tr.Detail, "mmap ok") {
		t.Errorf("probeShm(%s) = %+v, want available", dir, tr)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("probe left files behind: %v", left)
	}
	missing := filepath.Join(dir, "absent")
	tr = probeShm(missing)
	if tr.Available || !strings.Contains(tr.Detail, missing) {
		t.Errorf("probeShm(missing dir) = %+v, want unavailable naming the dir", tr)
	}
}

func TestProbeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	r := probe(ctx, prober{shmDir: t.TempDir(), nccl: func() NCCL {
		called = true
		return NCCL{}
	}, gpus: func() GPUs { called = true; return GPUs{} }})
	if called || r.Transports != nil || !strings.Contains(r.Incomplete, "context canceled") {
		t.Errorf("canceled probe: called=%v transports=%v incomplete=%q", called, r.Transports, r.Incomplete)
	}
	if r.CPU.Cores == 0 || r.Hostname == "" {
		t.Error("cheap facts missing from an incomplete report")
	}
}

func TestProbeReportsNCCLReason(t *testing.T) {
	r := probe(context.Background(), prober{
		shmDir: t.TempDir(),
		nccl: func() NCCL {
			return NCCL{Reason: "nccl: unavailable: libnccl.so.2: not found"}
		},
		gpus: func() GPUs { return GPUs{Reason: "NVML unavailable: test"} },
	})
	if r.NCCL.Available || r.NCCL.Reason != "nccl: unavailable: libnccl.so.2: not found" {
		t.Errorf("NCCL = %+v", r.NCCL)
	}
	var out bytes.Buffer
	r.Write(&out)
	if !regexp.MustCompile(`NCCL: +unavailable: libnccl.so.2: not found\n`).MatchString(out.String()) {
		t.Errorf("Write:\n%s", out.String())
	}
}

func TestWrite(t *testing.T) {
	r := Report{
		Hostname: "node1", OS: "linux", Arch: "amd64", GoVersion: "go1.26",
		CPU: CPU{Cores: 8, GOMAXPROCS: 8, Features: []Feature{{"avx2", true}, {"avx512f", false}}},
		Transports: []Transport{
			{Name: "tcp", Available: true, Detail: "loopback listen ok"},
			{Name: "shm", Detail: "/dev/shm not writable: permission denied"},
		},
		NCCL: NCCL{Available: true, Version: "2.18.3", Path: "/usr/lib/libnccl.so.2", CUDARTPath: "/usr/lib/libcudart.so.12",
			RuntimeVersion: 12040, CUDADevices: 2},
		GPU: GPUs{Available: true, DriverVersion: "550.54", Devices: []GPU{
			{Index: 0, Name: "NVIDIA A100", UUID: "GPU-1", MemoryBytes: 40 << 30, ComputeCapability: "8.0", PCIBusID: "0000:07:00.0"},
		}},
		Interfaces: []Interface{
			{Name: "lo", Up: true, Loopback: true, MTU: 65536, Addrs: []string{"127.0.0.1/8"}},
			{Name: "ib0", MTU: 2044},
		},
	}
	var out bytes.Buffer
	if err := r.Write(&out); err != nil {
		t.Fatal(err)
	}
	want := `Gorovod check on node1 (linux/amd64, go1.26)
CPU:           8 cores, GOMAXPROCS 8
CPU features:  avx2 yes, avx512f no
Transports:
  tcp          available    loopback listen ok
  shm          unavailable  /dev/shm not writable: permission denied
NCCL:          2.18.3 from /usr/lib/libnccl.so.2
CUDA runtime:  12.4 from /usr/lib/libcudart.so.12, 2 devices
GPUs:          1 (driver 550.54)
  0            NVIDIA A100  40.0 GiB, compute 8.0, 0000:07:00.0  GPU-1
Network interfaces:
  lo   up loopback  mtu 65536  127.0.0.1/8
  ib0  down         mtu 2044   (no addresses)
`
	if out.String() != want {
		t.Errorf("Write:\n%s\nwant:\n%s", out.String(), want)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.GPU.Devices[0].MemoryBytes != 40<<30 || !back.CPU.Has("avx2") || back.CPU.Has("avx512f") {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
}

func TestBytesHuman(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 40 << 30: "40.0 GiB", 3 << 40: "3.0 TiB"} {
		if got := bytesHuman(n); got != want {
			t.Errorf("bytesHuman(%d) = %q, want %q", n, got, want)
		}
	}
	if got := cudaVersion(11080); got != "11.8" {
		t.Errorf("cudaVersion(11080) = %q", got)
	}
}
