package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/errkind"
)

// Info is what a worker learns about its place in the job from its
// environment (or an explicit Membership), before rendezvous fills in the
// rest.
type Info struct {
	Source          string // "gorun", "openmpi", "mpich", "slurm", "env", "membership" or "single"
	Rank, Size      int
	LocalRank       int
	Host            string // identifies the machine; equal hosts share memory
	RendezvousAddr  string // host:port of the rendezvous service
	ServeRendezvous bool   // this process (rank 0 without gorun) hosts the service
	Secret          []byte
	SecretDerived   bool // no secret was given: derived from the launcher's job id
	Epoch           uint64
	StartTimeout    time.Duration
	BindAddr        string // IP the data plane listens on; "" = choose
	Ifaces          string // GOROVOD_NETWORK_INTERFACE: interfaces to choose from
	CPUs            []int  // GOROVOD_CPU_LIST: cpus to bind this process's threads to; nil: unbound
}

const defaultStartTimeout = 30 * time.Second

// Detect reads the launcher contract: gorun's GOROVOD_* variables,
// OpenMPI's OMPI_COMM_WORLD_*, Slurm's SLURM_*, MPICH's and Intel MPI's
// PMI_RANK / PMI_SIZE, or the generic RANK / WORLD_SIZE / LOCAL_RANK /
// LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT that torchrun and the
// Kubernetes training operators set. Without any, the process is a world
// of one.
func Detect(getenv func(string) string) (Info, error) {
	li := Info{StartTimeout: defaultStartTimeout, BindAddr: getenv(env.BindAddr), Ifaces: getenv(env.NetworkIface)}
	hostname, _ := os.Hostname()
	li.Host = firstNonEmpty(getenv(env.Hostname), hostname, "localhost")
	var err error
	if li.StartTimeout, err = StartTimeout(getenv); err != nil {
		return li, err
	}
	if li.CPUs, err = ParseCPUList(getenv(env.CPUList)); err != nil {
		return li, err
	}
	if v := getenv(env.Epoch); v != "" {
		e, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return li, fmt.Errorf("%w: %s=%q is not an epoch number", errkind.Invalid, env.Epoch, v)
		}
		li.Epoch = e
	}
	jobID, err := fromLauncher(getenv, &li)
	if err != nil {
		return li, err
	}
	if li.Size < 1 || li.Rank < 0 || li.Rank >= li.Size || li.LocalRank < 0 {
		return li, fmt.Errorf("%w: launcher %s gave rank %d, size %d, local rank %d", errkind.Invalid, li.Source, li.Rank, li.Size, li.LocalRank)
	}
	if li.Source != "gorun" && li.Source != "single" {
		li.ServeRendezvous = li.Rank == 0
	}
	if li.Source == "single" {
		return li, nil
	}
	li.Secret, li.SecretDerived, err = jobSecret(getenv, jobID)
	return li, err
}

