package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestLauncherConsole(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLauncher(&b, LauncherOptions{Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	log.Error("rank 1 (pid 42, host localhost) exited with code 2; stopping the other workers",
		zap.Int("rank", 1), zap.String("host", "localhost"))
	log.Warn("stopping the workers still running", zap.Int("workers", 3))
	log.Warn("rendezvous service", zap.Error(errors.New("listener closed")))
	log.Info("network", zap.String("rendezvous_listen", "all interfaces"), zap.Strings("argv", []string{"sh", "-c", "a b"}))
	log.Debug("not shown")
	want := `gorun: error: rank 1 (pid 42, host localhost) exited with code 2; stopping the other workers
gorun: warning: stopping the workers still running (workers 3)
gorun: warning: rendezvous service: listener closed
gorun: network (rendezvous listen all interfaces, argv ["sh", "-c", "a b"])
`
	if b.String() != want {
		t.Errorf("console:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestLauncherConsoleTimestampsAndColor(t *testing.T) {
	var b bytes.Buffer
	at := time.Date(2026, 12, 7, 10, 0, 0, 5e6, time.UTC)
	log, err := NewLauncher(&b, LauncherOptions{Timestamps: true, Color: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden at the default level (warn)")
	log.Error("boom")
	if want := "2026-12-07T10:00:00.005Z gorun: \x1b[31merror\x1b[0m: boom\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestLauncherJSON(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLauncher(&b, LauncherOptions{Level: "debug", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.Error("rank 1 exited", zap.Int("rank", 1))
	log.Named("rendezvous").Debug("registered", zap.String("host", "h"))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", b.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line 1 %q: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line 2 %q: %v", lines[1], err)
	}
	if first["level"] != "error" || first["msg"] != "rank 1 exited" || first["rank"] != 1.0 || first["time"] == nil || first["caller"] != nil {
		t.Errorf("line 1: %v", first)
	}
	if second["logger"] != "rendezvous" || second["host"] != "h" {
		t.Errorf("line 2: %v", second)
	}
}

func TestLauncherBadOptions(t *testing.T) {
	if _, err := NewLauncher(&bytes.Buffer{}, LauncherOptions{Level: "loud"}); err == nil || !strings.Contains(err.Error(), `unknown log level "loud"`) {
		t.Errorf("level: %v", err)
	}
	if _, err := NewLauncher(&bytes.Buffer{}, LauncherOptions{Level: "fatal"}); err == nil {
		t.Errorf("fatal is not a level gorun offers")
	}
	if _, err := NewLauncher(&bytes.Buffer{}, LauncherOptions{Format: "xml"}); err == nil || !strings.Contains(err.Error(), `unknown log format "xml"`) {
		t.Errorf("format: %v", err)
	}
}

func TestNewWorkerLevels(t *testing.T) {
	if _, err := New("chatty"); err == nil {
		t.Error("New accepted an unknown level")
	}
	log, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	if log.Core().Enabled(zap.InfoLevel) || !log.Core().Enabled(zap.WarnLevel) {
		t.Error("the default level is not warn")
	}
}

func TestConsoleName(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLauncher(&b, LauncherOptions{Name: "gorovod"})
	if err != nil {
		t.Fatal(err)
	}
	log.With(zap.Int("rank", 2), zap.String("host", "n1")).Warn("rank 2: stalled")
	if want := "gorovod: warning: rank 2: stalled (host n1)\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
