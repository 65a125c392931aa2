package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/launch"
)

func TestNormalizeArgs(t *testing.T) {
	fs := newCommand(nil, nil).Flags()
	for _, tc := range []struct{ in, want string }{
		{"-np 4 ./train", "--num-proc 4 ./train"},
		{"-np=4 ./train -np 2", "--num-proc=4 ./train -np 2"},
		{"-H localhost:2 -np 2 prog", "-H localhost:2 --num-proc 2 prog"},
		{"--hosts -np -np 2 prog", "--hosts -np --num-proc 2 prog"}, // -np as -H's value stays
		{"--verbose -np 2 prog -np", "--verbose --num-proc 2 prog -np"},
		{"-x A=1 -np 1 -- -np", "-x A=1 --num-proc 1 -- -np"},
		{"--start-timeout=5s -np 3 p", "--start-timeout=5s --num-proc 3 p"},
	} {
		got := strings.Join(normalizeArgs(strings.Fields(tc.in), fs), " ")
		if got != tc.want {
			t.Errorf("normalizeArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSecondsOrDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "30": 30 * time.Second, "1.5": 1500 * time.Millisecond, "2m": 2 * time.Minute} {
		var d secondsOrDuration
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, bad := range []string{"", "soon", "NaN", "Inf"} {
		var d secondsOrDuration
		if err := d.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestExportEnv(t *testing.T) {
	getenv := func(name string) (string, bool) {
		if name == "SET" {
			return "from gorun", true
		}
		return "", false
	}
	vars, missing, err := exportEnv([]string{"A=1", "B=", "SET", "UNSET", "C=x=y"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=1", "B=", "SET=from gorun", "C=x=y"}; !reflect.DeepEqual(vars, want) {
		t.Errorf("vars %q, want %q", vars, want)
	}
	if !reflect.DeepEqual(missing, []string{"UNSET"}) {
		t.Errorf("missing %q", missing)
	}
	for _, bad := range []string{"=1", "1A=2", "A B=1", ""} {
		if _, _, err := exportEnv([]string{bad}, getenv); err == nil {
			t.Errorf("-x %q accepted", bad)
		}
	}
}

func TestIsLocalHost(t *testing.T) {
	for _, h := range []string{"localhost", "LOCALHOST", "127.0.0.1", "127.0.1.1", "::1"} {
		if !launch.IsLocalHost(h) {
			t.Errorf("%q should be local", h)
		}
	}
	for _, h := range []string{"192.0.2.7", "surely-not-this-host.invalid"} {
		if launch.IsLocalHost(h) {
			t.Errorf("%q should not be local", h)
		}
	}
}
