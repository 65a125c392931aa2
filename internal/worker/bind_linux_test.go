package worker

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBindThreads: every thread of the process ends up on the cpus given
// (the test restores the process's mask after).
func TestBindThreads(t *testing.T) {
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Skipf("no affinity: %v", err)
	}
	first := -1
	for c := 0; first < 0 && c < len(orig)*64; c++ {
		if orig.IsSet(c) {
			first = c
		}
	}
	defer func() {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, tk := range tasks {
			if tid, err := strconv.Atoi(tk.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, &orig)
			}
		}
	}()
	if err := bindThreads([]int{first}); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		tid, err := strconv.Atoi(tk.Name())
		if err != nil {
			continue
		}
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			continue // the thread ended
		}
		if got.Count() != 1 || !got.IsSet(first) {
			t.Errorf("thread %d: %d cpus allowed after binding to cpu %d", tid, got.Count(), first)
		}
	}
}
