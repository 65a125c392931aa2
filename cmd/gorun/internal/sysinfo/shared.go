package sysinfo

import (
	"fmt"

	"github.com/gorovod/gorovod/internal/transport/shm"
)

// probeShared reports whether buffers from collective.Alloc can be shared:
// it creates a region, maps it a second time the way a peer does (through
// /proc/PID/fd) and checks that a write through one mapping shows in the
// other.
func probeShared() Transport {
	t := Transport{Name: "shared"}
	r, err := shm.NewRegion("", 1)
	if err != nil {
		t.Detail = fmt.Sprintf("shared buffers (collective.Alloc): cannot create a region: %v", err)
		return t
	}
	defer r.Close()
	peer, err := shm.MapRegion(r.Handle())
	if err != nil {
		t.Detail = fmt.Sprintf("shared buffers (collective.Alloc): a peer could not map a region: %v", err)
		return t
	}
	defer shm.Unmap(peer)
	mine := r.Bytes()
	mine[0], mine[len(mine)-1] = 0x5a, 0xa5
	if peer[0] != 0x5a || peer[len(peer)-1] != 0xa5 {
		t.Detail = "shared buffers (collective.Alloc): writes do not show in a second mapping"
		return t
	}
	t.Available, t.Detail = true, "shared buffers (collective.Alloc): region mapped again through /proc/PID/fd ok"
	return t
}
