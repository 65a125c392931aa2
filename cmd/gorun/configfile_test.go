package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const tuningVars = `env | grep -E '^GOROVOD_(FUSION_THRESHOLD|CYCLE_TIME|CACHE_CAPACITY|HIERARCHICAL_ALLREDUCE|TIMELINE|TIMELINE_MARK_CYCLES|STALL_CHECK_TIME|STALL_SHUTDOWN_TIME|STALL_CHECK_DISABLE|SIZE)=' | sort`

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// horovodrun's config file layout, and the command line winning over it.
func TestConfigFileHorovodrunYAML(t *testing.T) {
	cfg := writeFile(t, "hvd.yaml", `# as horovodrun reads it
verbose: 0
params:
  fusion_threshold_mb: 32
  cycle_time_ms: 10
  cache_capacity: 2048
  hierarchical_allreduce: true
timeline:
  filename: tl.json
  mark_cycles: true
stall_check:
  enabled: true
  warning_time_seconds: 120
  shutdown_time_seconds: 240
logging:
  level: WARNING
  hide_timestamp: true
np: 3
`)
	r := gorun(t, 20*time.Second, "--config-file", cfg, "--cycle-time-ms", "2", "sh", "-c", tuningVars)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := rankLines(t, r.stdout)
	want := []string{"GOROVOD_CACHE_CAPACITY=2048", "GOROVOD_CYCLE_TIME=2ms", "GOROVOD_FUSION_THRESHOLD=33554432",
		"GOROVOD_HIERARCHICAL_ALLREDUCE=1", "GOROVOD_SIZE=3", "GOROVOD_STALL_CHECK_TIME=2m0s", "GOROVOD_STALL_SHUTDOWN_TIME=4m0s",
		"GOROVOD_TIMELINE=tl.json", "GOROVOD_TIMELINE_MARK_CYCLES=1"}
	if len(got) != 3 || strings.Join(got[2], " ") != strings.Join(want, " ") {
		t.Errorf("rank 2 of %d got\n%v\nwant\n%v", len(got), got[2], want)
	}
}

// Flag names as keys, in JSON; stall_check.enabled: false is --no-stall-check.
func TestConfigFileJSON(t *testing.T) {
	cfg := writeFile(t, "gorun.json", `{"num-proc": 2, "fusion_threshold_mb": 1, "env": ["A=1", "B=2"], "stall_check": {"enabled": false}}`)
	r := gorun(t, 20*time.Second, "--config-file", cfg, "-np", "1", "sh", "-c", tuningVars+`; echo "A=$A B=$B"`)
	want := "[0]<stdout>:GOROVOD_FUSION_THRESHOLD=1048576\n[0]<stdout>:GOROVOD_SIZE=1\n[0]<stdout>:GOROVOD_STALL_CHECK_DISABLE=1\n[0]<stdout>:A=1 B=2\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d, stdout %q, want %q\n%s", r.code, r.stdout, want, r.stderr)
	}
	// env as a mapping; -x on the command line replaces the file's list.
	cfg = writeFile(t, "gorun.yaml", "np: 1\nenv:\n  A: 1\n  B: two\n")
	r = gorun(t, 20*time.Second, "--config-file", cfg, "sh", "-c", `echo "A=$A B=$B"`)
	if r.code != 0 || r.stdout != "[0]<stdout>:A=1 B=two\n" {
		t.Errorf("env mapping: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	r = gorun(t, 20*time.Second, "--config-file", cfg, "-x", "B=cli", "sh", "-c", `echo "A=$A B=$B"`)
	if r.code != 0 || r.stdout != "[0]<stdout>:A= B=cli\n" {
		t.Errorf("-x over the file: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestConfigFileBadInput(t *testing.T) {
	for _, tc := range []struct{ text, msg string }{
		{"params:\n  fusion_threshold_mb: lots\n", `params.fusion_threshold_mb: invalid argument "lots"`},
		{"autotune:\n  enabled: true\n", "autotune.enabled: a horovodrun setting gorun does not have"},
		{"params:\n  cyle_time_ms: 1\n", "params.cyle_time_ms: unknown setting"},
		{"colour: red\n", "colour: not a gorun setting"},
		{"check: true\n", "check: not a gorun setting"},
		{"params: [1\n", "not YAML or JSON"},
		{"stall_check:\n  enabled: maybe\n", "stall_check.enabled: want true or false"},
		{"cycle_time_ms: 1\nparams:\n  cycle_time_ms: 2\n", "cycle_time_ms and params.cycle_time_ms are the same setting"},
		{"network_interface: lo\nnetwork-interfaces: lo\n", "are the same setting"},
	} {
		cfg := writeFile(t, "c.yaml", tc.text)
		r := gorun(t, 10*time.Second, "--config-file", cfg, "-np", "1", "true")
		if r.code != 2 || !strings.Contains(r.stderr, "--config-file "+cfg+": "+tc.msg) && !strings.Contains(r.stderr, tc.msg) || r.stdout != "" {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tc.text, r.code, r.stderr, tc.msg)
		}
	}
	r := gorun(t, 10*time.Second, "--config-file", "/no/such/file.yaml", "-np", "1", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "--config-file: open /no/such/file.yaml: no such file") {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

// OpenMPI hostfiles: max_slots is understood, and -np defaults to the slots.
func TestOpenMPIHostfile(t *testing.T) {
	hf := writeFile(t, "hosts", "# openmpi style\nlocalhost slots=2 max_slots=4\n")
	r := gorun(t, 20*time.Second, "--hostfile", hf, "sh", "-c", `echo "$RANK/$WORLD_SIZE"`)
	if r.code != 0 || strings.Count(r.stdout, "/2\n") != 2 {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hf = writeFile(t, "hosts", "localhost slots=4 max_slots=2\n")
	r = gorun(t, 20*time.Second, "--hostfile", hf, "true")
	if r.code != 2 || !strings.Contains(r.stderr, "hostfile line 1: invalid host spec: slots=4 is more than max_slots=2") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
