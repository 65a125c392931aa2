package worker

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// bindThreads sets the affinity of every thread of this process to cpus;
// threads started later inherit it from the thread that creates them. A
// Go program's threads exist before Init, hence every one, not only the
// caller's.
func bindThreads(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH { // ESRCH: the thread ended
			return fmt.Errorf("sched_setaffinity(thread %d, cpus %v): %w", tid, cpus, err)
		}
	}
	return nil
}
