//go:build linux

package ops

import "testing"

func TestRunnableFromLoadavg(t *testing.T) {
	for in, want := range map[string]int{
		"0.52 0.58 0.59 3/456 12345\n": 3,
		"4.55 3.59 2.95 17/321 19113":  17,
		"garbage":                      0,
		"1 2 3 x/4 5":                  0,
	} {
		if got := runnable([]byte(in)); got != want {
			t.Errorf("runnable(%q) = %d, want %d", in, got, want)
		}
	}
}