// fromLauncher fills li's place from the first launcher whose variables
// are set and returns that launcher's job id ("" when it has none).
func fromLauncher(getenv func(string) string, li *Info) (jobID string, err error) {
	switch {
	case getenv(env.Rank) != "" && getenv(env.RendezvousAddr) != "":
		li.Source = "gorun"
		if li.Rank, li.Size, li.LocalRank, err = intTriple(getenv, env.Rank, env.Size, env.LocalRank); err != nil {
			return "", err
		}
		li.RendezvousAddr = getenv(env.RendezvousAddr)
	case getenv("OMPI_COMM_WORLD_RANK") != "":
		li.Source = "openmpi"
		if li.Rank, li.Size, li.LocalRank, err = intTriple(getenv, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"); err != nil {
			return "", err
		}
		jobID = firstNonEmpty(getenv("OMPI_MCA_ess_base_jobid"), getenv("OMPI_MCA_orte_ess_jobid"), getenv("OMPI_MCA_orte_hnp_uri"))
		localSize, _ := strconv.Atoi(getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
		li.RendezvousAddr, err = rendezvousFromEnv(getenv, jobID, localSize == li.Size, "")
	case getenv("SLURM_PROCID") != "" && getenv("SLURM_NTASKS") != "":
		li.Source = "slurm"
		if li.Rank, li.Size, li.LocalRank, err = intTriple(getenv, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"); err != nil {
			return "", err
		}
		jobID = getenv("SLURM_JOB_ID") + "." + getenv("SLURM_STEP_ID")
		first, ferr := firstSlurmNode(firstNonEmpty(getenv("SLURM_STEP_NODELIST"), getenv("SLURM_JOB_NODELIST"), getenv("SLURM_NODELIST")))
		if ferr != nil {
			return "", ferr
		}
		nnodes, _ := strconv.Atoi(firstNonEmpty(getenv("SLURM_STEP_NUM_NODES"), getenv("SLURM_NNODES"), "1"))
		li.RendezvousAddr, err = rendezvousFromEnv(getenv, jobID, nnodes <= 1, first)
	case getenv("PMI_RANK") != "" && getenv("PMI_SIZE") != "":
		// MPICH's and Intel MPI's Hydra (MPI_LOCALRANKID and
		// MPI_LOCALNRANKS where the launcher sets them).
		li.Source = "mpich"
		if li.Rank, li.Size, li.LocalRank, err = intTriple(getenv, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"); err != nil {
			return "", err
		}
		jobID = firstNonEmpty(getenv("PMI_KVSNAME"), getenv("PMI_JOBID"), getenv("I_MPI_JOB_ID"))
		localSize, _ := strconv.Atoi(getenv("MPI_LOCALNRANKS"))
		li.RendezvousAddr, err = rendezvousFromEnv(getenv, jobID, localSize == li.Size, "")
	case getenv("RANK") != "" && getenv("WORLD_SIZE") != "":
		li.Source = "env"
		if li.Rank, li.Size, li.LocalRank, err = intTriple(getenv, "RANK", "WORLD_SIZE", "LOCAL_RANK"); err != nil {
			return "", err
		}
		jobID = getenv("TORCHELASTIC_RUN_ID")
		localSize, _ := strconv.Atoi(getenv("LOCAL_WORLD_SIZE"))
		li.RendezvousAddr, err = rendezvousFromEnv(getenv, jobID, localSize == li.Size, "")
	default:
		li.Source, li.Rank, li.Size = "single", 0, 1
	}
	return jobID, err
}

// startTimeout reads GOROVOD_START_TIMEOUT (a duration or seconds).
func StartTimeout(getenv func(string) string) (time.Duration, error) {
	v := getenv(env.StartTimeout)
	if v == "" {
		return defaultStartTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, err2 := strconv.ParseFloat(v, 64)
		if err2 != nil {
			return 0, fmt.Errorf("%w: %s=%q is not a duration", errkind.Invalid, env.StartTimeout, v)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	return d, nil
}

// Membership is an explicit place in a job (collective.WithMembership).
type Membership struct {
	Rank, Size, LocalRank int
	Epoch                 uint64
	RendezvousAddr        string
	Secret                []byte
	Host                  string
}

// FromMembership is the Info of an explicit Membership. The interface and
// bind address still come from the environment.
func FromMembership(m Membership, getenv func(string) string) (Info, error) {
	m.Secret = append([]byte(nil), m.Secret...)
	li := Info{Source: "membership", Rank: m.Rank, Size: m.Size, LocalRank: m.LocalRank, Host: m.Host,
		RendezvousAddr: m.RendezvousAddr, Secret: m.Secret, Epoch: m.Epoch,
		BindAddr: getenv(env.BindAddr), Ifaces: getenv(env.NetworkIface)}
	if li.Host == "" {
		hostname, _ := os.Hostname()
		li.Host = firstNonEmpty(hostname, "localhost")
	}
	var err error
	if li.StartTimeout, err = StartTimeout(getenv); err != nil {
		return li, err
	}
	switch {
	case m.Size < 1 || m.Rank < 0 || m.Rank >= m.Size || m.LocalRank < 0:
		return li, fmt.Errorf("%w: membership gives rank %d, size %d, local rank %d", errkind.Invalid, m.Rank, m.Size, m.LocalRank)
	case m.Size == 1 && m.RendezvousAddr == "":
		li.Source = "single"
	case m.RendezvousAddr == "":
		return li, fmt.Errorf("%w: membership of rank %d of %d has no rendezvous address", errkind.Invalid, m.Rank, m.Size)
	case len(m.Secret) == 0:
		return li, fmt.Errorf("%w: membership of rank %d of %d has no job secret", errkind.Invalid, m.Rank, m.Size)
	}
	return li, nil
}

// rendezvousFromEnv finds where rank 0 serves rendezvous when no gorun
// started the job: GOROVOD_RENDEZVOUS_ADDR, else MASTER_ADDR:MASTER_PORT,
// else (one host, or a known first node) a port derived from the job id.
func rendezvousFromEnv(getenv func(string) string, jobID string, oneHost bool, firstNode string) (string, error) {
	if a := getenv(env.RendezvousAddr); a != "" {
		return a, nil
	}
	addr, port := getenv("MASTER_ADDR"), getenv("MASTER_PORT")
	if addr != "" || port != "" {
		if addr == "" || port == "" {
			return "", fmt.Errorf("%w: MASTER_ADDR=%q and MASTER_PORT=%q must both be set", errkind.Invalid, addr, port)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return "", fmt.Errorf("%w: MASTER_PORT=%q is not a port", errkind.Invalid, port)
		}
		return net.JoinHostPort(addr, port), nil
	}
	if jobID == "" || (!oneHost && firstNode == "") {
		return "", fmt.Errorf("%w: cannot tell where rank 0 serves rendezvous: set %s or MASTER_ADDR and MASTER_PORT", errkind.Invalid, env.RendezvousAddr)
	}
	sum := sha256.Sum256([]byte("gorovod-port:" + jobID))
	p := 29500 + int(sum[0])<<8%20000 + int(sum[1])%100
	host := "127.0.0.1"
	if !oneHost {
		host = firstNode
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// jobSecret reads the secret from GOROVOD_SECRET (hex) or GOROVOD_SECRET_FILE;
// without either it derives one from the launcher's job id, which only keeps
// out peers of other jobs by accident, not by intent.
func jobSecret(getenv func(string) string, jobID string) ([]byte, bool, error) {
	if v := getenv(env.Secret); v != "" {
		b, err := hex.DecodeString(strings.TrimSpace(v))
		if err != nil || len(b) == 0 {
			return nil, false, fmt.Errorf("%w: %s is not a hex string", errkind.Invalid, env.Secret)
		}
		return b, false, nil
	}
	if f := getenv(env.SecretFile); f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: %v", errkind.Invalid, env.SecretFile, err)
		}
		s := strings.TrimSpace(string(raw))
		if b, err := hex.DecodeString(s); err == nil && len(b) > 0 {
			return b, false, nil
		}
		if s == "" {
			return nil, false, fmt.Errorf("%w: %s %s is empty", errkind.Invalid, env.SecretFile, f)
		}
		return []byte(s), false, nil
	}
	sum := sha256.Sum256([]byte("gorovod-secret:" + jobID))
	return sum[:], true, nil
}

func intTriple(getenv func(string) string, a, b, c string) (int, int, int, error) {
	var out [3]int
	for i, name := range []string{a, b, c} {
		v := getenv(name)
		if v == "" && i == 2 {
			continue // local rank is optional; rendezvous computes it
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%w: %s=%q is not an integer", errkind.Invalid, name, v)
		}
		out[i] = n
	}
	return out[0], out[1], out[2], nil
}

// firstSlurmNode expands the first name of a Slurm node list such as
// "node[01-04,07],gpu2".
func firstSlurmNode(list string) (string, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return "", nil
	}
	end := len(list)
	depth := 0
	for i, r := range list {
		if r == '[' {
			depth++
		} else if r == ']' {
			depth--
		} else if r == ',' && depth == 0 {
			end = i
			break
		}
	}
	first := list[:end]
	open := strings.IndexByte(first, '[')
	if open < 0 {
		return first, nil
	}
	closeIdx := strings.IndexByte(first, ']')
	if closeIdx < open {
		return "", fmt.Errorf("%w: malformed Slurm node list %q", errkind.Invalid, list)
	}
	inner := first[open+1 : closeIdx]
	if i := strings.IndexAny(inner, ",-"); i >= 0 {
		inner = inner[:i]
	}
	return first[:open] + inner + first[closeIdx+1:], nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// ParseCPUList reads a cpu list such as "0,2" or "0-3,8" (the kernel's
// and taskset's notation); "" is nil.
func ParseCPUList(v string) ([]int, error) {
	if v == "" {
		return nil, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: %s=%q: %s (want cpu numbers and ranges, e.g. 0,2-3)", errkind.Invalid, env.CPUList, v, why)
	}
	var cpus []int
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		switch {
		case err != nil:
			return nil, bad(fmt.Sprintf("%q is not a cpu number or range", part))
		case a < 0 || b < a || b >= maxCPU:
			return nil, bad(fmt.Sprintf("range %q is empty or out of 0..%d", part, maxCPU-1))
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// maxCPU bounds the cpu numbers of a list (the kernel's cpu_set_t holds
// 1024).
const maxCPU = 1024
