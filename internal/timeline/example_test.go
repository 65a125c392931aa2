package timeline_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gorovod/gorovod/internal/timeline"
)

func Example() {
	var out bytes.Buffer
	t0 := time.Now()
	tl, err := timeline.New(&out, timeline.Options{Origin: t0})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The coordinator reports negotiation (tl is its Config.Observer)...
	tl.OnNegotiateStart(t0, "grad/w", "allreduce")
	tl.OnRankReady(t0, "grad/w", 1)
	tl.OnRankReady(t0.Add(time.Millisecond), "grad/w", 0)
	tl.OnNegotiateEnd(t0.Add(time.Millisecond), "grad/w")
	// ...and the loop its execution.
	r := timeline.Op{Op: "allreduce", Names: []string{"grad/w"}, DType: "float32", Counts: []int64{16}}
	tl.OpStart(t0.Add(1010*time.Microsecond), r)
	tl.Activity(t0.Add(1020*time.Microsecond), r.Names, "CPU_ALLREDUCE")
	tl.OpEnd(t0.Add(1100*time.Microsecond), r.Names, nil)
	if err := tl.Close(); err != nil {
		fmt.Println(err)
		return
	}
	var events []struct {
		Ph, Name string
		Ts       float64
	}
	if err := json.Unmarshal(out.Bytes(), &events); err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range events {
		if e.Ph != "M" {
			fmt.Println(strings.TrimSpace(fmt.Sprintln(e.Ph, e.Ts, e.Name)))
		}
	}
	// Output:
	// B 0 NEGOTIATE_ALLREDUCE
	// X 0 1
	// X 1000 0
	// E 1000
	// B 1010 ALLREDUCE
	// B 1010 QUEUE
	// E 1020
	// B 1020 CPU_ALLREDUCE
	// E 1100
	// E 1100
}
