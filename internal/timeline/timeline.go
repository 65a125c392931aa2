package timeline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Activity names the loop records inside an op span (Horovod's names).
const (
	Queue     = "QUEUE"                    // decided, waiting behind earlier responses
	MemcpyIn  = "MEMCPY_IN_FUSION_BUFFER"  // packing fused tensors
	MemcpyOut = "MEMCPY_OUT_FUSION_BUFFER" // unpacking them
)

// ErrClosed is returned by Flush on a closed timeline.
var ErrClosed = errors.New("timeline: closed")

// Defaults for Options' zero fields.
const (
	DefaultMaxBytes      = 64 << 20
	DefaultBufferBytes   = 64 << 10
	DefaultFlushInterval = time.Second
)

// Options tunes a Timeline. The zero value is usable.
type Options struct {
	// MaxBytes caps the file size (0 means DefaultMaxBytes, negative means
	// unbounded). Past it, open spans are closed, one "timeline truncated"
	// event is written and later events are dropped and counted.
	MaxBytes int64
	// BufferBytes is how much is buffered before a write (0: DefaultBufferBytes).
	BufferBytes int
	// FlushInterval bounds how stale the file may be, measured on the event
	// clock: an event arriving this long after the last write flushes the
	// buffer (0: DefaultFlushInterval; negative: flush only when full).
	FlushInterval time.Duration
	// MarkCycles writes a CYCLE_START instant per negotiation cycle
	// (OnCycleStart). Off by default: at 1 ms cycles it is ~70 KB/s.
	MarkCycles bool
	// Origin is the time written as ts 0 (zero: when the timeline is made).
	Origin time.Time
}

// Stats describes what a timeline wrote.
type Stats struct {
	Events    int64 // events written (including metadata)
	Dropped   int64 // calls (per tensor) dropped after truncation
	Bytes     int64 // bytes written or buffered
	Truncated bool  // the MaxBytes cap was reached
}

// phase is where one tensor is in its life on the timeline.
type phase uint8

const (
	idle        phase = iota
	negotiating       // NEGOTIATE_<OP> span open
	running           // op span open, no activity
	inActivity        // op span and one activity open
)

type tensorState struct {
	pid   int
	phase phase
}

// openSpans is how many E events a tensor needs to be balanced.
func (t *tensorState) openSpans() int {
	switch t.phase {
	case negotiating, running:
		return 1
	case inActivity:
		return 2
	}
	return 0
}

// Timeline writes a Chrome-trace JSON file. All methods are safe for
// concurrent use and are no-ops on a nil *Timeline, so the loop calls them
// unconditionally.
type Timeline struct {
	mu        sync.Mutex
	w         io.Writer
	c         io.Closer // nil when the caller keeps ownership of w
	name      string    // for errors
	opts      Options
	origin    time.Time
	buf       []byte
	ev        []byte // scratch: the event being built
	lastFlush time.Time
	lastTS    time.Time // latest event time, for events made without a clock
	tensors   map[string]*tensorState
	nextPID   int
	open      int // spans open over all tensors
	stats     Stats
	err       error // first write error; later events are dropped
	closed    bool
	first     bool // no event written yet (no leading comma)
}

// Open creates (truncating) the file at path and writes a timeline to it.
func Open(path string, opts Options) (*Timeline, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("timeline: %w", err)
	}
	t, err := New(f, opts)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	t.name = path
	return t, nil
}

// New writes a timeline to w. If w is an io.Closer, Close closes it.
func New(w io.Writer, opts Options) (*Timeline, error) {
	if w == nil {
		return nil, fmt.Errorf("timeline: nil writer")
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxBytes > 0 && opts.MaxBytes < minMaxBytes {
		return nil, fmt.Errorf("timeline: MaxBytes %d is below the minimum %d", opts.MaxBytes, minMaxBytes)
	}
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = DefaultBufferBytes
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	t := &Timeline{
		w: w, name: "timeline", opts: opts, origin: opts.Origin,
		buf: make([]byte, 0, opts.BufferBytes), tensors: make(map[string]*tensorState),
		nextPID: 1, first: true,
	}
	if c, ok := w.(io.Closer); ok {
		t.c = c
	}
	if t.origin.IsZero() {
		t.origin = time.Now()
	}
	t.lastFlush = t.origin
	t.buf = append(t.buf, "[\n"...)
	t.stats.Bytes = 2
	t.metadata(0, "gorovod")
	return t, nil
}

// Enabled reports whether events are being recorded, so the loop can skip
// reading the clock when they are not.
func (t *Timeline) Enabled() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closed && !t.stats.Truncated && t.err == nil
}

