package launch

import (
	"bytes"
	"io"
	"strconv"
	"sync"
)

// maxLine bounds how much of an unterminated line is held before it is
// written out as a line of its own.
const maxLine = 64 << 10

// Sink serialises whole lines from many workers onto one writer, so lines
// of different workers never interleave mid-line.
type Sink struct {
	mu *sync.Mutex
	w  io.Writer
	// redraw: the writer is a terminal that shows a worker's partial line
	// redrawn with '\r' (a progress bar) as it changes; see TerminalWriter.
	redraw bool
}

// TerminalWriter is an optional capability of the writers given to
// NewSinks. When Terminal reports true, the writer shows its lines on a
// terminal and also receives, as writes without a trailing newline, the
// partial lines a worker redraws with '\r': it shows each in place of the
// one before and clears it before the next write (Console does).
type TerminalWriter interface {
	io.Writer
	Terminal() bool
}

// NewSinks returns sinks for stdout and stderr sharing one lock, so a
// terminal showing both never gets a line torn by the other stream.
func NewSinks(stdout, stderr io.Writer) (out, errOut *Sink) {
	mu := new(sync.Mutex)
	return &Sink{mu: mu, w: stdout, redraw: isTerminalWriter(stdout)}, &Sink{mu: mu, w: stderr, redraw: isTerminalWriter(stderr)}
}

func isTerminalWriter(w io.Writer) bool {
	tw, ok := w.(TerminalWriter)
	return ok && tw.Terminal()
}

func (s *Sink) writeLine(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Errors (a closed terminal, a reader that went away) are dropped:
	// the workers' output must keep draining or they would block.
	_, _ = s.w.Write(b)
}

var clearLine = []byte("\r\x1b[K")

// visible is what a terminal shows of a line redrawn with '\r': the text
// after the last carriage return, without the erase-line sequence that
// usually follows it.
func visible(line []byte) []byte {
	if i := bytes.LastIndexByte(line, '\r'); i >= 0 {
		line = line[i+1:]
	}
	return bytes.TrimPrefix(line, clearLine[1:])
}

// LineWriter prefixes each line written to it and hands whole lines to a
// Sink. It is used by one goroutine at a time (one per worker stream).
type LineWriter struct {
	sink   *Sink
	prefix []byte
	buf    []byte // an unterminated line
	line   []byte // scratch: prefix + line + '\n'
	extra  io.Writer
}

// NewLineWriter returns a writer whose lines reach sink as prefix+line.
// extra, when not nil, also receives the raw bytes (e.g. a per-rank file).
func NewLineWriter(sink *Sink, prefix string, extra io.Writer) *LineWriter {
	return &LineWriter{sink: sink, prefix: []byte(prefix), extra: extra}
}

// Prefix returns the rank prefix gorun uses: "[rank]<stream>:".
func Prefix(rank int, stream string) string {
	return "[" + strconv.Itoa(rank) + "]<" + stream + ">:"
}

// Write never fails: output is forwarded as lines complete.
func (w *LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.extra != nil {
		_, _ = w.extra.Write(p)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if w.sink.redraw {
				w.redraw()
			}
			if len(w.buf) >= maxLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return n, nil
		}
		if len(w.buf) > 0 {
			w.buf = append(w.buf, p[:i]...)
			w.emit(w.buf)
			w.buf = w.buf[:0]
		} else {
			w.emit(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

// Flush writes out an unterminated last line, ending it with a newline.
func (w *LineWriter) Flush() {
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *LineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if w.sink.redraw {
		line = visible(line)
	}
	w.line = append(append(append(w.line[:0], w.prefix...), line...), '\n')
	w.sink.writeLine(w.line)
}

// redraw shows a partial line that the worker redraws with '\r' on the
// terminal now, and keeps only what follows the last '\r' (the rest has
// been drawn over).
func (w *LineWriter) redraw() {
	i := bytes.LastIndexByte(w.buf, '\r')
	if i < 0 {
		return
	}
	if v := visible(w.buf); len(v) > 0 {
		w.line = append(append(w.line[:0], w.prefix...), v...)
		w.sink.writeLine(w.line) // no newline: the TerminalWriter shows it in place
	}
	w.buf = append(w.buf[:0], w.buf[i:]...)
}
