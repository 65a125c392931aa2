// Command gorun launches a Gorovod job: N worker processes that find each
// other through a rendezvous service gorun hosts.
//
//	gorun -np 4 ./train -epochs 10
//	gorun -np 2 -H localhost:2 --verbose ./train
//	gorun -np 2 hostname
//	gorun -np 8 -H host1:4,host2:4 ./train   # over ssh; gorun at the same path on every host
//
// Each worker's output lines are prefixed with its rank ("[1]<stdout>:").
// When a worker fails, gorun stops the others (SIGTERM, then SIGKILL after
// --kill-grace-period) and exits with that worker's code, or 128+signal if
// it was killed by a signal. SIGINT and SIGTERM are forwarded to the
// workers. Bad command lines exit with code 2. See `gorun --help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/netif"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	args := os.Args[1:]
	// Hidden modes gorun runs in on remote hosts, started over ssh by the
	// launcher (see internal/launch): not part of the command line users see.
	if len(args) > 0 {
		switch args[0] {
		case launch.RemoteExecFlag:
			os.Exit(launch.RemoteExec(os.Stdin, os.Stdout, os.Stderr))
		case launch.RemoteProbeFlag:
			ifaces, dir := "", ""
			if len(args) > 1 {
				ifaces = args[1]
			}
			if len(args) > 2 {
				dir = args[2]
			}
			os.Exit(launch.RemoteProbe(netif.ParseInterfaces(ifaces), dir, os.Stdout))
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// Exit codes of gorun's own failures; worker failures pass the worker's code.
const (
	exitInternal = 1
	exitUsage    = 2
)

// usageError is a problem with the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCodeError carries the exit code of a finished job.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit code %d", e.code) }

// run executes gorun with args and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := newCommand(stdout, stderr)
	cmd.SetArgs(normalizeArgs(args, cmd.Flags()))
	err := cmd.Execute()
	var ec exitCodeError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return ec.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "gorun: %v\nRun 'gorun --help' for usage.\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "gorun: %v\n", err)
		return exitInternal
	}
}
