//go:build linux

package shm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// Region is memory that the other processes of this host can map: an
// unnamed file in /dev/shm (O_TMPFILE, as the rings), mapped shared, whose
// descriptor stays open while the Region lives so that a peer can open it
// as /proc/PID/fd/FD. Nothing is ever left in /dev/shm: the memory goes
// when the last process unmaps it.
type Region struct {
	mem []byte
	fd  int
	id  uint64
}

// RegionHandle is what a peer needs to map a Region: its owner's pid and
// descriptor, its size, and an id unique within the owner process (the
// descriptor number is reused once a Region is closed; the id is not).
type RegionHandle struct {
	Pid, Fd  int
	ID, Size uint64
}

var regionIDs atomic.Uint64

// NewRegion creates a Region of at least size bytes (rounded up to whole
// pages) in dir ("" = /dev/shm). The pages are allocated at once, so a
// full tmpfs fails here rather than with a SIGBUS later.
func NewRegion(dir string, size int) (*Region, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm: region of %d bytes", size)
	}
	if dir == "" {
		dir = "/dev/shm"
	}
	page := os.Getpagesize()
	mem, fd, err := createMapped(dir, (size+page-1)/page*page)
	if err != nil {
		return nil, err
	}
	return &Region{mem: mem, fd: fd, id: regionIDs.Add(1)}, nil
}

// Bytes is the Region's memory (whole pages).
func (r *Region) Bytes() []byte { return r.mem }

// Handle describes the Region for a peer's MapRegion.
func (r *Region) Handle() RegionHandle {
	return RegionHandle{Pid: os.Getpid(), Fd: r.fd, ID: r.id, Size: uint64(len(r.mem))}
}

// Close unmaps the memory and closes the descriptor; peers that mapped
// the Region keep their mappings (and the memory) until they unmap.
func (r *Region) Close() error {
	return errors.Join(syscall.Munmap(r.mem), syscall.Close(r.fd))
}

// MapRegion maps a peer's Region (same PID namespace and /dev/shm).
func MapRegion(h RegionHandle) ([]byte, error) {
	if h.Pid <= 0 || h.Fd < 0 || h.Size == 0 || h.Size > 1<<46 {
		return nil, fmt.Errorf("shm: bad region handle %+v", h)
	}
	return openMapped(fmt.Sprintf("/proc/%d/fd/%d", h.Pid, h.Fd), int(h.Size))
}

// Unmap releases a mapping MapRegion returned.
func Unmap(mem []byte) error { return syscall.Munmap(mem) }
