package collective

import (
	"testing"

	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/ops"
)

// The data-plane knobs of the worker's configuration reach the algorithms.
func TestOpsConfigCarriesTheDataPlaneKnobs(t *testing.T) {
	cfg := config.Default()
	cfg.AllreduceAlgorithm = "ring"
	cfg.SmallBytes = 12345
	cfg.DisableSingleCopy = true
	cfg.SingleCopyMaxBytes = 1 << 20
	got := opsConfig(cfg)
	if got.Algorithm != ops.Ring || got.SmallBytes != 12345 || !got.SingleCopyOff || got.SingleCopyMaxBytes != 1<<20 {
		t.Errorf("opsConfig = %+v", got)
	}
	if a := opsConfig(config.Default()).Algorithm; a != ops.Auto {
		t.Errorf("default algorithm %v, want auto", a)
	}
}
