package main

import (
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gorovod/gorovod/internal/config"
	genv "github.com/gorovod/gorovod/internal/env"
)

// options are gorun's command-line settings.
type options struct {
	np           int
	hosts        string
	hostfile     string
	startTimeout secondsOrDuration
	killGrace    secondsOrDuration
	verbose      bool
	check        bool
	envVars      []string // -x NAME[=value]
	outputDir    string
	sshPort      int
	sshIdentity  string
	netIfaces    string
	configFile   string

	// gorun's voice and the console.
	logLevel        string
	logFormat       string
	timestampPrefix bool
	outputRanks     string
	noPrefix        bool

	// Tuning knobs forwarded to the workers as GOROVOD_* variables, only
	// when set on the command line.
	fusionThresholdMB float64
	cycleTimeMs       float64
	cacheCapacity     int
	stallWarningSecs  float64
	stallShutdownSecs float64
	noStallCheck      bool
	timelineFile      string
	metricsAddr       string
	disableShm        bool
	bindTo            string
	hierarchical      bool
	markCycles        bool
}

func (o *options) register(fs *pflag.FlagSet) {
	o.startTimeout = secondsOrDuration(30 * time.Second)
	o.killGrace = secondsOrDuration(3 * time.Second)
	fs.IntVarP(&o.np, "num-proc", "n", 0, "number of worker processes, also spelled -np `N` (default: all slots of -H/--hostfile)")
	fs.StringVarP(&o.hosts, "hosts", "H", "", "`HOSTS` and their slots: localhost:4, host1:4,host2:4, [::1]:2 (default localhost:N)")
	fs.StringVar(&o.hostfile, "hostfile", "", "`FILE` listing hosts, one per line: 'host slots=4', 'host:4' or 'host' (OpenMPI's max_slots=N too); # comments")
	fs.Var(&o.startTimeout, "start-timeout", "how long workers may take to register with the rendezvous (duration like 30s, or seconds)")
	fs.Var(&o.killGrace, "kill-grace-period", "time between SIGTERM and SIGKILL when stopping workers (duration or seconds)")
	fs.BoolVar(&o.verbose, "verbose", false, "debug logging in gorun and the workers (same as --log-level debug)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "`LEVEL` of gorun's own messages: debug, info, warn or error (debug also reaches the workers)")
	fs.StringVar(&o.logFormat, "log-format", "console", "`FORMAT` of gorun's own messages: console (one plain line each) or json (one JSON object per line)")
	fs.BoolVar(&o.timestampPrefix, "prefix-output-with-timestamp", false, "start every output line of the workers, and gorun's messages, with the time")
	fs.StringVar(&o.outputRanks, "output-ranks", "", "show only these `RANKS` on the console, e.g. 0 or 0,2-3 (--output-filename files still get every rank)")
	fs.BoolVar(&o.noPrefix, "no-prefix", false, "do not prefix the workers' output lines with \"[rank]<stream>:\"")
	fs.StringVar(&o.configFile, "config-file", "", "YAML or JSON `FILE` of settings, as horovodrun's (flag names as keys, or its params/timeline/stall_check sections); the command line wins")
	fs.BoolVar(&o.check, "check", false, "print what this machine offers Gorovod (transports, NCCL, GPUs, interfaces, CPU) and exit")
	fs.BoolVar(&o.check, "check-build", false, "same as --check (horovodrun's name)")
	fs.StringArrayVarP(&o.envVars, "env", "x", nil, "export `NAME[=value]` to the workers (NAME alone: gorun's value); repeatable")
	fs.IntVarP(&o.sshPort, "ssh-port", "p", 0, "ssh `PORT` of the remote hosts (default: ssh's, or its config)")
	fs.StringVarP(&o.sshIdentity, "ssh-identity-file", "i", "", "ssh private key `FILE` for the remote hosts")
	fs.StringVar(&o.netIfaces, "network-interface", "", "`IFACES` (comma list) whose addresses the workers use, e.g. eth0 or ib0,eth0 (default: the route to the launcher)")
	fs.StringVar(&o.netIfaces, "network-interfaces", "", "`IFACES`: same as --network-interface (horovodrun's name)")
	fs.StringVar(&o.outputDir, "output-filename", "", "also write each worker's output to `DIR`/rank.R/stdout and stderr (R zero-padded: rank.07 of 16)")

	fs.Float64Var(&o.fusionThresholdMB, "fusion-threshold-mb", 0, "fuse tensors into buffers of up to this many MiB (0 disables fusion; default 128)")
	fs.Float64Var(&o.cycleTimeMs, "cycle-time-ms", 0, "background loop cycle time in milliseconds (default 1)")
	fs.IntVar(&o.cacheCapacity, "cache-capacity", 0, "response cache entries (0 disables the cache; default 1024)")
	fs.Float64Var(&o.stallWarningSecs, "stall-check-warning-time-seconds", 0, "warn about ranks missing from a collective after this many seconds (default 60)")
	fs.Float64Var(&o.stallShutdownSecs, "stall-check-shutdown-time-seconds", 0, "fail stalled collectives after this many seconds (default 0: never)")
	fs.BoolVar(&o.noStallCheck, "no-stall-check", false, "disable the stall check")
	fs.StringVar(&o.timelineFile, "timeline-filename", "", "write a Chrome-trace timeline of rank 0 to `FILE`")
	fs.BoolVar(&o.markCycles, "timeline-mark-cycles", false, "mark each negotiation cycle in the timeline (needs --timeline-filename)")
	fs.BoolVar(&o.hierarchical, "hierarchical-allreduce", false, "allreduce within each host first, then across hosts (jobs spanning hosts)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics of each worker at `HOST:PORT` (port + local rank on each host)")
	fs.BoolVar(&o.disableShm, "disable-shm", false, "use TCP instead of shared memory between workers on one host")
	fs.StringVar(&o.bindTo, "bind-to", "none", "`core`: bind each worker to its share of its host's cores (as mpirun --bind-to core; skipped when workers outnumber cores); none: leave them to the kernel, as horovodrun does")
}

// tuningEnv turns the tuning flags the user set into worker variables.
func (o *options) tuningEnv(fs *pflag.FlagSet) ([]string, error) {
	var env []string
	set := func(name string) bool { return fs.Changed(name) }
	secs := func(flag string, v float64, allowZero bool) (time.Duration, error) {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || (!allowZero && v == 0) || v > 1e9 {
			bound := "> 0"
			if allowZero {
				bound = ">= 0"
			}
			return 0, usagef("--%s is %v, must be %s", flag, v, bound)
		}
		return time.Duration(v * float64(time.Second)), nil
	}
	if set("fusion-threshold-mb") {
		v := o.fusionThresholdMB
		if math.IsNaN(v) || v < 0 || v > 1<<20 {
			return nil, usagef("--fusion-threshold-mb is %v, must be between 0 and %d", v, 1<<20)
		}
		env = append(env, config.EnvFusionThreshold+"="+strconv.FormatInt(int64(v*(1<<20)), 10))
	}
	if set("cycle-time-ms") {
		d, err := secs("cycle-time-ms", o.cycleTimeMs/1000, false)
		if err != nil {
			return nil, usagef("--cycle-time-ms is %v, must be > 0", o.cycleTimeMs)
		}
		env = append(env, config.EnvCycleTime+"="+d.String())
	}
	if set("cache-capacity") {
		if o.cacheCapacity < 0 {
			return nil, usagef("--cache-capacity is %d, must be >= 0", o.cacheCapacity)
		}
		env = append(env, config.EnvCacheCapacity+"="+strconv.Itoa(o.cacheCapacity))
	}
	if set("stall-check-warning-time-seconds") {
		d, err := secs("stall-check-warning-time-seconds", o.stallWarningSecs, false)
		if err != nil {
			return nil, err
		}
		env = append(env, config.EnvStallCheckTime+"="+d.String())
	}
	if set("stall-check-shutdown-time-seconds") {
		d, err := secs("stall-check-shutdown-time-seconds", o.stallShutdownSecs, true)
		if err != nil {
			return nil, err
		}
		env = append(env, config.EnvStallShutdownTime+"="+d.String())
	}
	if set("no-stall-check") && o.noStallCheck {
		env = append(env, config.EnvStallDisable+"=1")
	}
	if set("timeline-filename") {
		if o.timelineFile == "" {
			return nil, usagef("--timeline-filename is empty")
		}
		env = append(env, config.EnvTimeline+"="+o.timelineFile)
	}
	if set("timeline-mark-cycles") && o.markCycles {
		if o.timelineFile == "" {
			return nil, usagef("--timeline-mark-cycles needs --timeline-filename")
		}
		env = append(env, config.EnvTimelineMarkCycles+"=1")
	}
	placement, err := o.placementEnv(set)
	if err != nil {
		return nil, err
	}
	env = append(env, placement...)
	if set("metrics-addr") {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return nil, usagef("--metrics-addr %q: want HOST:PORT", o.metricsAddr)
		}
		env = append(env, config.EnvMetricsAddr+"="+o.metricsAddr)
	}
	return env, nil
}

