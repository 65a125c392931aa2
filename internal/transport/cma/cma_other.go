//go:build !linux

package cma

import (
	"errors"
	"unsafe"
)

var errNotLinux = errors.New("process_vm_readv: cross-memory attach exists on Linux only")

// Read fails: cross-memory attach is Linux-only.
func Read(int, []byte, uint64) error { return errNotLinux }

// Write fails: cross-memory attach is Linux-only.
func Write(int, []byte, uint64) error { return errNotLinux }

// Addr is the address of b's first byte.
func Addr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// Gone reports whether err says the target process no longer exists.
func Gone(error) bool { return false }

// Check reports that cross-memory attach is unavailable.
func Check() (bool, string) { return false, errNotLinux.Error() }
