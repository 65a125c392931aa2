package elastic

import (
	"slices"
	"testing"
)

// Every sample of a data epoch is used exactly once, across a change of
// the world's size halfway through.
func TestSamplerReshards(t *testing.T) {
	const n = 103
	seen := map[int]int{}
	ranks := func(size, perRank int, steps int, pos samplerPos) samplerPos {
		for step := 0; step < steps; step++ {
			var next samplerPos
			for r := 0; r < size; r++ {
				s := NewSampler(n, 7)
				s.pos = pos
				s.SetWorld(r, size)
				for _, i := range s.Batch(perRank) {
					seen[i]++
				}
				s.Advance(perRank)
				next = s.pos
			}
			pos = next
		}
		return pos
	}
	pos := ranks(4, 5, 3, samplerPos{}) // 60 samples by 4 ranks
	if pos.Done != 60 {
		t.Fatalf("after 3 steps of 4x5: %+v", pos)
	}
	pos = ranks(3, 5, 3, pos) // 43 left: 15, 15, 13
	if pos.Epoch != 1 || pos.Done != 0 {
		t.Fatalf("the data epoch did not end: %+v", pos)
	}
	for i := 0; i < n; i++ {
		if seen[i] != 1 {
			t.Fatalf("sample %d used %d times", i, seen[i])
		}
	}
	a, b := NewSampler(n, 7), NewSampler(n, 7)
	b.pos.Epoch = 1
	if slices.Equal(a.Batch(n), b.Batch(n)) {
		t.Fatal("two data epochs have the same order")
	}
}
