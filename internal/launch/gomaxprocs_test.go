package launch

import (
	"slices"
	"testing"
)

func TestWithGOMAXPROCS(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		cpus int
		want string // "" = no GOMAXPROCS added
	}{
		{"two workers on two cores", []string{"GOROVOD_LOCAL_SIZE=2"}, 2, "GOMAXPROCS=1"},
		{"four workers on sixteen cores", []string{"GOROVOD_LOCAL_SIZE=4"}, 16, "GOMAXPROCS=4"},
		{"more workers than cores", []string{"GOROVOD_LOCAL_SIZE=8"}, 2, "GOMAXPROCS=1"},
		{"uneven share rounds down", []string{"GOROVOD_LOCAL_SIZE=3"}, 8, "GOMAXPROCS=2"},
		{"alone on the host", []string{"GOROVOD_LOCAL_SIZE=1"}, 8, ""},
		{"no local size", []string{"PATH=/bin"}, 8, ""},
		{"user's setting wins", []string{"GOMAXPROCS=7", "GOROVOD_LOCAL_SIZE=2"}, 2, ""},
		{"user's setting after", []string{"GOROVOD_LOCAL_SIZE=2", "GOMAXPROCS=7"}, 2, ""},
		{"malformed local size", []string{"GOROVOD_LOCAL_SIZE=x"}, 8, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WithGOMAXPROCS(slices.Clone(tc.env), tc.cpus)
			added := got[len(tc.env):]
			switch {
			case tc.want == "" && len(added) != 0:
				t.Fatalf("added %v, want nothing", added)
			case tc.want != "" && (len(added) != 1 || added[0] != tc.want):
				t.Fatalf("added %v, want %s", added, tc.want)
			}
		})
	}
}
