package netif

import "fmt"

// DataPlaneAddr chooses the address a worker's data plane listens on when
// the launcher did not set one (mpirun, srun, torchrun-style env): with
// ifaces (GOROVOD_NETWORK_INTERFACE, a comma list) an address of the first
// listed interface this host has, else the source address of this host's
// route to the rendezvous host, loopback when there is none. An interface
// list that matches nothing here is an error naming the interfaces this
// host has.
func DataPlaneAddr(ifaces, rendezvousAddr string) (string, error) {
	if names := ParseInterfaces(ifaces); len(names) > 0 {
		a, err := BindAddr(names, rendezvousAddr)
		if err != nil {
			return "", fmt.Errorf("GOROVOD_NETWORK_INTERFACE=%q: %w", ifaces, err)
		}
		return a, nil
	}
	a, err := BindAddr(nil, rendezvousAddr)
	if err != nil {
		return "127.0.0.1", nil
	}
	return a, nil
}
