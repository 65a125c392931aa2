package env

import (
	"reflect"
	"testing"
)

func TestPlaceVars(t *testing.T) {
	// Host 2 of 3 (node 1), where the hosts have 4, 4 and 1 slots.
	p := Place{Rank: 5, Size: 9, LocalRank: 1, LocalSize: 4, CrossRank: 1, CrossSize: 2, Node: 1, Nodes: 3}
	got := map[string]string{}
	for _, kv := range p.Vars() {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				if _, dup := got[kv[:i]]; dup {
					t.Errorf("%s set twice", kv[:i])
				}
				got[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	want := map[string]string{
		Rank: "5", Size: "9", LocalRank: "1", LocalSize: "4", CrossRank: "1", CrossSize: "2",
		"RANK": "5", "WORLD_SIZE": "9", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "3",
		"HOROVOD_RANK": "5", "HOROVOD_SIZE": "9", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "4",
		"HOROVOD_CROSS_RANK": "1", "HOROVOD_CROSS_SIZE": "2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Vars:\n got %v\nwant %v", got, want)
	}
}

func TestMasterVars(t *testing.T) {
	if got, want := MasterVars("fd00::5", 29500), []string{"MASTER_ADDR=fd00::5", "MASTER_PORT=29500"}; !reflect.DeepEqual(got, want) {
		t.Errorf("MasterVars = %v, want %v", got, want)
	}
}