// OnNegotiateStart opens the NEGOTIATE_<OP> span of name; op is the
// collective's name ("allreduce").
func (t *Timeline) OnNegotiateStart(now time.Time, name string, op string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live() {
		return
	}
	tn := t.tensorOf(name)
	if tn == nil {
		return
	}
	t.closeSpans(now, tn) // a span left open by a missed end
	t.begin(now, tn, "NEGOTIATE_"+opName(op), nil)
	tn.phase = negotiating
}

// OnRankReady marks, inside the negotiation span, when rank submitted name
// a zero-length slice named by the rank.
func (t *Timeline) OnRankReady(now time.Time, name string, rank int) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live() {
		return
	}
	tn := t.tensors[name]
	if tn == nil || tn.phase != negotiating {
		return // negotiation began before this timeline did
	}
	ev := t.head('X', tn.pid, now)
	ev = append(ev, `,"dur":0,"name":"`...)
	ev = strconv.AppendInt(ev, int64(rank), 10)
	ev = append(ev, `","args":{"rank":`...)
	ev = strconv.AppendInt(ev, int64(rank), 10)
	ev = append(ev, "}}"...)
	t.emit(now, ev, 0)
}

// OnNegotiateEnd closes the negotiation span of name.
func (t *Timeline) OnNegotiateEnd(now time.Time, name string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live() {
		return
	}
	if tn := t.tensors[name]; tn != nil && tn.phase == negotiating {
		t.end(now, tn, nil)
		tn.phase = idle
	}
}

// OnCycleStart writes a CYCLE_START instant if Options.MarkCycles is set.
func (t *Timeline) OnCycleStart(now time.Time) {
	if t == nil || !t.opts.MarkCycles {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.live() {
		return
	}
	ev := t.head('i', 0, now)
	ev = append(ev, `,"s":"g","name":"CYCLE_START"}`...)
	t.emit(now, ev, 0)
}

// Op describes one response of a cycle for the timeline: the collective's
// name ("allreduce"), its element type, the tensors it carries and their
// element counts, and the process set (0: the whole world).
type Op struct {
	Op         string
	DType      string
	Names      []string
	Counts     []int64
	ProcessSet int
}

// OpStart opens, for every name of r, the op span (named by the op, with
// dtype and count as args) and its QUEUE activity. Call it for all of a
// cycle's responses before executing the first, so QUEUE shows how long
// each waited behind the ones before it.
func (t *Timeline) OpStart(now time.Time, r Op) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, name := range r.Names {
		if !t.live() {
			return
		}
		tn := t.tensorOf(name)
		if tn == nil {
			return
		}
		t.closeSpans(now, tn)
		t.begin(now, tn, opName(r.Op), func(ev []byte) []byte {
			ev = append(ev, `"dtype":`...)
			ev = appendString(ev, r.DType)
			if i < len(r.Counts) {
				ev = append(ev, `,"count":`...)
				ev = strconv.AppendInt(ev, r.Counts[i], 10)
			}
			if len(r.Names) > 1 {
				ev = append(ev, `,"fused":`...)
				ev = strconv.AppendInt(ev, int64(len(r.Names)), 10)
			}
			if r.ProcessSet != 0 {
				ev = append(ev, `,"process_set":`...)
				ev = strconv.AppendInt(ev, int64(r.ProcessSet), 10)
			}
			return ev
		})
		tn.phase = running
		if !t.stats.Truncated {
			t.begin(now, tn, Queue, nil)
			tn.phase = inActivity
		}
	}
}

// Activity ends the current activity of each name (QUEUE at first) and
// starts activity: MemcpyIn, the collective (e.g. "CPU_ALLREDUCE"),
// MemcpyOut. Names without an open op span are ignored.
func (t *Timeline) Activity(now time.Time, names []string, activity string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range names {
		if !t.live() {
			return
		}
		tn := t.tensors[name]
		if tn == nil || tn.phase < running {
			continue
		}
		if tn.phase == inActivity {
			t.end(now, tn, nil)
			tn.phase = running
		}
		t.begin(now, tn, activity, nil)
		tn.phase = inActivity
	}
}

// OpEnd closes the activity and op span of each name; a non-nil err is
// recorded in the span's args.
func (t *Timeline) OpEnd(now time.Time, names []string, err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range names {
		if !t.live() {
			return
		}
		tn := t.tensors[name]
		if tn == nil || tn.phase < running {
			continue
		}
		if tn.phase == inActivity {
			t.end(now, tn, nil)
		}
		var args func([]byte) []byte
		if err != nil {
			args = func(ev []byte) []byte {
				ev = append(ev, `"error":`...)
				return appendString(ev, err.Error())
			}
		}
		t.end(now, tn, args)
		tn.phase = idle
	}
}

