// Package cma is cross-memory attach: process_vm_readv(2), which copies
// bytes from another process's private memory in one step, done by the
// kernel. Workers on one host use it to read a peer's buffer directly (one
// copy) instead of passing it through shared-memory slots (two copies).
//
// The kernel allows it only where the reader may ptrace the target: same
// user, and no Yama restriction (kernel.yama.ptrace_scope 0; with 1 only an
// ancestor may read, which sibling workers are not), and containers often
// filter the system call out (seccomp: EPERM) or lack it (ENOSYS). Check
// reports what this process can tell alone; whether two workers can read
// each other is only known by trying, which the ops package does once per
// communicator (a probe over the links) before it uses the single copy.
package cma
