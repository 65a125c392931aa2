// Package env is the contract between gorun (or another launcher) and the
// workers it starts: the names of the environment variables that carry a
// worker's place in the job. Parsing of tuning knobs lives in internal/config.
package env

import "strconv"

// Set by gorun for every worker.
const (
	Rank           = "GOROVOD_RANK"              // global rank, 0..size-1
	Size           = "GOROVOD_SIZE"              // number of workers
	LocalRank      = "GOROVOD_LOCAL_RANK"        // rank among workers on this host
	LocalSize      = "GOROVOD_LOCAL_SIZE"        // workers on this host
	CrossRank      = "GOROVOD_CROSS_RANK"        // index of this host among the hosts that have this local rank (Horovod's)
	CrossSize      = "GOROVOD_CROSS_SIZE"        // number of hosts that have this local rank
	Hostname       = "GOROVOD_HOSTNAME"          // host name as given in -H (identifies the host)
	RendezvousAddr = "GOROVOD_RENDEZVOUS_ADDR"   // host:port of the rendezvous gRPC service
	Secret         = "GOROVOD_SECRET"            // hex job secret; authenticates every connection
	SecretFile     = "GOROVOD_SECRET_FILE"       // alternative to Secret: a file holding it
	Epoch          = "GOROVOD_EPOCH"             // membership epoch (elastic); 0 for static jobs
	StartTimeout   = "GOROVOD_START_TIMEOUT"     // how long Init waits for all ranks (Go duration)
	BindAddr       = "GOROVOD_BIND_ADDR"         // IP the data plane listens on
	LogLevel       = "GOROVOD_LOG_LEVEL"         // debug, info, warn, error
	Launcher       = "GOROVOD_LAUNCHER"          // "gorun" when started by gorun
	NetworkIface   = "GOROVOD_NETWORK_INTERFACE" // comma list of interfaces to pick addresses from
	CPUList        = "GOROVOD_CPU_LIST"          // cpus the worker binds its threads to ("0,1" or "0-3"); unset: unbound
	BindTo         = "GOROVOD_BIND_TO"           // "core" or "none" (default): whether gorun gives workers a CPUList
)

// Read by gorun itself.
const (
	SSHArgs           = "GOROVOD_SSH_ARGS"            // extra ssh options for remote hosts, split like a shell ("-F cfg -o X=y")
	SSHSilenceTimeout = "GOROVOD_SSH_SILENCE_TIMEOUT" // remote workers stop after this long without a word from gorun (default 30s)
)

// The standard names other launchers use, set by gorun next to the
// GOROVOD_* ones so that programs written for torchrun, Horovod or the
// Kubernetes training operators find their place without change.
const (
	StdRank           = "RANK"             // torchrun: global rank
	StdWorldSize      = "WORLD_SIZE"       // torchrun: number of workers
	StdLocalRank      = "LOCAL_RANK"       // torchrun: rank on this host
	StdLocalWorldSize = "LOCAL_WORLD_SIZE" // torchrun: workers on this host
	StdGroupRank      = "GROUP_RANK"       // torchrun: index of this worker's host
	StdGroupWorldSize = "GROUP_WORLD_SIZE" // torchrun: number of hosts
	StdMasterAddr     = "MASTER_ADDR"      // torchrun: host of rank 0's store
	StdMasterPort     = "MASTER_PORT"      // torchrun: port of rank 0's store

	HorovodRank      = "HOROVOD_RANK"
	HorovodSize      = "HOROVOD_SIZE"
	HorovodLocalRank = "HOROVOD_LOCAL_RANK"
	HorovodLocalSize = "HOROVOD_LOCAL_SIZE"
	HorovodCrossRank = "HOROVOD_CROSS_RANK"
	HorovodCrossSize = "HOROVOD_CROSS_SIZE"
)

// Progress tells a worker whether the launcher's stdout is a terminal:
// "tty" (progress bars are seen as they redraw) or "lines" (output goes
// to a pipe or file: print a progress line now and then instead).
const Progress = "GOROVOD_PROGRESS"

// Values of Progress.
const (
	ProgressTTY   = "tty"
	ProgressLines = "lines"
)

// Place is one worker's place in a job.
type Place struct {
	Rank, Size           int // global
	LocalRank, LocalSize int // on this worker's host
	CrossRank, CrossSize int // among the hosts that have this local rank (Horovod's cross rank)
	Node, Nodes          int // index of the host among the job's hosts, their number
}

// Vars returns p as environment entries ("NAME=value"): the GOROVOD_*
// names, the standard names (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE) and Horovod's HOROVOD_*
// names.
func (p Place) Vars() []string {
	vals := []struct {
		v     int
		names []string
	}{
		{p.Rank, []string{Rank, StdRank, HorovodRank}},
		{p.Size, []string{Size, StdWorldSize, HorovodSize}},
		{p.LocalRank, []string{LocalRank, StdLocalRank, HorovodLocalRank}},
		{p.LocalSize, []string{LocalSize, StdLocalWorldSize, HorovodLocalSize}},
		{p.CrossRank, []string{CrossRank, HorovodCrossRank}},
		{p.CrossSize, []string{CrossSize, HorovodCrossSize}},
		{p.Node, []string{StdGroupRank}},
		{p.Nodes, []string{StdGroupWorldSize}},
	}
	out := make([]string, 0, 18)
	for _, e := range vals {
		s := strconv.Itoa(e.v)
		for _, n := range e.names {
			out = append(out, n+"="+s)
		}
	}
	return out
}

// MasterVars returns MASTER_ADDR and MASTER_PORT for the address host:port
// ("MASTER_ADDR=198.18.0.1", "MASTER_PORT=29500"); an IPv6 host is written
// without brackets, as torch expects.
func MasterVars(host string, port int) []string {
	return []string{StdMasterAddr + "=" + host, StdMasterPort + "=" + strconv.Itoa(port)}
}
