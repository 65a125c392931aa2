package netif

import (
	"strings"
	"testing"
)

func TestDataPlaneAddr(t *testing.T) {
	if got, err := DataPlaneAddr("", "127.0.0.1:29500"); err != nil || got != "127.0.0.1" {
		t.Errorf("route to loopback: %q, %v", got, err)
	}
	if got, err := DataPlaneAddr("nosuchif0, lo", "127.0.0.1:29500"); err != nil || got != "127.0.0.1" {
		t.Errorf("interface lo after a missing one: %q, %v", got, err)
	}
	_, err := DataPlaneAddr("nosuchif0", "127.0.0.1:29500")
	if err == nil || !strings.Contains(err.Error(), "nosuchif0: no such interface") || !strings.Contains(err.Error(), "lo") {
		t.Errorf("missing interface: %v", err)
	}
}
