// Package netns makes several "hosts" on one Linux machine for multi-host
// launch tests: each host is a network namespace with its own address,
// hostname and a real sshd, all joined by a bridge to the root namespace.
//
// # Use from a test
//
//	func TestGorunThreeHosts(t *testing.T) {
//		c := netns.Setup(t, 3) // skips if namespaces are forbidden; Close via t.Cleanup
//		cmd := exec.Command(gorunBin, "-np", "6", "-H", c.HostsFlag(2), workerBin)
//		// c.HostsFlag(2)     == "198.18.0.11:2,198.18.0.12:2,198.18.0.13:2"
//		// c.HostNamesFlag(2) == "host1:2,host2:2,host3:2" (needs ssh -F c.SSHConfig)
//		// Pass c.SSHArgs() the way gorun takes extra ssh options (an option or
//		// an environment variable such as GOROVOD_SSH_ARGS: gorun's choice).
//		cmd.Env = append(os.Environ(), "GOROVOD_SSH_ARGS="+strings.Join(c.SSHArgs(), " "))
//		...
//		// No worker left behind on host2:
//		if _, err := c.AwaitProcesses(ctx, 1, regexp.QuoteMeta(workerBin), 0); err != nil { t.Error(err) }
//	}
//
// Host methods take an index into c.Hosts (0-based): c.Hosts[0].Name is
// "host1". The harness needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and
// the programs ip (iproute2), sshd (openssh-server), ssh and ssh-keygen
// (openssh-client), nsenter and unshare (util-linux); scripts/deps.sh test
// installs them. Without the privileges Setup calls t.Skip; a missing
// program or any other failure fails the test.
//
// # What a cluster is
//
//   - Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range), one
//     /24 per cluster: the root namespace is .1 on the bridge (RootAddr),
//     host i (1-based) is .10+i. The first cluster of the machine gets
//     198.18.0.0/24, so host1 is 198.18.0.11; concurrent clusters (parallel
//     tests, other test binaries) get other /24s. Hosts have no default
//     route: nothing they send can leave the cluster's /24.
//   - Inside a host the only interfaces are lo and eth0 (its address);
//     GOROVOD_NETWORK_INTERFACE=eth0 selects it on every host. In the root
//     namespace the cluster's interface is c.Bridge.
//   - Each host has its own UTS namespace: hostname (and os.Hostname in a
//     worker) says "host1" in sshd sessions and in Command/Run.
//   - Each host's /etc/hosts (via ip netns exec's /etc/netns overlay)
//     resolves host1..hostN, "launcher" and the machine's own hostname (both
//     to RootAddr). The root namespace's /etc/hosts is not touched, so there
//     names resolve only through ssh -F c.SSHConfig.
//   - sshd per host: own config and ed25519 host key, listening on the
//     host's address (port 22 unless WithSSHPort), root login by the test
//     key only, StrictModes no, UsePAM no, no AcceptEnv (pass environment
//     on the command line, as on real machines).
//   - c.SSHConfig (for ssh -F) maps host names and addresses to
//     address and port, and sets User root, the key, a known_hosts file
//     holding every host key (strict checking on: no "Permanently added"
//     noise, no use of ~/.ssh), BatchMode and ConnectTimeout. c.SSHArgs() is
//     ["-F", c.SSHConfig]; paths have no spaces, so joining it with spaces
//     into one environment variable is safe.
//
// # Shared filesystem
//
// Namespaces separate networks and hostnames, not files: every host sees the
// machine's filesystem, so a binary a test builds (e.g. under t.TempDir) runs
// on every host at the same path. It also means /tmp and /dev/shm are
// shared between "hosts", unlike real machines: code that names files by
// local rank alone can collide across hosts here.
//
// # Cleanup and crashes
//
// Close (registered by Setup with t.Cleanup) stops every sshd, SIGKILLs
// every process still inside the namespaces (workers started over ssh
// included), and deletes namespaces, veths, the bridge, the /etc/netns
// overlays and the state directory under /run/gorovod-netns. Names carry
// the cluster's slot ("gvn0-host1", "gvn0-br", "gvn0-h1"); a slot is
// claimed under a machine-wide flock with an owner file holding the pid and
// start time of the test process. Setup first removes the leftovers of every
// slot whose owner is gone (a test binary killed before its cleanup), and
// sshd dies with the test process (PR_SET_PDEATHSIG), so crashed runs do not
// accumulate.
package netns
