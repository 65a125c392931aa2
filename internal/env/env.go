// Package env is the contract between gorun (or another launcher) and the
// workers it starts: the names of the environment variables that carry a
// worker's place in the job. Parsing of tuning knobs lives in internal/config.
package env

// Set by gorun for every worker.
const (
	Rank           = "GOROVOD_RANK"              // global rank, 0..size-1
	Size           = "GOROVOD_SIZE"              // number of workers
	LocalRank      = "GOROVOD_LOCAL_RANK"        // rank among workers on this host
	LocalSize      = "GOROVOD_LOCAL_SIZE"        // workers on this host
	CrossRank      = "GOROVOD_CROSS_RANK"        // index of this host among hosts
	CrossSize      = "GOROVOD_CROSS_SIZE"        // number of hosts
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
)

// Read by gorun itself.
const (
	SSHArgs           = "GOROVOD_SSH_ARGS"            // extra ssh options for remote hosts, split like a shell ("-F cfg -o X=y")
	SSHSilenceTimeout = "GOROVOD_SSH_SILENCE_TIMEOUT" // remote workers stop after this long without a word from gorun (default 30s)
)
