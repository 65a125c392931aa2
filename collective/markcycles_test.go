package collective_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// --timeline-mark-cycles (GOROVOD_TIMELINE_MARK_CYCLES) reaches the timeline.
func TestTimelineMarkCycles(t *testing.T) {
	for _, mark := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "tl.json")
		cfg := collective.DefaultConfig()
		cfg.TimelineFile, cfg.TimelineMarkCycles = path, mark
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := collective.Init(ctx, collective.WithConfig(cfg)); err != nil {
			cancel()
			t.Fatal(err)
		}
		err := collective.Allreduce(ctx, "x", []float32{1, 2}, collective.Sum)
		if serr := collective.Shutdown(ctx); err == nil {
			err = serr
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), `"CYCLE_START"`); got != mark {
			t.Errorf("MarkCycles %v: CYCLE_START in the timeline: %v\n%s", mark, got, b)
		}
	}
}