// Flush writes buffered events to the file.
func (t *Timeline) Flush() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.flush(time.Time{})
	return t.err
}

// Close ends every open span, writes the closing bracket, flushes and
// closes the file. It is idempotent: later calls return the first result.
func (t *Timeline) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.err
	}
	t.closed = true
	if t.err == nil && !t.stats.Truncated {
		t.closeAll(t.lastEvent())
	}
	t.buf = append(t.buf, "\n]\n"...)
	t.stats.Bytes += 3
	t.flush(time.Time{})
	if t.c != nil {
		if err := t.c.Close(); err != nil && t.err == nil {
			t.err = fmt.Errorf("timeline %s: close: %w", t.name, err)
		}
	}
	t.tensors = nil
	return t.err
}

// Stats returns what was written so far.
func (t *Timeline) Stats() Stats {
	if t == nil {
		return Stats{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// --- internals; t.mu is held ---

// live reports whether an event may be written, counting it as dropped
// after truncation.
func (t *Timeline) live() bool {
	if t.closed || t.err != nil {
		return false
	}
	if t.stats.Truncated {
		t.stats.Dropped++
		return false
	}
	return true
}

// tensorOf returns name's state, writing its process metadata the first time.
// It returns nil if the metadata did not fit (the timeline is truncated).
func (t *Timeline) tensorOf(name string) *tensorState {
	if tn := t.tensors[name]; tn != nil {
		return tn
	}
	pid := t.nextPID
	if !t.metadata(pid, name) {
		return nil
	}
	t.nextPID++
	tn := &tensorState{pid: pid}
	t.tensors[name] = tn
	return tn
}

// metadata names process pid and fixes its sort order (first seen first).
func (t *Timeline) metadata(pid int, name string) bool {
	ev := append(t.ev[:0], `{"ph":"M","pid":`...)
	ev = strconv.AppendInt(ev, int64(pid), 10)
	ev = append(ev, `,"name":"process_name","args":{"name":`...)
	ev = appendString(ev, name)
	ev = append(ev, `}},`+"\n"+`{"ph":"M","pid":`...)
	ev = strconv.AppendInt(ev, int64(pid), 10)
	ev = append(ev, `,"name":"process_sort_index","args":{"sort_index":`...)
	ev = strconv.AppendInt(ev, int64(pid), 10)
	ev = append(ev, "}}"...)
	return t.emit(time.Time{}, ev, 1)
}

// head starts an event in the scratch buffer.
func (t *Timeline) head(ph byte, pid int, now time.Time) []byte {
	ev := append(t.ev[:0], `{"ph":"`...)
	ev = append(ev, ph)
	ev = append(ev, `","pid":`...)
	ev = strconv.AppendInt(ev, int64(pid), 10)
	ev = append(ev, `,"tid":0,"ts":`...)
	return t.appendTS(ev, now)
}

func (t *Timeline) begin(now time.Time, tn *tensorState, name string, args func([]byte) []byte) {
	ev := t.head('B', tn.pid, now)
	ev = append(ev, `,"name":`...)
	ev = appendString(ev, name)
	if args != nil {
		ev = append(ev, `,"args":{`...)
		ev = args(ev)
		ev = append(ev, '}')
	}
	ev = append(ev, '}')
	if t.emit(now, ev, 1) {
		t.open++
	}
}

func (t *Timeline) end(now time.Time, tn *tensorState, args func([]byte) []byte) {
	ev := t.head('E', tn.pid, now)
	if args != nil {
		ev = append(ev, `,"args":{`...)
		ev = args(ev)
		ev = append(ev, '}')
	}
	ev = append(ev, '}')
	if args != nil && t.opts.MaxBytes > 0 &&
		t.stats.Bytes+int64(len(ev))+2+int64(t.open-1)*maxEndBytes+maxTruncatedBytes+3 > t.opts.MaxBytes {
		ev = append(t.head('E', tn.pid, now), '}') // no room for the args
	}
	// A plain E always fits: its room was reserved when its B was written.
	t.write(now, ev)
	t.open--
}

// closeSpans ends whatever tn has open.
func (t *Timeline) closeSpans(now time.Time, tn *tensorState) {
	for n := tn.openSpans(); n > 0; n-- {
		t.end(now, tn, nil)
	}
	tn.phase = idle
}

// closeAll ends every open span, in pid order so the output is deterministic.
func (t *Timeline) closeAll(now time.Time) {
	var open []*tensorState
	for _, tn := range t.tensors {
		if tn.phase != idle {
			open = append(open, tn)
		}
	}
	slices.SortFunc(open, func(a, b *tensorState) int { return a.pid - b.pid })
	for _, tn := range open {
		t.closeSpans(now, tn)
	}
}

// maxEndBytes bounds one E event: separator, fixed text, a pid and a ts.
const maxEndBytes = int64(len(",\n"+`{"ph":"E","pid":,"tid":0,"ts":}`)) + 20 + 32

// truncatedEvent is written once when the cap is reached.
const truncatedEvent = `{"ph":"i","pid":0,"tid":0,"s":"g","name":"timeline truncated","args":{"max_bytes":`

const maxTruncatedBytes = int64(len(",\n"+truncatedEvent+"},\"ts\":}")) + 2*20 + 32

// minMaxBytes leaves room for the header, the truncation marker and the end.
const minMaxBytes = 4 << 10

// emit writes ev unless it would leave too little room to close the spans
// open after it (opens more of them) and mark the truncation; then it
// truncates instead and reports false.
func (t *Timeline) emit(now time.Time, ev []byte, opens int) bool {
	if t.opts.MaxBytes > 0 {
		reserve := int64(t.open+opens)*maxEndBytes + maxTruncatedBytes + 3
		if t.stats.Bytes+int64(len(ev))+2+reserve > t.opts.MaxBytes {
			t.truncate(now)
			return false
		}
	}
	t.write(now, ev)
	return true
}

func (t *Timeline) truncate(now time.Time) {
	if now.IsZero() {
		now = t.lastEvent()
	}
	t.closeAll(now)
	ev := append(t.ev[:0], truncatedEvent...)
	ev = strconv.AppendInt(ev, t.opts.MaxBytes, 10)
	ev = append(ev, `},"ts":`...)
	ev = t.appendTS(ev, now)
	ev = append(ev, '}')
	t.write(now, ev)
	t.stats.Truncated = true
	t.stats.Dropped++
	t.tensors = map[string]*tensorState{} // nothing more will be written for them
	t.flush(time.Time{})
}

func (t *Timeline) write(now time.Time, ev []byte) {
	if !t.first {
		t.buf = append(t.buf, ",\n"...)
		t.stats.Bytes += 2
	}
	t.first = false
	t.buf = append(t.buf, ev...)
	t.ev = ev[:0]
	t.stats.Bytes += int64(len(ev))
	t.stats.Events++
	if !now.IsZero() && now.After(t.lastTS) {
		t.lastTS = now
	}
	if len(t.buf) >= t.opts.BufferBytes ||
		(t.opts.FlushInterval > 0 && !now.IsZero() && now.Sub(t.lastFlush) >= t.opts.FlushInterval) {
		t.flush(now)
	}
}

// flush writes the buffer; it always ends at an event boundary, so a file
// cut short by a crash is still loadable (see the package doc).
func (t *Timeline) flush(now time.Time) {
	if !now.IsZero() {
		t.lastFlush = now
	}
	if len(t.buf) == 0 || t.err != nil {
		t.buf = t.buf[:0]
		return
	}
	if _, err := t.w.Write(t.buf); err != nil {
		t.err = fmt.Errorf("timeline %s: write: %w", t.name, err)
	}
	t.buf = t.buf[:0]
}

func (t *Timeline) lastEvent() time.Time {
	if t.lastTS.IsZero() {
		return t.origin
	}
	return t.lastTS
}

// appendTS writes now as microseconds since the origin, with ns precision.
func (t *Timeline) appendTS(ev []byte, now time.Time) []byte {
	if now.IsZero() {
		now = t.lastEvent()
	}
	d := now.Sub(t.origin).Nanoseconds()
	if d < 0 {
		ev = append(ev, '-')
		d = -d
	}
	ev = strconv.AppendInt(ev, d/1000, 10)
	if ns := d % 1000; ns != 0 {
		ev = append(ev, '.', byte('0'+ns/100), byte('0'+ns/10%10), byte('0'+ns%10))
	}
	return ev
}

// opNames caches the upper-case op names span names are made of.
var opNames sync.Map // string -> string

func opName(op string) string {
	if v, ok := opNames.Load(op); ok {
		return v.(string)
	}
	up := strings.ToUpper(op)
	opNames.Store(op, up)
	return up
}
