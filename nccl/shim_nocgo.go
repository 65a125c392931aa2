//go:build !cgo

package nccl

import "fmt"

func loadShim(ncclNames, cudartNames []string) (shim, error) {
	return nil, fmt.Errorf("%w: built without cgo (CGO_ENABLED=0), cannot dlopen %s", ErrUnavailable, ncclNames[0])
}
