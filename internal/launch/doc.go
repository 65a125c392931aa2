// Package launch starts and supervises the worker processes of a job.
//
// A Spawner starts one process (Local runs it on this machine; an ssh
// spawner for remote hosts can implement the same interface). Run starts
// every worker of a job, prefixes their output lines with the rank
// ("[1]<stdout>:", "[1]<stderr>:"), forwards signals, and stops the job when
// the first worker fails: SIGTERM to every other worker's process group,
// SIGKILL after a grace period. Its Result carries the exit code a launcher
// should exit with: 0 when all succeeded, the first failing worker's code,
// or 128+signal when a worker was killed by a signal (or the launcher was
// interrupted).
//
// Local workers run in their own process group (signals reach their
// children) and get SIGKILL if the launcher dies (Linux Pdeathsig). Because
// Pdeathsig is tied to the OS thread that forked the child, not the
// process, Local forks from one goroutine locked to its thread for the
// Spawner's lifetime: close a Local only after its processes exited.
package launch
