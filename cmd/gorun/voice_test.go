package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const failRank1 = `echo "out $RANK"; echo "err $RANK" >&2; if [ "$RANK" = 1 ]; then exit 3; fi; exec sleep 30`

// gorunLines are stderr lines that are gorun's own, not a worker's.
func gorunLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if l != "" && !regexp.MustCompile(`^\[\d+\]<std(out|err)>:`).MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// A failing job: one plain line per event, no source positions, no
// repeated fields, and a last line saying where to look.
func TestFailureMessagesArePlain(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "sh", "-c", failRank1)
	if r.code != 3 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := gorunLines(r.stderr)
	if len(lines) == 0 {
		t.Fatalf("no message from gorun:\n%s", r.stderr)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "gorun: ") || regexp.MustCompile(`\.go:\d+|\{"`).MatchString(l) || strings.Contains(l, "\x1b[") {
			t.Errorf("not a plain gorun line: %q", l)
		}
	}
	if !regexp.MustCompile(`(?m)^gorun: error: rank 1 \(pid \d+, host localhost\) exited with code 3; stopping the other workers$`).MatchString(r.stderr) {
		t.Errorf("no plain line for rank 1's exit:\n%s", r.stderr)
	}
	if last := lines[len(lines)-1]; last != "gorun: error: job failed: rank 1 on host localhost exited with code 3; its output is above, on the lines starting with [1]" {
		t.Errorf("last line %q", last)
	}
}

func TestLogFormatJSON(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "--log-format", "json", "--log-level", "debug", "sh", "-c", failRank1)
	if r.code != 3 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := gorunLines(r.stderr)
	levels := map[string]bool{}
	for _, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("not one JSON object per line: %q: %v", l, err)
		}
		if obj["msg"] == nil || obj["level"] == nil || obj["time"] == nil {
			t.Errorf("line %q lacks msg, level or time", l)
		}
		levels[obj["level"].(string)] = true
	}
	if !levels["debug"] || !levels["error"] {
		t.Errorf("want debug and error lines, got %v:\n%s", levels, r.stderr)
	}
}

