package main

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
)

// MASTER_ADDR/MASTER_PORT: rank 0's data-plane address, with the port its
// host's ssh check found free, or one found now on this machine.
func TestMasterAddr(t *testing.T) {
	remoteFirst, err := hosts.Assign([]hosts.Host{{Name: "n1", Slots: 2}, {Name: "localhost", Slots: 1}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	probes := map[string]launch.ProbeResult{"n1": {LauncherAddr: "127.0.0.1", BindAddr: "198.18.0.11", FreePort: 41234}}
	np, err := planNetwork(remoteFirst, probes, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := masterAddr(plan{slots: remoteFirst}, np)
	if want := []string{"MASTER_ADDR=198.18.0.11", "MASTER_PORT=41234"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("rank 0 remote: %v, %v; want %v", got, err, want)
	}

	// The remote host found no port: no MASTER_* rather than a wrong one.
	probes["n1"] = launch.ProbeResult{LauncherAddr: "127.0.0.1", BindAddr: "198.18.0.11"}
	np, _ = planNetwork(remoteFirst, probes, nil)
	if got, err := masterAddr(plan{slots: remoteFirst}, np); err != nil || got != nil {
		t.Errorf("no port known: %v, %v", got, err)
	}

	// Rank 0 here: a port free on loopback now.
	local, _ := hosts.Assign([]hosts.Host{{Name: "localhost", Slots: 2}}, 2)
	got, err = masterAddr(plan{slots: local}, netPlan{})
	if err != nil || len(got) != 2 || got[0] != "MASTER_ADDR=127.0.0.1" {
		t.Fatalf("local: %v, %v", got, err)
	}
	port, _ := strconv.Atoi(got[1][len("MASTER_PORT="):])
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Errorf("MASTER_PORT %d is not free: %v", port, err)
	} else {
		lis.Close()
	}

	// -x MASTER_PORT (or MASTER_ADDR): gorun sets neither.
	if got, err := masterAddr(plan{slots: local, exports: []string{"MASTER_PORT=29500"}}, netPlan{}); err != nil || got != nil {
		t.Errorf("-x MASTER_PORT: %v, %v", got, err)
	}
}

// Each worker's place, on hosts of different sizes: GROUP_RANK is the
// host's index; Horovod's cross rank counts hosts with the same local rank.
func TestBuildWorkersPlaces(t *testing.T) {
	slots, err := hosts.Assign([]hosts.Host{{Name: "a", Slots: 1}, {Name: "b", Slots: 2}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	np := netPlan{remote: map[string]bool{"a": true, "b": true}, rdv: map[string]string{}, bind: map[string]string{}}
	ws := buildWorkers(&options{}, plan{argv: []string{"true"}, slots: slots}, np, jobEnv{secret: []byte{1}, rdvPort: "1234", progress: "lines"})
	want := []string{
		"RANK=0 LOCAL_RANK=0 GROUP_RANK=0 GROUP_WORLD_SIZE=2 HOROVOD_CROSS_RANK=0 HOROVOD_CROSS_SIZE=2",
		"RANK=1 LOCAL_RANK=0 GROUP_RANK=1 GROUP_WORLD_SIZE=2 HOROVOD_CROSS_RANK=1 HOROVOD_CROSS_SIZE=2",
		"RANK=2 LOCAL_RANK=1 GROUP_RANK=1 GROUP_WORLD_SIZE=2 HOROVOD_CROSS_RANK=0 HOROVOD_CROSS_SIZE=1",
	}
	for i, w := range ws {
		vars := map[string]string{}
		for _, kv := range w.Env {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = v // later entries win, as in os/exec
		}
		var got []string
		for _, k := range []string{"RANK", "LOCAL_RANK", "GROUP_RANK", "GROUP_WORLD_SIZE", "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE"} {
			got = append(got, k+"="+vars[k])
		}
		if g := strings.Join(got, " "); g != want[i] {
			t.Errorf("worker %d: %s\nwant      %s", i, g, want[i])
		}
	}
}
