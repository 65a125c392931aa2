package coordinator

import "testing"

// TestStatusWordAndIsAnyRank checks the trick the AND exchange relies on:
// one rank with a condition clears its bit in the AND of all ranks' words,
// and no rank with it leaves the bit set.
func TestStatusWordAndIsAnyRank(t *testing.T) {
	conds := []struct {
		name string
		bit  uint64
		word func(on bool) uint64
	}{
		{"shutdown", statusNotShutdown, func(on bool) uint64 { return statusWord(on, false, false, false) }},
		{"uncached", statusNotUncached, func(on bool) uint64 { return statusWord(false, on, false, false) }},
		{"invalid", statusNotInvalid, func(on bool) uint64 { return statusWord(false, false, on, false) }},
		{"joined", statusNotJoined, func(on bool) uint64 { return statusWord(false, false, false, on) }},
	}
	for _, c := range conds {
		none := c.word(false) & c.word(false) & c.word(false)
		if none != statusAll {
			t.Errorf("%s on no rank: AND = %#x, want %#x", c.name, none, statusAll)
		}
		one := c.word(false) & c.word(true) & c.word(false)
		if one != statusAll&^c.bit {
			t.Errorf("%s on one rank: AND = %#x, want only bit %#x cleared", c.name, one, c.bit)
		}
	}
}
