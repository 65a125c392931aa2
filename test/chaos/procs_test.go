package chaos

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// pidfdOpen pins pid: a later wait on the descriptor is about this process
// even if the number is reused.
func pidfdOpen(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

// waitPidfd waits up to d for the process to end.
func waitPidfd(fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// sendGarbage connects to every listening TCP port of gorun and the workers
// and writes random bytes, a few times over; false when none was found.
func sendGarbage(j *job, rng *rand.Rand) bool {
	j.mu.Lock()
	pids := []int{j.cmd.Process.Pid}
	for _, p := range j.pids {
		pids = append(pids, p)
	}
	j.mu.Unlock()
	ports := listeningPorts(pids)
	if len(ports) == 0 {
		return false
	}
	for round := 0; round < 3; round++ {
		for _, port := range ports {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
			if err != nil {
				continue
			}
			b := make([]byte, 1+rng.IntN(512))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(b)
			_ = c.Close()
		}
	}
	return true
}

// listeningPorts returns the TCP ports the processes listen on: their
// socket inodes matched against /proc/net/tcp{,6} entries in LISTEN state.
func listeningPorts(pids []int) []int {
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fd)
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil {
				ports = append(ports, int(p))
			}
		}
		f.Close()
	}
	return ports
}
