package dataparallel

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/gorovod/gorovod/collective"
)

// Error kinds callers can branch on with errors.Is. Each also wraps
// collective.ErrInvalid: they are all misuse, not failures of the job.
var (
	ErrDuplicateName   = errors.New("dataparallel: name registered twice")
	ErrLengthChanged   = errors.New("dataparallel: buffer changed length")
	ErrUnknownName     = errors.New("dataparallel: name not registered")
	ErrAlreadyReady    = errors.New("dataparallel: gradient already marked ready in this pass")
	ErrNothingReady    = errors.New("dataparallel: Synchronize with no gradient marked ready")
	ErrBadOption       = errors.New("dataparallel: unusable option")
	ErrNoBuffers       = errors.New("dataparallel: no gradient buffers registered")
	ErrNotCompressible = errors.New("dataparallel: compression needs float32 or float64 gradients")
)

func misuse(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", collective.ErrInvalid, kind, fmt.Sprintf(format, args...))
}

// Compression is how gradients travel on the wire.
type Compression int

const (
	// None sends gradients in their own element type.
	None Compression = iota
	// FP16 sends IEEE half-precision floats (11 significant bits, range
	// +-65504) and widens the result back.
	FP16
	// BF16 sends bfloat16 (8 significant bits, float32's range).
	BF16
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case FP16:
		return "fp16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// ParseCompression reads "none", "fp16" (or "float16") and "bf16" (or
// "bfloat16"), as a command-line flag would carry them.
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(s) {
	case "none", "":
		return None, nil
	case "fp16", "float16":
		return FP16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	}
	return None, misuse(ErrBadOption, "compression %q: want none, fp16 or bf16", s)
}

// config is what the options set; see the package documentation.
type config struct {
	op            collective.ReduceOp
	prescale      float64
	postscale     float64
	accumulate    int
	compression   Compression
	errorFeedback bool
	prefix        string
	callOpts      []collective.CallOption
	observer      func(Event)
}

func defaultConfig() config {
	return config{op: collective.Average, prescale: 1, postscale: 1, accumulate: 1, prefix: "grad/"}
}

// validate names the option that is unusable.
func (c config) validate() error {
	switch {
	case c.op != collective.Average && c.op != collective.Sum:
		return misuse(ErrBadOption, "reduce op %v: want Average or Sum", c.op)
	case !finite(c.prescale) || c.prescale == 0:
		return misuse(ErrBadOption, "prescale %v: want a finite non-zero factor", c.prescale)
	case !finite(c.postscale) || c.postscale == 0:
		return misuse(ErrBadOption, "postscale %v: want a finite non-zero factor", c.postscale)
	case c.accumulate < 1:
		return misuse(ErrBadOption, "accumulation over %d passes: want at least 1", c.accumulate)
	case c.compression < None || c.compression > BF16:
		return misuse(ErrBadOption, "compression %v: want None, FP16 or BF16", c.compression)
	case c.errorFeedback && c.compression == None:
		return misuse(ErrBadOption, "error feedback without compression: there is no rounding error to feed back")
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// Option configures New.
type Option func(*config)

// WithOp sets the reduction across ranks: collective.Average (the default)
// or collective.Sum.
func WithOp(op collective.ReduceOp) Option { return func(c *config) { c.op = op } }

// WithPrescale multiplies each rank's gradient by f before the reduction.
func WithPrescale(f float64) Option { return func(c *config) { c.prescale = f } }

// WithPostscale multiplies the reduced gradient by f.
func WithPostscale(f float64) Option { return func(c *config) { c.postscale = f } }

// WithAccumulation communicates once every k backward passes, sending the
// mean of the k passes' gradients (k = 1, the default, sends every pass).
func WithAccumulation(k int) Option { return func(c *config) { c.accumulate = k } }

// WithCompression sets the wire format of the gradients (None by default).
func WithCompression(comp Compression) Option { return func(c *config) { c.compression = comp } }

// WithErrorFeedback keeps each rank's compression rounding error and adds
// it to its next gradient, so that no part of a gradient is lost for good.
func WithErrorFeedback() Option { return func(c *config) { c.errorFeedback = true } }

// WithPrefix sets the prefix of the collective names ("grad/" by default):
// two helpers in one job need different prefixes.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithCallOptions passes options to every collective the helper issues,
// such as collective.InWorld(w) or collective.InProcessSet(ps).
func WithCallOptions(opts ...collective.CallOption) Option {
	return func(c *config) { c.callOpts = append(c.callOpts, opts...) }
}

// WithObserver calls fn, on the caller's goroutine, at each event of the
// helper (for tracing and tests; fn must not call back into the helper).
func WithObserver(fn func(Event)) Option { return func(c *config) { c.observer = fn } }
