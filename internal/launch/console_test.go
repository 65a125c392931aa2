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
