package collectivetest

import "testing"

// TestScatterShareTiles checks the checker's expectation for
// reduce-scatter: the ranks' shares cover 0..n in order, without gap or
// overlap, and differ in size by at most one.
func TestScatterShareTiles(t *testing.T) {
	for size := 1; size <= 5; size++ {
		for n := 0; n <= 12; n++ {
			next := 0
			for rank := 0; rank < size; rank++ {
				start, count := scatterShare(n, size, rank)
				if start != next {
					t.Fatalf("n=%d size=%d rank %d: starts at %d, want %d", n, size, rank, start, next)
				}
				if count != n/size && count != n/size+1 {
					t.Fatalf("n=%d size=%d rank %d: %d elements, want %d or %d", n, size, rank, count, n/size, n/size+1)
				}
				next += count
			}
			if next != n {
				t.Fatalf("n=%d size=%d: shares cover %d elements", n, size, next)
			}
		}
	}
}
