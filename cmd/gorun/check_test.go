package main

import (
	"strings"
	"testing"
)

// Without libnccl on this machine, the report says unavailable and why.
func TestProbeNCCLWithoutLibrary(t *testing.T) {
	n := probeNCCL()
	if n.Available {
		t.Skipf("NCCL found here: %+v", n)
	}
	if !strings.Contains(n.Reason, "unavailable") {
		t.Errorf("NCCL reason = %q, want it to say unavailable", n.Reason)
	}
}
