// Command allreducecheck runs every collective with every dtype, op and an
// awkward set of lengths, and checks each result element by element against
// values every rank can compute on its own (collectivetest.Check). It exits
// 1 on the first wrong element and prints how many checks passed. Run it
// under gorun, mpirun or srun: `gorun -np 3 allreducecheck`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

func main() {
	quick := flag.Bool("quick", false, "fewer lengths")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	rank, size := collective.Rank(), collective.Size()
	checks, err := collectivetest.Check(ctx, collective.Default(), *quick)
	if serr := collective.Shutdown(ctx); err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: FAIL: %v\n", rank, err)
		os.Exit(1)
	}
	fmt.Printf("rank %d of %d: %d checks OK\n", rank, size, checks)
}
