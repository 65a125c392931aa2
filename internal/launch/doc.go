// Package launch starts and supervises the worker processes of a job.
//
// A Spawner starts one process: Local runs it on this machine, SSH on
// another host, HostRouter picks between them by host. Run starts every
// worker of a job, prefixes their output lines with the rank
// ("[1]<stdout>:", "[1]<stderr>:"), forwards signals, and stops the job when
// the first worker fails: SIGTERM to every other worker's process group,
// SIGKILL after a grace period. Its Result carries the exit code a launcher
// should exit with: 0 when all succeeded, the first failing worker's code,
// or 128+signal when a worker was killed by a signal (or the launcher was
// interrupted).
//
// Output reaches the launcher's stdout and stderr as whole lines (Sink,
// LineWriter). Console reshapes them for a person: a rank filter, no
// prefix, timestamps, colours. On a terminal (TerminalWriter, Terminal) a
// partial line a worker redraws with '\r', a progress bar, is shown as it
// changes and cleared before anything else is written there.
//
// Local workers run in their own process group (signals reach their
// children) and get SIGKILL if the launcher dies (Linux Pdeathsig). Because
// Pdeathsig is tied to the OS thread that forked the child, not the
// process, Local forks from one goroutine locked to its thread for the
// Spawner's lifetime: close a Local only after its processes exited.
//
// # Remote workers
//
// SSH forks (through a Local, so they die with the launcher) one ssh client
// per worker running "exec GORUN --internal-remote-exec" on the host, where
// GORUN is the launcher's own path: gorun must be installed at the same
// path on every host. The protocol on that channel:
//
//   - launcher to wrapper, on stdin: one JSON line (remoteRequest: rank,
//     argv, environment, directory, kill grace, silence timeout), then lines
//     "signal N" (sent to the worker's process group) and "ping". The
//     environment travels here rather than on the command line, so the job
//     secret is never in a process list.
//   - wrapper to launcher: the worker's stdout and stderr as they are, plus
//     control lines on stderr starting with "\x1egorovod-remote:" ("pid N",
//     "exit code N", "exit signal N", "error TEXT"), which the launcher
//     takes out of the output (controlFilter).
//   - stdin at EOF (the launcher, its ssh client or the connection died) or
//     silent for the silence timeout (a network cut sshd does not notice):
//     the wrapper sends SIGTERM to the worker's group, SIGKILL after the
//     grace period. When the worker exits, the wrapper kills what is left in
//     its group and reports the exit.
//
// Before starting remote workers a launcher calls SSH.Preflight: every host
// at once runs "GORUN --internal-remote-probe IFACES DIR", which checks the
// working directory and interfaces and answers one JSON line with the
// addresses it sees (SSH_CONNECTION) and the address its workers should
// listen on (RemoteProbe, BindAddr), and a port free there (FreePort: the
// launcher's MASTER_PORT when rank 0 runs on that host). Failures come back as a
// *PreflightError naming every host and ssh's own message.
package launch
