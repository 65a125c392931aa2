// Command netns-up brings up a test cluster by hand (same as netns.Setup)
// and keeps it until interrupted, for trying gorun over ssh interactively:
//
//	sudo go run ./test/netns/cmd/netns-up -n 3
//	# then, in another shell, as printed:
//	ssh -F /run/gorovod-netns/gvn0/ssh_config host1 hostname
//	bin/gorun -np 6 -H 198.18.0.11:2,198.18.0.12:2,198.18.0.13:2 ...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/test/netns"
)

func main() {
	n := flag.Int("n", 3, "number of hosts")
	port := flag.Int("port", 22, "sshd port on every host")
	slots := flag.Int("slots", 2, "slots per host in the printed -H value")
	flag.Parse()
	if err := run(*n, *port, *slots); err != nil {
		fmt.Fprintln(os.Stderr, "netns-up:", err)
		os.Exit(1)
	}
}

func run(n, port, slots int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := netns.New(ctx, n, netns.WithSSHPort(port))
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("cluster %s (%s), launcher address %s\n", c.Bridge, c.Prefix, c.RootAddr)
	for _, h := range c.Hosts {
		fmt.Printf("  %s  %s:%d  namespace %s\n", h.Name, h.Addr, h.SSHPort, h.NS)
	}
	fmt.Printf("ssh:        ssh %s %s hostname\n", strings.Join(c.SSHArgs(), " "), c.Hosts[0].Name)
	fmt.Printf("inside:     ip netns exec %s nsenter --uts=%s/uts-%s bash\n", c.Hosts[0].NS, c.Dir, c.Hosts[0].Name)
	fmt.Printf("-H:         %s   or   %s\n", c.HostsFlag(slots), c.HostNamesFlag(slots))
	fmt.Printf("env:        GOROVOD_SSH_ARGS=%q\n", strings.Join(c.SSHArgs(), " "))
	fmt.Println("Ctrl-C (or SIGTERM) removes the cluster.")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return c.Close()
}
