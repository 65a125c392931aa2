package launch

import "golang.org/x/sys/unix"

// AllowedCPUs lists the cpus this process may run on (its affinity mask:
// a cgroup's or taskset's limit included), in increasing order.
func AllowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
