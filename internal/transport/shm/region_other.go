//go:build !linux

package shm

import "fmt"

// Region: shared regions need Linux.
type Region struct{}

// RegionHandle describes a Region.
type RegionHandle struct {
	Pid, Fd  int
	ID, Size uint64
}

// NewRegion fails off Linux.
func NewRegion(dir string, size int) (*Region, error) {
	return nil, fmt.Errorf("%w: shared regions need Linux", ErrUnavailable)
}

// Bytes is nil off Linux.
func (r *Region) Bytes() []byte { return nil }

// Handle is zero off Linux.
func (r *Region) Handle() RegionHandle { return RegionHandle{} }

// Close does nothing off Linux.
func (r *Region) Close() error { return nil }

// MapRegion fails off Linux.
func MapRegion(h RegionHandle) ([]byte, error) {
	return nil, fmt.Errorf("%w: shared regions need Linux", ErrUnavailable)
}

// Unmap does nothing off Linux.
func Unmap(mem []byte) error { return nil }
