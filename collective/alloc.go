package collective

import (
	"fmt"
	"unsafe"

	"github.com/gorovod/gorovod/ops"
)

// Alloc returns n zeroed elements in shared memory that the workers of a
// host can map, like MPI_Alloc_mem or NCCL's registered buffers: a
// collective whose tensors come from Alloc on every rank of one host runs
// on the ranks' buffers themselves (each rank reduces its part reading the
// peers' tensors and writes the result into theirs), with no staging copies
// (docs/performance.md). Tensors from make work everywhere too; Alloc only
// makes them faster. Alloc needs no Init. Give the memory back with Free;
// it is not garbage collected and must not be touched after Free.
// GOROVOD_DISABLE_SHARED_BUFFERS=1 turns the direct path off (the memory
// still works as ordinary memory).
func Alloc[T Element](n int) ([]T, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: Alloc(%d): want a positive count", ErrInvalid, n)
	}
	var zero T
	b, err := ops.Alloc(n * int(unsafe.Sizeof(zero)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return fromBytes[T](b), nil
}

// Free gives back memory from Alloc (the slice Alloc returned, or one
// starting where it started).
func Free[T Element](s []T) error {
	if cap(s) == 0 {
		return fmt.Errorf("%w: Free of an empty slice", ErrInvalid)
	}
	if err := ops.Free(asBytes(s[:1])); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
