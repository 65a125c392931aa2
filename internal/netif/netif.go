// Package netif chooses network interfaces and addresses: the data-plane
// address of a worker, the interface list of --network-interface. Used by
// the launcher and by the worker bootstrap.
package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// ErrNoAddress marks a host where no usable data-plane address was found.
var ErrNoAddress = errors.New("no usable network address")

// ParseInterfaces splits a --network-interface / GOROVOD_NETWORK_INTERFACE
// value ("eth0,ib0") into names, dropping blanks.
func ParseInterfaces(list string) []string {
	var out []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// InterfaceAddr returns an address of the first interface in names (in
// order) that is up and has one: the family of prefer first (IPv4 when
// prefer is not valid), global addresses before link-local ones.
func InterfaceAddr(names []string, prefer netip.Addr) (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing network interfaces: %w", err)
	}
	byName := map[string]net.Interface{}
	var have []string
	for _, ifc := range ifs {
		byName[ifc.Name] = ifc
		have = append(have, ifc.Name)
	}
	want4 := !prefer.IsValid() || prefer.Unmap().Is4()
	var problems []string
	for _, name := range names {
		ifc, ok := byName[name]
		if !ok {
			problems = append(problems, name+": no such interface")
			continue
		}
		if ifc.Flags&net.FlagUp == 0 {
			problems = append(problems, name+": down")
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		var cands []netip.Addr
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				ip = ip.WithZone(name)
			}
			cands = append(cands, ip)
		}
		if len(cands) == 0 {
			problems = append(problems, name+": no address")
			continue
		}
		score := func(ip netip.Addr) int {
			s := 0
			if ip.Is4() != want4 {
				s += 2
			}
			if ip.IsLinkLocalUnicast() {
				s++
			}
			return s
		}
		slices.SortStableFunc(cands, func(a, b netip.Addr) int { return score(a) - score(b) })
		return cands[0], nil
	}
	return netip.Addr{}, fmt.Errorf("%w on interfaces %s (%s; this host has %s)", ErrNoAddress,
		strings.Join(names, ","), strings.Join(problems, "; "), strings.Join(have, ", "))
}

// RouteSource returns the address this host sends from when it talks to
// dst: the kernel's choice for a UDP socket connected to dst (nothing is
// sent).
func RouteSource(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: no route to %s: %v", ErrNoAddress, dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// BindAddr chooses the address a worker's data plane listens on: an
// address of the first usable interface in ifaces when any are given,
// else the source address of this host's route to target (the rendezvous
// host, "host:port" or an IP).
func BindAddr(ifaces []string, target string) (string, error) {
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	dst, perr := netip.ParseAddr(host)
	if perr != nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			if len(ifaces) == 0 {
				return "", fmt.Errorf("%w: cannot resolve %q: %v", ErrNoAddress, host, err)
			}
		} else {
			dst, _ = netip.AddrFromSlice(ips[0])
			dst = dst.Unmap()
		}
	}
	if len(ifaces) > 0 {
		a, err := InterfaceAddr(ifaces, dst)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	}
	a, err := RouteSource(dst)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}
