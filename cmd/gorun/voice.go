package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/logging"
)

// checkVoice validates the flags of gorun's messages and console.
func (o *options) checkVoice(np int) error {
	if _, err := logging.ParseLevel(o.logLevel); err != nil {
		return usagef("--log-level: %v", err)
	}
	if o.logFormat != "console" && o.logFormat != "json" {
		return usagef("--log-format %q: want console or json", o.logFormat)
	}
	if o.outputRanks != "" {
		if _, err := parseRanks(o.outputRanks, np); err != nil {
			return usagef("--output-ranks %q: %v", o.outputRanks, err)
		}
	}
	return nil
}

// terminal is what gorun writes to: its stdout and stderr, and, when
// either is a terminal, what coordinates the writers sharing it (a
// worker's progress bar is cleared before anything else is written).
type terminal struct {
	stdout, stderr io.Writer
	term           *launch.Terminal // nil: neither is a terminal
}

func newTerminal(stdout, stderr io.Writer) terminal {
	t := terminal{stdout: stdout, stderr: stderr}
	if isTerminal(stdout) || isTerminal(stderr) {
		t.term = new(launch.Terminal)
	}
	return t
}

// on returns the Terminal for w when w is a terminal.
func (t terminal) on(w io.Writer) *launch.Terminal {
	if t.term != nil && isTerminal(w) {
		return t.term
	}
	return nil
}

// logger is gorun's own voice on stderr.
func (o *options) logger(t terminal) (*zap.Logger, error) {
	level := o.logLevel
	if o.verbose {
		level = "debug"
	}
	w := t.stderr
	if t.term != nil {
		w = t.term.Writer(t.stderr)
	}
	return logging.NewLauncher(w, logging.LauncherOptions{
		Level: level, Format: o.logFormat, Timestamps: o.timestampPrefix, Color: colorFor(t.stderr),
	})
}

// console wraps gorun's stdout and stderr for the workers' lines.
func (o *options) console(t terminal, np int) (io.Writer, io.Writer) {
	co := launch.ConsoleOptions{NoPrefix: o.noPrefix, Timestamps: o.timestampPrefix, TimestampLayout: logging.TimestampLayout}
	if o.outputRanks != "" {
		co.Ranks, _ = parseRanks(o.outputRanks, np) // checked by checkVoice
	}
	out, errOut := co, co
	out.Color, errOut.Color = colorFor(t.stdout), colorFor(t.stderr)
	out.Terminal, errOut.Terminal = t.on(t.stdout), t.on(t.stderr)
	return launch.Console(t.stdout, out), launch.Console(t.stderr, errOut)
}

// colorFor: colours only on a terminal, and never with NO_COLOR set or
// TERM=dumb (https://no-color.org).
func colorFor(w io.Writer) bool {
	return isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

// parseRanks reads "0", "0,2", "1-3,5": ranks below np.
func parseRanks(spec string, np int) (map[int]bool, error) {
	out := map[int]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%q is not a rank or a range like 0-3", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("%q is not a rank or a range like 0-3", part)
			}
		}
		if b >= np {
			return nil, fmt.Errorf("rank %d does not exist in a job of %d", b, np)
		}
		for r := a; r <= b; r++ {
			out[r] = true
		}
	}
	return out, nil
}

// failureHint is gorun's last word on a failed job: who failed where, and
// where to look.
func (o *options) failureHint(res launch.Result, slots []hosts.Slot) string {
	f := res.FirstFailure
	if f == nil {
		return ""
	}
	var where string
	shown := true
	if o.outputRanks != "" {
		r, _ := parseRanks(o.outputRanks, len(slots))
		shown = r[f.Rank]
	}
	switch {
	case o.outputDir != "":
		dir := filepath.Join(o.outputDir, fmt.Sprintf("rank.%0*d", len(strconv.Itoa(len(slots)-1)), f.Rank))
		where = "its output is in " + dir
	case !shown:
		where = fmt.Sprintf("its output was not shown (--output-ranks %s): run again with --output-filename DIR to keep every rank's output", o.outputRanks)
	case o.noPrefix:
		where = "its output is above"
	default:
		where = fmt.Sprintf("its output is above, on the lines starting with [%d]", f.Rank)
	}
	if f.Status.Signal == syscall.SIGKILL {
		// gorun did not send it (this is the first failure): usually the
		// kernel's out-of-memory killer.
		where += fmt.Sprintf("; a SIGKILL nobody sent on purpose is often the out-of-memory killer (see dmesg or journalctl -k on %s)", f.Host)
	}
	return fmt.Sprintf("job failed: rank %d on host %s %s; %s", f.Rank, f.Host, f.Status, where)
}

// reportedError is an error gorun's logger already wrote (as JSON).
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

// reportJSON: with --log-format json, gorun's own failure is a JSON line
// like its other messages, not a line of text (a worker's exit code is not
// gorun's failure: it was reported as it happened).
func reportJSON(o *options, log *zap.Logger, err error) error {
	var ec exitCodeError
	if err == nil || o.logFormat != "json" || errors.As(err, &ec) {
		return err
	}
	log.Error(err.Error())
	return reportedError{err}
}
