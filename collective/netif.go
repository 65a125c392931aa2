package collective

import (
	"fmt"

	"github.com/gorovod/gorovod/internal/launch"
)

// bindAddrFor chooses the address the data plane listens on when the
// launcher did not set GOROVOD_BIND_ADDR (mpirun, srun, torchrun-style
// env): with ifaces (GOROVOD_NETWORK_INTERFACE, a comma list) an address of
// the first listed interface this host has, else the source address of
// this host's route to the rendezvous host, loopback when there is none.
// An interface list that matches nothing here is an error naming the
// interfaces this host has.
func bindAddrFor(ifaces, rendezvousAddr string) (string, error) {
	if names := launch.ParseInterfaces(ifaces); len(names) > 0 {
		a, err := launch.BindAddr(names, rendezvousAddr)
		if err != nil {
			return "", fmt.Errorf("%w: GOROVOD_NETWORK_INTERFACE=%q: %w", ErrInvalid, ifaces, err)
		}
		return a, nil
	}
	a, err := launch.BindAddr(nil, rendezvousAddr)
	if err != nil {
		return "127.0.0.1", nil
	}
	return a, nil
}
