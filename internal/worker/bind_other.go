//go:build !linux

package worker

import "errors"

func bindThreads([]int) error { return errors.New("cpu binding is supported on Linux only") }
