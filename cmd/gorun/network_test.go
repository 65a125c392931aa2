package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
)

func TestPlanNetwork(t *testing.T) {
	slots, err := hosts.Assign([]hosts.Host{{Name: "localhost", Slots: 1}, {Name: "n1", Slots: 2}, {Name: "n2", Slots: 1}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	probes := map[string]launch.ProbeResult{
		"n1": {LauncherAddr: "127.0.0.1", HostAddr: "10.0.0.11", BindAddr: "10.0.0.11"},
		"n2": {LauncherAddr: "127.0.0.1", HostAddr: "10.0.0.12", BindAddr: "10.0.0.12"},
	}
	np, err := planNetwork(slots, probes, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every host saw the launcher at one local address: listen there only.
	if np.listen != "127.0.0.1" || np.isRemote("localhost") || !np.isRemote("n1") {
		t.Errorf("plan %+v", np)
	}
	got := map[string][2]string{}
	for _, h := range []string{"localhost", "n1", "n2"} {
		got[h] = [2]string{np.rendezvousIP(h), np.bindIP(h)}
	}
	want := map[string][2]string{"localhost": {"127.0.0.1", "127.0.0.1"}, "n1": {"127.0.0.1", "10.0.0.11"}, "n2": {"127.0.0.1", "10.0.0.12"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}

	// Hosts that see the launcher at different addresses (a multi-homed
	// launcher): listen everywhere, each host dials what it saw.
	probes["n2"] = launch.ProbeResult{LauncherAddr: "192.0.2.200", BindAddr: "192.0.2.12"}
	np, err = planNetwork(slots, probes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if np.listen != "" || np.rendezvousIP("n2") != "192.0.2.200" || np.rendezvousIP("n1") != "127.0.0.1" {
		t.Errorf("plan %+v", np)
	}

	// An interface the launcher has decides its own workers' address.
	np, err = planNetwork(slots, probes, []string{"lo"})
	if err != nil || np.bindIP("localhost") != "127.0.0.1" {
		t.Errorf("plan %+v, %v", np, err)
	}

	probes["n2"] = launch.ProbeResult{}
	if _, err := planNetwork(slots, probes, nil); err == nil || !strings.Contains(err.Error(), "host n2 did not say") {
		t.Errorf("missing launcher address: %v", err)
	}
}

func TestGorovodVars(t *testing.T) {
	got := gorovodVars([]string{"HOME=/root", "GOROVOD_FOO=1", "GOROVOD_SSH_ARGS=-F x", "XGOROVOD_=2", "GOROVOD_LOG_LEVEL=debug"})
	if want := []string{"GOROVOD_FOO=1", "GOROVOD_LOG_LEVEL=debug"}; !reflect.DeepEqual(got, want) {
		t.Errorf("gorovodVars = %q, want %q", got, want)
	}
}
