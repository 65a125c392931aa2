package launch

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
)

// HostRouter sends each worker to the spawner for its host: Local for this
// machine, Remote (an *SSH) for the others. With Remote nil a remote worker
// fails to start with ErrSpawn.
type HostRouter struct {
	Local  Spawner
	Remote Spawner
	// IsLocal decides which hosts are this machine; nil means IsLocalHost.
	IsLocal func(host string) bool
}

// Start implements Spawner.
func (r HostRouter) Start(ctx context.Context, spec ProcSpec) (Proc, error) {
	isLocal := r.IsLocal
	if isLocal == nil {
		isLocal = IsLocalHost
	}
	if isLocal(spec.Host) {
		return r.Local.Start(ctx, spec)
	}
	if r.Remote == nil {
		return nil, fmt.Errorf("%w: rank %d: host %q is not this machine and no remote spawner is configured", ErrSpawn, spec.Rank, spec.Host)
	}
	return r.Remote.Start(ctx, spec)
}

// IsLocalHost reports whether name is this machine: "localhost", a
// loopback or local interface address, or this machine's host name.
func IsLocalHost(name string) bool {
	switch strings.ToLower(name) {
	case "localhost", "localhost.localdomain", "ip6-localhost":
		return true
	}
	if ip := net.ParseIP(name); ip != nil {
		if ip.IsLoopback() {
			return true
		}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
		return false
	}
	h, err := os.Hostname()
	return err == nil && strings.EqualFold(h, name)
}