func TestLogLevel(t *testing.T) {
	// The warning about an -x variable gorun does not have is gone at error level...
	r := gorun(t, 20*time.Second, "-np", "1", "--log-level", "error", "-x", "GORUN_TEST_SURELY_UNSET", "true")
	if r.code != 0 || r.stderr != "" {
		t.Errorf("--log-level error: exit %d, stderr %q", r.code, r.stderr)
	}
	// ...and plain at the default.
	r = gorun(t, 20*time.Second, "-np", "1", "-x", "GORUN_TEST_SURELY_UNSET", "true")
	if want := "gorun: warning: -x GORUN_TEST_SURELY_UNSET: not set in gorun's environment; not exported\n"; r.code != 0 || r.stderr != want {
		t.Errorf("default level: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	// debug reaches the workers too.
	r = gorun(t, 20*time.Second, "-np", "1", "--log-level", "debug", "sh", "-c", "echo $GOROVOD_LOG_LEVEL")
	if r.code != 0 || !strings.Contains(r.stdout, "[0]<stdout>:debug\n") || !strings.Contains(r.stderr, "gorun: debug: ") {
		t.Errorf("--log-level debug: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestOutputRanksAndFiles(t *testing.T) {
	dir := t.TempDir()
	r := gorun(t, 20*time.Second, "-np", "4", "--output-ranks", "0,2-3", "--output-filename", dir, "sh", "-c", `echo "out $RANK"; echo "err $RANK" >&2`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "out 1") || strings.Contains(r.stderr, "err 1") {
		t.Errorf("rank 1 reached the console:\n%s%s", r.stdout, r.stderr)
	}
	for _, rank := range []string{"0", "2", "3"} {
		if !strings.Contains(r.stdout, "["+rank+"]<stdout>:out "+rank+"\n") || !strings.Contains(r.stderr, "["+rank+"]<stderr>:err "+rank+"\n") {
			t.Errorf("rank %s missing from the console:\n%s%s", rank, r.stdout, r.stderr)
		}
	}
	for _, rank := range []string{"0", "1", "2", "3"} {
		b, err := os.ReadFile(filepath.Join(dir, "rank."+rank, "stdout"))
		if err != nil || string(b) != "out "+rank+"\n" {
			t.Errorf("rank %s file: %q, %v", rank, b, err)
		}
	}
}

func TestFailureHintNamesHiddenRank(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "--output-ranks", "0", "sh", "-c", failRank1)
	if r.code != 3 || !strings.Contains(r.stderr, "its output was not shown (--output-ranks 0): run again with --output-filename DIR") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	dir := t.TempDir()
	r = gorun(t, 20*time.Second, "-np", "2", "--output-filename", dir, "sh", "-c", failRank1)
	if r.code != 3 || !strings.Contains(r.stderr, "its output is in "+filepath.Join(dir, "rank.1")) {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

func TestNoPrefixAndTimestamps(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "--no-prefix", "sh", "-c", `echo "line $RANK"`)
	if r.code != 0 || (r.stdout != "line 0\nline 1\n" && r.stdout != "line 1\nline 0\n") {
		t.Errorf("--no-prefix: exit %d, stdout %q", r.code, r.stdout)
	}
	r = gorun(t, 20*time.Second, "-np", "1", "--prefix-output-with-timestamp", "-x", "GORUN_TEST_SURELY_UNSET", "sh", "-c", `echo hi`)
	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) `
	if r.code != 0 || !regexp.MustCompile(`^`+ts+`\[0\]<stdout>:hi\n$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`^`+ts+`gorun: warning: -x GORUN_TEST_SURELY_UNSET`).MatchString(r.stderr) {
		t.Errorf("--prefix-output-with-timestamp: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = gorun(t, 20*time.Second, "-np", "1", "--no-prefix", "--prefix-output-with-timestamp", "sh", "-c", `echo hi`)
	if r.code != 0 || !regexp.MustCompile(`^`+ts+`hi\n$`).MatchString(r.stdout) {
		t.Errorf("both: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestVoiceBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-np", "1", "--log-level", "loud", "true"}, `--log-level: unknown log level "loud"`},
		{[]string{"-np", "1", "--log-format", "xml", "true"}, `--log-format "xml": want console or json`},
		{[]string{"-np", "2", "--output-ranks", "2", "true"}, `--output-ranks "2": rank 2 does not exist in a job of 2`},
		{[]string{"-np", "2", "--output-ranks", "a", "true"}, `--output-ranks "a": "a" is not a rank`},
		{[]string{"-np", "4", "--output-ranks", "3-1", "true"}, `"3-1" is not a rank or a range`},
		{[]string{"-np", "1", "--timeline-mark-cycles", "true"}, "--timeline-mark-cycles needs --timeline-filename"},
	} {
		r := gorun(t, 10*time.Second, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) || r.stdout != "" {
			t.Errorf("gorun %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.msg)
		}
	}
}

func TestHorovodrunFlags(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "1", "--network-interfaces", "lo", "--hierarchical-allreduce",
		"--timeline-filename", "tl.json", "--timeline-mark-cycles",
		"sh", "-c", `env | grep -E '^GOROVOD_(NETWORK_INTERFACE|HIERARCHICAL_ALLREDUCE|TIMELINE_MARK_CYCLES)=' | sort`)
	want := "[0]<stdout>:GOROVOD_HIERARCHICAL_ALLREDUCE=1\n[0]<stdout>:GOROVOD_NETWORK_INTERFACE=lo\n[0]<stdout>:GOROVOD_TIMELINE_MARK_CYCLES=1\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d, stdout %q, want %q\n%s", r.code, r.stdout, want, r.stderr)
	}
}

// gorun's own failure, in JSON too: a host failing the ssh check.
func TestLogFormatJSONFailure(t *testing.T) {
	r := gorun(t, 30*time.Second, "-np", "1", "-H", "no-such-host.invalid:1", "--log-format", "json", "true")
	lines := gorunLines(r.stderr)
	if r.code != 1 || len(lines) != 1 {
		t.Fatalf("exit %d, want 1 and one line:\n%s", r.code, r.stderr)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &obj); err != nil || obj["level"] != "error" ||
		!strings.Contains(obj["msg"].(string), "no-such-host.invalid: ssh: Could not resolve hostname") {
		t.Errorf("line %q: %v", lines[0], err)
	}
}

func TestFailureHintSIGKILL(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "sh", "-c", `if [ "$RANK" = 1 ]; then kill -KILL $$; fi; exec sleep 30`)
	if want := "gorun: error: job failed: rank 1 on host localhost was killed by signal SIGKILL; its output is above, on the lines starting with [1]; a SIGKILL nobody sent on purpose is often the out-of-memory killer (see dmesg or journalctl -k on localhost)"; r.code != 137 || !strings.Contains(r.stderr, want+"\n") {
		t.Errorf("exit %d, stderr:\n%s\nwant the line %q", r.code, r.stderr, want)
	}
}
