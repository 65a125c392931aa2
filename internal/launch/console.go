package launch

import (
	"bytes"
	"io"
	"strconv"
	"sync"
	"time"
)

// ConsoleOptions shape the workers' output lines on the launcher's console.
// The per-rank files of JobConfig.OutputDir are not affected: they get
// every rank's raw output.
type ConsoleOptions struct {
	// Ranks, when not nil, lists the ranks whose lines are shown; the
	// others' lines are dropped from the console.
	Ranks map[int]bool
	// NoPrefix drops the "[rank]<stream>:" prefix.
	NoPrefix bool
	// Timestamps starts each line with the time it was complete.
	Timestamps bool
	// TimestampLayout formats Timestamps (time.Format layout).
	TimestampLayout string
	// Color colours the prefix by rank (for a terminal).
	Color bool
	// Terminal, when set, says the writer is that terminal: a partial line
	// a worker redraws with '\r' (a progress bar) is shown as it changes,
	// and cleared before the next write to the terminal (TerminalWriter).
	Terminal *Terminal
	// Now is the clock of Timestamps; nil means time.Now.
	Now func() time.Time
}

// Plain reports whether o changes nothing.
func (o ConsoleOptions) Plain() bool {
	return o.Ranks == nil && !o.NoPrefix && !o.Timestamps && !o.Color && o.Terminal == nil
}

// Console returns a writer for JobConfig.Stdout or Stderr that reshapes the
// lines Run writes there. It relies on what a Sink guarantees: each Write
// is one line beginning with Prefix(rank, stream) (ending in a newline,
// except a partial line redrawn on a terminal), and writes are serialised.
func Console(w io.Writer, o ConsoleOptions) io.Writer {
	if o.Plain() {
		return w
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &consoleWriter{w: w, o: o}
}

type consoleWriter struct {
	w   io.Writer
	o   ConsoleOptions
	buf []byte
}

// rankColors cycle over ranks: green, blue, magenta, cyan, yellow.
var rankColors = []string{"\x1b[32m", "\x1b[34m", "\x1b[35m", "\x1b[36m", "\x1b[33m"}

// Terminal implements TerminalWriter.
func (c *consoleWriter) Terminal() bool { return c.o.Terminal != nil }

func (c *consoleWriter) Write(p []byte) (int, error) {
	rank, prefixLen, ok := parsePrefix(p)
	if !ok { // not a worker line: pass it on unchanged
		return c.w.Write(p)
	}
	if c.o.Ranks != nil && !c.o.Ranks[rank] {
		return len(p), nil
	}
	b := c.buf[:0]
	if c.o.Timestamps {
		b = c.o.Now().AppendFormat(b, c.o.TimestampLayout)
		b = append(b, ' ')
	}
	switch {
	case c.o.NoPrefix:
	case c.o.Color:
		b = append(b, rankColors[rank%len(rankColors)]...)
		b = append(b, p[:prefixLen]...)
		b = append(b, "\x1b[0m"...)
	default:
		b = append(b, p[:prefixLen]...)
	}
	b = append(b, p[prefixLen:]...)
	c.buf = b
	var err error
	if c.o.Terminal != nil {
		_, err = c.o.Terminal.write(c.w, b, len(b) > 0 && b[len(b)-1] != '\n')
	} else {
		_, err = c.w.Write(b)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Terminal coordinates the writers that share one terminal (the workers'
// stdout and stderr, the launcher's own messages): a partial line one of
// them left (a progress bar) is cleared before anything else is written.
type Terminal struct {
	mu      sync.Mutex
	pending io.Writer // where a partial line is showing, or nil
}

// Writer returns w (a stream of the terminal) for other writers, such as
// the launcher's logger: each write first clears a partial line.
func (t *Terminal) Writer(w io.Writer) io.Writer { return terminalWriter{t, w} }

type terminalWriter struct {
	t *Terminal
	w io.Writer
}

func (tw terminalWriter) Write(p []byte) (int, error) { return tw.t.write(tw.w, p, false) }

func (t *Terminal) write(w io.Writer, b []byte, partial bool) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending != nil {
		_, _ = t.pending.Write(clearLine)
		t.pending = nil
	}
	n, err := w.Write(b)
	if err == nil && partial {
		t.pending = w
	}
	return n, err
}

// parsePrefix reads "[rank]<stream>:" at the start of line.
func parsePrefix(line []byte) (rank, n int, ok bool) {
	if len(line) < 2 || line[0] != '[' {
		return 0, 0, false
	}
	end := bytes.IndexByte(line, ']')
	if end < 2 {
		return 0, 0, false
	}
	r, err := strconv.Atoi(string(line[1:end]))
	if err != nil || r < 0 {
		return 0, 0, false
	}
	rest := line[end+1:]
	if len(rest) == 0 || rest[0] != '<' {
		return 0, 0, false
	}
	colon := bytes.Index(rest, []byte(">:"))
	if colon < 0 {
		return 0, 0, false
	}
	return r, end + 1 + colon + 2, true
}