// placementEnv is the workers' variables of the flags that say where data
// and workers go: --hierarchical-allreduce, --disable-shm, --bind-to.
func (o *options) placementEnv(set func(string) bool) ([]string, error) {
	var env []string
	if set("hierarchical-allreduce") && o.hierarchical {
		env = append(env, config.EnvHierarchical+"=1")
	}
	if set("disable-shm") && o.disableShm {
		env = append(env, config.EnvDisableShm+"=1")
	}
	switch o.bindTo {
	case "core":
		env = append(env, genv.BindTo+"=core")
	case "none":
	default:
		return nil, usagef("--bind-to %q: want core or none", o.bindTo)
	}
	return env, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// exportEnv resolves -x entries: NAME=value as given, NAME with gorun's
// own value (skipped with a note when gorun has none).
func exportEnv(entries []string, getenv func(string) (string, bool)) (vars, missing []string, err error) {
	for _, e := range entries {
		name, val, hasVal := strings.Cut(e, "=")
		if !envName.MatchString(name) {
			return nil, nil, usagef("-x %q: %q is not a variable name", e, name)
		}
		if !hasVal {
			v, ok := getenv(name)
			if !ok {
				missing = append(missing, name)
				continue
			}
			val = v
		}
		vars = append(vars, name+"="+val)
	}
	return vars, missing, nil
}

// secondsOrDuration is a flag taking "30s", "1m30s" or plain seconds "30".
type secondsOrDuration time.Duration

func (d *secondsOrDuration) String() string { return time.Duration(*d).String() }
func (d *secondsOrDuration) Type() string   { return "duration" }
func (d *secondsOrDuration) Set(s string) error {
	if v, err := time.ParseDuration(s); err == nil {
		*d = secondsOrDuration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return fmt.Errorf("%q is not a duration (e.g. 30s) or a number of seconds", s)
	}
	*d = secondsOrDuration(time.Duration(secs * float64(time.Second)))
	return nil
}

// normalizeArgs rewrites the single-dash long flag -np (horovodrun's and
// mpirun's spelling) to --num-proc. Only gorun's own flags are touched:
// the scan stops at "--" or at the program name, so the program's
// arguments pass through unchanged.
func normalizeArgs(args []string, fs *pflag.FlagSet) []string {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		switch {
		case a == "--" || !strings.HasPrefix(a, "-") || a == "-":
			return out
		case a == "-np":
			out[i] = "--num-proc"
			i++ // its value
			continue
		case strings.HasPrefix(a, "-np="):
			out[i] = "--num-proc=" + strings.TrimPrefix(a, "-np=")
			continue
		}
		if takesValue(a, fs) {
			i++
		}
	}
	return out
}

// takesValue reports whether flag argument a ("--name", "-x") consumes the
// next argument as its value.
func takesValue(a string, fs *pflag.FlagSet) bool {
	var f *pflag.Flag
	if strings.HasPrefix(a, "--") {
		name := strings.TrimPrefix(a, "--")
		if strings.Contains(name, "=") {
			return false
		}
		f = fs.Lookup(name)
	} else {
		if len(a) != 2 { // "-H4" style: value attached
			return false
		}
		f = fs.ShorthandLookup(a[1:])
	}
	return f != nil && f.NoOptDefVal == ""
}

func lookupEnv(name string) (string, bool) { return os.LookupEnv(name) }
