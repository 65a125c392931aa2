package worker

import (
	"errors"
	"slices"
	"testing"

	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/errkind"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "3": {3}, "0,2": {0, 2}, "0-3,8": {0, 1, 2, 3, 8}, " 1 , 4-5": {1, 4, 5}} {
		got, err := ParseCPUList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"a", "1,", "3-1", "-2", "0-", "2000"} {
		if _, err := ParseCPUList(in); !errors.Is(err, errkind.Invalid) {
			t.Errorf("ParseCPUList(%q): %v, want an Invalid error", in, err)
		}
	}
	if _, err := Detect(envMap(env.CPUList, "x")); !errors.Is(err, errkind.Invalid) {
		t.Errorf("Detect with %s=x: %v, want an Invalid error naming it", env.CPUList, err)
	}
}
