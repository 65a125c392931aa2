package control

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// TestTreeReduceAndBroadcast: concatenation as the combine gives rank 0
// every rank's byte in rank order (acc always holds the lower ranks), and
// the broadcast reaches every rank, for sizes that are and are not powers
// of two.
func TestTreeReduceAndBroadcast(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 8, 13} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := inmem.MustWorld(n)
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			roots := make([][]byte, n)
			got := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for r := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					concat := func(acc, child []byte, _ int) []byte { return append(append([]byte(nil), acc...), child...) }
					roots[r], errs[r] = ReduceToRoot(ctx, w.Mesh(r), []byte{byte(r)}, concat)
					if errs[r] != nil {
						return
					}
					got[r], errs[r] = BroadcastDown(ctx, w.Mesh(r), []byte(fmt.Sprint("from ", r)))
				}()
			}
			wg.Wait()
			want := make([]byte, n)
			for r := range want {
				want[r] = byte(r)
			}
			for r := range n {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				if r == 0 && !bytes.Equal(roots[0], want) {
					t.Errorf("rank 0 combined %v, want %v", roots[0], want)
				}
				if r != 0 && roots[r] != nil {
					t.Errorf("rank %d got a combination %v, want nil", r, roots[r])
				}
				if string(got[r]) != "from 0" {
					t.Errorf("rank %d got broadcast %q, want %q", r, got[r], "from 0")
				}
			}
		})
	}
}
