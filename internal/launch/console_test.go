package launch

import (
	"bytes"
	"testing"
	"time"
)

func TestConsole(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	lines := []string{"[0]<stdout>:zero\n", "[1]<stdout>:one\n", "[12]<stderr>:x]<y>:z\n", "not a worker line\n"}
	for _, tc := range []struct {
		name string
		o    ConsoleOptions
		want string
	}{
		{"plain", ConsoleOptions{}, "[0]<stdout>:zero\n[1]<stdout>:one\n[12]<stderr>:x]<y>:z\nnot a worker line\n"},
		{"ranks", ConsoleOptions{Ranks: map[int]bool{1: true, 12: true}}, "[1]<stdout>:one\n[12]<stderr>:x]<y>:z\nnot a worker line\n"},
		{"no prefix", ConsoleOptions{NoPrefix: true}, "zero\none\nx]<y>:z\nnot a worker line\n"},
		{"timestamps", ConsoleOptions{Timestamps: true, TimestampLayout: time.RFC3339, Ranks: map[int]bool{0: true}},
			"2026-12-07T10:00:00Z [0]<stdout>:zero\nnot a worker line\n"},
		{"color", ConsoleOptions{Color: true, Ranks: map[int]bool{0: true, 1: true}},
			"\x1b[32m[0]<stdout>:\x1b[0mzero\n\x1b[34m[1]<stdout>:\x1b[0mone\nnot a worker line\n"},
	} {
		var b bytes.Buffer
		tc.o.Now = func() time.Time { return at }
		w := Console(&b, tc.o)
		for _, l := range lines {
			if n, err := w.Write([]byte(l)); n != len(l) || err != nil {
				t.Fatalf("%s: Write = %d, %v", tc.name, n, err)
			}
		}
		if b.String() != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, b.String(), tc.want)
		}
	}
}

// Run's sinks hand Console whole lines, also for long and unterminated ones.
func TestConsoleBehindSink(t *testing.T) {
	var b bytes.Buffer
	out, _ := NewSinks(Console(&b, ConsoleOptions{NoPrefix: true, Ranks: map[int]bool{3: true}}), nil)
	for _, rank := range []int{2, 3} {
		lw := NewLineWriter(out, Prefix(rank, "stdout"), nil)
		_, _ = lw.Write([]byte("a\nb"))
		_, _ = lw.Write([]byte("c\r\nunterminated"))
		lw.Flush()
	}
	if want := "a\nbc\nunterminated\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// A terminal sees a worker's progress bar as it is redrawn; the next line
// (of any rank or stream) clears it first; files keep the raw bytes.
func TestRedrawOnTerminal(t *testing.T) {
	var term, file bytes.Buffer
	tm := new(Terminal)
	out, errOut := NewSinks(Console(&term, ConsoleOptions{Terminal: tm}), Console(&term, ConsoleOptions{Terminal: tm}))
	bar := NewLineWriter(out, Prefix(0, "stdout"), &file)
	other := NewLineWriter(errOut, Prefix(1, "stderr"), nil)
	_, _ = bar.Write([]byte("start\n\r\x1b[Kstep 1"))
	_, _ = bar.Write([]byte("\r\x1b[Kstep 2"))
	_, _ = other.Write([]byte("warning\n"))
	_, _ = bar.Write([]byte("\r\x1b[Kstep 3"))
	_, _ = tm.Writer(&term).Write([]byte("gorun: a message\n"))
	_, _ = bar.Write([]byte("\r\x1b[Kstep 4"))
	_, _ = bar.Write([]byte("\r\x1b[Kepoch done\n"))
	want := "[0]<stdout>:start\n" +
		"[0]<stdout>:step 1" + "\r\x1b[K" + "[0]<stdout>:step 2" + "\r\x1b[K" + "[1]<stderr>:warning\n" +
		"[0]<stdout>:step 3" + "\r\x1b[K" + "gorun: a message\n" +
		"[0]<stdout>:step 4" + "\r\x1b[K" + "[0]<stdout>:epoch done\n"
	if term.String() != want {
		t.Errorf("terminal got\n%q\nwant\n%q", term.String(), want)
	}
	if want := "start\n\r\x1b[Kstep 1\r\x1b[Kstep 2\r\x1b[Kstep 3\r\x1b[Kstep 4\r\x1b[Kepoch done\n"; file.String() != want {
		t.Errorf("file got %q, want %q", file.String(), want)
	}

	// Not a terminal: nothing is shown before the newline, as before.
	var pipe bytes.Buffer
	out, _ = NewSinks(&pipe, nil)
	bar = NewLineWriter(out, Prefix(0, "stdout"), nil)
	_, _ = bar.Write([]byte("\rstep 1"))
	if pipe.Len() != 0 {
		t.Errorf("a pipe got a partial line: %q", pipe.String())
	}
	_, _ = bar.Write([]byte("\rdone\n"))
	if want := "[0]<stdout>:\rstep 1\rdone\n"; pipe.String() != want {
		t.Errorf("pipe got %q, want %q", pipe.String(), want)
	}
}
