package launch

import "syscall"

// sysProcAttr puts the worker in its own process group and has the kernel
// kill it when the forking thread (see forkLoop) dies with the launcher.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
