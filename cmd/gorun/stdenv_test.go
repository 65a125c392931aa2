package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rankLines collects "[R]<stdout>:text" lines by rank.
func rankLines(t *testing.T, out string) map[int][]string {
	t.Helper()
	got := map[int][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rank int
		if _, err := fmt.Sscanf(line, "[%d]<stdout>:", &rank); err != nil {
			t.Fatalf("line %q", line)
		}
		got[rank] = append(got[rank], line[strings.Index(line, ":")+1:])
	}
	return got
}

// The acceptance line of issue 13: a non-Go program finds its place in
// the standard variables.
func TestStandardEnvPython(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no " + python)
	}
	r := gorun(t, 30*time.Second, "-np", "2", python, "-c",
		`import os; print(*(os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")))`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := rankLines(t, r.stdout)
	port := ""
	for rank := range 2 {
		if len(lines[rank]) != 1 {
			t.Fatalf("rank %d printed %q", rank, lines[rank])
		}
		m := regexp.MustCompile(`^(\d) 2 (\d) 2 127\.0\.0\.1 (\d+)$`).FindStringSubmatch(lines[rank][0])
		if m == nil || m[1] != strconv.Itoa(rank) || m[2] != strconv.Itoa(rank) {
			t.Fatalf("rank %d printed %q, want \"%d 2 %d 2 127.0.0.1 PORT\"", rank, lines[rank][0], rank, rank)
		}
		if port != "" && m[3] != port {
			t.Errorf("ranks got different MASTER_PORTs %s and %s", port, m[3])
		}
		port = m[3]
	}
	if p, _ := strconv.Atoi(port); p < 1 || p > 65535 {
		t.Errorf("MASTER_PORT %q", port)
	}
}

func TestStandardEnv(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "-H", "localhost:3", "sh", "-c",
		`env | grep -E '^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|GROUP_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|HOROVOD_[A-Z_]+|GOROVOD_PROGRESS)=' | sort`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := rankLines(t, r.stdout)
	for rank := range 3 {
		vars := map[string]string{}
		for _, kv := range lines[rank] {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = v
		}
		rs := strconv.Itoa(rank)
		want := map[string]string{
			"RANK": rs, "WORLD_SIZE": "3", "LOCAL_RANK": rs, "LOCAL_WORLD_SIZE": "3", "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
			"HOROVOD_RANK": rs, "HOROVOD_SIZE": "3", "HOROVOD_LOCAL_RANK": rs, "HOROVOD_LOCAL_SIZE": "3",
			"HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
			"GOROVOD_PROGRESS": "lines", // gorun's stdout is a pipe here
		}
		for k, w := range want {
			if vars[k] != w {
				t.Errorf("rank %d: %s=%q, want %q", rank, k, vars[k], w)
			}
		}
		if vars["MASTER_PORT"] == "" {
			t.Errorf("rank %d: no MASTER_PORT", rank)
		}
	}

	// -x fixes MASTER_ADDR and MASTER_PORT; gorun then sets neither.
	r = gorun(t, 20*time.Second, "-np", "2", "-x", "MASTER_PORT=29555", "-x", "MASTER_ADDR=127.0.0.2", "sh", "-c", `echo "$MASTER_ADDR:$MASTER_PORT"`)
	if r.code != 0 || strings.Count(r.stdout, ":127.0.0.2:29555\n") != 2 {
		t.Fatalf("-x MASTER_*: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
