package logging

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// LauncherOptions shape the launcher's (gorun's) own messages.
type LauncherOptions struct {
	Level      string // debug, info, warn, error; "" means warn
	Format     string // "console" (default) or "json"
	Timestamps bool   // console: start each line with the time
	Color      bool   // console: colour the level word (only for a terminal)
	Name       string // console: the program name each line starts with ("gorun")
	// Now is the clock of console timestamps; nil means time.Now.
	Now func() time.Time
}

// ParseLevel checks a level name ("" means warn).
func ParseLevel(level string) (zapcore.Level, error) {
	lvl := zapcore.WarnLevel
	if level == "" {
		return lvl, nil
	}
	if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil || lvl > zapcore.ErrorLevel {
		return lvl, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", level)
	}
	return lvl, nil
}

// NewLauncher returns the launcher's logger writing to w. The console
// format is one plain line per message, for a person reading a terminal:
//
//	gorun: error: rank 1 (pid 4711, host localhost) exited with code 2; stopping the other workers
//
// with no source position and no field repeating what the message says
// (a field whose "key value" is already in the message is left out; the
// others follow in parentheses). The json format is one JSON object per
// line (time, level, logger, msg and the fields), for programs.
func NewLauncher(w io.Writer, o LauncherOptions) (*zap.Logger, error) {
	lvl, err := ParseLevel(o.Level)
	if err != nil {
		return nil, err
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	switch o.Format {
	case "", "console":
		name := o.Name
		if name == "" {
			name = "gorun"
		}
		now := o.Now
		if now == nil {
			now = time.Now
		}
		return zap.New(&plainCore{level: lvl, out: ws, opts: o, name: name, now: now, mu: new(sync.Mutex)}), nil
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "time"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		ec.CallerKey = zapcore.OmitKey
		ec.StacktraceKey = zapcore.OmitKey
		return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), ws, lvl)), nil
	}
	return nil, fmt.Errorf("unknown log format %q (want console or json)", o.Format)
}

// plainCore is the console format of NewLauncher.
type plainCore struct {
	level  zapcore.Level
	out    zapcore.WriteSyncer
	opts   LauncherOptions
	name   string
	now    func() time.Time
	mu     *sync.Mutex // one line at a time (shared by With copies)
	fields []zapcore.Field
}

func (c *plainCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *plainCore) With(fields []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &cp
}

func (c *plainCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *plainCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	var b strings.Builder
	if c.opts.Timestamps {
		b.WriteString(c.now().Format(TimestampLayout))
		b.WriteByte(' ')
	}
	b.WriteString(c.name)
	b.WriteString(": ")
	if word, color := levelWord(e.Level); word != "" {
		if c.opts.Color {
			b.WriteString(color + word + "\x1b[0m")
		} else {
			b.WriteString(word)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	b.WriteString(extraFields(e.Message, append(append([]zapcore.Field(nil), c.fields...), fields...)))
	b.WriteByte('\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := io.WriteString(c.out, b.String())
	return err
}

func (c *plainCore) Sync() error { return c.out.Sync() }

// TimestampLayout is how the launcher writes times on the console
// (UTC offset included, milliseconds).
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

func levelWord(l zapcore.Level) (word, color string) {
	switch {
	case l >= zapcore.ErrorLevel:
		return "error", "\x1b[31m" // red
	case l == zapcore.WarnLevel:
		return "warning", "\x1b[33m" // yellow
	case l == zapcore.DebugLevel:
		return "debug", "\x1b[2m" // dim
	}
	return "", ""
}

// extraFields renders the fields msg does not already say, as
// " (key value, key value)"; an error field reads ": the error".
func extraFields(msg string, fields []zapcore.Field) string {
	var parts []string
	var errText string
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		keys := make([]string, 0, len(enc.Fields))
		for k := range enc.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := fieldText(enc.Fields[k])
			if f.Type == zapcore.ErrorType && k == f.Key {
				errText = v
				continue
			}
			kv := strings.ReplaceAll(k, "_", " ") + " " + v
			if strings.Contains(msg, kv) {
				continue
			}
			parts = append(parts, kv)
		}
	}
	out := ""
	if errText != "" && !strings.Contains(msg, errText) {
		out = ": " + errText
	}
	if len(parts) > 0 {
		out += " (" + strings.Join(parts, ", ") + ")"
	}
	return out
}

// fieldText renders a field value: lists as ["a", "b"], so that an argument
// list shows where each argument ends.
func fieldText(v any) string {
	list, ok := v.([]any)
	if !ok {
		return fmt.Sprint(v)
	}
	parts := make([]string, len(list))
	for i, e := range list {
		if s, ok := e.(string); ok {
			parts[i] = strconv.Quote(s)
		} else {
			parts[i] = fmt.Sprint(e)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
