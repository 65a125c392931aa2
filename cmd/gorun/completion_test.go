package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "__start_gorun",
		"zsh":        "#compdef gorun",
		"fish":       "complete -c gorun",
		"powershell": "Register-ArgumentCompleter",
	} {
		r := gorun(t, 10*time.Second, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) || r.stderr != "" {
			t.Errorf("completion %s: exit %d, stderr %q, script lacks %q", shell, r.code, r.stderr, want)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		r := gorun(t, 10*time.Second, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "bash, zsh, fish or powershell") || r.stdout != "" {
			t.Errorf("gorun %q: exit %d, stderr %q; want exit 2 naming the shells", args, r.code, r.stderr)
		}
	}
	// The scripts ask gorun for flags, -np spelled as users spell it.
	r := gorun(t, 10*time.Second, "__complete", "-np", "2", "--network-i")
	if r.code != 0 || !strings.Contains(r.stdout, "--network-interface\t") || !strings.Contains(r.stdout, "--network-interfaces\t") {
		t.Errorf("__complete: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = gorun(t, 10*time.Second, "__complete", "-np", "2", "--log-level", "")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "debug\ninfo\nwarn\nerror\n") {
		t.Errorf("__complete --log-level: exit %d, stdout %q", r.code, r.stdout)
	}
}

// A program called completion still runs: after "--", or after a flag.
func TestProgramNamedCompletion(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "completion"), []byte("#!/bin/sh\necho \"I am a program: $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-np", "1", "--", "completion", "bash"}, {"-np", "1", "completion", "bash"}, {"--", "completion", "bash"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, gorunBin, args...)
		if args[0] == "--" {
			cmd.Args = append([]string{gorunBin, "-H", "localhost:1"}, args...)
		}
		cmd.Env = cleanEnv("PATH=" + dir + ":" + os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || string(out) != "[0]<stdout>:I am a program: bash\n" {
			t.Errorf("gorun %q: %v, %q", cmd.Args[1:], err, out)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-07T10:00:00Z"}, {Key: "vcs.modified", Value: "true"},
		}}, "devel 0123456789ab (modified) 2026-12-07T10:00:00Z"},
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}, "dev (go1.26.0)"},
	} {
		if got := buildVersion(&tc.bi); got != tc.want {
			t.Errorf("buildVersion(%+v) = %q, want %q", tc.bi.Main, got, tc.want)
		}
	}
}

// Built without the Makefile's -X flag, --version reads the build info.
func TestVersionWithoutLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gorun")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^gorun (v\S+|devel [0-9a-f]{12}( \(modified\))?( \S+)?|dev \(go\S+\))\n$`).MatchString(stdout.String()) {
		t.Errorf("--version printed %q", stdout.String())
	}
}
