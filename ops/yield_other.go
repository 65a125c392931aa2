//go:build !linux

package ops

import "runtime"

func osYield() { runtime.Gosched() }
