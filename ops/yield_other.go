//go:build !linux

package ops

import (
	"runtime"
	"time"
)

func osYield() { runtime.Gosched() }

func osNap(d time.Duration) { time.Sleep(d) }
