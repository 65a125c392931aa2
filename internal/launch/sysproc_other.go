//go:build unix && !linux

package launch

import "syscall"

// sysProcAttr puts the worker in its own process group. Without Pdeathsig
// a worker may outlive a launcher that is killed with SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
